"""Fixtures for the trainer tests: the tiny LLaVA on the bundled data/coin-mini, real runs through the runner.

The two-task runs are session-scoped and shared: a RegLoRA run (ScienceQA -> TextVQA, large λ, evaluation on)
and a LoRA run that reuses its stage 1 folder (a complete `1_ScienceQA/` without a state entry is adopted by
the runner) and trains stage 2 without penalty. Stage 1 is identical for both methods (no keys exist yet).
"""

from __future__ import annotations

import shutil

import pytest

from tests.helpers.train import LAM, STEPS, Recorder, TwoTaskRuns, make_config, private_cache

__all__ = ["private_cache"]  # the autouse tiny-model cache, registered for this folder


@pytest.fixture(scope="session")
def two_task_runs(tmp_path_factory: pytest.TempPathFactory) -> TwoTaskRuns:
    from sefe.sefe_train.runner import ContinualRunner

    root = tmp_path_factory.mktemp("runs")
    reg_rec, lora_rec = Recorder(), Recorder()
    reg_cfg = make_config(root / "reglora", "reglora", [f"reglora.lam={LAM}", f"train.max_steps={STEPS}"])
    ContinualRunner(reg_cfg, callbacks=[reg_rec]).run()
    (root / "lora").mkdir()
    shutil.copytree(root / "reglora" / "1_ScienceQA", root / "lora" / "1_ScienceQA")
    lora_cfg = make_config(root / "lora", "lora", [f"train.max_steps={STEPS}", "eval.enabled=false"])
    ContinualRunner(lora_cfg, callbacks=[lora_rec]).run()
    return TwoTaskRuns(root / "reglora", root / "lora", reg_rec, lora_rec)
