"""Knowledge probe (essential forgetting): does the model still rank the correct answer first?

Generation can fail for two reasons: the model lost the knowledge, or it lost the answer *format* (it replies
with a letter where a colour was asked). The probe asks the model directly, by likelihood, whatever it would
generate: for a question with candidate answers it scores every candidate as the assistant's reply and
counts the question as known when the correct candidate scores highest. Knowledge that survives a format
loss shows up here and not in accuracy.

Score of a candidate (default `sum`): the summed log-probability of the candidate's tokens *and* the closing
`</s>`, given the prompt, i.e. log P(the complete reply is exactly this candidate). Why the sum and the
closing token: it is the probability of the whole answer, so `red` cannot win merely as a prefix of
`red square`, and candidates of different token lengths are compared on what the model would actually emit.
`mean` (per-token average) is offered for comparison; it removes the length penalty but is no longer a
probability of the reply. Tokens and prompt are built exactly as in training: LLaVA through `tokenize_record`
(the parity path), any other family through its own `encode` (its chat template, its end-of-turn marker and
its image handling), so the probe asks each family in the form it was trained on; a box task's candidates
are converted into the family's box convention first (`family_candidates`).

Candidates: a test record's own `candidates` list (Micro-CoIN writes one; ASD distractors can be stored the
same way) with `answer` (or, for a box task, `answer_bbox`) among them; ScienceQA: the option letters of the
question; ImageNet: the correct class and `n_distractors` other class names of the test set (seeded). Other
tasks have no probe. Items are scored in batches (`max_rows` candidate rows a forward pass).
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from sefe.models.family import ModelFamily

_NO_LIMIT = 1 << 62  # the probe never truncates: a cut reply would not be the candidate
Reduction = Literal["sum", "mean"]
_OPTION = re.compile(r"^\s*\(?([A-Z])[.)]\s+\S")


class ProbeItem(BaseModel):
    """One probe question: the question as asked, its image (relative path), candidates, correct index."""

    model_config = ConfigDict(extra="forbid")

    question_id: str
    question: str
    image: str | None = None
    candidates: list[str]
    correct: int


class ProbeResult(BaseModel):
    """Share (percent) of probe questions whose correct candidate is ranked first."""

    model_config = ConfigDict(extra="forbid")

    task: str
    rate: float
    correct: int
    total: int
    reduction: Reduction
    candidates: float  # mean number of candidates per question (chance = 100 / this)
    known: list[int] = Field(default_factory=list)  # per item, in item order: 1 = ranked first (bootstraps)


def option_letters(question: str) -> list[str]:
    """The option letters of a lettered-options question (`A. ...` lines), in order."""
    return [m.group(1) for ln in question.split("\n") if (m := _OPTION.match(ln))]


def probe_items(
    task: str,
    records: Sequence[Any],
    questions: Sequence[str],
    n_distractors: int = 9,
    seed: int = 0,
) -> list[ProbeItem]:
    """Probe items for a task's test records (`questions`: each record's question as asked), or [].

    `records` are CoIN test records (objects or dicts with `question_id`, `image`, `answer`, optional
    `candidates`). A record without usable candidates is left out.
    """

    def get(rec: Any, name: str) -> Any:
        return rec.get(name) if isinstance(rec, dict) else getattr(rec, name, None)

    classes: list[str] = []
    if task.lower() == "imagenet":
        classes = sorted({str(get(r, "answer")) for r in records if get(r, "answer")})
    rng = random.Random(f"probe:{task}:{seed}")
    items: list[ProbeItem] = []
    for rec, q in zip(records, questions, strict=True):
        answer = get(rec, "answer")
        if answer is None and hasattr(rec, "model_extra") and rec.model_extra:
            answer = rec.model_extra.get(
                "answer_bbox"
            )  # a box task whose candidates are boxes (Micro Locate)
        if answer is None:
            answer = get(rec, "answer_bbox")
        extra = get(rec, "candidates")
        if extra is None and hasattr(rec, "model_extra") and rec.model_extra:
            extra = rec.model_extra.get("candidates")
        cands: list[str] | None = None
        if isinstance(extra, list) and answer is not None and str(answer) in [str(c) for c in extra]:
            cands = [str(c) for c in extra]
        elif task.lower() == "scienceqa" and answer is not None:
            letters = option_letters(q)
            cands = letters if str(answer) in letters else None
        elif classes and answer is not None:
            others = [c for c in classes if c != answer]
            cands = [str(answer), *rng.sample(others, min(n_distractors, len(others)))]
        if not cands or len(cands) < 2:
            continue
        items.append(
            ProbeItem(
                question_id=str(get(rec, "question_id")),
                question=q,
                image=get(rec, "image"),
                candidates=cands,
                correct=cands.index(str(answer)),
            )
        )
    return items


def _pixels(processor: Any, image: Any) -> Any:
    return processor.image_processor(images=image, return_tensors="pt")["pixel_values"][0]


def sequence_scores(
    model: Any, processor: Any, seqs: Sequence[tuple[str, str, Any]], reduction: Reduction = "sum"
) -> list[float]:
    """Score of each `(question, candidate, pixel values or None)` as the reply, all in one forward pass.

    Why one pass: the probe asks every candidate of every item; one forward per item (as before) made it the
    slowest part of a Micro-CoIN stage. Right padding and the labels' mask keep each row's score its own."""
    import torch

    from sefe.models.dataset import DataCollator
    from sefe.models.tokenization import image_token_count, tokenize_record

    if not seqs:
        return []
    n_img = image_token_count(processor) if any(px is not None for _, _, px in seqs) else 0
    feats = []
    for question, cand, pixels in seqs:
        ids, labels = tokenize_record(
            [(question, cand)], processor.tokenizer, n_img if pixels is not None else 0
        )
        feats.append({"input_ids": torch.tensor(ids), "labels": torch.tensor(labels), "pixel_values": pixels})
    return _batch_scores(model, DataCollator(processor)(feats), reduction)


def family_sequence_scores(
    model: Any,
    family: ModelFamily,
    processor: Any,
    seqs: Sequence[tuple[str, str, Any]],
    reduction: Reduction = "sum",
) -> list[float]:
    """Score of each `(question, candidate, PIL image or None)` as the reply, through `family`'s template.

    Why `family.encode`: it labels exactly the assistant's answer and its end-of-turn marker, which is what
    the probe scores (LLaVA: the candidate and `</s>`; Qwen/InternVL: the candidate and `<|im_end|>`), with
    the image expanded as that family does for this image; no template is rebuilt here."""
    if not seqs:
        return []
    encoded = [
        family.encode(processor, [(q, c)], img, _NO_LIMIT, where=f"probe candidate {c!r}")
        for q, c, img in seqs
    ]
    return _batch_scores(model, family.collate(processor, encoded), reduction)


def family_candidates(
    family: ModelFamily, processor: Any, item: ProbeItem, image: Any, boxes: bool, where: str
) -> list[str]:
    """The item's candidates as `family` was trained on them: for a box task (`boxes`) each candidate's box
    in the family's convention (`target_to_family`, as `FamilyDataset` converts the training answers)."""
    if not boxes or image is None:
        return list(item.candidates)
    return [
        family.target_to_family(c, image.size, processor, f"{where}, candidate {c!r}")
        for c in item.candidates
    ]


