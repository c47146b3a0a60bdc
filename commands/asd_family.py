"""`sefe asd build --backend local --model DIR`: a folder of a family sefe knows is prompted by that family.

Why here: the local backend (`asd_gen`) may not import `models` (same floor), so this layer, above both,
wraps `ModelFamily.load` / `generation_inputs` as the backend's `ChatInputs`. LLaVA folders and unknown
`model_type`s keep the generic transformers path (LLaVA-1.5's own template is not a chat model's).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sefe.models.family import ModelFamily, family_names, get_family

#: The image marker of CoIN text; the family places the image itself, so a stray marker is dropped.
_IMAGE_MARKER = "<image>"


class FamilyChatInputs:
    """`sefe.asd_gen.backends.chat_inputs.ChatInputs` over one model family (its processor kept on load)."""

    def __init__(self, family: ModelFamily) -> None:
        self.family = family
        self._processor: Any = None

    def load(self, folder: Path) -> tuple[Any, Any]:
        model, processor = self.family.load(folder)
        self._processor = processor
        return model, processor.tokenizer

    def inputs(self, questions: Sequence[str], images: Sequence[Any | None]) -> dict[str, Any]:
        if self._processor is None:
            raise RuntimeError("FamilyChatInputs.inputs called before load")
        cleaned = [q.replace(_IMAGE_MARKER, "").strip() for q in questions]
        return dict(self.family.generation_inputs(self._processor, cleaned, images))


def family_chat_inputs(model: str | None) -> FamilyChatInputs | None:
    """The family adapter for `--model` when it is a folder whose `config.json` `model_type` is a registered
    family other than LLaVA; else None (the backend's generic path decides, and reports bad folders)."""
    if model is None:
        return None
    config = Path(model).expanduser() / "config.json"
    if not config.is_file():
        return None
    try:
        model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None  # the backend's loader names the broken file
    if model_type == "llava" or model_type not in family_names():
        return None
    return FamilyChatInputs(get_family(model_type, where=f"{config}, field 'model_type'"))
