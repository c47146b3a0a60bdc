"""Regenerating coin-mini reproduces the committed folder; the generator is a pure function of its seed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sefe.data.make_coin_mini import build, existing_files, main, write
from tests.helpers.coin_mini import decode


def test_committed_folder_is_exactly_what_the_generator_makes(root: Path, built: dict[str, bytes]) -> None:
    on_disk = set(existing_files(root))
    assert on_disk == set(built), (
        f"missing: {sorted(set(built) - on_disk)[:5]}, stale: {sorted(on_disk - set(built))[:5]}; "
        "run `python -m sefe.data.make_coin_mini --clean`"
    )
    text_diff, image_diff = [], []
    for rel, data in built.items():
        committed = (root / rel).read_bytes()
        if committed == data:
            continue
        if rel.lower().endswith((".jpg", ".jpeg", ".png")):
            image_diff.append(rel)
        else:
            text_diff.append(rel)
    assert not text_diff, f"annotation/side files differ from a fresh build: {text_diff[:5]}"
    # Images are byte-identical with the Pillow that made them; another zlib/libjpeg build may encode the same
    # pixels to other bytes, so differing images must still decode to the same picture.
    for rel in image_diff:
        a = np.asarray(decode((root / rel).read_bytes()), dtype=np.int16)
        b = np.asarray(decode(built[rel]), dtype=np.int16)
        assert a.shape == b.shape, rel
        if rel.lower().endswith(".png"):
            assert (a == b).all(), f"{rel}: pixels differ from a fresh build"
        else:
            assert np.abs(a - b).mean() < 1.0, f"{rel}: pixels differ from a fresh build"


def test_same_seed_same_bytes_other_seed_other_content(built: dict[str, bytes]) -> None:
    assert build(0) == built
    other = build(1)
    assert other["annotations/GQA/train.json"] != built["annotations/GQA/train.json"]
    assert other["eval_gt/ScienceQA/problems.json"] != built["eval_gt/ScienceQA/problems.json"]


def test_cli_writes_resumes_and_cleans(
    tmp_path: Path, built: dict[str, bytes], capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "mini"
    assert main(["--out", str(out)]) == 0
    assert {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()} == set(built)
    assert (out / "annotations/OCRVQA/train.json").read_bytes() == built["annotations/OCRVQA/train.json"]
    # a rerun rewrites nothing; a damaged file is repaired; a stray file in a managed folder is reported
    assert write(built, out) == (0, [])
    (out / "annotations/GQA/test.json").write_text("[")
    stray = out / "GQA/images/stray.jpg"
    stray.write_bytes(b"x")
    written, stale = write(built, out)
    assert (written, stale) == (1, ["GQA/images/stray.jpg"])
    assert stray.exists()
    assert main(["--out", str(out), "--clean"]) == 0
    assert not stray.exists()
    assert (out / "annotations/GQA/test.json").read_bytes() == built["annotations/GQA/test.json"]
    printed = capsys.readouterr()
    assert f"coin-mini: {len(built)} files" in printed.out
    assert "stale file(s) removed, e.g. GQA/images/stray.jpg" in printed.err
    assert not list(out.rglob("*.tmp")), "atomic writes left temp files behind"
