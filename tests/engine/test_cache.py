"""The append-only result cache survives a torn last line (a process killed mid-write)."""

from __future__ import annotations

from pathlib import Path

from sefe.asd_gen.cache import CACHE_NAME, ResultCache
from sefe.asd_gen.needs import NeedResult


def test_torn_line_is_skipped_and_next_append_starts_clean(tmp_path: Path) -> None:
    c = ResultCache(tmp_path)
    c.put("a", NeedResult(distractors=[["x"]]), raw='{"items": []}')
    c.close()
    with (tmp_path / CACHE_NAME).open("ab") as f:
        f.write(b'{"key": "b", "result": {"distrac')  # killed here
    c2 = ResultCache(tmp_path)
    assert "a" in c2 and "b" not in c2 and c2.skipped_lines == 1
    c2.put("b", NeedResult(explanations=["because"]))
    c2.close()
    c3 = ResultCache(tmp_path)
    assert len(c3) == 2 and c3.get("b") == NeedResult(explanations=["because"])
    assert c3.get("a") == NeedResult(distractors=[["x"]])
