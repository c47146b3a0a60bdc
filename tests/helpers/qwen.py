"""Helpers of the Qwen-family tests: the real-vocabulary gate, noise images, the labelled runs of a record."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from sefe.models import vocab


def require_qwen_vocab(folder: Path) -> Path:
    """`folder` when it holds the Qwen2 GGUF; else skip, or fail when `SEFE_REQUIRE_VOCAB` is set."""
    if not (folder / vocab.QWEN2_GGUF_NAME).is_file():
        reason = f"real Qwen2 vocabulary not found in {folder}: run `make install` (or `make vocab`)"
        if os.environ.get("SEFE_REQUIRE_VOCAB"):
            pytest.fail(reason + " (SEFE_REQUIRE_VOCAB is set: absence is a failure)")
        pytest.skip(reason)
    return folder


def noise_image(w: int, h: int, seed: int = 0) -> Image.Image:
    rng = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (h, w, 3), generator=rng, dtype=torch.uint8).numpy()
    return Image.fromarray(pixels, "RGB")


def label_runs(input_ids: list[int], labels: list[int], tokenizer: Any) -> list[list[int]]:
    """The contiguous labelled runs of a record, each checked to follow `<|im_start|>assistant\\n` and to
    label its own ids."""
    header = tokenizer("<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]
    runs: list[list[int]] = []
    for i, lab in enumerate(labels):
        if lab == -100:
            continue
        assert lab == input_ids[i]
        if i == 0 or labels[i - 1] == -100:
            assert input_ids[i - len(header) : i] == header
            runs.append([])
        runs[-1].append(lab)
    return runs
