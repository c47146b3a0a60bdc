"""The model-family contract: what training, evaluation and ASD need from a vision-language model, per family.

sefe trains one recipe (SEFE's ASD + RegLoRA, and the other methods) on several backbones. Everything that
differs between backbones sits behind `ModelFamily`, one module per family, so no code outside `models/`
names a family:

- **assemble / load / save** a model and its processor with the family's transformers classes; a saved folder
  is a standard HF folder of that family (loadable by transformers and vLLM without sefe);
- **record -> ids and labels** (`encode`): CoIN's LLaVA conversation rendered through the family's chat
  template, loss on the assistant turns only, the image placeholder expanded to as many image tokens as the
  family's processor gives this image; `collate` batches encoded records (images of different sizes too);
- **generation inputs** (`generation_inputs`) for evaluation and the knowledge probe, same template, built
  from `prompt_text`: one question's generation prompt as text with its image as the single placeholder the
  family's standard processor expands, which is what vLLM takes (`sefe eval run --engine vllm`), so both
  engines see the same ids;
- **LoRA targets** (`lora_target_regex`): the language model's linear layers only, never the vision tower's;
  `projector_modules(model)` names the projector's modules for `lora.train_projector` (PEFT
  `modules_to_save`, matched as name suffixes; their parameters form the projector's parameter group);
- **boxes** (`box_to_family` / `box_from_family`): CoIN's Grounding boxes are normalised to the image padded
  to a square; a family whose model grounds otherwise converts CoIN targets for training and its answers back
  before scoring, so scorers only ever see CoIN's convention.

The family is chosen by name (`model.family` in a run config) or, by default, by the model folder's
`config.json` `model_type` (`family_for_folder`). Families are found through `_MODULES`: adding one is one
module exposing `FAMILY` and one line there (docs/MODELS.md). A family module takes the shared pieces
(`Turn`, `Encoded`, `LANGUAGE_MODEL_LINEARS`) from `family_types.py`, never from here: this module loads the
families, so importing it back would be a circle.

LLaVA-1.5 (`LlavaFamily`, below) is an adapter over the existing parity code (`llava.py`, `tokenization.py`,
`conversation.py`, `dataset.py`), which it calls and does not change.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from sefe.errors import InputError, MissingFile
from sefe.models.family_types import LANGUAGE_MODEL_LINEARS, Encoded, Turn


@runtime_checkable
class ModelFamily(Protocol):
    """One backbone family. Methods take the family's own `processor` (what `load` returned)."""

    name: str  # the registry name, also `config.json`'s `model_type`
    lora_target_regex: str  # PEFT target_modules: the language model's linears only

    def projector_modules(self, model: Any) -> list[str]:
        """The projector's module names in `model` (suffixes of their full names; no ModuleList)."""
        ...

    def load(self, path: str | Path, dtype: Any = "float32", attn_implementation: str = "sdpa") -> tuple:
        """(model, processor) from an HF folder of this family."""
        ...

    def load_processor(self, path: str | Path) -> Any:
        """The processor alone (no weights): what prompts and box conversion need beside another engine."""
        ...

    def save(self, model: Any, processor: Any, folder: str | Path) -> Path:
        """Write a standard HF folder atomically (a merged stage is one)."""
        ...

    def tiny_dir(self, cache_dir: Path | None = None) -> Path:
        """The folder of this family's tiny test model (built from a config, cached, no download)."""
        ...

    def encode(
        self, processor: Any, turns: Sequence[Turn], image: Any | None, max_length: int, where: str = "record"
    ) -> Encoded:
        """Ids and labels (assistant tokens only) of one record; `image` a PIL image or None."""
        ...

    def collate(self, processor: Any, items: Sequence[Encoded]) -> dict[str, Any]:
        """Right-padded batch tensors of encoded records, with the family's vision inputs."""
        ...

    def prompt_text(self, processor: Any, question: str, has_image: bool) -> str:
        """One question's generation prompt as text, before image expansion: the image (if any) is the one
        placeholder the family's standard processor (and vLLM) expands. `generation_inputs` tokenises it."""
        ...

    def generation_inputs(
        self, processor: Any, questions: Sequence[str], images: Sequence[Any | None]
    ) -> dict:
        """Left-padded generation inputs, one row per question (its image or None)."""
        ...

    def box_to_family(self, box: Sequence[float], image_size: tuple[int, int], processor: Any) -> list[float]:
        """CoIN box (normalised to the padded square) -> the family's convention for this image (W, H)."""
        ...

    def box_from_family(
        self, box: Sequence[float], image_size: tuple[int, int], processor: Any
    ) -> list[float]:
        """The family's box for this image (W, H) -> CoIN's convention."""
        ...

    def target_to_family(
        self, text: str, image_size: tuple[int, int], processor: Any, where: str = "record"
    ) -> str:
        """A CoIN Grounding answer (box first, maybe a description after) as this family is trained on it."""
        ...

    def answer_from_family(self, text: str, image_size: tuple[int, int], processor: Any) -> str:
        """A generated Grounding answer with its box back in CoIN's spelling (unchanged if it has none)."""
        ...


# ---- LLaVA-1.5: an adapter over the parity code --------------------------------------------------------


