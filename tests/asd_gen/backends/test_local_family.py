"""The `local` backend with a Qwen2.5-VL folder (`--model DIR`): the family's code (injected as `ChatInputs`
by the command layer) builds the prompt, so the image reaches the model as the family's image tokens and
pixel values. Tiny random model: the grammar alone makes the output valid JSON."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest
from typer.testing import CliRunner

from sefe.asd_gen.needs import GenerationOptions
from sefe.commands.asd_family import FamilyChatInputs, family_chat_inputs
from sefe.models import qwen2_5_vl as qwen
from sefe.models import vocab
from sefe.models.family import get_family
from tests.helpers.backends import YN_ONE, collect, request
from tests.helpers.qwen import noise_image, require_qwen_vocab

pytestmark = pytest.mark.slow
VOCAB_DIR = vocab.vocab_dir()  # resolved at import: later fixtures may point SEFE_CACHE elsewhere


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_qwen_vocab(VOCAB_DIR)
    return get_family("qwen2_5_vl").tiny_dir(tmp_path_factory.mktemp("sefe-cache"))


class Spy:
    """Records what the family adapter handed to `generate`: per row, its image-pad count, and the images."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, tuple[int, int] | None]] = []  # (image-pad tokens, image size or None)
        self.pixel_rows = 0

    def wrap(self, adapter: FamilyChatInputs) -> Any:
        real = adapter.inputs

        def inputs(questions: Sequence[str], images: Sequence[Any | None]) -> dict[str, Any]:
            out = real(questions, images)
            pad = adapter._processor.image_token_id
            for row, image in enumerate(images):
                n = int((out["input_ids"][row] == pad).sum())
                self.rows.append((n, image.size if image is not None else None))
            if "image_grid_thw" in out:  # Qwen: one grid row per image
                self.pixel_rows += int(out["image_grid_thw"].shape[0])
            return out

        return inputs


def _expected(size: tuple[int, int], qwen_dir: Path) -> int:
    return qwen.image_token_count(size, qwen.load_processor(qwen_dir).image_processor)


def test_family_folder_gets_the_image_through_the_family(qwen_dir: Path, tmp_path: Path) -> None:
    from sefe.asd_gen.backends.local_backend import LocalBackend

    adapter = family_chat_inputs(str(qwen_dir))
    assert isinstance(adapter, FamilyChatInputs) and adapter.family.name == "qwen2_5_vl"
    spy = Spy()
    adapter.inputs = spy.wrap(adapter)  # type: ignore[method-assign]
    img = tmp_path / "noise.png"
    noise_image(84, 56).save(img)
    backend = LocalBackend(
        GenerationOptions(model=str(qwen_dir)), batch_size=2, threads=1, chat_inputs=adapter
    )
    results = collect(
        backend,
        [
            request("img", "<image>\nWhat is shown?", YN_ONE, max_tokens=60, image_path=str(img)),
            request("txt", "What is shown?", YN_ONE, max_tokens=60),
        ],
    )
    expected = _expected((84, 56), qwen_dir)
    assert expected > 0
    assert sorted(spy.rows, key=lambda r: r[0]) == [(0, None), (expected, (84, 56))]
    assert spy.pixel_rows == 1
    assert results["img"].tokens_in >= results["txt"].tokens_in + expected
    for r in results.values():
        assert r.error is None and r.finish_reason == "stop", r
        jsonschema.validate(json.loads(r.text or ""), YN_ONE)


def test_llava_and_unknown_folders_keep_the_generic_path(tmp_path: Path) -> None:
    for model_type in ("llava", "llama"):
        folder = tmp_path / model_type
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps({"model_type": model_type}))
        assert family_chat_inputs(str(folder)) is None
    assert family_chat_inputs(None) is None
    assert family_chat_inputs(str(tmp_path / "absent")) is None


def test_asd_build_local_qwen_folder(qwen_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sefe.cli import app

    spies: list[Spy] = []
    real_load = FamilyChatInputs.load

    def load(self: FamilyChatInputs, folder: Path) -> tuple[Any, Any]:
        spies.append(Spy())
        self.inputs = spies[-1].wrap(self)  # type: ignore[method-assign]
        return real_load(self, folder)

    monkeypatch.setattr(FamilyChatInputs, "load", load)
    out = tmp_path / "o"
    args = ["asd", "build", "--backend", "local", "--model", str(qwen_dir), "--out", str(out)]
    args += ["--tasks", "GQA", "--x", "20", "--max-tokens", "24", "--distractors", "pool"]
    r = CliRunner().invoke(app, args, env={"COLUMNS": "200", "SEFE_LOCAL_THREADS": "1"})
    assert r.exit_code == 0, r.output
    assert len(spies) == 1 and spies[0].rows, "the family adapter was not used"
    with_image = [(n, size) for n, size in spies[0].rows if size is not None]
    assert with_image and spies[0].pixel_rows == len(with_image)
    for n, size in with_image:
        assert n == _expected(size, qwen_dir)
    assert (out / "annotations" / "GQA" / "train_x20.json").is_file()
    # Random weights ramble inside unbounded strings until max_tokens: the only failure allowed here (the
    # grammar keeps every answered output valid JSON; no request failed on its input or its prompt).
    manifest = orjson.loads((out / "annotations" / "asd_manifest_x20.json").read_bytes())
    errors = [q["error"] for q in manifest.get("quarantined", [])]
    assert all(e.startswith("truncated output (finish_reason=length") for e in errors), errors


@pytest.mark.parametrize("name", ["qwen3_vl", "internvl"])
def test_other_families_get_the_image_too(name: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    """The same adapter serves every registered family: its image tokens as many as its processor gives."""
    from sefe.asd_gen.backends.local_backend import LocalBackend

    require_qwen_vocab(VOCAB_DIR)
    folder = get_family(name).tiny_dir(tmp_path_factory.mktemp("sefe-cache"))
    adapter = family_chat_inputs(str(folder))
    assert isinstance(adapter, FamilyChatInputs) and adapter.family.name == name
    spy = Spy()
    adapter.inputs = spy.wrap(adapter)  # type: ignore[method-assign]
    img = tmp_path_factory.mktemp("img") / "noise.png"
    noise_image(64, 48).save(img)
    backend = LocalBackend(GenerationOptions(model=str(folder)), batch_size=1, threads=1, chat_inputs=adapter)
    results = collect(backend, [request("img", "What is shown?", YN_ONE, max_tokens=60, image_path=str(img))])
    _, expected = adapter._processor.image_inputs(noise_image(64, 48))
    assert expected > 0 and spy.rows == [(expected, (64, 48))]
    r = results["img"]
    assert r.error is None and r.finish_reason == "stop", r
    jsonschema.validate(json.loads(r.text or ""), YN_ONE)
