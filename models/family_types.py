"""The pieces every model family shares (`Turn`, `Encoded`, the LoRA target regex), apart from the registry.

`family.py` loads each family module by name; a family that imported `family.py` for these would close an
import circle, so they live here and `family.py` re-exports them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

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


class SmallSizes(BaseModel):
    """Family-neutral sizes of a small model built from configs (Micro-CoIN's warm start): each family's
    `SmallBuilder` maps them onto its own config. `cell_px` is the picture side one image token covers."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = 0
    vocab_size: int = Field(1024, gt=0)  # the BPE trainer's target (the corpus decides the real size)
    hidden_size: int = Field(128, gt=0)
    intermediate_size: int = Field(256, gt=0)
    num_layers: int = Field(2, gt=0)
    num_heads: int = Field(4, gt=0)
    num_kv_heads: int = Field(2, gt=0)
    max_position_embeddings: int = Field(512, gt=0)
    vision_hidden_size: int = Field(64, gt=0)
    vision_intermediate_size: int = Field(128, gt=0)
    vision_layers: int = Field(2, gt=0)
    vision_heads: int = Field(4, gt=0)
    image_size: int = Field(48, gt=0)
    cell_px: int = Field(16, gt=0)
    extra_corpus: tuple[str, ...] = ()  # tokenizer-training lines beside the built-in corpus
    split_digits: bool = True
