"""Release parity of `sefe eval run` (issue 9, points 2, 7 and 8; docs/PARITY.md rows E1-E4).

The release generates up to 1024 new tokens, appends ScienceQA's letter line unconditionally, opens ScienceQA
images without RGB conversion before padding, and writes `prompt` as `<image>\\n` + question.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from sefe.coin.instructions import MCQ_LETTER as SCIENCEQA_INSTRUCTION
from sefe.evaluation import inference
from sefe.evaluation.eval_images import expand_to_square, fill_colour, open_eval_image
from sefe.evaluation.inference import run_inference
from sefe.evaluation.scorers import parse_scienceqa_letter
from sefe.models.conversation import eval_question
from sefe.sefe_train.config import RunConfig, load_config

REPO = Path(__file__).resolve().parents[2]
PREAMBLE = " ".join(
    f"Looking at option number {i}, the picture and the context suggest we should consider it carefully."
    for i in range(12)
)
LONG_ANSWER = f"{PREAMBLE} The answer is B."


class ScriptedLlava(torch.nn.Module):
    """Stands in for a model that answers in a forgotten task's style: a long preamble, then the letter.

    `generate` follows transformers' contract: at most `max_new_tokens` new tokens, stop after `eos`.
    """

    def __init__(self, continuation: list[int]) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.continuation = continuation
        self.caps: list[int] = []

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    def generate(self, input_ids: torch.Tensor, max_new_tokens: int, **_: Any) -> torch.Tensor:
        self.caps.append(max_new_tokens)
        new = torch.tensor([self.continuation[:max_new_tokens]] * input_ids.shape[0])
        return torch.cat([input_ids, new], dim=1)


def _lines(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


# ---- point 2: generation length ------------------------------------------------------------------------


def test_paper_config_run_config_and_cli_default_to_1024(
    tiny_dir: Path, data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert load_config(REPO / "configs" / "coin-llava7b.yaml").eval.max_new_tokens == 1024
    assert RunConfig(tasks=["ScienceQA"]).eval.max_new_tokens == 1024
    from sefe.cli import app  # before the patch: the CLI reads its defaults from run_inference's signature

    seen: dict[str, Any] = {}
    monkeypatch.setattr(inference, "run_inference", lambda *a, **kw: seen.update(kw) or {})

    args = ["eval", "run", "-m", str(tiny_dir), "--data-root", str(data_root), "-o", str(tmp_path)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert seen["max_new_tokens"] == 1024 and seen["scienceqa_instruction"] == "always"


def test_long_answer_keeps_its_letter_at_1024_and_loses_it_at_128(
    tiny, data_root: Path, tmp_path: Path
) -> None:
    _, processor = tiny
    tok = processor.tokenizer
    continuation = [*tok(LONG_ANSWER, add_special_tokens=False)["input_ids"], tok.eos_token_id]
    assert 128 < len(continuation) < 1024  # the case issue 9 names: 128 cuts it, 1024 does not
    model = ScriptedLlava(continuation)
    full = run_inference((model, processor), data_root, ["ScienceQA"], tmp_path / "d", show_progress=False)
    cut = run_inference(
        (model, processor), data_root, ["ScienceQA"], tmp_path / "c", max_new_tokens=128, show_progress=False
    )
    assert set(model.caps) == {1024, 128}
    full_texts = [ln["text"] for ln in _lines(full["ScienceQA"])]
    cut_texts = [ln["text"] for ln in _lines(cut["ScienceQA"])]
    assert all(t.endswith("The answer is B.") for t in full_texts)
    assert [parse_scienceqa_letter(t) for t in full_texts] == ["B", "B", "B"]
    assert [parse_scienceqa_letter(t) for t in cut_texts] == ["FAILED"] * 3


# ---- point 7 (evaluation): ScienceQA's letter line and images --------------------------------------------


def test_scienceqa_letter_line_is_appended_unconditionally_unless_once() -> None:
    with_line = f"Which is water?\nA. lake\nB. sand\n{SCIENCEQA_INSTRUCTION}"
    assert eval_question(with_line, "ScienceQA") == f"{with_line}\n{SCIENCEQA_INSTRUCTION}"
    assert eval_question("<image>\nQ?\nA. x\nB. y", "ScienceQA") == f"Q?\nA. x\nB. y\n{SCIENCEQA_INSTRUCTION}"
    assert eval_question(with_line, "ScienceQA", "once") == with_line
    assert eval_question("What is it?", "ImageNet") == "What is it?"


def _palette_image(path: Path) -> None:
    """A 40x20 palette PNG whose colours live at palette indices the padded canvas does not have."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = Image.new("RGB", (40, 20), (10, 200, 30))
    rgb.paste((220, 20, 20), (0, 0, 20, 20))
    rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=4).save(path)


