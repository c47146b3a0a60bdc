"""`olora`, `lota` and `moelora` through the real runner: three coin-mini tasks with evaluation on the tiny
LLaVA, a kill in the middle of stage 2 (after its step-2 checkpoint), a rerun of the same command that resumes
it, then each method's defining property checked on the finished run's files and `sefe report` over all three.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import torch
from safetensors.numpy import load_file
from transformers import TrainerCallback

from sefe.sefe_train.runner import ContinualRunner
from tests.helpers.train import make_config

pytestmark = pytest.mark.slow

TASKS = ["ScienceQA", "TextVQA", "ImageNet"]
STEPS = 4
RESUME = [f"train.max_steps={STEPS}", "train.save_steps=2", "train.save_total_limit=2"]
LM_LINEAR = (".q_proj.", ".k_proj.", ".v_proj.", ".o_proj.", ".gate_proj.", ".up_proj.", ".down_proj.")


class Crash(RuntimeError):
    pass


@dataclass
class Steps(TrainerCallback):
    """Per Trainer run (= stage): the step it began at; optionally a simulated kill at (stage, step)."""

    crash_at: tuple[int, int] | None = None
    begins: list[int] = field(default_factory=list)

    def on_train_begin(self, args, state, control, **kwargs):
        self.begins.append(state.global_step)

    def on_step_end(self, args, state, control, **kwargs):
        if self.crash_at == (len(self.begins), state.global_step):
            raise Crash(f"simulated kill in stage {len(self.begins)} at step {state.global_step}")


@dataclass
class CalibrationSpy:
    """Wraps `build_trainer`: for every LoTA calibration Trainer, τ = W_after - W_before of the target weights
    (fp32, in the method's module order), taken around its `train()`; other Trainers pass through."""

    real: Any
    taus: list[dict[str, torch.Tensor]] = field(default_factory=list)

    def __call__(self, cfg: Any, model: Any, *args: Any, **kwargs: Any) -> Any:
        from sefe.sefe_train.methods.lota import CALIBRATION_DIR, target_weights

        trainer = self.real(cfg, model, *args, **kwargs)
        if Path(args[3]).name != CALIBRATION_DIR:
            return trainer
        weights = target_weights(model, cfg.lora.target_regex)
        before = {n: w.detach().float().clone() for n, w in weights.items()}
        train = trainer.train

        def spied(*a: Any, **k: Any) -> Any:
            out = train(*a, **k)
            self.taus.append({n: w.detach().float() - before[n] for n, w in weights.items()})
            return out

        trainer.train = spied
        return trainer


@dataclass
class Run:
    path: Path
    resumed: Steps
    before_resume: dict[str, bytes]  # stage-2 partial files that existed at the kill
    calibrations: list[dict[str, torch.Tensor]] = field(default_factory=list)  # LoTA: τ of each calibration


def _run(root: Path, method: str, extra: list[str]) -> Run:
    import sefe.sefe_train.trainer as trainer_module

    out = root / method
    cfg = make_config(out, method, [*RESUME, *extra], tasks=TASKS)
    spy = CalibrationSpy(trainer_module.build_trainer)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(trainer_module, "build_trainer", spy)
        run = _crash_and_resume(out, cfg, method)
    run.calibrations = spy.taus
    return run


def _crash_and_resume(out: Path, cfg: Any, method: str) -> Run:
    with pytest.raises(Crash):
        ContinualRunner(cfg, callbacks=[Steps(crash_at=(2, 3))]).run()
    part = out / "2_TextVQA.partial"
    assert (out / "1_ScienceQA").is_dir() and not (out / "2_TextVQA").exists()
    assert [s["task"] for s in orjson.loads((out / "state.json").read_bytes())["done"]] == ["ScienceQA"]
    assert (part / "checkpoints" / "checkpoint-2").is_dir()
    assert not (part / ".lota_calibration").exists()  # LoTA's calibration leaves no checkpoint behind
    before = {p.name: p.read_bytes() for p in part.glob("*.safetensors")}
    steps = Steps()
    ContinualRunner(cfg, callbacks=[steps]).run()
    assert steps.begins == [2, 0], "stage 2 must continue from its checkpoint, stage 3 start fresh"
    state = orjson.loads((out / "state.json").read_bytes())
    assert [s["task"] for s in state["done"]] == TASKS and state["method"] == method
    acc = orjson.loads((out / "accuracy.json").read_bytes())
    assert [len(r) for r in acc["rows"]] == [1, 2, 3]  # evaluated after every stage, tasks 1..k
    assert not list(out.glob("*.partial")) and not list(out.glob("*/.*"))
    return Run(out, steps, before)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Run]:
    root = tmp_path_factory.mktemp("methods2")
    return {
        "olora": _run(root, "olora", []),
        "lota": _run(
            root, "lota", ["method_options.lota.calibration_steps=2", "method_options.lota.lr=2e-3"]
        ),
        "moelora": _run(root, "moelora", ["method_options.moelora.experts=4"]),
    }


def merged(folder: Path) -> dict[str, np.ndarray]:
    from sefe.models.llava import load_llava

    model, _ = load_llava(folder, dtype="float32")
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def keys_masks(path: Path) -> dict[str, np.ndarray]:
    from sefe.sefe_train.reglora.keys import KeyStore

    store = KeyStore.load(path)
    return {n: store.mask(n) for n in store.module_names}


def log_names(path: Path) -> set[str]:
    return {k for line in path.read_bytes().splitlines() for k in orjson.loads(line)}


# ---- O-LoRA --------------------------------------------------------------------------------------------


def test_olora_keeps_every_tasks_a_and_penalises_overlap_from_task_two(runs: dict[str, Run]) -> None:
    from sefe.sefe_train.methods._orthogonal import PrevAStore

    run = runs["olora"].path
    stages = ["1_ScienceQA", "2_TextVQA", "3_ImageNet"]
    stores = [PrevAStore.load(run / s / "olora_prev_a.safetensors") for s in stages]
    assert [s.tasks for s in stores] == [1, 2, 3]
    assert len(stores[0].prev) == 14  # 2 layers x 7 language-model linears, no vision tower
    for k, s in enumerate(stores, start=1):
        adapter = load_file(str(run / stages[k - 1] / "adapter" / "adapter_model.safetensors"))
        for name, rows in s.prev.items():
            assert rows.shape[0] == 8 * k  # lora.r = 8 per task, stacked
            a_k = adapter[f"base_model.model.{name}.lora_A.weight"]
            np.testing.assert_array_equal(rows[8 * (k - 1) :].numpy(), a_k)  # this task's A, appended
            if k > 1:
                assert torch.equal(rows[: 8 * (k - 1)], stores[k - 2].prev[name])  # earlier rows kept
    assert "olora_orth" not in log_names(run / stages[0] / "train_log.jsonl")
    for s in stages[1:]:
        logs = [orjson.loads(x) for x in (run / s / "train_log.jsonl").read_bytes().splitlines()]
        orth = [x["olora_orth"] for x in logs if "olora_orth" in x]
        assert len(orth) >= STEPS and all(v > 0 for v in orth)
        assert orth[-1] < 0.9 * orth[0], f"{s}: training did not lower the overlap with earlier A's: {orth}"


# ---- LoTA ----------------------------------------------------------------------------------------------


def test_lota_trains_only_masked_entries_and_later_masks_are_disjoint(runs: dict[str, Run]) -> None:
    from sefe.sefe_train.methods._sparse_mask import n_keep

    r = runs["lota"]
    stages = ["1_ScienceQA", "2_TextVQA", "3_ImageNet"]
    masks = [keys_masks(r.path / s / "lota_mask.safetensors") for s in stages]
    names = sorted(masks[0])
    assert len(names) == 14 and all(".language_model." in n for n in names)
    total = sum(m.size for m in masks[0].values())
    for m in masks:
        assert sum(int(v.sum()) for v in m.values()) == n_keep(total, 1.0)  # keep 1 %, one global budget
    for n in names:
        assert not (masks[0][n] & masks[1][n]).any() and not (masks[2][n] & (masks[0][n] | masks[1][n])).any()
    union = keys_masks(r.path / "3_ImageNet" / "lota_masks.safetensors")
    for n in names:
        np.testing.assert_array_equal(union[n], masks[0][n] | masks[1][n] | masks[2][n])
    # between consecutive merged models, only this stage's masked entries moved (stage 2 was resumed)
    w = [merged(r.path / s / "merged") for s in stages]
    for k in (1, 2):
        moved = 0
        for n in names:
            diff = w[k][n + ".weight"] != w[k - 1][n + ".weight"]
            assert not (diff & ~masks[k][n]).any(), f"stage {k + 1}: {n} changed outside its mask"
            moved += int(diff.sum())
        assert moved > 0.5 * sum(int(m.sum()) for m in masks[k].values())
    vision = [key for key in w[0] if ".vision_tower." in key]
    assert vision and all(np.array_equal(w[0][key], w[2][key]) for key in vision)
    # the killed stage reused its mask instead of calibrating again
    assert (
        r.before_resume["lota_mask.safetensors"]
        == (r.path / "2_TextVQA" / "lota_mask.safetensors").read_bytes()
    )


