"""`sefe_train.safeguards.checkpoint_problem`: what makes a checkpoint folder one a resume must not use, on
real files (safetensors and torch.save archives) cut short or overwritten."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from sefe.sefe_train import safeguards
from sefe.sefe_train.safeguards import checkpoint_problem


def _checkpoint(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "trainer_state.json").write_text('{"global_step": 4}')
    save_file(
        {"lora_A": torch.randn(8, 4), "lora_B": torch.zeros(4, 8)}, str(path / "adapter_model.safetensors")
    )
    torch.save({"state": {0: {"exp_avg": torch.randn(64)}}}, path / "optimizer.pt")
    return path


def test_a_whole_checkpoint_loads(tmp_path: Path) -> None:
    assert checkpoint_problem(_checkpoint(tmp_path / "checkpoint-4")) is None


@pytest.mark.parametrize("checksums", [True, False], ids=["small-file-checksums", "big-file-extents"])
@pytest.mark.parametrize(
    ("victim", "damage", "why"),
    [
        ("adapter_model.safetensors", lambda b: b[: len(b) - 7], "tensors end at byte"),
        ("adapter_model.safetensors", lambda b: b[:3], "shorter than a safetensors header"),
        ("adapter_model.safetensors", lambda b: b[:8] + b"{garbage" + b[16:], "adapter_model.safetensors: "),
        ("optimizer.pt", lambda b: b[: len(b) // 2], "not a torch zip archive"),
        ("trainer_state.json", lambda b: b[:5], "trainer_state.json: "),
    ],
)
def test_a_damaged_file_is_named_with_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, victim: str, damage, why: str, checksums: bool
) -> None:
    if not checksums:
        monkeypatch.setattr(safeguards, "CHECKSUM_LIMIT", 0)
    ck = _checkpoint(tmp_path / "checkpoint-4")
    (ck / victim).write_bytes(damage((ck / victim).read_bytes()))
    problem = checkpoint_problem(ck)
    assert problem is not None and problem.startswith(victim) and why in problem


def test_a_torch_member_with_a_flipped_byte_fails_its_checksum(tmp_path: Path) -> None:
    ck = _checkpoint(tmp_path / "checkpoint-4")
    data = bytearray((ck / "optimizer.pt").read_bytes())
    at = data.index(b"data/0") + 200  # inside the stored tensor bytes
    data[at] ^= 0xFF
    (ck / "optimizer.pt").write_bytes(bytes(data))
    problem = checkpoint_problem(ck)
    assert problem is not None and "optimizer.pt" in problem and "checksum" in problem
