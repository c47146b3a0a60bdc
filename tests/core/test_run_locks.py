"""Every command that writes a run or output folder takes its lock first: `sefe train` (the run folder),
`sefe micro run` (DIR), `sefe eval run` (the predictions folder). A real second process holds each lock here;
the command refuses with one line naming its pid, before any model is loaded or anything is written."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sefe.lock import FolderLocked

HOLD = "import sys, time; from sefe.lock import folder_lock\nwith folder_lock(sys.argv[1], 'sefe other'):\n"
HOLD += "    print('held', flush=True); time.sleep(60)\n"


@pytest.fixture
def held(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    folder = tmp_path / "busy"
    child = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline().strip() == "held"
    yield folder, child.pid
    os.kill(child.pid, signal.SIGKILL)
    child.wait()


def _train(folder: Path) -> None:
    from sefe.sefe_train.runner import ContinualRunner
    from tests.helpers.train import make_config

    ContinualRunner(make_config(folder, "lora", ["eval.enabled=false"], tasks=["ScienceQA"])).run()


def _micro(folder: Path) -> None:
    from sefe.micro.options import MicroOptions
    from sefe.micro.run import run_micro

    run_micro(MicroOptions(out=folder, seeds=1))


def _eval(folder: Path) -> None:
    from sefe.evaluation.inference import run_inference

    run_inference(folder.parent / "no-model", folder.parent / "no-root", ["ScienceQA"], folder)


@pytest.mark.parametrize("command", [_train, _micro, _eval], ids=["train", "micro", "eval"])
def test_a_second_process_is_refused_naming_the_holder(
    held: tuple[Path, int], command: Callable[[Path], None]
) -> None:
    folder, pid = held
    before = sorted(p.name for p in folder.iterdir())
    with pytest.raises(
        FolderLocked, match=rf"busy is in use by another sefe process \(pid {pid}, sefe other"
    ):
        command(folder)
    assert sorted(p.name for p in folder.iterdir()) == before == [".sefe.lock"]  # nothing written
