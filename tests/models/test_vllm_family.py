"""`sefe eval run --engine vllm` on a folder of another family (issue 19), without vLLM: the requests it
sends tokenise, through the folder's own processor and with their image, to exactly the ids the HF engine
generates from; the engine's wiring (stop tokens, images, box answers back in CoIN's convention) against a
stand-in for `vllm.LLM`; and the install hint when vLLM is absent. The real engine runs in the vLLM tier
(`tests/vllm/test_c_family_engine.py`)."""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import orjson
import pytest
from typer.testing import CliRunner

from sefe.errors import InputError
from sefe.evaluation import vllm_engine
from sefe.evaluation.vllm_engine import family_requests, stop_token_ids
from sefe.models.family import get_family
from tests.helpers.folder_processor import FOLDER_FAMILIES, folder_processor
from tests.helpers.qwen import noise_image
from tests.helpers.train import COIN_MINI

QUESTIONS = ["What is the object in the image?", "Which is a solid?\nA. milk\nB. rock"]


@pytest.mark.parametrize("name", FOLDER_FAMILIES)
def test_vllm_prompts_tokenise_to_the_hf_engines_ids(name: str, family_folder: Callable[[str], Path]) -> None:
    folder = family_folder(name)
    family = get_family(name)
    ours = family.load_processor(folder)
    theirs = folder_processor(folder)  # what vLLM runs on a request's text and image
    images = [noise_image(200, 100), None, noise_image(56, 90, seed=1)]
    questions = [*QUESTIONS, "Its colour?"]
    requests = family_requests(family, ours, questions, images)
    batch = family.generation_inputs(ours, questions, images)  # the HF engine's left-padded rows
    for row, (req, image) in enumerate(zip(requests, images, strict=True)):
        sent = req.get("multi_modal_data", {}).get("image")
        assert sent is image
        assert req["prompt"].count(theirs.image_token) == (image is not None)  # one slot, not expanded
        ids = theirs(text=[req["prompt"]], images=None if sent is None else [sent])["input_ids"][0]
        hf = batch["input_ids"][row][batch["attention_mask"][row].bool()].tolist()
        assert list(ids) == hf, (name, row)
    assert len(set(map(len, batch["input_ids"].tolist()))) == 1 and batch["attention_mask"].min() == 0


@pytest.mark.parametrize("name", FOLDER_FAMILIES)
def test_stops_at_the_folders_end_of_turn(name: str, family_folder: Callable[[str], Path]) -> None:
    folder = family_folder(name)
    tokenizer = get_family(name).load_processor(folder).tokenizer
    assert stop_token_ids(folder) == [tokenizer.convert_tokens_to_ids("<|im_end|>")]


def test_a_broken_generation_config_names_file_and_field(tmp_path: Path) -> None:
    (tmp_path / "generation_config.json").write_text('{"eos_token_id": "end"}')
    with pytest.raises(InputError, match=r"generation_config\.json, field 'eos_token_id'"):
        stop_token_ids(tmp_path)
    (tmp_path / "generation_config.json").write_text('{"eos_token_id": [1, 2]}')
    assert stop_token_ids(tmp_path) == [1, 2]
    (tmp_path / "generation_config.json").unlink()
    assert stop_token_ids(tmp_path) is None


class _StandInLLM:
    """Records what `vllm.LLM` is given and answers every request with one Qwen pixel box."""

    made: ClassVar[list[_StandInLLM]] = []

    def __init__(self, model: str, **engine_args: Any) -> None:
        self.model, self.engine_args = model, engine_args
        self.calls: list[tuple[list[dict[str, Any]], Any]] = []
        _StandInLLM.made.append(self)

    def generate(self, requests: list[dict[str, Any]], params: Any, use_tqdm: bool) -> list[Any]:
        self.calls.append((requests, params))
        return [SimpleNamespace(outputs=[SimpleNamespace(text=" [10, 20, 30, 40] ")]) for _ in requests]


