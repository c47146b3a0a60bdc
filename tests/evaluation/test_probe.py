"""The knowledge probe on models with known preferences: a unigram LM whose distribution we set, and the
real tiny LLaVA checked against its own training loss."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from sefe.evaluation.probe import (
    ProbeItem,
    candidate_scores,
    option_letters,
    probe_items,
    run_probe,
)
from sefe.models.tokenization import tokenize_record

QUESTION = "What colour is the circle?\nAnswer the question using a single word or phrase."


class UnigramLM(torch.nn.Module):
    """Every position predicts the same distribution (one embedding row of real logits)."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.table = torch.nn.Embedding(1, logits.numel())
        with torch.no_grad():
            self.table.weight.copy_(logits[None])

    @property
    def dtype(self) -> torch.dtype:
        return self.table.weight.dtype

    def forward(self, input_ids: torch.Tensor, **_: Any) -> SimpleNamespace:
        return SimpleNamespace(logits=self.table(torch.zeros_like(input_ids)))


@pytest.fixture(scope="module")
def tiny() -> tuple[Any, Any]:
    from sefe.models.tiny import build_tiny_llava

    return build_tiny_llava()


def _answer_ids(processor: Any, answer: str) -> list[int]:
    ids, labels = tokenize_record([(QUESTION, answer)], processor.tokenizer, 0)
    return [t for t, lab in zip(ids, labels, strict=True) if lab != -100]


def test_scores_are_the_summed_log_probs_of_answer_and_eos(tiny: tuple[Any, Any]) -> None:
    _, processor = tiny
    vocab = len(processor.tokenizer)
    logits = torch.zeros(vocab)
    blue = _answer_ids(processor, "blue")
    logits[blue[0]] = 5.0  # the model "knows" blue
    model = UnigramLM(logits)
    logp = torch.log_softmax(logits, -1)
    cands = ["red", "blue", "green"]
    scores = candidate_scores(model, processor, QUESTION, cands)
    for cand, score in zip(cands, scores, strict=True):
        ids = _answer_ids(processor, cand)
        assert ids[-1] == processor.tokenizer.eos_token_id  # the closing </s> is part of the reply
        assert score == pytest.approx(float(logp[ids].sum()), abs=1e-4)
    assert max(range(3), key=scores.__getitem__) == 1
    means = candidate_scores(model, processor, QUESTION, cands, reduction="mean")
    for cand, score in zip(cands, means, strict=True):
        ids = _answer_ids(processor, cand)
        assert score == pytest.approx(float(logp[ids].mean()), abs=1e-4)


def test_run_probe_counts_correct_first_and_ties_as_unknown(tiny: tuple[Any, Any], tmp_path: Path) -> None:
    _, processor = tiny
    vocab = len(processor.tokenizer)
    logits = torch.zeros(vocab)
    logits[_answer_ids(processor, "blue")[0]] = 5.0
    model = UnigramLM(logits)
    items = [
        ProbeItem(question_id="1", question=QUESTION, candidates=["red", "blue"], correct=1),  # known
        ProbeItem(question_id="2", question=QUESTION, candidates=["blue", "red"], correct=1),  # not known
        ProbeItem(question_id="3", question=QUESTION, candidates=["red", "red"], correct=0),  # a tie
    ]
    res = run_probe(model, processor, "Colours", items, tmp_path)
    assert res is not None
    assert (res.correct, res.total) == (1, 3)
    assert res.rate == pytest.approx(100 / 3)
    assert res.candidates == 2.0
    assert run_probe(model, processor, "Colours", [], tmp_path) is None


def test_real_tiny_llava_scores_match_its_own_loss(tiny: tuple[Any, Any]) -> None:
    model, processor = tiny
    model.eval()
    for cand in ("red", "a blue square"):
        (score,) = candidate_scores(model, processor, QUESTION, [cand])
        ids, labels = tokenize_record([(QUESTION, cand)], processor.tokenizer, 0)
        with torch.no_grad():
            out = model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels]))
        n = sum(1 for lab in labels[1:] if lab != -100)
        assert score == pytest.approx(-float(out.loss) * n, rel=1e-4)


def test_probe_items_from_candidates_scienceqa_and_imagenet() -> None:
    q = "Which?\nA. attract\nB. repel\nAnswer with the option's letter from the given choices directly."
    assert option_letters(q) == ["A", "B"]
    sqa = probe_items("ScienceQA", [{"question_id": 1, "answer": "B"}], [q])
    assert sqa[0].candidates == ["A", "B"] and sqa[0].correct == 1
    recs = [
        {"question_id": i, "answer": a, "image": None} for i, a in enumerate(["cat", "dog", "bus", "cat"])
    ]
    inet = probe_items("ImageNet", recs, ["What?"] * 4, n_distractors=2)
    assert len(inet) == 4 and all(len(it.candidates) == 3 for it in inet)
    assert all(it.candidates[it.correct] == r["answer"] for it, r in zip(inet, recs, strict=True))
    assert inet == probe_items("ImageNet", recs, ["What?"] * 4, n_distractors=2)  # seeded
    own = probe_items("Colours", [{"question_id": 5, "answer": "red", "candidates": ["blue", "red"]}], ["?"])
    assert own[0].correct == 1
    assert probe_items("Colours", [{"question_id": 5, "answer": "red", "candidates": ["blue"]}], ["?"]) == []
    assert probe_items("TextVQA", [{"question_id": 5, "answer": "red"}], ["?"]) == []


def test_batched_probe_equals_one_item_at_a_time(tiny: tuple[Any, Any], tmp_path: Path) -> None:
    """Many items in one forward pass (right-padded, different lengths) rank exactly as item by item."""
    model, processor = tiny
    questions = [QUESTION, "Which word?\nAnswer the question using a single word or phrase.", "Name it."]
    cands = [["red", "blue", "dark green square"], ["sun", "cat"], ["a", "b c d e f", "g"]]
    items = [
        ProbeItem(question_id=str(j), question=q, candidates=c, correct=j % len(c))
        for j, (q, c) in enumerate(zip(questions, cands, strict=True))
    ]
    one_by_one = [candidate_scores(model, processor, it.question, it.candidates) for it in items]
    from sefe.evaluation.probe import sequence_scores

    flat = sequence_scores(model, processor, [(it.question, c, None) for it in items for c in it.candidates])
    assert flat == pytest.approx([s for row in one_by_one for s in row], abs=1e-4)
    expect = sum(
        all(row[it.correct] > s for j, s in enumerate(row) if j != it.correct)
        for it, row in zip(items, one_by_one, strict=True)
    )
    for max_rows in (1, 4, 64):  # one item a pass, a few, all at once
        res = run_probe(model, processor, "Mixed", items, tmp_path, max_rows=max_rows)
        assert res is not None and res.correct == expect and res.total == 3


def test_probe_items_take_a_box_tasks_gold_box_among_its_candidates() -> None:
    boxes = ["[0.04, 0.04, 0.29, 0.29]", "[0.38, 0.04, 0.62, 0.29]"]
    rec = {"question_id": "l1", "image": "x.png", "answer_bbox": boxes[1], "candidates": boxes}
    (item,) = probe_items("Locate", [rec], ["Give the box of the star."])
    assert item.candidates == boxes and item.correct == 1
