"""Optional vLLM engine for `sefe eval run --engine vllm`: same prompts, greedy, much faster on GPUs.

A merged folder is a standard HF folder, which vLLM serves natively; what it needs from sefe is the prompt
text before image expansion (vLLM runs the folder's own processor on text and image):

- **LLaVA-1.5**: the vicuna_v1 prompt with one `<image>`; vLLM pads the image by its LLaVA processor.
- **another family** (`models/family.py`): `ModelFamily.prompt_text`, the folder's chat template with the
  image as the one placeholder the family's processor expands (Qwen's
  `<|vision_start|><|image_pad|><|vision_end|>`), the image as the HF engine opens it (RGB, unpadded), and
  generation stops at the folder's `generation_config.json` end tokens, as `model.generate` does there.
  `family_requests` builds these requests without vLLM, so tests can check their ids against the HF path.

vLLM is imported only when asked for (`MissingDependency` with the install hint when it is absent).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from sefe.errors import InputError, MissingDependency
from sefe.models.family import ModelFamily

INSTALL_HINT = "the vLLM engine needs vllm: pip install 'sefe[vllm]'"


def _vllm() -> Any:
    try:
        import vllm
    except ImportError as exc:
        raise MissingDependency(INSTALL_HINT) from exc
    return vllm


def vllm_generate_fn(model_dir: str, max_new_tokens: int, **engine_args: Any) -> Callable[..., list[str]]:
    """A LLaVA `generate(prompts, images)` backed by an offline `vllm.LLM` (greedy, temperature 0);
    `images` are those of the prompts with `<image>`, in order."""
    vllm = _vllm()
    llm = _llm(vllm, model_dir, engine_args)
    params = vllm.SamplingParams(temperature=0.0, max_tokens=max_new_tokens)

    def generate(prompts: list[str], images: list[Any]) -> list[str]:
        it = iter(images)
        requests = [request(p, next(it) if "<image>" in p else None) for p in prompts]
        return _texts(llm.generate(requests, params, use_tqdm=False))

    return generate


def family_generate_fn(
    model_dir: str, max_new_tokens: int, family: ModelFamily, **engine_args: Any
) -> tuple[Callable[..., list[str]], Any]:
    """(`generate(questions, images)`, the family's processor) for a folder of `family`: one image or None
    per question, prompts by `family_requests`, stopping at the folder's end tokens. The processor (no
    weights) is returned for the caller's box conversion."""
    vllm = _vllm()
    processor = family.load_processor(model_dir)
    stops = stop_token_ids(Path(model_dir))
    llm = _llm(vllm, model_dir, engine_args)
    params = vllm.SamplingParams(temperature=0.0, max_tokens=max_new_tokens, stop_token_ids=stops)

    def generate(questions: list[str], images: list[Any | None]) -> list[str]:
        requests = family_requests(family, processor, questions, images)
        return _texts(llm.generate(requests, params, use_tqdm=False))

    return generate, processor


def _llm(vllm: Any, model_dir: str, engine_args: dict[str, Any]) -> Any:
    """An offline `vllm.LLM` for one image per prompt; the caller's engine arguments may override that."""
    return vllm.LLM(model=model_dir, **{"limit_mm_per_prompt": {"image": 1}, **engine_args})


def request(prompt: str, image: Any | None) -> dict[str, Any]:
    """One vLLM prompt: its text, and its image as `multi_modal_data` when it has one."""
    req: dict[str, Any] = {"prompt": prompt}
    if image is not None:
        req["multi_modal_data"] = {"image": image}
    return req


def family_requests(
    family: ModelFamily, processor: Any, questions: Sequence[str], images: Sequence[Any | None]
) -> list[dict[str, Any]]:
    """The vLLM requests of a family's questions (one image or None each): `prompt_text` and the image."""
    if len(questions) != len(images):
        raise ValueError(f"{len(questions)} questions but {len(images)} image slots (None for text-only)")
    return [
        request(family.prompt_text(processor, q, img is not None), img)
        for q, img in zip(questions, images, strict=True)
    ]


class _EndTokens(BaseModel):
    """What the engine reads of `generation_config.json`: where `model.generate` stops."""

    model_config = ConfigDict(extra="ignore")

    eos_token_id: int | list[int] | None = None


def stop_token_ids(folder: Path) -> list[int] | None:
    """The folder's end tokens (`generation_config.json` `eos_token_id`), None without a generation config
    (vLLM then stops at the tokenizer's end token)."""
    path = folder / "generation_config.json"
    if not path.is_file():
        return None
    try:
        eos = _EndTokens.model_validate(json.loads(path.read_bytes())).eos_token_id
    except (OSError, ValueError, ValidationError) as exc:
        first = str(exc).splitlines()[0]
        raise InputError(
            f"{path}, field 'eos_token_id': not a token id or a list of them ({first})"
        ) from None
    if eos is None:
        return None
    return [eos] if isinstance(eos, int) else list(eos)


def _texts(outputs: Sequence[Any]) -> list[str]:
    return [o.outputs[0].text.strip() for o in outputs]
