"""The `local` backend with the REAL embedded SmolLM2-135M-Instruct: every finished output validates against
its request's JSON schema, truncation is reported, images are dropped for text-only models, batching does not
change greedy output, and a bad request fails alone."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest

from sefe.asd_gen.backends.base import ChatResult
from tests.helpers.backends import (
    BRIEF_ONE,
    MCQ_TWO_QUESTIONS,
    OFFICIAL_SINGLE_MCQ,
    YN_ONE,
    collect,
    request,
)

pytestmark = pytest.mark.slow

QUESTIONS = {
    "mcq2": (
        "Question 1: What colour is the bus? Correct answer: red\n"
        "Question 2: What animal sits on the sofa? Correct answer: cat\n"
        "For each question give three wrong but plausible answers.",
        MCQ_TWO_QUESTIONS,
    ),
    "yn": ("Question: What is the man holding? Correct answer: umbrella\nGive one wrong answer.", YN_ONE),
    "brief": (
        "Question: Which room is shown? Answer: kitchen\nExplain the answer in about 20 words.",
        BRIEF_ONE,
    ),
    "official": (
        "Question: What fruit is on the table? Correct answer: apple\nGive three wrong options.",
        OFFICIAL_SINGLE_MCQ,
    ),
}


def _valid(result: ChatResult, schema: dict[str, Any]) -> Any:
    assert result.error is None, result.error
    assert result.finish_reason == "stop", (result.finish_reason, result.text)
    assert result.text is not None
    doc = orjson.loads(result.text)
    jsonschema.validate(doc, schema)
    return doc


def test_embedded_outputs_validate_against_schema(embedded_backend: Any) -> None:
    import torch

    threads = torch.get_num_threads()
    reqs = [request(k, text, schema, max_tokens=80) for k, (text, schema) in QUESTIONS.items()]
    results = collect(embedded_backend, reqs)
    assert torch.get_num_threads() == threads  # the backend's threads=1 lasted only for its run
    for key, (_, schema) in QUESTIONS.items():
        r = results[key]
        _valid(r, schema)
        assert r.tokens_in > 20  # system + user prompt through the chat template
        assert 0 < r.tokens_out <= 80
    assert len(_valid(results["mcq2"], MCQ_TWO_QUESTIONS)["items"]) == 2
    assert embedded_backend.model_name == "SmolLM2-135M-Instruct-Q4_1"


def test_max_tokens_cut_reports_length(embedded_backend: Any) -> None:
    text, schema = QUESTIONS["mcq2"]
    (r,) = collect(embedded_backend, [request("short", text, schema, max_tokens=6)]).values()
    assert r.error is None
    assert r.finish_reason == "length"
    assert r.tokens_out == 6
    assert r.text is not None and r.text.startswith("{")
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(r.text)


def test_text_only_model_gets_question_without_image(embedded_backend: Any, tmp_path: Path) -> None:
    from PIL import Image

    img = tmp_path / "red.png"
    Image.new("RGB", (16, 16), (200, 0, 0)).save(img)
    data_url = "data:image/png;base64," + base64.b64encode(img.read_bytes()).decode()
    text, schema = QUESTIONS["yn"]
    results = collect(
        embedded_backend,
        [
            request("with-image", text, schema, image_url=data_url, image_path=str(img)),
            request("no-image", text, schema),
        ],
    )
    a, b = results["with-image"], results["no-image"]
    _valid(a, schema)
    assert a.tokens_in == b.tokens_in  # the image part was stripped, nothing else changed
    assert a.text == b.text


def test_batching_does_not_change_greedy_output(embedded_backend: Any) -> None:
    from sefe.asd_gen.backends.local_backend import LocalBackend

    reqs = [request(k, QUESTIONS[k][0], QUESTIONS[k][1], max_tokens=40) for k in ("yn", "official")]
    batched = collect(embedded_backend, reqs)
    single = LocalBackend(embedded_backend.options, batch_size=1)
    single._loaded = embedded_backend._loaded  # same loaded weights, one row per generate() call
    one_by_one = collect(single, reqs)
    for k in ("yn", "official"):
        assert batched[k].text == one_by_one[k].text
        assert batched[k].tokens_out == one_by_one[k].tokens_out


def test_bad_schema_fails_alone(embedded_backend: Any) -> None:
    bad = {"type": "object", "properties": {"a": {"$ref": "#/nowhere"}}, "required": ["a"]}
    text, schema = QUESTIONS["yn"]
    results = collect(embedded_backend, [request("bad", text, bad), request("good", text, schema)])
    assert results["bad"].error is not None and "nowhere" in results["bad"].error
    assert results["bad"].text is None
    _valid(results["good"], schema)


def test_image_from_data_url_is_decoded(tmp_path: Path) -> None:
    from PIL import Image

    from sefe.asd_gen.backends.local_backend import _load_image

    buf = io.BytesIO()
    Image.new("RGB", (5, 3), (0, 0, 255)).save(buf, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    im = _load_image(request("k", "q", YN_ONE, image_url=url))
    assert im.size == (5, 3) and im.getpixel((0, 0)) == (0, 0, 255)
    with pytest.raises(ValueError, match="k: image_url is not a data URL"):
        _load_image(request("k", "q", YN_ONE, image_url="https://example.org/x.png"))
