"""GQA for coin-mini: compositional questions about shape scenes, several turns per train record.

Writes the official-format `eval_gt/GQA/testdev_balanced_questions.json` (qid -> question, answer, fullAnswer,
imageId, isBalanced, types, semantic program, annotations, ...) that the GQA scorer reads.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from sefe.coin.instructions import SHORT_ANSWER
from sefe.coin.layout import bundled_gt_files
from sefe.data.mini_bundle import TaskData, cap, conversation, human, task_rng
from sefe.data.mini_scenes import Scene, random_scene

N_TRAIN, N_TEST, N_GT_EXTRA = 32, 14, 2


@dataclass
class GqaQuestion:
    """One question with the structured annotation GQA ships for it."""

    question: str
    answer: str
    full: str  # GQA's fullAnswer sentence
    structural: str
    semantic: str
    detailed: str
    program: list[tuple[str, list[int], str]]  # (operation, dependencies, argument)
    refs: dict[str, int] = field(default_factory=dict)  # question-token index -> object index in the scene

    @property
    def types(self) -> dict[str, str]:
        return {"detailed": self.detailed, "semantic": self.semantic, "structural": self.structural}


def _refs(question: str, *pairs: tuple[str, int]) -> dict[str, int]:
    """Map the token position of each named word in the question to the object it refers to."""
    tokens = question.rstrip("?").split()
    return {str(tokens.index(word)): obj for word, obj in pairs}


def _oid(scene_no: int, obj_index: int) -> str:
    return str(3_000_000 + scene_no * 10 + obj_index)


_COLOUR_NAMES = ("red", "green", "blue", "yellow", "purple", "orange")


def _candidates(rng: random.Random, scene: Scene) -> list[GqaQuestion]:
    qs: list[GqaQuestion] = []
    objs = scene.objects
    for kind in scene.unique_kinds():
        o = scene.of_kind(kind)[0]
        i = objs.index(o)
        sel: tuple[str, list[int], str] = ("select", [], f"{kind} ({i})")
        q = f"What color is the {kind}?"
        qs.append(GqaQuestion(q, o.colour, f"The {kind} is {o.colour}.", "query", "attr", "color",
                              [sel, ("query", [0], "color")], _refs(q, (kind, i))))  # fmt: skip
        side = scene.side_of(o)
        q = f"On which side of the picture is the {kind}?"
        full = f"The {kind} is on the {side} of the image."
        qs.append(GqaQuestion(q, side, full, "query", "rel", "positionQuery",
                              [sel, ("query", [0], "hposition")], _refs(q, (kind, i))))  # fmt: skip
        other = rng.choice([c for c in _COLOUR_NAMES if c != o.colour])
        a, b = (o.colour, other) if rng.random() < 0.5 else (other, o.colour)
        q = f"Is the {kind} {a} or {b}?"
        qs.append(GqaQuestion(q, o.colour, f"The {kind} is {o.colour}.", "choose", "attr", "chooseAttr",
                              [sel, ("choose color", [0], f"{a}|{b}")], _refs(q, (kind, i))))  # fmt: skip
    present = {o.kind for o in objs}
    for kind in ("circle", "square", "triangle", "star"):
        yes = kind in present
        full = f"Yes, there is a {kind}." if yes else f"No, there are no {kind}s."
        arg = f"{kind} ({objs.index(scene.of_kind(kind)[0])})" if yes else f"{kind} (-)"
        q = f"Is there a {kind} in the picture?"
        qs.append(GqaQuestion(q, "yes" if yes else "no", full, "verify", "obj", "existC",
                              [("select", [], arg), ("exist", [0], "?")]))  # fmt: skip
    uniq = scene.unique_kinds()
    if len(uniq) >= 2:
        k1, k2 = rng.sample(uniq, 2)
        o1, o2 = scene.of_kind(k1)[0], scene.of_kind(k2)[0]
        i1, i2 = objs.index(o1), objs.index(o2)
        if abs(o1.centre_x - o2.centre_x) >= 6:
            left = o1.centre_x < o2.centre_x
            full = f"{'Yes' if left else 'No'}, the {k1} is to the {'left' if left else 'right'} of the {k2}."
            q = f"Is the {k1} to the left of the {k2}?"
            program = [("select", [], f"{k2} ({i2})"), ("relate", [0], f"{k1},to the left of,s ({i1})")]
            qs.append(GqaQuestion(q, "yes" if left else "no", full, "verify", "rel", "relVerify", program,
                                  _refs(q, (k1, i1), (k2, i2))))  # fmt: skip
    return qs


def _pick(rng: random.Random, qs: list[GqaQuestion], n: int) -> list[GqaQuestion]:
    """Alternate yes/no and open questions (existence questions would otherwise dominate the pool)."""
    verify = [q for q in qs if q.types["structural"] == "verify"]
    open_ = [q for q in qs if q.types["structural"] != "verify"]
    rng.shuffle(verify)
    rng.shuffle(open_)
    first, second = (verify, open_) if rng.random() < 0.5 else (open_, verify)
    picked: list[GqaQuestion] = []
    while len(picked) < n and (first or second):
        if first:
            picked.append(first.pop())
        first, second = second, first
    return picked


def _gt_entry(q: GqaQuestion, qid: str, image_id: str, scene_no: int) -> dict[str, Any]:
    ops = [{"operation": op, "dependencies": deps, "argument": arg} for op, deps, arg in q.program]
    sem_str = "->".join(f"{op}: {arg}" + (f" {deps}" if deps else "") for op, deps, arg in q.program)
    return {
        "semantic": ops,
        "entailed": [],
        "equivalent": [qid],
        "question": q.question,
        "imageId": image_id,
        "isBalanced": True,
        "groups": {
            "global": q.types["detailed"] if q.types["structural"] == "query" else None,
            "local": f"{q.types['structural'][:2]}-{q.types['detailed']}",
        },
        "answer": q.answer,
        "semanticStr": sem_str,
        "annotations": {
            "answer": {},
            "question": {tok: _oid(scene_no, i) for tok, i in q.refs.items()},
            "fullAnswer": {"1": _oid(scene_no, next(iter(q.refs.values())))} if q.refs else {},
        },
        "types": q.types,
        "fullAnswer": q.full,
    }


def build(seed: int) -> TaskData:
    rng = task_rng(seed, "GQA")
    out = TaskData("GQA")
    gt: dict[str, dict[str, Any]] = {}
    used_qids: set[str] = set()
    n_scenes = N_TRAIN + N_TEST + N_GT_EXTRA
    for s in range(n_scenes):
        split = "train" if s < N_TRAIN else "test"
        scene = random_scene(rng, rng.choice([96, 80]), rng.choice([72, 80]), rng.randint(2, 4),
                             kinds=("circle", "square", "triangle", "star"))  # fmt: skip
        image_id = (
            str(rng.randint(1_000_000, 2_417_000)) if split == "train" else f"n{rng.randint(1, 999999):06d}"
        )
        qs = _candidates(rng, scene)
        if split == "train":
            rel = out.add_image(f"GQA/images/{image_id}.jpg", scene.render())
            chosen = _pick(rng, qs, rng.randint(2, 4))
            turns = [
                (human(q.question, SHORT_ANSWER, image=(k == 0)), cap(q.answer)) for k, q in enumerate(chosen)
            ]
            out.train.append({"id": image_id, "image": rel, "conversations": conversation(turns)})
            continue
        q = _pick(rng, qs, 1)[0]
        qid = str(rng.randint(20_000_000, 21_000_000))
        while qid in used_qids:
            qid = str(rng.randint(20_000_000, 21_000_000))
        used_qids.add(qid)
        gt[qid] = _gt_entry(q, qid, image_id, s)
        if s >= N_TRAIN + N_TEST:
            continue  # in the official file only (real testdev has questions CoIN's test.json may not carry)
        rel = out.add_image(f"GQA/images/{image_id}.jpg", scene.render())
        out.test.append(
            {"question_id": qid, "image": rel, "text": f"{q.question}\n{SHORT_ANSWER}", "answer": q.answer}
        )
    out.add_json(bundled_gt_files("GQA")[0], gt)
    return out
