"""The multi-process path on CPU: `torchrun --nproc-per-node 2` (gloo) runs two tiny RegLoRA stages; rank 0
writes the artefacts, rank 1 waits for state.json, and the Trainer really ran data-parallel (world size 2)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

pytestmark = pytest.mark.slow


def test_torchrun_two_processes_gloo(tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        "-m", "sefe.cli", "train", "--method", "reglora", "--out", str(out), "--tasks", "ScienceQA,TextVQA",
        "--max-steps", "2", "--no-eval",
        "--set", "train.global_batch_size=4", "--set", "train.per_device_batch_size=2",
        "--set", "train.max_length=192", "--set", "lora.r=4",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # both ranks finished the whole run
    assert (proc.stdout + proc.stderr).count("(2/2 stages done)") == 2
    state = orjson.loads((out / "state.json").read_bytes())
    assert [s["task"] for s in state["done"]] == ["ScienceQA", "TextVQA"]
    for stage in state["done"]:
        assert stage["train_metrics"]["world_size"] == 2.0  # DDP, not two independent single runs
        assert stage["train_metrics"]["global_step"] == 2.0
    for name in ("1_ScienceQA", "2_TextVQA"):
        assert (out / name / "adapter" / "adapter_model.safetensors").is_file()
        assert (out / name / "merged" / "model.safetensors").is_file()
        assert (out / name / "keys.safetensors").is_file()
    assert not list(out.glob("*.partial"))
