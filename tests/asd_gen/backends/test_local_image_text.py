"""The `local` backend with an image-text model folder (`--model DIR`): the tiny LLaVA of sefe_train, given a
chat template, gets the record's image through its processor; its SentencePiece-style tokenizer goes through
llguidance's generic token table. Random weights: the grammar alone makes the output valid JSON."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import jsonschema
import pytest

from sefe.asd_gen.needs import GenerationOptions
from tests.helpers.backends import YN_ONE, collect, request

pytestmark = pytest.mark.slow

CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {% for p in m['content'] %}"
    "{% if p['type'] == 'image' %}<image>\n{% else %}{{ p['text'] }}{% endif %}{% endfor %}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)


@pytest.fixture(scope="module")
def llava_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sefe.models.tiny import tiny_llava_dir

    root = tmp_path_factory.mktemp("llava")
    folder = root / "tiny-llava-chat"
    shutil.copytree(tiny_llava_dir(root / "cache"), folder)
    (folder / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    return folder


def test_image_text_model_gets_the_image(llava_folder: Path, tmp_path: Path) -> None:
    from PIL import Image

    from sefe.asd_gen.backends.local_backend import LocalBackend

    img = tmp_path / "red.png"
    Image.new("RGB", (40, 30), (200, 0, 0)).save(img)
    url = "data:image/png;base64," + base64.b64encode(img.read_bytes()).decode()
    backend = LocalBackend(GenerationOptions(model=str(llava_folder)), batch_size=2, threads=1)
    results = collect(
        backend,
        [
            request("img", "What colour is it?", YN_ONE, max_tokens=60, image_url=url, image_path=str(img)),
            request("txt", "What colour is it?", YN_ONE, max_tokens=60),
            request("gone", "What colour?", YN_ONE, image_url=url, image_path=str(tmp_path / "missing.png")),
        ],
    )
    n_image_tokens = 16  # 32 px image, 8 px patches, "default" feature strategy
    assert results["img"].tokens_in >= results["txt"].tokens_in + n_image_tokens
    for key in ("img", "txt"):
        r = results[key]
        assert r.error is None and r.finish_reason == "stop", r
        jsonschema.validate(json.loads(r.text or ""), YN_ONE)
    assert results["gone"].error is not None and "missing.png" in results["gone"].error
    assert backend.model_name.startswith("tiny-llava-chat-")


def test_model_folder_without_chat_template_is_refused(llava_folder: Path, tmp_path: Path) -> None:
    from sefe.asd_gen.backends.local_backend import LocalBackend, LocalModelError

    bare = tmp_path / "bare"
    shutil.copytree(llava_folder, bare)
    (bare / "chat_template.jinja").unlink()
    backend = LocalBackend(GenerationOptions(model=str(bare)))
    with pytest.raises(LocalModelError, match="no chat template"):
        backend.run([request("k", "q", YN_ONE)], lambda r: None)
