"""The pieces every model family shares (`Turn`, `Encoded`, the LoRA target regex), apart from the registry.

`family.py` loads each family module by name; a family that imported `family.py` for these would close an
import circle, so they live here and `family.py` re-exports them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: A (question, answer) pair of a CoIN conversation; the last answer may be None (a generation prompt).
Turn = tuple[str, str | None]

#: PEFT `target_modules` regex shared by today's families: the attention and MLP projections of the language
#: model (`...language_model.layers.N.self_attn.q_proj`); vision towers reuse some of these names
#: (Qwen2.5-VL's blocks have `mlp.gate_proj`), hence the `language_model` anchor.
LANGUAGE_MODEL_LINEARS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)$"


@dataclass
class Encoded:
    """One record ready for a model: image tokens already expanded; `vision` holds the image's model inputs
    (LLaVA: `pixel_values` 3xHxW; Qwen: `pixel_values` patches x dim and `image_grid_thw` 1x3), empty for a
    text-only record."""

    input_ids: list[int]
    labels: list[int]
    vision: dict[str, Any] = field(default_factory=dict)
