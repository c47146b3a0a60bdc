"""`lora` and `reglora` on the method interface give byte for byte what the code before it gave.

Two proofs. (1) Recorded hashes: on main at 47168e1 (before the interface; torch 2.13.0 CPU) the run of
`_run_both` produced the files hashed in `MAIN_47168E1`. Those keys files carried their metadata in hash
order (safetensors writes a map whose order changes from process to process), so their recorded hashes are of
the same bytes with the metadata keys sorted (`canonical_safetensors`), which `KeyStore.save` writes now.
The recorded hashes only hold for the training inputs of that day (the tiny model, the tokenisation and the
images of coin-mini): `INPUTS_47168E1` fingerprints them, and a later change of the inputs (for instance a
tokeniser fix) skips that comparison with the reason, instead of failing on a legitimate change. (2) Always:
the runner's files equal those of the pre-interface stage written out as plain calls (`_legacy_stage`: fresh
LoRA, RegLoRA penalty, train, adapter, keys, merge), whatever the inputs are.
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

INPUTS_47168E1 = "270549d4e84577258ae24b99e9a21f0ace8c77c5d7e25f8b712f953b9bcc18cd"
MAIN_47168E1 = {
    "reglora/1_ScienceQA/adapter/adapter_model.safetensors": "4aecc39b170908563e241b81d7df18265df7266227faadc6148af079b3147747",  # noqa: E501
    "reglora/1_ScienceQA/keys.safetensors": "8c2d34a8d545d223d57ffd2616649fb837701b45c8d08144fcecd194632f4ba0",  # noqa: E501
    "reglora/1_ScienceQA/merged/model.safetensors": "21d1cf8790856ae1b0ee00155e75dc960df8372792e450e2d04217b2a1f8c178",  # noqa: E501
    "reglora/2_TextVQA/adapter/adapter_model.safetensors": "9f78030debd821e043cd812647d8b1e474afccaf6d88e9f31abe96487ef48426",  # noqa: E501
    "reglora/2_TextVQA/keys.safetensors": "a9d5684ed18e1e049a4669d17e283158c3c4aed4984285253bbc5907ed71d102",
    "reglora/2_TextVQA/merged/model.safetensors": "788c9df46bca578dec110754d3e55ebd1cfd1e6ed4b93543e70b1743a422ae1f",  # noqa: E501
    "lora/2_TextVQA/adapter/adapter_model.safetensors": "dd33802ea740c85050517a3ab6aa50abe018c334e9c6c2ecfbc2b0ed7c6c39e7",  # noqa: E501
    "lora/2_TextVQA/merged/model.safetensors": "973d689aac861f6a8a7792155a28a46bd079042b7ef491145a8d6ccaa34d0512",  # noqa: E501
}
#: The `accumulate: concat` keys of the same adapters, recorded alike.
CONCAT_47168E1 = {
    "1_ScienceQA": "5fe500ef12ddcbc6644341dfc47ba25c005a08dce304d12eff53f3f1eeba3824",
    "2_TextVQA": "4bc557e407fe89c1db26143cd4195c3dd6c1b8c95b094f30c1806d8f10a5cacc",
}
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


def test_lora_and_reglora_files_are_byte_identical_to_before(tmp_path: Path) -> None:
    cfg = make_config(tmp_path / "probe", "reglora", SETTINGS)
    if inputs_fingerprint(cfg) != INPUTS_47168E1:
        pytest.skip(
            "the training inputs (tiny model, tokenisation, images) changed since the hashes were recorded "
            "on main at 47168e1; test_runner_files_equal_the_pre_interface_stage_written_out still compares"
        )
    _run_both(tmp_path)
    got = {rel: _sha(tmp_path / rel) for rel in MAIN_47168E1}
    assert got == MAIN_47168E1
    _check_concat_keys(tmp_path / "reglora", tmp_path / "concat")


def _check_concat_keys(union: Path, out: Path) -> None:
    """The `accumulate: concat` keys of the same adapters, through the method's `after_task` hook."""
    from sefe.sefe_train import run_layout as L
    from sefe.sefe_train.methods.base import StageContext
    from sefe.sefe_train.methods.reglora import RegLoRA

    cfg = make_config(out, "reglora", ["reglora.accumulate=concat", *SETTINGS])
    method = RegLoRA.from_config(cfg)
    for k, stage in enumerate(CONCAT_47168E1, start=1):
        part = L.partial_dir(out, k, cfg.tasks[k - 1].name)
        shutil.copytree(union / stage / "adapter", part / "adapter")
        ctx = StageContext(cfg=cfg, k=k, task=cfg.tasks[k - 1], run_dir=out, part=part)
        method.after_task(ctx, method.reload_trained(ctx)[0])
        shutil.copytree(union / stage / "merged", part / "merged")  # base of stage k+1
        part.rename(out / stage)
        assert _sha(out / stage / "keys.safetensors") == CONCAT_47168E1[stage]