def _box_task(task: str, data_root: Path) -> bool:
    """True for a task whose answers are boxes (the data root's `tasks.json` first, then CoIN's tasks)."""
    from sefe.coin.root_tasks import find_task
    from sefe.coin.tasks import TaskError

    try:
        return find_task(task, data_root).answer == "box"
    except TaskError:
        return False


def _batch_scores(model: Any, batch: dict[str, Any], reduction: Reduction) -> list[float]:
    """Summed (or mean) log-probability of each row's labelled tokens in a right-padded batch."""
    import torch

    device = next(model.parameters()).device
    batch = {k: v.to(device) for k, v in batch.items()}
    if "pixel_values" in batch:
        batch["pixel_values"] = batch["pixel_values"].to(model.dtype)
    labels = batch.pop("labels")
    with torch.inference_mode():
        logits = model(**batch, use_cache=False).logits.float()
    logp = torch.log_softmax(logits[:, :-1], dim=-1)
    target = labels[:, 1:]
    mask = target != -100
    picked = logp.gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1) * mask
    total = picked.sum(-1)
    if reduction == "mean":
        total = total / mask.sum(-1).clamp(min=1)
    return [float(v) for v in total]


def candidate_scores(
    model: Any,
    processor: Any,
    question: str,
    candidates: Sequence[str],
    image: Any = None,
    reduction: Reduction = "sum",
) -> list[float]:
    """Log-likelihood score of each candidate as the reply to `question` (an image: a PIL image or None)."""
    pixels = _pixels(processor, image) if image is not None else None
    return sequence_scores(model, processor, [(question, c, pixels) for c in candidates], reduction)


def _chunks(items: Sequence[ProbeItem], max_rows: int) -> list[list[ProbeItem]]:
    """Consecutive items whose candidates add up to at most `max_rows` (one item at least)."""
    out: list[list[ProbeItem]] = []
    rows = 0
    for it in items:
        if not out or rows + len(it.candidates) > max_rows:
            out.append([])
            rows = 0
        out[-1].append(it)
        rows += len(it.candidates)
    return out


def run_probe(
    model: Any,
    processor: Any,
    task: str,
    items: Sequence[ProbeItem],
    data_root: Path,
    reduction: Reduction = "sum",
    max_rows: int = 64,
    family: ModelFamily | None = None,
) -> ProbeResult | None:
    """Rank the candidates of every item (batched: up to `max_rows` candidate rows a forward pass); None when
    the task has no probe items. `family` None or LLaVA: the parity path (`sequence_scores`); another family
    scores through its own template and image handling (`family_sequence_scores`)."""
    from sefe.coin.images import open_image

    if not items:
        return None
    own = family if family is not None and family.name != "llava" else None  # None: the parity path
    boxes = own is not None and _box_task(task, data_root)
    was_training = bool(getattr(model, "training", False))
    model.eval()
    known: list[int] = []
    try:
        for chunk in _chunks(items, max_rows):
            seqs: list[tuple[str, str, Any]] = []
            for it in chunk:
                img = open_image(data_root, it.image, f"probe {task} {it.question_id}") if it.image else None
                if own is not None:
                    cands = family_candidates(
                        own, processor, it, img, boxes, f"probe {task} {it.question_id}"
                    )
                    seqs += [(it.question, c, img) for c in cands]
                else:
                    pixels = _pixels(processor, img) if img is not None else None
                    seqs += [(it.question, c, pixels) for c in it.candidates]
            if own is not None:
                scores = family_sequence_scores(model, own, processor, seqs, reduction)
            else:
                scores = sequence_scores(model, processor, seqs, reduction)
            start = 0
            for it in chunk:
                mine = scores[start : start + len(it.candidates)]
                start += len(it.candidates)
                right = mine[it.correct]  # known: strictly above every other candidate (a tie is not known)
                known.append(int(all(right > s for j, s in enumerate(mine) if j != it.correct)))
    finally:
        if was_training:
            model.train()
    n = len(items)
    correct = sum(known)
    return ProbeResult(
        task=task,
        rate=100.0 * correct / n,
        correct=correct,
        total=n,
        reduction=reduction,
        candidates=sum(len(it.candidates) for it in items) / n,
        known=known,
    )