def test_engine_wiring_with_a_stand_in_for_vllm(
    family_folder: Callable[[str], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sefe.coin.records import load_test
    from sefe.evaluation.inference import run_inference
    from sefe.models.conversation import eval_question

    folder = family_folder("qwen2_5_vl")
    family = get_family("qwen2_5_vl")
    fake = SimpleNamespace(LLM=_StandInLLM, SamplingParams=lambda **kw: SimpleNamespace(**kw))
    monkeypatch.setattr(vllm_engine, "_vllm", lambda: fake)
    _StandInLLM.made.clear()
    run_inference(folder, COIN_MINI, ["Grounding"], tmp_path, limit=2, engine="vllm", show_progress=False)
    (llm,) = _StandInLLM.made
    assert llm.model == str(folder) and llm.engine_args == {"limit_mm_per_prompt": {"image": 1}}
    ((requests, params),) = llm.calls
    assert params.temperature == 0.0 and params.max_tokens == 1024 and params.stop_token_ids == [151645]
    processor = family.load_processor(folder)
    records = load_test(COIN_MINI / "annotations" / "Grounding" / "test.json")[:2]
    lines = [orjson.loads(x) for x in (tmp_path / "Grounding.jsonl").read_bytes().splitlines()]
    for req, rec, line in zip(requests, records, lines, strict=True):
        question = eval_question(rec.text or "", "Grounding", "always")
        assert req["prompt"] == family.prompt_text(processor, question, True)
        image = req["multi_modal_data"]["image"]
        assert image.mode == "RGB" and list(image.size) == rec.size
        # the pixel box of the resized image, back in CoIN's fractions of the padded square
        assert line["text"] == family.answer_from_family("[10, 20, 30, 40]", image.size, processor)
        assert re.fullmatch(r"\[0\.\d\d, 0\.\d\d, 0\.\d\d, 0\.\d\d\]", line["text"]), line["text"]


def test_without_vllm_a_family_folder_gets_the_install_hint(
    family_folder: Callable[[str], Path], tmp_path: Path
) -> None:
    from sefe.cli import app

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed: the hint is not shown")
    args = ["eval", "run", "--model", str(family_folder("qwen2_5_vl")), "--data-root", str(COIN_MINI)]
    result = CliRunner().invoke(app, [*args, "--tasks", "GQA", "--out", str(tmp_path), "--engine", "vllm"])
    assert result.exit_code == 2, result.output
    assert "pip install 'sefe[vllm]'" in result.output and "--engine hf" not in result.output
    assert "Traceback" not in result.output


def test_engine_arguments_reach_vllm_from_the_command_line_over_the_environment(
    family_folder: Callable[[str], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`sefe eval run --engine vllm --vllm-arg KEY=VALUE` (a 7B needs `tensor_parallel_size`,
    `max_model_len`): typed values, over `$SEFE_VLLM_ARGS`, beside the engine's own image limit; refused
    for the hf engine and when malformed (exit 2, one line)."""
    from sefe.cli import app

    fake = SimpleNamespace(LLM=_StandInLLM, SamplingParams=lambda **kw: SimpleNamespace(**kw))
    monkeypatch.setattr(vllm_engine, "_vllm", lambda: fake)
    monkeypatch.setenv("SEFE_VLLM_ARGS", '{"max_model_len": 4096, "gpu_memory_utilization": 0.8}')
    _StandInLLM.made.clear()
    base = ["eval", "run", "--model", str(family_folder("qwen2_5_vl")), "--data-root", str(COIN_MINI)]
    base += ["--tasks", "GQA", "--limit", "1"]
    extra = ["--vllm-arg", "tensor_parallel_size=2", "--vllm-arg", "max_model_len=8192"]
    result = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "a"), "--engine", "vllm", *extra])
    assert result.exit_code == 0, result.output
    (llm,) = _StandInLLM.made
    assert llm.engine_args == {
        "limit_mm_per_prompt": {"image": 1},
        "max_model_len": 8192,  # the command line over the environment
        "gpu_memory_utilization": 0.8,
        "tensor_parallel_size": 2,
    }
    hf = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "b"), *extra])
    assert hf.exit_code == 2 and "apply to --engine vllm" in hf.output and "Traceback" not in hf.output
    bad = CliRunner().invoke(
        app, [*base, "--out", str(tmp_path / "c"), "--engine", "vllm", "--vllm-arg", "x"]
    )
    assert bad.exit_code == 2 and "--vllm-arg: expected KEY=VALUE, got 'x'" in bad.output
    monkeypatch.setenv("SEFE_VLLM_ARGS", "[1]")
    env = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "d"), "--engine", "vllm"])
    assert env.exit_code == 2 and "SEFE_VLLM_ARGS must be a JSON object" in env.output
