"""Optional vLLM engine for `sefe eval run --engine vllm`: same prompts, greedy, much faster on GPUs.

vLLM expands the single `<image>` of each prompt itself and pads images by its own LLaVA processor, so the
merged folder written by `save_llava` is served as is. Imported only when asked for.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sefe.errors import MissingDependency

INSTALL_HINT = "the vLLM engine needs vllm: pip install 'sefe[vllm]'"


def vllm_generate_fn(model_dir: str, max_new_tokens: int, **engine_args: Any) -> Callable[..., list[str]]:
    """A `generate(prompts, images)` function backed by an offline `vllm.LLM` (greedy, temperature 0)."""
    try:
        from vllm import LLM, SamplingParams
    except ImportError as exc:
        raise MissingDependency(INSTALL_HINT) from exc

    llm = LLM(model=model_dir, limit_mm_per_prompt={"image": 1}, **engine_args)
    params = SamplingParams(temperature=0.0, max_tokens=max_new_tokens)

    def generate(prompts: list[str], images: list[Any]) -> list[str]:
        it = iter(images)
        requests: list[dict[str, Any]] = []
        for prompt in prompts:
            req: dict[str, Any] = {"prompt": prompt}
            if "<image>" in prompt:
                req["multi_modal_data"] = {"image": next(it)}
            requests.append(req)
        outputs = llm.generate(requests, params, use_tqdm=False)
        return [o.outputs[0].text.strip() for o in outputs]

    return generate
