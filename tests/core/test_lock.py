"""`sefe.lock`: one process per output folder; a second refuses naming the holder; a dead holder's lock is
taken over (the OS releases an flock when its process dies)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sefe.lock import LOCK_NAME, FolderLocked, folder_lock

HOLD = "import sys, time; from sefe.lock import folder_lock\nwith folder_lock(sys.argv[1], 'holder'):\n"
HOLD += "    print('held', flush=True); time.sleep(60)\n"


def _holder(folder: Path) -> subprocess.Popen[str]:
    child = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline().strip() == "held"
    return child


def test_a_second_holder_refuses_with_the_holders_pid(tmp_path: Path) -> None:
    with folder_lock(tmp_path / "out", "sefe asd build") as path:
        assert path == tmp_path / "out" / LOCK_NAME
        assert path.read_text().startswith(f"pid {os.getpid()}, sefe asd build, since ")
        refused = rf"out is in use by another sefe process \(pid {os.getpid()}, "
        with pytest.raises(FolderLocked, match=refused), folder_lock(tmp_path / "out", "sefe train"):
            pass
    with folder_lock(tmp_path / "out", "again"):  # released on exit
        pass


def test_another_process_holds_it_until_it_dies_then_it_is_taken_over(tmp_path: Path) -> None:
    child = _holder(tmp_path)
    try:
        with (
            pytest.raises(FolderLocked, match=rf"\(pid {child.pid}, holder, since "),
            folder_lock(tmp_path, "me"),
        ):
            pass
    finally:
        os.kill(child.pid, signal.SIGKILL)  # no clean-up runs: the lock file stays, naming the dead pid
        child.wait()
    assert f"pid {child.pid}" in (tmp_path / LOCK_NAME).read_text()
    started = time.monotonic()
    with folder_lock(tmp_path, "me") as path:
        assert path.read_text().startswith(f"pid {os.getpid()}, me, ")
    assert time.monotonic() - started < 5
