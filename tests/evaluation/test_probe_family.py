"""The knowledge probe through a non-LLaVA family: the tiny Qwen2.5-VL (real vocabulary, CPU, no downloads).

The reference is computed by hand, independently of `family.encode`: the family's generation prompt (what
evaluation feeds the model, image expanded) followed by the candidate's tokens and `<|im_end|>`, one forward
pass per candidate, the log-probabilities of those continuation tokens summed. The probe must give the same
scores and so the same ranking.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from sefe.evaluation.probe import ProbeItem, family_sequence_scores, run_probe
from sefe.models import vocab
from sefe.models.family import ModelFamily, get_family
from sefe.models.family_types import SmallSizes
from tests.helpers.qwen import noise_image, require_qwen_vocab

VOCAB_DIR = vocab.vocab_dir()  # resolved at import, as the other Qwen tests do
FAMILY = get_family("qwen2_5_vl")
QUESTION = "<image>\nWhat colour is the square?\nAnswer the question using a single word or phrase."


@pytest.fixture(scope="module")
def tiny_qwen(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any]:
    require_qwen_vocab(VOCAB_DIR)
    return FAMILY.load(FAMILY.tiny_dir(tmp_path_factory.mktemp("sefe-cache")))


def _by_hand(
    model: Any, processor: Any, question: str, candidate: str, image: Any, family: ModelFamily = FAMILY
) -> float:
    """log P(candidate, <|im_end|> | the generation prompt), one token at a time from one forward pass."""
    prompt = family.generation_inputs(processor, [question], [image])
    reply = processor.tokenizer(candidate + "<|im_end|>", add_special_tokens=False)["input_ids"]
    ids = torch.cat([prompt["input_ids"], torch.tensor([reply])], dim=1)
    inputs = {k: v for k, v in prompt.items() if k not in ("input_ids", "attention_mask")}
    if "mm_token_type_ids" in inputs:  # Qwen3-VL marks image tokens; the reply has none
        marks = inputs["mm_token_type_ids"]
        inputs["mm_token_type_ids"] = torch.cat([marks, marks.new_zeros(1, len(reply))], dim=1)
    with torch.inference_mode():
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids), **inputs).logits[0].float()
    logp = torch.log_softmax(logits, dim=-1)
    start = prompt["input_ids"].shape[1]
    return sum(float(logp[start - 1 + j, tok]) for j, tok in enumerate(reply))


def test_qwen_probe_scores_and_ranking_match_the_hand_computation(
    tiny_qwen: tuple[Any, Any], tmp_path: Path
) -> None:
    model, processor = tiny_qwen
    model.eval()
    image = noise_image(64, 48, seed=3)
    image.save(tmp_path / "square.png")
    cands = ["red", "dark blue square"]  # different token lengths: the sum must not favour a prefix
    hand = [_by_hand(model, processor, QUESTION, c, image) for c in cands]
    probe = family_sequence_scores(model, FAMILY, processor, [(QUESTION, c, image) for c in cands])
    assert probe == pytest.approx(hand, rel=1e-4)  # float32 batch vs single-row reductions
    assert hand[0] != pytest.approx(hand[1], abs=1e-3)  # the ranking below is decided, not a tie
    best = max(range(2), key=lambda j: hand[j])
    items = [
        ProbeItem(question_id="q1", question=QUESTION, image="square.png", candidates=cands, correct=best),
        ProbeItem(
            question_id="q2", question=QUESTION, image="square.png", candidates=cands, correct=1 - best
        ),
    ]
    res = run_probe(model, processor, "Colours", items, tmp_path, family=FAMILY)
    assert res is not None
    assert res.known == [1, 0] and res.correct == 1 and res.total == 2


@pytest.mark.parametrize("name", ["qwen3_vl", "internvl"])
def test_the_other_chatml_families_score_as_by_hand(name: str, tmp_path: Path) -> None:
    require_qwen_vocab(VOCAB_DIR)
    family = get_family(name)
    model, processor = family.load(family.tiny_dir(tmp_path))
    model.eval()
    image = noise_image(64, 48, seed=4)
    cands = ["red", "dark blue square"]
    hand = [_by_hand(model, processor, QUESTION, c, image, family) for c in cands]
    probe = family_sequence_scores(model, family, processor, [(QUESTION, c, image) for c in cands])
    assert probe == pytest.approx(hand, rel=1e-4)


def test_a_box_tasks_candidates_are_scored_in_the_familys_boxes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Micro-CoIN's Locate through the small Qwen2.5-VL (trained on pixel boxes): the probe ranks the
    candidates as the model was trained on them, `[2, 2, 14, 14]`, not CoIN's `[0.04, 0.04, 0.29, 0.29]`;
    a task without boxes keeps its candidates."""
    import sefe.evaluation.probe as probe
    from sefe.micro.generate import build_micro
    from sefe.models.small import small_builder

    root = build_micro(tmp_path / "data", seed=0, n_train=2, n_test=2, n_warm=4)
    small = small_builder("qwen2_5_vl")
    model, processor = small.build(small.config(SmallSizes()))
    seen: list[str] = []

    def capture(model: Any, family: Any, processor: Any, seqs: Any, reduction: Any = "sum") -> list[float]:
        seen.extend(c for _, c, _ in seqs)
        return [0.0] * len(seqs)

    monkeypatch.setattr(probe, "family_sequence_scores", capture)
    box = ProbeItem(
        question_id="q", question="<image>\nWhere?", image="images/Locate/test/00000.png", correct=0,
        candidates=["[0.04, 0.04, 0.29, 0.29]", "[0.71, 0.38, 0.96, 0.62]"],
    )  # fmt: skip
    run_probe(model, processor, "Locate", [box], root, family=FAMILY)
    assert seen == ["[2, 2, 14, 14]", "[34, 18, 46, 30]"]
    seen.clear()
    colour = box.model_copy(update={"candidates": ["red", "[0.04, 0.04, 0.29, 0.29]"]})
    run_probe(model, processor, "Colour", [colour], root, family=FAMILY)
    assert seen == ["red", "[0.04, 0.04, 0.29, 0.29]"]
