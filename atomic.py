"""Atomic writes shared by every part of sefe: readers (and a rerun after a kill) never see half a result.

Files: write to a temp file in the target's folder, fsync, `os.replace`. Folders (run stages, merged models,
the embedded model unpack, the tiny model cache): build in a temp folder beside the target, then one rename
(`atomic_dir` / `publish_dir`). Temp files and folders get the mode a plain `open()` / `mkdir` would give
(umask applied): `mkstemp`'s 0600 and `mkdtemp`'s 0700 would hide results from colleagues on a shared cluster.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()
FILE_MODE = 0o666 & ~_UMASK
DIR_MODE = 0o777 & ~_UMASK


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temp path beside `path`; when the block succeeds, fsync it and rename it over `path`.

    For writers that want a file name (safetensors, savefig); on error the temp file is removed.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        os.chmod(tmp, FILE_MODE)
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write `data` to `path` atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(data)


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make a folder's entries (a rename into it) durable; a no-op where folders cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def publish_dir(tmp: str | os.PathLike[str], final: str | os.PathLike[str], *, replace: bool = False) -> Path:
    """Rename the complete folder `tmp` to `final` (same file system), so `final` is never seen half-written.

    `replace=False` (caches and commit points): if `final` already exists, someone published it first, and
    folders published this way are complete by construction, so `tmp` is discarded and `final` kept.
    `replace=True` (results that are rewritten): an existing `final` is moved aside, the new folder renamed
    into place, then the old one removed, so `final` always names a complete folder.
    """
    tmp, final = Path(tmp), Path(final)
    fsync_dir(tmp)
    if replace and final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        try:
            os.replace(tmp, final)
        except OSError:
            if not final.is_dir():  # not a lost race with another writer: a real error
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    fsync_dir(final.parent)
    return final


@contextmanager
def atomic_dir(final: str | os.PathLike[str], *, replace: bool = False) -> Iterator[Path]:
    """Yield a fresh temp folder beside `final`; when the block succeeds, publish it as `final`.

    On error the temp folder is removed and `final` is untouched. The temp folder gets the mode a plain
    `mkdir` would give (not `mkdtemp`'s 0700): models and caches are meant to be shared. Its name starts with
    a dot, so a folder listing or a rerun's cleanup can tell leftovers of a kill from results.
    """
    target = Path(final)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        os.chmod(tmp, DIR_MODE)
        yield tmp
        publish_dir(tmp, target, replace=replace)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def remove_stale_temps(folder: str | os.PathLike[str], name_glob: str) -> list[Path]:
    """Remove the temp files `atomic_path` left in `folder` for targets matching `name_glob` when a kill
    came between writing and renaming (`.train_x20.json.k3j9.tmp`); returns what was removed. Only for a
    caller that holds the folder's lock (`sefe.lock`): another writer's temp file looks the same."""
    removed = []
    for tmp in Path(folder).glob(f".{name_glob}.*.tmp"):
        if tmp.is_file():
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed
