"""Two-task continual runs on data/coin-mini with the tiny LLaVA: RegLoRA protects task-1 key positions, LoRA
does not; merged weights equal base + (alpha/r)·B·A; artefacts follow docs/RUN_LAYOUT.md."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import orjson
import pytest
from safetensors import safe_open
from safetensors.numpy import load_file

from tests.helpers.train import LAM, STEPS, TwoTaskRuns

pytestmark = pytest.mark.slow


def merged_state(folder: Path) -> dict[str, np.ndarray]:
    """Reload a merged folder through the model loader (save/reload round trip) as fp32 numpy arrays."""
    from sefe.models.llava import load_llava

    model, _ = load_llava(folder, dtype="float32")
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def adapter_deltas(adapter: Path) -> dict[str, tuple[np.ndarray, np.ndarray, float]]:
    """module name -> (B, A, alpha/r) read from the PEFT adapter files (independent of peft's classes)."""
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    scale = cfg["lora_alpha"] / cfg["r"]
    raw = load_file(str(adapter / "adapter_model.safetensors"))
    out = {}
    for key, a in raw.items():
        if key.endswith(".lora_A.weight"):
            name = key.removeprefix("base_model.model.").removesuffix(".lora_A.weight")
            out[name] = (raw[key.replace(".lora_A.", ".lora_B.")], a, scale)
    return out


def read_keys(path: Path) -> dict[str, np.ndarray]:
    """Decode keys.safetensors by its documented format: little-endian packbits of the (out, in) mask."""
    with safe_open(str(path), framework="np") as fh:
        shapes = json.loads(fh.metadata()["shapes"])
        return {
            name: np.unpackbits(fh.get_tensor(name), bitorder="little")[: shp[0] * shp[1]]
            .reshape(shp)
            .astype(bool)
            for name, shp in shapes.items()
        }


def key_ratio(run: Path, keys: dict[str, np.ndarray]) -> float:
    """Mean over adapted linears of mean|ΔW_2| at task-1 keys / elsewhere (ΔW_2 = merged_2 - merged_1)."""
    w1 = merged_state(run / "1_ScienceQA" / "merged")
    w2 = merged_state(run / "2_TextVQA" / "merged")
    ratios = []
    for name, mask in keys.items():
        d = np.abs(w2[name + ".weight"] - w1[name + ".weight"])
        ratios.append(d[mask].mean() / d[~mask].mean())
    return float(np.mean(ratios))


def test_reglora_keeps_key_positions_and_lora_does_not(two_task_runs: TwoTaskRuns) -> None:
    keys1 = read_keys(two_task_runs.reglora / "1_ScienceQA" / "keys.safetensors")
    assert len(keys1) == 14  # 2 layers x (q, k, v, o, gate, up, down) of the language model, nothing else
    assert all(".language_model." in n for n in keys1)
    reg = key_ratio(two_task_runs.reglora, keys1)
    lora = key_ratio(two_task_runs.lora, keys1)
    assert reg < 0.3, f"RegLoRA (λ={LAM}) should keep ΔW_2 small at task-1 keys, ratio {reg:.3f}"
    assert lora > 0.7, f"plain LoRA has no reason to avoid task-1 keys, ratio {lora:.3f}"
    assert reg < lora / 3


def test_stage1_keys_are_the_top_percent_of_ba(two_task_runs: TwoTaskRuns) -> None:
    keys1 = read_keys(two_task_runs.reglora / "1_ScienceQA" / "keys.safetensors")
    deltas = adapter_deltas(two_task_runs.reglora / "1_ScienceQA" / "adapter")
    assert set(keys1) == set(deltas)
    for name, (b, a, _) in deltas.items():
        mag = np.abs(b.astype(np.float64) @ a.astype(np.float64))
        mask = keys1[name]
        assert mask.sum() == math.floor(mag.size * 0.02)  # M = 2 percent per matrix
        assert mag[mask].min() >= mag[~mask].max() - 1e-9 * mag.max()


def test_keys_accumulate_across_stages(two_task_runs: TwoTaskRuns) -> None:
    keys1 = read_keys(two_task_runs.reglora / "1_ScienceQA" / "keys.safetensors")
    keys2 = read_keys(two_task_runs.reglora / "2_TextVQA" / "keys.safetensors")
    for name, m1 in keys1.items():
        assert np.all(keys2[name][m1]), f"{name}: a task-1 key was lost after task 2"
        assert keys2[name].sum() > m1.sum()


def test_merged_equals_base_plus_scaled_ba(two_task_runs: TwoTaskRuns) -> None:
    run = two_task_runs.reglora
    w1 = merged_state(run / "1_ScienceQA" / "merged")
    w2 = merged_state(run / "2_TextVQA" / "merged")
    deltas = adapter_deltas(run / "2_TextVQA" / "adapter")
    assert deltas
    for name, (b, a, scale) in deltas.items():
        expected = w1[name + ".weight"] + scale * (b @ a)
        np.testing.assert_allclose(w2[name + ".weight"], expected, rtol=1e-5, atol=1e-6)
    # the vision tower is frozen and un-adapted; the projector is trained fully (modules_to_save)
    vision = [k for k in w1 if ".vision_tower." in k]
    assert vision and all(np.array_equal(w1[k], w2[k]) for k in vision)
    proj = [k for k in w1 if "multi_modal_projector" in k]
    adapter = load_file(str(run / "2_TextVQA" / "adapter" / "adapter_model.safetensors"))
    saved = {
        k.split("multi_modal_projector.")[1].replace("modules_to_save.default.", ""): v
        for k, v in adapter.items()
        if "multi_modal_projector" in k
    }
    for k in proj:
        np.testing.assert_array_equal(w2[k], saved[k.split("multi_modal_projector.")[1]])
    assert any(not np.array_equal(w1[k], w2[k]) for k in proj)


def test_penalty_logged_only_after_task_one_and_two_lr_groups(two_task_runs: TwoTaskRuns) -> None:
    rec = two_task_runs.reglora_rec
    assert len(rec.begins) == 2
    # stage 1: no keys yet, no penalty; stage 2: the penalty is logged and non-zero after the first step
    steps_per_stage = [b["global_step"] for b in rec.begins]
    assert steps_per_stage == [0, 0]
    stage2_logs = [log for log in rec.logs if "reglora_penalty" in log]
    assert stage2_logs and len(stage2_logs) >= STEPS - 1
    assert stage2_logs[0]["reglora_penalty"] == pytest.approx(0.0, abs=1e-12)  # B starts at zero
    assert max(log["reglora_penalty"] for log in stage2_logs) > 0
    for begin in rec.begins:
        assert begin["group_lrs"] == [pytest.approx(5e-3), pytest.approx(1e-3)]  # LoRA lr, projector lr
    assert not [log for log in two_task_runs.lora_rec.logs if "reglora_penalty" in log]


def test_run_layout_state_and_accuracy(two_task_runs: TwoTaskRuns) -> None:
    run = two_task_runs.reglora
    state = orjson.loads((run / "state.json").read_bytes())
    assert [(s["index"], s["task"]) for s in state["done"]] == [(1, "ScienceQA"), (2, "TextVQA")]
    assert state["method"] == "reglora"
    for stage in ("1_ScienceQA", "2_TextVQA"):
        folder = run / stage
        assert (folder / "adapter" / "adapter_config.json").is_file()
        assert (folder / "merged" / "config.json").is_file()
        assert (folder / "keys.safetensors").is_file()
        assert not (folder / "checkpoints").exists()
    assert not list(run.glob("*.partial")) and not list(run.glob(".*tmp*"))
    # evaluation after every stage: tasks 1..k, row k of the accuracy matrix
    acc = orjson.loads((run / "accuracy.json").read_bytes())
    assert acc["tasks"] == ["ScienceQA", "TextVQA"] and acc["mode"] == "compat"
    assert [len(r) for r in acc["rows"]] == [1, 2]
    assert all(v is not None and 0 <= v <= 100 for r in acc["rows"] for v in r)
    assert sorted(p.name for p in (run / "2_TextVQA" / "eval").glob("*.jsonl")) == [
        "ScienceQA.jsonl",
        "TextVQA.jsonl",
    ]
    lines = (run / "2_TextVQA" / "eval" / "TextVQA.jsonl").read_bytes().splitlines()
    assert len(lines) == 2  # eval.max_samples
    # beside it, the answers held against the tasks' pools (ScienceQA's letters, TextVQA's gold words)
    oop = orjson.loads((run / "out_of_pool.json").read_bytes())
    assert oop["tasks"] == ["ScienceQA", "TextVQA"] and [len(r) for r in oop["rows"]] == [1, 2]
    assert all(v is not None and 0 <= v <= 100 for r in oop["rows"] for v in r)
    taken = orjson.loads((run / "from_pool.json").read_bytes())["cells"]
    assert set(taken) == {"0,0", "1,0", "1,1"} and set(taken["1,0"]) == {"TextVQA"}
    # the LoRA run adopted the complete stage-1 folder (no state entry) and trained only stage 2
    lora_state = orjson.loads((two_task_runs.lora / "state.json").read_bytes())
    assert [s["task"] for s in lora_state["done"]] == ["ScienceQA", "TextVQA"]
    assert len(two_task_runs.lora_rec.begins) == 1
    assert not (two_task_runs.lora / "2_TextVQA" / "keys.safetensors").exists()
