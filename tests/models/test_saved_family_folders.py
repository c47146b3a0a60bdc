"""A folder that `family.save` writes (a merged stage) is a standard HF folder of its family: plain
transformers, with no sefe code, loads its model and its processor; the processor's chat template renders
the prompt sefe builds (`prompt_text`), and generation stops where sefe's HF engine stops."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from sefe.models.family import get_family
from tests.helpers.folder_processor import FOLDER_FAMILIES, folder_processor

QUESTION = "What is the object in the image?"


@pytest.mark.parametrize("name", FOLDER_FAMILIES)
def test_plain_transformers_loads_model_tokenizer_and_image_processor(
    name: str, family_folder: Callable[[str], Path]
) -> None:
    from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoTokenizer, GenerationConfig

    folder = family_folder(name)
    family = get_family(name)
    for part in ("chat_template.jinja", "preprocessor_config.json", "processor_config.json"):
        assert (folder / part).is_file(), part
    model = AutoModelForImageTextToText.from_pretrained(folder)
    assert type(model).__name__ == family.model_class  # type: ignore[attr-defined]
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert len(tokenizer) == model.config.get_text_config().vocab_size
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert GenerationConfig.from_pretrained(folder).eos_token_id == im_end  # sefe's HF engine stops here
    assert AutoImageProcessor.from_pretrained(folder).to_dict() == (
        family.load_processor(folder).image_processor.to_dict()
    )


@pytest.mark.parametrize("name", FOLDER_FAMILIES)
def test_the_folders_processor_renders_sefes_prompt(name: str, family_folder: Callable[[str], Path]) -> None:
    folder = family_folder(name)
    family = get_family(name)
    ours = family.load_processor(folder)
    theirs = folder_processor(folder)
    image_turn = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}]
    text_turn = [{"role": "user", "content": [{"type": "text", "text": QUESTION}]}]
    for messages, has_image in ((image_turn, True), (text_turn, False)):
        rendered = theirs.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        assert rendered == family.prompt_text(ours, QUESTION, has_image)
    assert family.prompt_text(ours, QUESTION, True).count(theirs.image_token) == 1


@pytest.mark.parametrize("name", FOLDER_FAMILIES)
def test_autoprocessor_loads_the_folder(name: str, family_folder: Callable[[str], Path]) -> None:
    """The real `AutoProcessor` (its video processor needs torchvision: runs where torchvision is, as with
    vLLM)."""
    if importlib.util.find_spec("torchvision") is None:
        pytest.skip("torchvision is not installed: AutoProcessor cannot build the video processor here")
    from transformers import AutoProcessor

    folder = family_folder(name)
    declared = json.loads((folder / "processor_config.json").read_text())["processor_class"]
    processor = AutoProcessor.from_pretrained(folder)
    assert type(processor).__name__ == declared
    assert processor.chat_template == (folder / "chat_template.jinja").read_text()
