"""Resume: a crash in the middle of a stage continues from the last Trainer checkpoint; a crash after training
reuses the saved adapter; a killed stage is never marked done and never appears under its final name."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest
from safetensors.numpy import load_file
from transformers import TrainerCallback

from sefe.sefe_train.runner import ContinualRunner
from tests.helpers.train import Recorder, make_config

pytestmark = pytest.mark.slow

STEPS = 5


class Crash(RuntimeError):
    pass


class CrashAfter(TrainerCallback):
    """Simulates a kill: raises at the end of optimizer step `n` (after checkpoints of earlier steps)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.n:
            raise Crash(f"simulated crash at step {self.n}")


def _config(out: Path):
    return make_config(
        out,
        "lora",
        [f"train.max_steps={STEPS}", "train.save_steps=2", "train.save_total_limit=2", "eval.enabled=false"],
        tasks=["ScienceQA"],
    )


def _adapter(run: Path) -> dict[str, np.ndarray]:
    return load_file(str(run / "1_ScienceQA" / "adapter" / "adapter_model.safetensors"))


def test_crash_mid_stage_resumes_from_checkpoint(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with pytest.raises(Crash):
        ContinualRunner(_config(run), callbacks=[CrashAfter(3)]).run()
    # nothing under a final name, nothing marked done, the checkpoint of step 2 is there
    assert not (run / "1_ScienceQA").exists()
    assert orjson.loads((run / "state.json").read_bytes())["done"] == []
    part = run / "1_ScienceQA.partial"
    assert (part / "checkpoints" / "checkpoint-2").is_dir()
    assert not (part / "adapter").exists()

    rec = Recorder()
    ContinualRunner(_config(run), callbacks=[rec]).run()
    assert rec.begins[0]["global_step"] == 2  # continued, not restarted
    assert rec.steps == [3, 4, 5]
    state = orjson.loads((run / "state.json").read_bytes())
    assert [s["task"] for s in state["done"]] == ["ScienceQA"]
    assert not part.exists() and (run / "1_ScienceQA" / "merged" / "config.json").is_file()

    # the resumed stage equals an uninterrupted one (same data order, RNG, optimizer state)
    ref = tmp_path / "ref"
    ContinualRunner(_config(ref)).run()
    got, want = _adapter(run), _adapter(ref)
    assert set(got) == set(want)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-7, err_msg=k)

    # rerunning a finished run does nothing
    rec2 = Recorder()
    ContinualRunner(_config(run), callbacks=[rec2]).run()
    assert rec2.begins == []


def test_crash_after_training_reuses_adapter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "run"

    def broken_merge(self, ctx, model, processor):
        raise Crash("simulated crash while merging")

    monkeypatch.setattr(ContinualRunner, "merge", broken_merge)
    with pytest.raises(Crash):
        ContinualRunner(_config(run)).run()
    part = run / "1_ScienceQA.partial"
    assert (part / "adapter" / "adapter_model.safetensors").is_file()
    assert not (part / "merged").exists() and not (run / "1_ScienceQA").exists()
    before = load_file(str(part / "adapter" / "adapter_model.safetensors"))

    monkeypatch.undo()
    rec = Recorder()
    ContinualRunner(_config(run), callbacks=[rec]).run()
    assert rec.begins == []  # no retraining: the finished adapter was reused
    after = _adapter(run)
    assert all(np.array_equal(before[k], after[k]) for k in before)
    assert (run / "1_ScienceQA" / "merged" / "model.safetensors").is_file()


def test_changed_experiment_is_refused(tmp_path: Path) -> None:
    from sefe.sefe_train import run_layout as L
    from sefe.sefe_train.config import ConfigError

    run = tmp_path / "run"
    run.mkdir()
    state = L.RunState(method="lora", tasks=["ScienceQA"])
    state.mark_done(1, "ScienceQA")
    L.save_state(run, state)
    cfg = _config(run)
    (run / L.CONFIG_FILE).write_text("method: lora\n")
    with pytest.raises(ConfigError, match="different"):
        ContinualRunner(cfg).run()
    with pytest.raises(ConfigError, match="reglora"):
        ContinualRunner(make_config(run, "reglora", tasks=["ScienceQA"])).run()
    with pytest.raises(ConfigError, match="task order"):
        ContinualRunner(make_config(run, "lora", tasks=["TextVQA", "ScienceQA"])).run()


def test_checkpoint_cut_short_by_a_kill_is_skipped(tmp_path: Path) -> None:
    from sefe.sefe_train.safeguards import resumable_checkpoint

    ck = tmp_path / "checkpoints"
    assert resumable_checkpoint(ck) is None
    (ck / "checkpoint-2").mkdir(parents=True)
    (ck / "checkpoint-2" / "trainer_state.json").write_text('{"global_step": 2}')
    (ck / "checkpoint-10").mkdir()
    (ck / "checkpoint-10" / "trainer_state.json").write_text('{"global_st')  # killed while writing
    (ck / "checkpoint-12").mkdir()  # killed before trainer_state.json
    assert resumable_checkpoint(ck) == str(ck / "checkpoint-2")
    names = ["broken-checkpoint-10", "broken-checkpoint-12", "checkpoint-2"]
    assert sorted(p.name for p in ck.iterdir()) == names


def _corrupt(path: Path, how: str) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if how == "cut" else data[:8] + b"{garbage" + data[16:])


@pytest.mark.parametrize(
    ("victim", "how"),
    [("adapter_model.safetensors", "cut"), ("adapter_model.safetensors", "garbage"), ("optimizer.pt", "cut")],
)
def test_a_corrupt_newest_checkpoint_is_skipped_and_the_one_before_resumed(
    tmp_path: Path, victim: str, how: str, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    with pytest.raises(Crash):
        ContinualRunner(_config(run), callbacks=[CrashAfter(5)]).run()
    ck = run / "1_ScienceQA.partial" / "checkpoints"
    assert sorted(p.name for p in ck.iterdir()) == ["checkpoint-2", "checkpoint-4"]
    _corrupt(ck / "checkpoint-4" / victim, how)

    rec = Recorder()
    ContinualRunner(_config(run), callbacks=[rec]).run()  # crashed on every rerun before
    assert rec.begins[0]["global_step"] == 2 and rec.steps == [3, 4, 5]  # from the newest that loads
    shown = " ".join(capsys.readouterr().err.split())
    assert "skipping checkpoint" in shown and "checkpoint-4" in shown and victim in shown
    assert [s["task"] for s in orjson.loads((run / "state.json").read_bytes())["done"]] == ["ScienceQA"]


def test_a_full_disk_is_one_line_naming_the_stage_and_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ENOSPC injected where the bytes are written: safetensors' own error, as a full disk raises it."""
    import transformers.modeling_utils as mu
    from safetensors import SafetensorError

    from sefe.errors import DISK_FULL_EXIT, DiskFull, one_line

    def full(*args: object, **kwargs: object) -> None:
        raise SafetensorError(
            'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on '
            'device" })'
        )

    monkeypatch.setattr(mu, "safe_save_file", full)  # every weights file transformers writes
    run = tmp_path / "run"
    with pytest.raises(DiskFull) as ei:
        ContinualRunner(_config(run)).run()
    assert ei.value.exit_code == DISK_FULL_EXIT == 5
    line = one_line(ei.value)
    assert "stage 1 (ScienceQA)" in line and str(run / "1_ScienceQA.partial") in line
    assert "no space left" in line and "MiB free" in line
    assert not (run / "1_ScienceQA").exists()  # nothing half-written under a final name, nothing marked done
    assert orjson.loads((run / "state.json").read_bytes())["done"] == []
