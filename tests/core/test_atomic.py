from __future__ import annotations

import stat
from pathlib import Path

import pytest

from sefe.atomic import DIR_MODE, FILE_MODE, atomic_dir, atomic_path, atomic_write_bytes, publish_dir


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


# ---- folders -------------------------------------------------------------------------------------------
def test_atomic_dir_publishes_complete_folder_with_shared_mode(tmp_path: Path) -> None:
    final = tmp_path / "models" / "merged"
    with atomic_dir(final) as tmp:
        assert tmp.parent == final.parent and tmp.name.startswith(".merged.")
        assert not final.exists()  # nothing under the final name until the block is done
        (tmp / "config.json").write_text("{}")
    assert (final / "config.json").read_text() == "{}"
    assert stat.S_IMODE(final.stat().st_mode) == DIR_MODE  # not mkdtemp's 0700
    assert [p.name for p in final.parent.iterdir()] == ["merged"]


def test_atomic_dir_failure_leaves_old_folder_and_no_temp(tmp_path: Path) -> None:
    final = tmp_path / "merged"
    with atomic_dir(final) as tmp:
        (tmp / "weights").write_bytes(b"old")
    with pytest.raises(RuntimeError, match="killed"), atomic_dir(final, replace=True) as tmp:
        (tmp / "weights").write_bytes(b"half")
        raise RuntimeError("killed mid-save")
    assert (final / "weights").read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["merged"]


def test_atomic_dir_replace_swaps_whole_folder(tmp_path: Path) -> None:
    final = tmp_path / "merged"
    with atomic_dir(final) as tmp:
        (tmp / "a").write_bytes(b"1")
        (tmp / "stale").write_bytes(b"x")
    with atomic_dir(final, replace=True) as tmp:
        (tmp / "a").write_bytes(b"2")
    assert sorted(p.name for p in final.iterdir()) == ["a"] and (final / "a").read_bytes() == b"2"
    assert [p.name for p in tmp_path.iterdir()] == ["merged"]  # the old folder is gone too


def test_publish_dir_without_replace_keeps_the_first_publisher(tmp_path: Path) -> None:
    """Two processes building the same cache: the second finds the folder published and drops its copy."""
    final = tmp_path / "cache" / "tiny-llava-abc"
    first, second = tmp_path / "cache" / ".a", tmp_path / "cache" / ".b"
    for folder, content in ((first, b"first"), (second, b"second")):
        folder.mkdir(parents=True)
        (folder / "model.safetensors").write_bytes(content)
    assert publish_dir(first, final) == final
    assert publish_dir(second, final) == final
    assert (final / "model.safetensors").read_bytes() == b"first"
    assert sorted(p.name for p in final.parent.iterdir()) == ["tiny-llava-abc"]


def test_publish_dir_raises_when_the_target_is_not_a_folder(tmp_path: Path) -> None:
    src = tmp_path / ".src"
    src.mkdir()
    (src / "f").write_bytes(b"x")
    (tmp_path / "dst").write_bytes(b"a file is in the way")
    with pytest.raises(OSError):
        publish_dir(src, tmp_path / "dst")
    assert (src / "f").is_file()  # nothing lost: the caller's temp folder is still there
