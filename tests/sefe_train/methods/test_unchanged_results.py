"""`lora` and `reglora` give byte for byte what they gave before the re-cut of `sefe_train/` (issue 16).

Two proofs. (1) Recorded hashes: `record()` (two stages of `reglora` with `accumulate: union`, `lora`'s
stage 2 on top of reglora's stage 1, and the `accumulate: concat` keys of the same adapters through the
method's `after_task`) was run on main at 0d442a3, the commit before issue 16 moved the method contract out
of the runner, with `OMP_NUM_THREADS=1 python -m tests.sefe_train.methods.test_unchanged_results` (torch
2.13.0+cpu, CPU capability AVX512); it printed `INPUTS` and `RECORDED`. The same command re-records them.
The hashes hold only for the training inputs of that day (tiny model, tokenisation, coin-mini images:
`INPUTS` fingerprints them) and for that torch build and CPU kernel family (`RECORDED_ON`): elsewhere the
comparison is skipped with the reason instead of failing on a legitimate change. (2) Always: the runner's
files equal those of a stage written out as plain calls (`_legacy_stage`: fresh LoRA, RegLoRA penalty,
train, adapter, keys, merge), whatever the inputs are.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from sefe.sefe_train.runner import ContinualRunner
from tests.helpers.train import make_config

pytestmark = pytest.mark.slow

SETTINGS = ["train.max_steps=4", "eval.enabled=false"]

#: torch build and CPU kernel family of the recording (float results may differ on others).
RECORDED_ON = {"torch": "2.13.0+cpu", "cpu": "AVX512"}
INPUTS = "39797781eb3590a4584b537aa388aff430991ad738c65ecf87e07458c8046f00"
RECORDED = {
    "reglora/1_ScienceQA/adapter/adapter_model.safetensors": "484deca94ffa9459baebf0b81fa88b114fa53f4769db4cfb6c8b64f7015e1e1e",  # noqa: E501
    "reglora/1_ScienceQA/keys.safetensors": "4983737cc54f2ff2ce1283037d791b7bd82187f229e02e43a123667d949ff9db",  # noqa: E501
    "reglora/1_ScienceQA/merged/model.safetensors": "e02246ab5e6d334734e82ca01808dc52a8281b3a4de4e297b7944d35c9bdb5ed",  # noqa: E501
    "reglora/2_TextVQA/adapter/adapter_model.safetensors": "75253b29f8bd87368680574290aa4e781fe48ef9f5b81eb0f2a48a8041b1b664",  # noqa: E501
    "reglora/2_TextVQA/keys.safetensors": "d9c7685a23ee4eb2ba15ddbef77f90d6a876b9db2dfc405c60f52faae0c3ff7a",
    "reglora/2_TextVQA/merged/model.safetensors": "e1948138c65e9c1b6f2ba7c6e6fe9dce9836870edcce399f982b2cdfe64c5891",  # noqa: E501
    "lora/2_TextVQA/adapter/adapter_model.safetensors": "218a5e9d625e164f99c921af1aa291e5d542576d2e8a7135f718090c0f69a0f6",  # noqa: E501
    "lora/2_TextVQA/merged/model.safetensors": "66d3b7e3d47af73c7f6fdef2116d2fc23cbdb6ef35698ddc4c7273d82ea9659e",  # noqa: E501
    "concat/1_ScienceQA/keys.safetensors": "4da37b6a8c71b9b1ce176cbfbe812b6389105226bba57f153bb0ca46cb801584",
    "concat/2_TextVQA/keys.safetensors": "fb380b3662b10e77ff7211a8fd39d4476d84d9dafb762d6814a17d34ede84b1b",
}
STAGES = ["1_ScienceQA", "2_TextVQA"]
COMPARED = [
    "1_ScienceQA/adapter/adapter_model.safetensors",
    "1_ScienceQA/keys.safetensors",
    "1_ScienceQA/merged/model.safetensors",
    "2_TextVQA/adapter/adapter_model.safetensors",
    "2_TextVQA/keys.safetensors",
    "2_TextVQA/merged/model.safetensors",
]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def inputs_fingerprint(cfg) -> str:
    """sha256 of what training reads: the tiny base model's weights and every training item of the tasks."""
    import numpy as np

    from sefe.models.dataset import LlavaDataset
    from sefe.sefe_train.stage_model import load_base

    model, processor = load_base(cfg, None)
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().float().numpy().tobytes())
    for task in cfg.tasks:
        data = LlavaDataset(cfg.train_path(task), cfg.resolved_data_root(), processor, cfg.train.max_length)
        for i in range(len(data)):
            item = data[i]
            for key in ("input_ids", "labels", "pixel_values"):
                value = item[key]
                h.update(key.encode() + (b"-" if value is None else np.asarray(value).tobytes()))
    return h.hexdigest()


