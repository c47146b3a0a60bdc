"""`fft`: one stage changes the language model and the projector, and leaves the vision tower as it was."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sefe.sefe_train.runner import ContinualRunner
from sefe.sefe_train.stage_model import load_base
from tests.helpers.methods import MethodRecorder
from tests.helpers.train import make_config

pytestmark = pytest.mark.slow


def _state(model) -> dict[str, np.ndarray]:
    return {k: v.detach().float().numpy().copy() for k, v in model.state_dict().items()}


def test_fft_trains_language_model_and_projector_not_vision(tmp_path: Path) -> None:
    from sefe.models.llava import load_llava

    cfg = make_config(
        tmp_path / "run",
        "fft",
        ["train.max_steps=3", "eval.enabled=false", "method_options.fft.lr=1e-3"],
        tasks=["ScienceQA"],
    )
    rec = MethodRecorder()
    ContinualRunner(cfg, callbacks=[rec]).run()
    model, trained = rec.begins[0]["model"], rec.begins[0]["trained"]
    assert trained and not any("vision_tower" in n for n in trained)
    assert all(n in trained for n, _ in model.named_parameters() if "language_model" in n)
    assert rec.begins[0]["group_lrs"] == [pytest.approx(1e-3), pytest.approx(1e-3)]  # LM, projector lr

    base = _state(load_base(cfg, None)[0])
    after = _state(load_llava(tmp_path / "run" / "1_ScienceQA" / "merged", dtype="float32")[0])
    assert set(base) == set(after)
    vision = [k for k in base if ".vision_tower." in k]
    proj = [k for k in base if "multi_modal_projector" in k]
    lm_linear = [k for k in base if ".language_model." in k and k.endswith("proj.weight")]
    assert vision and proj and len(lm_linear) == 14
    assert all(np.array_equal(base[k], after[k]) for k in vision)
    assert all(not np.array_equal(base[k], after[k]) for k in proj)
    assert all(not np.array_equal(base[k], after[k]) for k in lm_linear)
    assert not (tmp_path / "run" / "1_ScienceQA" / "adapter").exists()  # nothing to merge: no adapter
