"""The loss hook: λ · penalty counts once per optimizer step whatever the gradient accumulation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sefe.sefe_train.stage_model import add_fresh_lora, load_base
from sefe.sefe_train.trainer import LossTerm, build_trainer
from tests.helpers.train import make_config

pytestmark = pytest.mark.slow

LAM, CONST = 100.0, 1.0


def _logged_loss(tmp_path: Path, per_device: int, lam: float) -> tuple[float, float | None]:
    from sefe.models.dataset import DataCollator, LlavaDataset

    cfg = make_config(
        tmp_path,
        "reglora",
        [
            "train.global_batch_size=2",
            f"train.per_device_batch_size={per_device}",
            "train.max_steps=1",
            "train.group_by_length=false",
            "lora.dropout=0",
        ],
        tasks=["ScienceQA"],
    )
    model, processor = load_base(cfg, None)
    torch.manual_seed(0)
    peft_model = add_fresh_lora(cfg, model)
    data = LlavaDataset(cfg.train_path(cfg.tasks[0]), cfg.resolved_data_root(), processor, 128)
    data.records = data.records[:2]
    data.lengths = data.lengths[:2]
    terms = [LossTerm("reglora_penalty", lambda: torch.tensor(CONST), lam)]
    collate = DataCollator(processor)
    trainer = build_trainer(cfg, peft_model, processor, data, collate, tmp_path / "ck", loss_terms=terms)
    assert trainer.args.gradient_accumulation_steps == 2 // per_device
    trainer.train()
    log = next(entry for entry in trainer.state.log_history if "loss" in entry)
    return float(log["loss"]), log.get("reglora_penalty")


def test_penalty_counted_once_per_step_with_and_without_accumulation(tmp_path: Path) -> None:
    ce_ga, none = _logged_loss(tmp_path / "a", per_device=1, lam=0.0)
    assert none is None
    with_ga, pen = _logged_loss(tmp_path / "b", per_device=1, lam=LAM)
    assert pen == pytest.approx(CONST)
    assert with_ga - ce_ga == pytest.approx(LAM * CONST, rel=1e-3)
    ce_one, _ = _logged_loss(tmp_path / "c", per_device=2, lam=0.0)
    without_ga, _ = _logged_loss(tmp_path / "d", per_device=2, lam=LAM)
    assert without_ga - ce_one == pytest.approx(LAM * CONST, rel=1e-3)
