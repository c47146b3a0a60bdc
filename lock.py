"""One process per output folder: an exclusive lock on `<folder>/.sefe.lock`, holding the holder's pid.

Why: two `sefe asd build --out DIR` started together each sent every request (double cost), and two trainings
in one run folder overwrite each other's checkpoints. The lock is `fcntl.flock` on a file inside the folder:
the operating system releases it when its holder exits, however it exits (a kill, a crash), so a lock left
by a dead process is simply taken over by the next one; nothing stale has to be cleaned up.

A second process refuses at once (no waiting) with a one-line error naming the holder's pid and command,
exit code 2: waiting silently behind an hours-long run is worse than being told. The file itself stays in
the folder (removing it would race with a process opening it); only the lock on it matters.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sefe.errors import SefeError

#: The lock file's name inside a locked folder.
LOCK_NAME = ".sefe.lock"


class FolderLocked(SefeError):
    """Another live process holds the folder's lock; the message names its pid and command."""


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
    except OSError:
        text = ""
    return text or "pid unknown"


@contextmanager
def folder_lock(folder: Path | str, command: str) -> Iterator[Path]:
    """Hold the lock of `folder` (created if missing) while the block runs; `FolderLocked` if it is held.

    `command` (e.g. `sefe asd build`) is written beside the pid so the refusal can say what is running.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FolderLocked(
                f"{folder} is in use by another sefe process ({_holder(fd)}); wait for it to finish, or stop "
                "it, or use another folder"
            ) from None
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}, {command}, since {stamp}\n".encode(), 0)
        yield path
    finally:
        os.close(fd)  # closing the descriptor releases the lock