def test_lota_mask_is_the_top_k_of_its_own_calibration(runs: dict[str, Run]) -> None:
    """Each stage's mask is exactly the top 1 % of |τ| of the calibration that stage ran (ties by module
    order and index, earlier tasks' entries excluded), and calibration never moved an earlier task's entry.
    Stage 2 was killed after calibrating: its resumed run reused the mask and did not calibrate again."""
    from sefe.sefe_train.methods._sparse_mask import n_keep

    r = runs["lota"]
    stages = ["1_ScienceQA", "2_TextVQA", "3_ImageNet"]
    assert len(r.calibrations) == 3
    earlier: dict[str, np.ndarray] | None = None
    for stage, tau in zip(stages, r.calibrations, strict=True):
        mask = keys_masks(r.path / stage / "lota_mask.safetensors")
        names = list(tau)  # the method's module order: ties go to the earlier module, then the lower index
        assert sorted(names) == sorted(mask)
        mag = np.concatenate([tau[n].abs().numpy().reshape(-1) for n in names])
        if earlier is not None:
            ex = np.concatenate([earlier[n].reshape(-1) for n in names])
            assert not mag[ex].any(), f"{stage}: calibration moved entries of an earlier task's mask"
            mag = np.where(ex, -1.0, mag)
        chosen = np.argsort(-mag, kind="stable")[: n_keep(mag.size, 1.0)]
        want = np.zeros(mag.size, dtype=bool)
        want[chosen] = True
        got = np.concatenate([mask[n].reshape(-1) for n in names])
        assert int((got != want).sum()) == 0, f"{stage}: the mask is not the top-k of its calibration"
        earlier = mask if earlier is None else {n: earlier[n] | mask[n] for n in names}


def test_lota_refuses_weight_decay(tmp_path: Path) -> None:
    from sefe.sefe_train.config import ConfigError

    cfg = make_config(tmp_path / "r", "lota", ["train.weight_decay=0.1"], tasks=TASKS[:1])
    with pytest.raises(ConfigError, match="weight_decay"):
        ContinualRunner(cfg)


# ---- MoELoRA -------------------------------------------------------------------------------------------


def test_moelora_keeps_plain_base_weights_and_continues_its_experts(runs: dict[str, Run]) -> None:
    from sefe.sefe_train.methods import _moe_layer as M

    run = runs["moelora"].path
    stages = ["1_ScienceQA", "2_TextVQA", "3_ImageNet"]
    w = [merged(run / s / "merged") for s in stages]  # plain checkpoints: load without the experts
    lm = [k for k in w[0] if any(t in k for t in LM_LINEAR) and ".language_model." in k]
    assert len(lm) == 14
    assert all(np.array_equal(w[0][k], w[2][k]) for k in lm)  # nothing merges into the base weights
    proj = [k for k in w[0] if "multi_modal_projector" in k]
    assert any(not np.array_equal(w[0][k], w[1][k]) for k in proj)  # the projector is trained
    states = [M.load(run / s / "moelora.safetensors") for s in stages]
    assert states[0][1]["experts"] == "4" and len(states[0][0]) == 14 * 3
    for (s_prev, _), (s_next, _) in itertools.pairwise(states):
        for key, prev in s_prev.items():
            # the same experts continue: a few Adam steps (lr 5e-3) move them a little; a fresh router
            # (uniform init of ±1/8) or a fresh A (N(0, 0.01)) would differ far more
            assert float((s_next[key] - prev).abs().max()) < 0.05, key
        assert any(not torch.equal(s_next[k], s_prev[k]) for k in s_prev)
    # the stage's trained artefact holds the same experts plus the projector
    trained = load_file(str(run / stages[2] / "moelora" / "experts.safetensors"))
    assert any(k.startswith("projector:") for k in trained)
    for key, value in states[2][0].items():
        np.testing.assert_array_equal(trained[key], value.numpy())


def test_moelora_stage_reloads_with_its_experts(runs: dict[str, Run]) -> None:
    from sefe.sefe_train.config import load_config
    from sefe.sefe_train.methods import _moe_layer as M
    from sefe.sefe_train.methods import resolve

    run = runs["moelora"].path
    cfg = load_config(run / "config.yaml")
    method = resolve(cfg)
    runner = ContinualRunner(cfg)
    ctx = runner.context(3, cfg.tasks[2])
    model, _ = method.load_merged(ctx, run / "3_ImageNet" / "merged")
    saved, _ = M.load(run / "3_ImageNet" / "moelora.safetensors")
    layers = dict(M.layers(model))
    assert len(layers) == 14 and all(layer.experts == 4 for layer in layers.values())
    for key, value in M.state_dict(model).items():
        torch.testing.assert_close(value.float(), saved[key].float())


# ---- all three side by side ----------------------------------------------------------------------------


def test_report_puts_the_three_methods_side_by_side(runs: dict[str, Run], tmp_path: Path) -> None:
    from sefe.evaluation.report import build_report

    paths = [runs[m].path for m in ("olora", "lota", "moelora")]
    report = build_report(paths, tmp_path / "report", plots=False)
    assert [r.label for r in report.runs] == ["olora", "lota", "moelora"]
    assert all(r.metrics.stages == 3 for r in report.runs)
    text = (tmp_path / "report" / "report.md").read_text(encoding="utf-8")
    assert "| method | `olora` | `lota` | `moelora` |" in text
    data: Any = json.loads((tmp_path / "report" / "report.json").read_text(encoding="utf-8"))
    assert [r["config"]["method"] for r in data["runs"]] == ["olora", "lota", "moelora"]
    assert all(len(r["matrix"]["rows"]) == 3 for r in data["runs"])
