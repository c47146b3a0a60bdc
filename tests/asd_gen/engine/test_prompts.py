"""Shipped Jinja templates, `--prompts DIR` overrides, and import of the official SEFE prompt-file format."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from sefe.asd_gen.engine import Engine
from sefe.asd_gen.needs import Need, QAItem
from sefe.asd_gen.prompt_templates import PromptError, PromptSet, split_official
from tests.helpers.engine import need, openai_options

TASKS = ["ScienceQA", "TextVQA", "ImageNet", "GQA", "VizWiz", "Grounding", "VQAv2", "OCRVQA"]


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("kind", ["mcq", "yn", "brief", "detail"])
def test_every_task_and_kind_renders_without_echo_request(task: str, kind: str, tmp_path: Path) -> None:
    ps = PromptSet()
    nd = need("r1", kind, 1, task=task)  # type: ignore[arg-type]
    shown = nd.items[0].answer
    if task == "Grounding":  # a square image: the unpadded box the prompt shows equals CoIN's
        Image.new("RGB", (50, 50)).save(tmp_path / "sq.png")
        nd = Need(
            task=task,
            record_id="g",
            kind=kind,
            image="sq.png",
            items=[QAItem(question="man in red", answer="[0.1, 0.2, 0.5, 0.9]")],
        )
        shown = "[0.100, 0.200, 0.500, 0.900]"
    rp, system, user = ps.render(nd, tmp_path)
    assert "JSON" in system
    assert nd.items[0].question in user and shown in user
    assert "do not re" in user.lower()  # every template tells the model not to echo what it was given
    assert len(rp.sha256) == 64


def test_question_list_form_puts_all_questions_in_one_prompt() -> None:
    _, _, user = PromptSet().render(need("r1", "yn", 3))
    for i in range(3):
        assert f"What colour is object {i} in record r1?" in user and f"red{i}" in user
    assert "exactly 3 items" in user
    _, _, single = PromptSet().render(need("r2", "yn", 1))
    assert "exactly 1 item." in single and "1. Question" not in single


def test_scienceqa_with_and_without_image_use_different_templates() -> None:
    ps = PromptSet()
    item = QAItem(
        question="Which is a mammal?",
        answer="whale",
        context="Look at the animals.",
        options=["shark", "whale"],
    )
    with_img = Need(task="ScienceQA", record_id="s", kind="brief", image="ScienceQA/x.png", items=[item])
    no_img = Need(task="ScienceQA", record_id="s", kind="brief", items=[item])
    a, _, u1 = ps.render(with_img)
    b, _, u2 = ps.render(no_img)
    assert a.name.startswith("ScienceQA/brief_w_image") and b.name.startswith("ScienceQA/brief_wo_image")
    assert "picture" in u1 and "no picture" in u2 and "shark | whale" in u2 and "Look at the animals." in u2


def test_override_dir_wins_per_file_and_changes_the_hash(tmp_path: Path) -> None:
    base = PromptSet().resolve("GQA", "mcq", False)
    (tmp_path / "GQA").mkdir()
    (tmp_path / "GQA" / "mcq.j2").write_text('Q: {{ items[0].question }} Reply {"items": []}')
    ps = PromptSet(tmp_path)
    rp = ps.resolve("GQA", "mcq", False)
    assert rp.name.startswith("GQA/mcq.j2") and rp.sha256 != base.sha256
    assert ps.resolve("GQA", "yn", False).sha256 == PromptSet().resolve("GQA", "yn", False).sha256
    (tmp_path / "GQA" / "yn.j2").write_text("{% if %}")
    with pytest.raises(PromptError, match=r"yn\.j2"):
        PromptSet(tmp_path).resolve("GQA", "yn", False)


# ---- official SEFE prompt files (written here in that format) -------------------------------------------
OFFICIAL = {
    "GQA/mcq.txt": (
        "You write distractors.",
        "Questions about the image:\n<question_list>\nFor each, give three wrong options as ```json\n"
        '[{"question_index": 1, "question": "...", "correct_answer": "...",\n'
        ' "distractor_options": ["a", "b", "c",]}\n'
        '{"question_index": 2, "question": "...", "correct_answer": "...",\n'
        ' "distractor_options": ["a", "b", "c"]},]\n```',
    ),
    "TextVQA/yn.txt": (
        "Sys.",
        'Question: <question>\nAnswer: <answer>\nGive ```json\n{"distractor_option": "..."}\n```',
    ),
    "ImageNet/brief.txt": (
        "Sys.",
        'The object is a <gt_category>.\n```json\n{"gt_category": "...", "explanation": "..."}\n```',
    ),
    "Grounding/detail.txt": (
        "Sys.",
        'Targets:\n<target_list>\n```json\n[{"target_index": 1, "description": "..."}]\n```',
    ),
    "ScienceQA/brief_wo_image.txt": (
        "Sys.",
        'Q: <question> A: <answer>\n```json\n{"explanation": "..."}\n```',
    ),
}


def _write_official(root: Path) -> None:
    for name, (system, user) in OFFICIAL.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(f"<SYSTEM PROMPT>\n{system}\n\n<USER PROMPT>\n{user}\n")


def test_official_files_are_split_filled_and_shaped(tmp_path: Path) -> None:
    _write_official(tmp_path)
    ps = PromptSet(tmp_path)
    rp, system, user = ps.render(need("r1", "mcq", 2))
    assert rp.official and rp.shape == "official_list" and system == "You write distractors."
    assert '"question_index": 2' in user and "red1" in user and "<question_list>" not in user
    rp, _, user = ps.render(need("t", "yn", 1, task="TextVQA"))
    assert rp.shape == "official_single" and "Answer: red0" in user
    rp, _, user = ps.render(need("i", "brief", 1, task="ImageNet"))
    assert rp.shape == "official_imagenet" and "The object is a red0." in user
    Image.new("RGB", (50, 50)).save(tmp_path / "sq.png")  # square: unpadded box = CoIN box
    g = Need(
        task="Grounding",
        record_id="g",
        kind="detail",
        image="sq.png",
        items=[QAItem(question="left dog", answer="[0.1, 0.2, 0.55555, 0.9]")],
    )
    rp, _, user = ps.render(g, tmp_path)
    assert rp.shape == "official_grounding" and '"bbox":[0.1,0.2,0.556,0.9]' in user and "left dog" in user
    # a kind without an official file falls back to the shipped Jinja template
    assert not ps.resolve("GQA", "brief", False).official


def test_official_file_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(PromptError, match=r"x\.txt"):
        split_official("no markers here", "x.txt")
    (tmp_path / "GQA").mkdir()
    (tmp_path / "GQA" / "yn.txt").write_text("<SYSTEM PROMPT>\ns\n<USER PROMPT>\nno placeholder\n")
    with pytest.raises(PromptError, match=r"GQA/yn\.txt"):
        PromptSet(tmp_path).resolve("GQA", "yn", False)


def test_engine_answers_official_shapes_end_to_end(tmp_path: Path, server) -> None:
    prompts = tmp_path / "prompts"
    _write_official(prompts)
    needs = [
        need("a", "mcq", 2),
        need("b", "yn", 1, task="TextVQA"),
        need("c", "brief", 1, task="ImageNet"),
        need("d", "brief", 1, task="ScienceQA"),
        Need(
            task="Grounding",
            record_id="e",
            kind="detail",
            image="sq.png",
            items=[QAItem(question="dog", answer="[0.1, 0.1, 0.4, 0.4]")] * 2,
        ),
    ]
    Image.new("RGB", (50, 50)).save(tmp_path / "sq.png")
    eng = Engine(openai_options(server, prompts_dir=str(prompts)), tmp_path, show_progress=False)
    out = eng.fulfil(needs, str(tmp_path / "out"))
    assert not out.failures, out.failures
    assert server.count() == 5
    assert len(out.results[needs[0].key].distractors or []) == 2
    assert len(out.results[needs[4].key].explanations or []) == 2
    assert any(k.startswith("official:GQA/mcq.txt") for k in out.report.prompt_hashes)


def test_broken_prompt_file_stops_the_engine_before_any_request(tmp_path: Path, server) -> None:
    (tmp_path / "GQA").mkdir()
    (tmp_path / "GQA" / "mcq.txt").write_text("<USER PROMPT>\nonly a user part <question_list>\n")
    eng = Engine(openai_options(server, prompts_dir=str(tmp_path)), tmp_path, show_progress=False)
    with pytest.raises(PromptError, match=r"GQA/mcq\.txt"):
        eng.fulfil([need("a", "mcq")], str(tmp_path / "o"))
    assert server.count() == 0
