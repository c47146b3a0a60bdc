"""`sefe train` on a real full disk: its --out is a small tmpfs, mounted in a private mount namespace (skipped
where user namespaces are off). Whichever writer hits the limit (safetensors, torch's checkpoint writer and
its mute stream errors, plain files), the command ends with one line naming the stage and exit 5."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from sefe.errors import DISK_FULL_EXIT

DATA = Path(__file__).resolve().parents[2] / "data" / "coin-mini"
pytestmark = pytest.mark.slow


def _can_mount_tmpfs() -> bool:
    try:
        probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


@pytest.mark.skipif(not _can_mount_tmpfs(), reason="no user namespaces here to mount a private tmpfs")
@pytest.mark.parametrize("size", ["20k", "200k", "1m"])  # the first write, a checkpoint, the merged model
def test_a_full_disk_while_training_is_one_line_exit_5(tmp_path: Path, size: str) -> None:
    out = tmp_path / "small"
    out.mkdir()
    train = [sys.executable, "-m", "sefe.cli", "train", "--data-root", str(DATA), "--tasks", "ScienceQA"]
    train += ["--out", str(out / "run"), "--max-steps", "2", "--set", "train.save_steps=1", "--no-eval"]
    script = f"mount -t tmpfs -o size={size} tmpfs {shlex.quote(str(out))} || exit 97\n{shlex.join(train)}\n"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "400"}
    done = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, env=env, timeout=600)
    shown = done.stdout.decode() + done.stderr.decode()
    assert done.returncode == DISK_FULL_EXIT, shown
    assert "Traceback" not in shown and "SafetensorError" not in shown and "enforce fail" not in shown
    last = shown.strip().splitlines()[-1]
    assert last.startswith(f"error: {out / 'run'}: stage 1 (ScienceQA): no space left on the device"), last
    assert "rerun the same command to resume" in last