class LlavaFamily:
    """LLaVA-1.5 on transformers' LlavaForConditionalGeneration: the vicuna_v1 template and the release's
    tokenisation (`sefe.models.tokenization`), CLIP images padded to a square, boxes already CoIN's."""

    name = "llava"

    def projector_modules(self, model: Any) -> list[str]:
        return ["multi_modal_projector"]

    lora_target_regex = LANGUAGE_MODEL_LINEARS

    def load(self, path: str | Path, dtype: Any = "float32", attn_implementation: str = "sdpa") -> tuple:
        from sefe.models.llava import load_llava

        return load_llava(path, dtype=dtype, attn_implementation=attn_implementation)

    def load_processor(self, path: str | Path) -> Any:
        from sefe.models.llava import load_llava_processor

        return load_llava_processor(path)

    def save(self, model: Any, processor: Any, folder: str | Path) -> Path:
        from sefe.models.llava import save_llava

        return save_llava(model, processor, folder)

    def tiny_dir(self, cache_dir: Path | None = None) -> Path:
        from sefe.models.tiny import tiny_llava_dir

        return tiny_llava_dir(cache_dir=cache_dir)

    def encode(
        self, processor: Any, turns: Sequence[Turn], image: Any | None, max_length: int, where: str = "record"
    ) -> Encoded:
        from sefe.models.tokenization import image_token_count, tokenize_record

        count = image_token_count(processor) if image is not None else 0
        ids, labels = tokenize_record(
            _answered(turns, where), processor.tokenizer, count, max_length=max_length, where=where
        )
        vision = {}
        if image is not None:
            vision["pixel_values"] = processor.image_processor(images=image, return_tensors="pt")[
                "pixel_values"
            ][0]
        return Encoded(ids, labels, vision)

    def collate(self, processor: Any, items: Sequence[Encoded]) -> dict[str, Any]:
        from sefe.models.dataset import DataCollator

        features = [
            {"input_ids": e.input_ids, "labels": e.labels, "pixel_values": e.vision.get("pixel_values")}
            for e in items
        ]
        return DataCollator(processor)(features)

    def prompt_text(self, processor: Any, question: str, has_image: bool) -> str:
        """The vicuna_v1 generation prompt with one `<image>` line (vLLM's LLaVA processor expands it)."""
        from sefe.models.conversation import generation_prompt

        return generation_prompt(question, has_image)

    def generation_inputs(
        self, processor: Any, questions: Sequence[str], images: Sequence[Any | None]
    ) -> dict:
        from sefe.models.tokenization import generation_inputs

        _same_length(questions, images)
        prompts = [
            self.prompt_text(processor, q, img is not None) for q, img in zip(questions, images, strict=True)
        ]
        return generation_inputs(processor, prompts, [img for img in images if img is not None])

    def box_to_family(self, box: Sequence[float], image_size: tuple[int, int], processor: Any) -> list[float]:
        return [float(v) for v in box]  # CoIN's convention is LLaVA's: normalised to the padded square

    def box_from_family(
        self, box: Sequence[float], image_size: tuple[int, int], processor: Any
    ) -> list[float]:
        return [float(v) for v in box]

    def target_to_family(
        self, text: str, image_size: tuple[int, int], processor: Any, where: str = "record"
    ) -> str:
        return text

    def answer_from_family(self, text: str, image_size: tuple[int, int], processor: Any) -> str:
        return text


def _answered(turns: Sequence[Turn], where: str) -> list[tuple[str, str]]:
    out = []
    for i, (q, a) in enumerate(turns):
        if a is None:
            raise InputError(f"{where}: turn {i} has no answer (training records need one per turn)")
        out.append((q, a))
    return out


def _same_length(questions: Sequence[str], images: Sequence[Any | None]) -> None:
    if len(questions) != len(images):
        raise ValueError(f"{len(questions)} questions but {len(images)} image slots (None for text-only)")


# ---- the registry --------------------------------------------------------------------------------------

#: family name (= config.json model_type) -> the module that defines `FAMILY`.
_MODULES = {
    "internvl": "sefe.models.internvl",
    "llava": "sefe.models.family",
    "qwen2_5_vl": "sefe.models.qwen2_5_vl",
    "qwen3_vl": "sefe.models.qwen3_vl",
}

FAMILY: ModelFamily = LlavaFamily()


def family_names() -> list[str]:
    return sorted(_MODULES)


def get_family(name: str, where: str = "model.family") -> ModelFamily:
    """The family registered as `name`; an unknown name is a user error naming the known ones."""
    module = _MODULES.get(name)
    if module is None:
        raise InputError(f"{where}: unknown model family {name!r} (known: {', '.join(family_names())})")
    family = importlib.import_module(module).FAMILY
    if not isinstance(family, ModelFamily):
        raise TypeError(f"{module}.FAMILY does not implement ModelFamily")
    return family


def family_for_folder(path: str | Path) -> ModelFamily:
    """The family of an HF model folder, from its `config.json` `model_type`."""
    config = Path(path) / "config.json"
    if not config.is_file():
        raise MissingFile(f"{config} not found: not an HF model folder")
    try:
        model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError) as exc:
        raise InputError(f"{config}: not a JSON object with a 'model_type' ({exc})") from None
    if not isinstance(model_type, str):
        raise InputError(f"{config}: field 'model_type' missing")
    return get_family(model_type, where=f"{config}, field 'model_type'")


def resolve_family(name: str | None, path: str | Path | None) -> ModelFamily:
    """`model.family` when set, else the folder's `model_type`, else LLaVA (the tiny default and parts)."""
    if name:
        return get_family(name)
    if path is not None and (Path(path) / "config.json").is_file():
        return family_for_folder(path)
    return FAMILY
