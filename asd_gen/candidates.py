"""Wrong candidates taken from the data itself (no model call).

- ScienceQA: the record's other options.
- ImageNet (`classes`): other class names of the task.
- Grounding (`boxes`): other boxes on the same image, then perturbed boxes, always IoU < 0.5 to the target.
- `pool` (any task, `--distractors pool`): other answers of the same task to questions of the same kind
  (same answer type, yes/no or number, else the same opening words: "what color ..." gets colours), backing
  off to broader kinds only when a kind has too few distinct answers.
Every draw is seeded per record and turn, and candidate lists are sorted before drawing, so results do not
depend on hash seeds, dict order or platform.
"""

from __future__ import annotations

import random
import re
import string
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence

from sefe.asd_gen.styles.boxes import Box, format_box, iou, parse_box, perturbed_box
from sefe.asd_gen.styles.rng import sample

_ARTICLES = {"a", "an", "the"}
_PUNCT = str.maketrans({c: " " for c in string.punctuation})
_YES_NO = {"yes", "no"}
_WORD = re.compile(r"[a-z0-9']+")
POOL_TOP = 64  # draw pool distractors among the most frequent answers of a kind: frequent = plausible


def normalize_answer(text: str) -> str:
    """Case, punctuation and article-insensitive form used to tell answers apart."""
    words = text.casefold().translate(_PUNCT).split()
    kept = [w for w in words if w not in _ARTICLES]
    return " ".join(kept or words)  # an answer that *is* "a" or "the" stays itself


def _distinct(cands: Iterable[str], exclude: Iterable[str]) -> list[str]:
    seen = {normalize_answer(e) for e in exclude}
    out: list[str] = []
    for c in cands:
        n = normalize_answer(c)
        if n and n not in seen:
            seen.add(n)
            out.append(c)
    return out


def wrong_options(options: Sequence[str], correct_index: int) -> list[str]:
    """ScienceQA: the record's own options other than the correct one, in their order."""
    return _distinct((o for i, o in enumerate(options) if i != correct_index), [options[correct_index]])


class ClassPool:
    """All distinct answers of a task (the class names for ImageNet)."""

    def __init__(self, answers: Iterable[str]) -> None:
        counts = Counter(a.strip() for a in answers if a.strip())
        self.classes = sorted(_distinct(sorted(counts), []))

    def draw(self, correct: str, k: int, rng: random.Random) -> list[str]:
        return sample(rng, _distinct(self.classes, [correct]), k)


def _is_number(norm: str) -> bool:
    return bool(norm) and norm.replace(" ", "").replace(".", "", 1).isdigit()


def answer_type(answer: str) -> str | None:
    n = normalize_answer(answer)
    if n in _YES_NO:
        return "type:yesno"
    if _is_number(n):
        return "type:number"
    return None


def question_kinds(question: str) -> list[str]:
    """Kinds of a question, most specific first: its first three, two, one words."""
    words = _WORD.findall(question.split("\n")[-1].casefold())
    return [f"q{n}:" + " ".join(words[:n]) for n in (3, 2, 1) if len(words) >= n]


class AnswerPool:
    """Answers of one task grouped by question kind, for `--distractors pool`."""

    def __init__(self) -> None:
        self._kinds: dict[str, Counter[str]] = defaultdict(Counter)

    def add(self, question: str, answer: str) -> None:
        a = answer.strip()
        if not normalize_answer(a):
            return
        keys = [*question_kinds(question), "*"]
        if t := answer_type(a):
            keys.insert(0, t)
        for key in keys:
            self._kinds[key][a] += 1

    def draw(self, question: str, correct: str, k: int, rng: random.Random) -> list[str]:
        """k distinct wrong answers, from the most specific kind that has them.

        A yes/no question only ever gets the other of yes/no (fewer than k): any other answer would be an
        obviously wrong option, which teaches nothing.
        """
        keys = [*question_kinds(question), "*"]
        t = answer_type(correct)
        if t == "type:yesno":
            keys = [t]
        elif t:
            keys.insert(0, t)
        chosen: list[str] = []
        for key in keys:
            counter = self._kinds.get(key)
            if not counter:
                continue
            ranked = [a for a, _ in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))]
            fresh = _distinct(ranked, [correct, *chosen])[:POOL_TOP]
            chosen += sample(rng, fresh, k - len(chosen))
            if len(chosen) >= k:
                break
        return chosen


class BoxPool:
    """Boxes per image of a Grounding task."""

    def __init__(self) -> None:
        self._by_image: dict[str, list[Box]] = defaultdict(list)

    def add(self, image: str | None, answer: str) -> None:
        box = parse_box(answer)
        if image is None or box is None or box[2] <= box[0] or box[3] <= box[1]:
            return  # no image to share, or a degenerate box: never offered as a distractor
        if box not in self._by_image[image]:
            self._by_image[image].append(box)

    def draw(
        self, image: str | None, target: Box, k: int, rng: random.Random, decimals: int = 2
    ) -> list[str]:
        """k distinct wrong boxes: other boxes of the image first, then perturbed ones; all IoU < 0.5."""
        formatted = (format_box(b, decimals) for b in sorted(self._by_image.get(image or "", [])))
        own = format_box(target, decimals)
        picked = [s for s in formatted if s != own and iou(parse_box(s) or target, target) < 0.5]
        picked = sample(rng, list(dict.fromkeys(picked)), k)
        taken = {format_box(target, decimals), *picked}
        tries = 0
        while len(picked) < k and tries < 100:
            tries += 1
            s = format_box(perturbed_box(target, rng, decimals), decimals)
            if s not in taken:
                taken.add(s)
                picked.append(s)
        return picked
