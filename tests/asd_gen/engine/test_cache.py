"""The append-only result cache and the JSONL store under it: one policy for a torn last line."""

from __future__ import annotations

from pathlib import Path

import pytest

from sefe.asd_gen.cache import CACHE_NAME, ResultCache
from sefe.asd_gen.needs import NeedResult
from sefe.jsonl_store import JsonlError, JsonlStore


def test_torn_line_is_ignored_and_cut_by_the_next_append(tmp_path: Path) -> None:
    c = ResultCache(tmp_path)
    c.put("a", NeedResult(distractors=[["x"]]), raw='{"items": []}')
    c.close()
    torn = b'{"key": "b", "result": {"distrac'
    with (tmp_path / CACHE_NAME).open("ab") as f:
        f.write(torn)  # killed here
    c2 = ResultCache(tmp_path)
    assert "a" in c2 and "b" not in c2 and c2.torn_bytes == len(torn)
    c2.put("b", NeedResult(explanations=["because"]))
    c2.close()
    lines = (tmp_path / CACHE_NAME).read_bytes().split(b"\n")
    assert lines[-1] == b"" and all(line.startswith(b'{"key"') for line in lines[:-1])  # whole lines only
    c3 = ResultCache(tmp_path)
    assert len(c3) == 2 and c3.get("b") == NeedResult(explanations=["because"]) and c3.torn_bytes == 0
    assert c3.get("a") == NeedResult(distractors=[["x"]])


def test_a_complete_row_without_its_newline_is_torn_too(tmp_path: Path) -> None:
    p = tmp_path / "s.jsonl"
    p.write_bytes(b'{"k": 1}\n{"k": 2}')  # killed before the newline: not trusted as a whole row
    s = JsonlStore(p)
    assert [r["k"] for _, r in s.rows()] == [1]
    s.append({"k": 3})
    s.close()
    assert p.read_bytes() == b'{"k": 1}\n{"k":3}\n'


def test_a_broken_line_before_the_end_is_an_error_naming_it(tmp_path: Path) -> None:
    p = tmp_path / "s.jsonl"
    p.write_bytes(b'{"k": 1}\nnot json\n{"k": 2}\n')
    with pytest.raises(JsonlError, match=r"s\.jsonl line 2: not JSON"):
        list(JsonlStore(p).rows())
    p.write_bytes(b'{"k": 1}\n[1, 2]\n')
    with pytest.raises(JsonlError, match="line 2: not a JSON object"):
        list(JsonlStore(p).rows())
    assert p.read_bytes() == b'{"k": 1}\n[1, 2]\n'  # never cut or rewritten


def test_a_file_of_only_a_torn_row_and_blank_lines(tmp_path: Path) -> None:
    p = tmp_path / "s.jsonl"
    p.write_bytes(b'{"k"')
    assert list(JsonlStore(p).rows()) == []
    p.write_bytes(b'\n\n{"k": 1}\n\n')
    assert [r for _, r in JsonlStore(p).rows()] == [{"k": 1}]