def _legacy_stage(cfg, k: int, out: Path) -> None:
    """Stage k as the runner did it before the method interface, as plain calls."""
    from transformers import set_seed

    from sefe.models.dataset import DataCollator, LlavaDataset
    from sefe.models.llava import save_llava
    from sefe.sefe_train.reglora.keys import KeyStore
    from sefe.sefe_train.reglora.penalty import RegLoRAPenalty
    from sefe.sefe_train.stage_model import add_fresh_lora, load_base
    from sefe.sefe_train.trainer import LossTerm, build_trainer

    task = cfg.tasks[k - 1]
    prev = out / f"{k - 1}_{cfg.tasks[k - 2].name}" if k > 1 else None
    model, processor = load_base(cfg, prev / "merged" if prev else None)
    set_seed(cfg.train.seed + k)
    peft_model = add_fresh_lora(cfg, model)
    data = LlavaDataset(cfg.train_path(task), cfg.resolved_data_root(), processor, cfg.train.max_length)
    keys = prev / "keys.safetensors" if prev else None
    penalty = RegLoRAPenalty(KeyStore.load(keys), peft_model, cfg.reglora) if keys else None
    terms = [LossTerm("reglora_penalty", penalty, cfg.reglora.lam)] if penalty is not None else []
    stage = out / f"{k}_{task.name}"
    collate = DataCollator(processor)
    trainer = build_trainer(cfg, peft_model, processor, data, collate, stage / "ck", loss_terms=terms)
    trainer.train()
    peft_model.save_pretrained(str(stage / "adapter"))
    store = KeyStore.load(keys) if keys else KeyStore.empty()
    store.update_from_peft(peft_model, cfg.reglora)
    store.save(stage / "keys.safetensors")
    save_llava(peft_model.merge_and_unload(), processor, stage / "merged")


def _run_both(root: Path) -> None:
    # the hashes were recorded when `union` was the default (it is `concat` now, the release's)
    union = ["reglora.lam=1e5", "reglora.accumulate=union", *SETTINGS]
    ContinualRunner(make_config(root / "reglora", "reglora", union)).run()
    (root / "lora").mkdir()
    shutil.copytree(root / "reglora" / "1_ScienceQA", root / "lora" / "1_ScienceQA")
    ContinualRunner(make_config(root / "lora", "lora", SETTINGS)).run()


def test_runner_files_equal_the_pre_interface_stage_written_out(tmp_path: Path) -> None:
    cfg = make_config(
        tmp_path / "runner", "reglora", ["reglora.lam=1e5", "train.max_steps=2", "eval.enabled=false"]
    )
    ContinualRunner(cfg).run()
    legacy = tmp_path / "legacy"
    for k in (1, 2):
        _legacy_stage(cfg, k, legacy)
    for rel in COMPARED:
        assert _sha(tmp_path / "runner" / rel) == _sha(legacy / rel), rel


def recorded_on() -> dict[str, str]:
    import torch

    return {"torch": torch.__version__, "cpu": torch.backends.cpu.get_cpu_capability()}


def record(root: Path) -> tuple[str, dict[str, str]]:
    """(inputs fingerprint, sha256 per file of `RECORDED`) of the runs under `root`."""
    fingerprint = inputs_fingerprint(make_config(root / "probe", "reglora", SETTINGS))
    _run_both(root)
    _concat_keys(root / "reglora", root / "concat")
    return fingerprint, {rel: _sha(root / rel) for rel in RECORDED}


def test_lora_and_reglora_files_are_byte_identical_to_before(tmp_path: Path) -> None:
    if recorded_on() != RECORDED_ON:
        pytest.skip(
            f"hashes recorded with {RECORDED_ON}, this is {recorded_on()}; the runner/legacy test compares"
        )
    inputs, hashes = record(tmp_path)
    if inputs != INPUTS:
        pytest.skip(
            "the training inputs (tiny model, tokenisation, images) changed since the hashes were recorded "
            "at 0d442a3; test_runner_files_equal_the_pre_interface_stage_written_out still compares"
        )
    assert hashes == RECORDED


def _concat_keys(union: Path, out: Path) -> None:
    """The `accumulate: concat` keys of the same adapters, through the method's `after_task` hook."""
    from sefe.sefe_train import run_layout as L
    from sefe.sefe_train.methods.base import StageContext
    from sefe.sefe_train.methods.reglora import RegLoRA

    cfg = make_config(out, "reglora", ["reglora.accumulate=concat", *SETTINGS])
    method = RegLoRA.from_config(cfg)
    for k, stage in enumerate(STAGES, start=1):
        part = L.partial_dir(out, k, cfg.tasks[k - 1].name)
        shutil.copytree(union / stage / "adapter", part / "adapter")
        ctx = StageContext(cfg=cfg, k=k, task=cfg.tasks[k - 1], run_dir=out, part=part)
        method.after_task(ctx, method.reload_trained(ctx)[0])
        shutil.copytree(union / stage / "merged", part / "merged")  # base of stage k+1
        part.rename(out / stage)


if __name__ == "__main__":
    import json
    import sys
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        inputs, hashes = record(Path(tmp))
    json.dump({"recorded_on": recorded_on(), "inputs": inputs, "hashes": hashes}, sys.stdout, indent=1)
