"""A task's answer pool, and which pool an answer came from (superficial forgetting beyond the form).

Why: the format check sees only an answer's form. After a later task, a colour question answered `triangle`
is a well-formed short answer and a wrong one, yet it is the later task's answer: the style took over. The
pool of a task is what its answers can be: `annotations/<Task>/distractors.json` (`answers`, written by
generated benchmarks such as Micro-CoIN), else the distinct gold answers of its `test.json` (none for a box
task: `read_pool`). An answer is
*out of pool* when, normalised, it is none of them; it is *from task j's pool* when it is one of task j's
and not one of its own task's.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import orjson

from sefe.coin.layout import evaluation_file, task_dir

POOL_FILE = "distractors.json"
#: CoIN tasks whose gold answers include a bare yes / no (VQAv2's, GQA's, VizWiz's "is this ...?" questions,
#: OCRVQA's "is this book ...?", the odd TextVQA one); ImageNet's and ScienceQA's do not.
YES_NO_TASKS = frozenset({"vqav2", "gqa", "vizwiz", "ocrvqa", "textvqa"})


def normalise(answer: str) -> str:
    """Case, blanks inside boxes, surrounding blanks and one final period do not make another answer."""
    t = answer.strip().removesuffix(".").strip().casefold()
    return " ".join(t.replace("[ ", "[").replace(" ]", "]").split())


def read_pool(root: Path, task: str) -> frozenset[str] | None:
    """The normalised answer pool of `task` under `root`, or None when it has none.

    From `test.json`, a gold answer that is a list (ten human answers, as VQA files may store them) adds each
    of its strings. A box task (records with `answer_bbox`, CoIN's Grounding) has no pool there: every gold
    box is a different one, so nearly every answer would be "out of pool" and no answer "from" it; the number
    would say nothing. A generated root that draws its boxes from a fixed set lists them in
    `distractors.json` (Micro-CoIN's Locate), and that pool is used as it is.
    """
    pool_file = task_dir(Path(root), task) / POOL_FILE
    if pool_file.is_file():
        answers = orjson.loads(pool_file.read_bytes()).get("answers") or []
        return frozenset(normalise(str(a)) for a in answers)
    test = evaluation_file(Path(root), task)
    if not test.is_file():
        return None
    records = [r for r in orjson.loads(test.read_bytes()) if isinstance(r, dict)]
    if any(r.get("answer_bbox") is not None for r in records):
        return None
    pool: set[str] = set()
    for gold in (r.get("answer") for r in records):
        for answer in gold if isinstance(gold, list) else [gold]:
            if isinstance(answer, str):
                pool.add(normalise(answer))
    return frozenset(pool) or None


def answers_include_yes_no(task: str, root: Path | str | None = None) -> bool:
    """Whether a bare Yes / No can be one of `task`'s answers: its pool says so where the root has one; CoIN
    tasks by their known answers; an unknown task gets the benefit of the doubt."""
    if root is not None:
        pool_file = task_dir(Path(root), task) / POOL_FILE
        if pool_file.is_file():
            pool = read_pool(Path(root), task) or frozenset()
            return "yes" in pool or "no" in pool
    from sefe.coin.tasks import coin_task_name

    name = coin_task_name(task)
    return name is None or name.lower() in YES_NO_TASKS


def out_of_pool_rate(answers: Sequence[str], pool: frozenset[str]) -> float | None:
    """Percent of answers that are none of the pool's."""
    if not answers:
        return None
    return round(100.0 * sum(normalise(a) not in pool for a in answers) / len(answers), 2)


def from_pools(answers: Sequence[str], own: str, pools: dict[str, frozenset[str]]) -> dict[str, float]:
    """Per other task j: percent of answers in j's pool and not in `own`'s (an answer in several other pools
    counts for each)."""
    if not answers:
        return {}
    mine = pools.get(own, frozenset())
    keys = [normalise(a) for a in answers]
    return {
        j: round(100.0 * sum(k in pool and k not in mine for k in keys) / len(keys), 2)
        for j, pool in pools.items()
        if j != own
    }