def test_scienceqa_images_are_padded_unconverted_like_the_release(tmp_path: Path) -> None:
    path = tmp_path / "ScienceQA" / "p.png"
    _palette_image(path)
    fill = fill_colour([0.48145466, 0.4578275, 0.40821073])
    sqa = open_eval_image(tmp_path, "ScienceQA/p.png", "rec", "ScienceQA", fill)
    assert sqa.mode == "P" and sqa.size == (40, 40)
    # converting first (what the other tasks do) keeps the colours; the release's order changes them
    rgb_first = expand_to_square(Image.open(path).convert("RGB"), fill)
    assert rgb_first.getpixel((30, 20)) == (10, 200, 30)
    assert sqa.convert("RGB").getpixel((30, 20)) != (10, 200, 30)
    other = open_eval_image(tmp_path, "ScienceQA/p.png", "rec", "ImageNet", fill)
    assert other.mode == "RGB" and other.size == (40, 20)
    # modes the release cannot pad with a colour triple are converted first instead of failing
    grey = tmp_path / "g.png"
    Image.new("L", (10, 4), 7).save(grey)
    assert open_eval_image(tmp_path, "g.png", "rec", "ScienceQA", fill).mode == "RGB"


# ---- point 8: the prompt field --------------------------------------------------------------------------


def _release_scienceqa_image_accuracy(preds: list[dict], correct_ids: set[str]) -> float:
    """The release scorer's image-only accuracy (from the spec): the questions whose prompt has <image>."""
    with_image = [p for p in preds if "<image>" in p["prompt"]]
    return 100.0 * sum(p["question_id"] in correct_ids for p in with_image) / len(with_image)


def test_prompt_field_carries_the_image_token_and_the_appended_line(
    tiny, data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    modes: list[str] = []
    real = inference.generate_batch

    def spy(model, processor, prompts, images, max_new_tokens):
        modes.extend(im.mode for im in images)
        return real(model, processor, prompts, images, max_new_tokens)

    monkeypatch.setattr(inference, "generate_batch", spy)
    paths = run_inference(
        tiny, data_root, ["ScienceQA", "ImageNet"], tmp_path, max_new_tokens=2, show_progress=False
    )
    sqa = {ln["question_id"]: ln["prompt"] for ln in _lines(paths["ScienceQA"])}
    assert sqa["7"] == f"<image>\nWhich colour is shown?\nA. blue\nB. red\n{SCIENCEQA_INSTRUCTION}"
    twice = f"{SCIENCEQA_INSTRUCTION}\n{SCIENCEQA_INSTRUCTION}"
    assert sqa["5"] == f"Context: A lake.\nWhich is water?\nA. lake\nB. sand\n{twice}"
    assert "<image>" not in sqa["9"]
    imagenet = _lines(paths["ImageNet"])
    assert all(ln["prompt"].startswith("<image>\nWhat is the object in the image?") for ln in imagenet)
    assert _release_scienceqa_image_accuracy(_lines(paths["ScienceQA"]), {"7"}) == 100.0
    assert modes and all(m == "RGB" for m in modes)  # the fixture's PNG/JPEG files are RGB already
