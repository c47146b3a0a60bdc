from __future__ import annotations

import stat
from pathlib import Path

import pytest

from sefe.atomic import FILE_MODE, atomic_path, atomic_write_bytes


def test_write_replaces_whole_file_with_shared_mode(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "a.json"
    atomic_write_bytes(target, b"old")
    atomic_write_bytes(target, b"new contents")
    assert target.read_bytes() == b"new contents"
    assert stat.S_IMODE(target.stat().st_mode) == FILE_MODE  # not mkstemp's 0600
    assert [p.name for p in target.parent.iterdir()] == ["a.json"]  # no temp file left


def test_failed_write_keeps_old_file_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "keys.safetensors"
    target.write_bytes(b"finished work")
    with pytest.raises(RuntimeError, match="killed"), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed mid-write")
    assert target.read_bytes() == b"finished work"
    assert [p.name for p in tmp_path.iterdir()] == ["keys.safetensors"]
