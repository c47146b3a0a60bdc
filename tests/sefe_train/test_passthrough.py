"""Precision, gradient checkpointing and attention implementation reach the model and the Trainer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from sefe.sefe_train.runner import ContinualRunner
from sefe.sefe_train.stage_model import load_base
from tests.helpers.train import Recorder, TwoTaskRuns, make_config

pytestmark = pytest.mark.slow


def test_bf16_gradient_checkpointing_eager_one_step(tmp_path: Path) -> None:
    rec = Recorder()
    cfg = make_config(
        tmp_path / "run",
        "lora",
        [
            "model.dtype=bf16",
            "model.attn_implementation=eager",
            "train.gradient_checkpointing=true",
            "train.max_steps=1",
            "eval.enabled=false",
        ],
        tasks=["ScienceQA"],
    )
    ContinualRunner(cfg, callbacks=[rec]).run()
    begin = rec.begins[0]
    args = begin["args"]
    assert args.bf16 and not args.fp16
    assert args.activation_checkpointing and args.activation_checkpointing_kwargs == {"use_reentrant": False}
    assert begin["attn"] == "eager"
    assert begin["checkpointing"]  # enabled on the decoder by the Trainer
    assert begin["frozen_lm_dtypes"] == {torch.bfloat16}
    assert begin["trained_dtypes"] == {torch.float32}  # the optimizer works on fp32 LoRA + projector
    losses = [log["loss"] for log in rec.logs if "loss" in log]
    assert losses and all(torch.isfinite(torch.tensor(x)) for x in losses)
    merged_cfg = json.loads((tmp_path / "run" / "1_ScienceQA" / "merged" / "config.json").read_text())
    assert merged_cfg.get("dtype", merged_cfg.get("torch_dtype")) == "bfloat16"


def test_fp32_sdpa_defaults_in_the_two_task_run(two_task_runs: TwoTaskRuns) -> None:
    begin = two_task_runs.reglora_rec.begins[0]
    assert not begin["args"].bf16 and not begin["args"].fp16
    assert not begin["args"].activation_checkpointing
    assert begin["attn"] == "sdpa" and not begin["checkpointing"]
    assert begin["frozen_lm_dtypes"] == {torch.float32} and begin["trained_dtypes"] == {torch.float32}


@pytest.mark.parametrize("attn", ["sdpa", "eager", "flash_attention_2"])
@pytest.mark.parametrize(("dtype", "torch_dtype"), [("bf16", torch.bfloat16), ("fp32", torch.float32)])
def test_model_options_passed_to_the_loader(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, attn: str, dtype: str, torch_dtype: torch.dtype
) -> None:
    seen: dict[str, Any] = {}

    def fake_load(source: Any, dtype: Any = None, attn_implementation: str = "") -> tuple[None, None]:
        seen.update(source=source, dtype=dtype, attn=attn_implementation)
        return None, None

    monkeypatch.setattr("sefe.models.llava.load_llava", fake_load)
    cfg = make_config(tmp_path, "lora", [f"model.dtype={dtype}", f"model.attn_implementation={attn}"])
    load_base(cfg, None)
    assert seen["dtype"] == torch_dtype and seen["attn"] == attn and seen["source"].kind == "tiny"
    load_base(cfg, tmp_path / "1_ScienceQA" / "merged")  # later stages load the previous merged folder
    assert seen["source"].kind == "hf" and seen["source"].hf == str(tmp_path / "1_ScienceQA" / "merged")
