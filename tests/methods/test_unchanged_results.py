"""`lora` and `reglora` on the method interface give byte for byte what the code before it gave.

The hashes below were recorded on main at 47168e1 (before the interface), torch 2.13.0 CPU, with the
settings of `_run`. The keys files of that code carried their metadata in hash order (safetensors writes a
map whose order changes per process); their recorded hashes are of the same bytes with the metadata keys
sorted (`canonical_safetensors`), which is what `KeyStore.save` writes now. Tensors and adapters: raw bytes.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from sefe.sefe_train.runner import ContinualRunner
from tests.methods.conftest import make_config

pytestmark = pytest.mark.slow

SETTINGS = ["train.max_steps=4", "eval.enabled=false"]

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
#: The `accumulate: concat` keys of the same run (same adapters), recorded alike.
CONCAT_47168E1 = {
    "1_ScienceQA": "5fe500ef12ddcbc6644341dfc47ba25c005a08dce304d12eff53f3f1eeba3824",
    "2_TextVQA": "4bc557e407fe89c1db26143cd4195c3dd6c1b8c95b094f30c1806d8f10a5cacc",
}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_lora_and_reglora_files_are_byte_identical_to_before(tmp_path: Path) -> None:
    reg = make_config(tmp_path / "reglora", "reglora", ["reglora.lam=1e5", *SETTINGS])
    ContinualRunner(reg).run()
    (tmp_path / "lora").mkdir()
    shutil.copytree(tmp_path / "reglora" / "1_ScienceQA", tmp_path / "lora" / "1_ScienceQA")
    ContinualRunner(make_config(tmp_path / "lora", "lora", SETTINGS)).run()
    got = {rel: _sha(tmp_path / rel) for rel in MAIN_47168E1}
    assert got == MAIN_47168E1
    _check_concat_keys(tmp_path / "reglora", tmp_path / "concat")


def _check_concat_keys(union: Path, out: Path) -> None:
    """The `accumulate: concat` keys of the same adapters, through the method's `after_task` hook."""
    from sefe.sefe_train import run_layout as L
    from sefe.sefe_train.methods.base import StageContext
    from sefe.sefe_train.methods.reglora import RegLoRA

    cfg = make_config(out, "reglora", ["reglora.accumulate=concat", *SETTINGS])
    method = RegLoRA(cfg, cfg.options_for())
    for k, stage in enumerate(CONCAT_47168E1, start=1):
        part = L.partial_dir(out, k, cfg.tasks[k - 1].name)
        shutil.copytree(union / stage / "adapter", part / "adapter")
        ctx = StageContext(cfg=cfg, k=k, task=cfg.tasks[k - 1], run_dir=out, part=part)
        method.after_task(ctx, method.reload_trained(ctx)[0])
        shutil.copytree(union / stage / "merged", part / "merged")  # base of stage k+1
        part.rename(out / stage)
        assert _sha(out / stage / "keys.safetensors") == CONCAT_47168E1[stage]
