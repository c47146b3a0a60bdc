"""Every installed method: three coin-mini tasks with evaluation, a kill in the middle of stage 2 and a resume
by rerunning, and the runs side by side in `sefe report`. Parametrised over the registry, so a new method is
covered the moment it is registered."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from transformers import TrainerCallback

from sefe.sefe_train.methods import method_names
from sefe.sefe_train.runner import ContinualRunner
from tests.helpers.methods import MethodRecorder
from tests.helpers.train import make_config

pytestmark = pytest.mark.slow

TASKS = ["ScienceQA", "TextVQA", "ImageNet"]
SETTINGS = [
    "train.max_steps=2",
    "train.save_steps=1",
    "train.save_total_limit=2",
    "eval.max_samples=1",
    "eval.max_new_tokens=2",
]


class Crash(RuntimeError):
    pass


class CrashInStage(TrainerCallback):
    """A kill at the end of optimizer step `step` of the `stage`-th stage this process trains."""

    def __init__(self, stage: int, step: int) -> None:
        self.stage, self.step, self.begun = stage, step, 0

    def on_train_begin(self, args, state, control, **kwargs):
        self.begun += 1

    def on_step_end(self, args, state, control, **kwargs):
        if self.begun == self.stage and state.global_step == self.step:
            raise Crash(f"simulated kill at step {self.step} of stage {self.stage}")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, MethodRecorder]]:
    """Filled lazily: one crashed-and-resumed run per method, shared with the report test."""
    cache: dict[str, tuple[Path, MethodRecorder]] = {}
    cache["__root__"] = (tmp_path_factory.mktemp("methods"), MethodRecorder())
    return cache


def _run(runs: dict[str, tuple[Path, MethodRecorder]], name: str) -> tuple[Path, MethodRecorder]:
    if name not in runs:
        run = runs["__root__"][0] / name
        cfg = make_config(run, name, SETTINGS, tasks=TASKS)
        with pytest.raises(Crash):
            ContinualRunner(cfg, callbacks=[CrashInStage(2, 2)]).run()
        state = orjson.loads((run / "state.json").read_bytes())
        assert [s["task"] for s in state["done"]] == ["ScienceQA"]
        assert (run / "2_TextVQA.partial" / "checkpoints" / "checkpoint-1").is_dir()
        assert not (run / "2_TextVQA").exists()
        rec = MethodRecorder()
        ContinualRunner(cfg, callbacks=[rec]).run()
        runs[name] = (run, rec)
    return runs[name]


@pytest.mark.parametrize("name", method_names())
def test_three_tasks_with_evaluation_resume_after_a_kill(
    runs: dict[str, tuple[Path, MethodRecorder]], name: str
) -> None:
    run, rec = _run(runs, name)
    # the rerun continued stage 2 from its checkpoint (not from scratch), then trained stage 3
    assert [b["global_step"] for b in rec.begins] == [1, 0]
    assert rec.steps == [2, 1, 2]
    state = orjson.loads((run / "state.json").read_bytes())
    assert [s["task"] for s in state["done"]] == TASKS and state["method"] == name
    acc = orjson.loads((run / "accuracy.json").read_bytes())
    assert acc["tasks"] == TASKS and [len(r) for r in acc["rows"]] == [1, 2, 3]
    assert all(v is not None and 0 <= v <= 100 for r in acc["rows"] for v in r)
    for k, task in enumerate(TASKS, start=1):
        folder = run / f"{k}_{task}"
        assert (folder / "merged" / "config.json").is_file() and not (folder / "checkpoints").exists()
        assert sorted(p.stem for p in (folder / "eval").glob("*.jsonl")) == sorted(TASKS[:k])
    assert not list(run.glob("*.partial"))


def test_every_method_side_by_side_in_the_report(
    runs: dict[str, tuple[Path, MethodRecorder]], tmp_path: Path
) -> None:
    from sefe.evaluation.report import build_report

    names = method_names()
    folders = [_run(runs, n)[0] for n in names]
    report = build_report(folders, tmp_path / "report", plots=False)
    assert len(report.runs) == len(names)
    text = (tmp_path / "report" / "report.md").read_text(encoding="utf-8")
    method_row = next(line for line in text.splitlines() if line.startswith("| method |"))
    assert [c.strip().strip("`") for c in method_row.strip().strip("|").split("|")][1:] == names
