"""What the local backend needs from a model family it may not import: load, and chat request -> inputs.

Why it exists: `asd_gen` and `models` share a floor and must not import each other, yet an image-text model
such as Qwen2.5-VL only sees its image when its prompt is built the family's way (its chat template, its
image tokens, its image processor; `AutoProcessor` refuses Qwen2.5-VL / InternVL without torchvision). So the
local backend accepts an object with this protocol, built by a layer above both (`sefe.commands.asd_family`
from `sefe.models.family`), and uses it instead of the generic transformers path.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class ChatInputs(Protocol):
    """Loads one image-text model and turns prompts (one question text and one PIL image or None per row)
    into left-padded `generate` inputs; the model's output is decoded with the tokenizer `load` returned."""

    def load(self, folder: Path) -> tuple[Any, Any]:
        """(model, text tokenizer) of the model folder."""
        ...

    def inputs(self, questions: Sequence[str], images: Sequence[Any | None]) -> dict[str, Any]:
        """Generation inputs (`input_ids`, `attention_mask` and the image's tensors), one row per question."""
        ...
