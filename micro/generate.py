"""Generate Micro-CoIN v2: six continual tasks in the CoIN layout over one procedural visual world.

    sefe micro build --out DIR [--seed 0] [--train 600] [--test 200]

Each task has its own original answer style (what superficial forgetting overwrites) and is scored by the
CoIN scorer of that style (compat scorers, quirks off: runs use `fixed` mode). Every default task is a direct
readout of one object or one word, which the warm-started tiny model learns alone (measured:
`shared/spec/micro-coin-v2.md` section 2); binding, verification and shuffled options are not learned at this
size and live on the opt-in hard track (`HARD_TASKS`).

| # | task | question | answer style | CoIN scorer | probe candidates |
|---|---|---|---|---|---|
| 1 | Colour | What colour is the object? (one object) | short phrase (colour) | VQAv2 | the six colours |
| 2 | Shape | What is the object in the image? | class name, exact match | VQAv2 | the five shapes |
| 3 | Side | Is the object on the left side? (balanced) | Yes / No | VizWiz | Yes, No |
| 4 | Count | How many shapes ...? A. one .. D. four (fixed order) | option letter | ScienceQA | letters |
| 5 | Word | What word is written in the image? | short phrase (word) | TextVQA | the eight words |
| 6 | Locate | box of the object, centred in its cell | box [x1, y1, x2, y2] | Grounding | the nine boxes |

Test splits are stratified: every answer of a task is equally frequent (counts differ by at most one), so the
majority baseline is 1/k and a model answering one constant scores exactly that.

Written: images, `annotations/<Task>/{train,test}.json`, `annotations/<Task>/distractors.json` (the task's
answer pool: wrong answers for ASD and the probe), official-format ground truth for the scorers that read it
(`eval_gt/ScienceQA/{problems,pid_splits}.json`, `eval_gt/TextVQA/TextVQA_0.5.1_val.json`), `scenes.json`
(the truth of every picture, for the scene answerer), `tasks.json` (the tasks' declarations,
which `sefe.coin.root_tasks` reads when a tool opens this root), and `warmstart/train.json` (the mixed-style
pre-training corpus). A pure function of the seed and sizes.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import orjson

from sefe.atomic import atomic_write_bytes
from sefe.coin import layout
from sefe.coin.instructions import GROUNDING_PROMPT, MCQ_LETTER, SHORT_ANSWER, YES_NO_ANSWER
from sefe.micro.scenes import (
    COLOURS,
    GRID,
    NUMBER_WORDS,
    SHAPES,
    WORDS,
    Obj,
    Scene,
    article,
    box_string,
    cell_box,
    centred_box,
    draw_shapes,
    draw_word,
    render,
)

SHORT = SHORT_ANSWER
MCQ = MCQ_LETTER
YESNO = YES_NO_ANSWER
BOX_Q = f"{GROUNDING_PROMPT} "
YES_NO: tuple[str, ...] = ("Yes", "No")
COUNT_OPTIONS = "\n".join(f"{'ABCD'[k - 1]}. {NUMBER_WORDS[k]}" for k in range(1, 5))
#: the default track, in training order (each a direct readout, learnable alone: spec section 4)
TASK_ORDER: tuple[str, ...] = ("Colour", "Shape", "Side", "Count", "Word", "Locate")
#: the opt-in hard track: binding, verification, shuffled options; NOT learnable by the default model
HARD_TASKS: tuple[str, ...] = ("ColourBinding", "Position", "CountShuffled", "LocateAmong")
FORMAT_VERSION = 4
SIDES = ("left", "right", "top", "bottom")
CELLS: tuple[tuple[int, int], ...] = tuple((r, c) for r in range(GRID) for c in range(GRID))
LOCATE_BOXES: tuple[str, ...] = tuple(
    box_string(Obj("circle", "red", cell, centred_box(cell)).norm_box()) for cell in CELLS
)
#: held-out paraphrases of the instruction lines: half of every test asks with them, so a style kept by ASD
#: shows on a line the model never trained on (not line-to-style memory); none contains the phrases the
#: format checks key on, so those items are checked against the task's own style
PARAPHRASES: dict[str, str] = {
    SHORT: "Reply with just one word or a very short phrase.",
    YESNO: "Reply Yes or No, nothing else.",
    MCQ: "Give only the letter of the right choice.",
    BOX_Q: "Give the box coordinates [x1, y1, x2, y2] of the region this text names: ",
}
_MCQ_ASD: dict[str, Any] = {"original_style": "mcq", "answer": "option", "candidates": "options"}
_BOX_ASD: dict[str, Any] = {"answer": "box", "candidates": "boxes"}


@dataclass
class Item:
    scene: Scene
    question: str  # with its instruction line
    answer: str
    candidates: list[str]  # for the probe, the answer among them
    box: list[float] | None = None  # Locate: the target box


@dataclass(frozen=True)
class TaskDef:
    name: str
    style: str  # format_checks style
    scorer: str  # CoIN scorer that scores it
    asd: dict[str, Any]  # TaskSpec fields for ASD
    make: Callable[[random.Random, str | None], Item]  # (rng, wanted answer or None) -> item
    classes: tuple[str, ...] | None  # the answers a stratified test balances; None: not stratified
    hard: bool = False  # the opt-in track


def _stratified(rng: random.Random, classes: Sequence[str], n: int) -> list[str]:
    """`n` wanted answers, every class as often as the others (counts differ by at most one), shuffled.

    Why: on an unbalanced test a model that answers one constant scores its label's share, which reads as
    learning; with equal shares the majority baseline is 1/k and a collapse to a constant is visible."""
    order = list(classes)
    rng.shuffle(order)  # which classes get the extra item when k does not divide n
    wanted = [order[i % len(order)] for i in range(n)]
    rng.shuffle(wanted)
    return wanted


def _one(
    rng: random.Random,
    colour: str | None = None,
    shape: str | None = None,
    cell: tuple[int, int] | None = None,
) -> Scene:
    """One jittered object; the named facts fixed, the others drawn."""
    cell = cell or (rng.randrange(3), rng.randrange(3))
    o = Obj(shape or rng.choice(SHAPES), colour or rng.choice(list(COLOURS)), cell, cell_box(cell, rng))
    return Scene(objects=[o])


# ---- the default track: direct readouts, each learnable alone by the warm-started model -------------------


def _colour(rng: random.Random, want: str | None) -> Item:
    scene = _one(rng, colour=want)
    return Item(scene, f"What colour is the object?\n{SHORT}", scene.objects[0].colour, list(COLOURS))


def _shape(rng: random.Random, want: str | None) -> Item:
    scene = _one(rng, shape=want)
    return Item(scene, f"What is the object in the image?\n{SHORT}", scene.objects[0].shape, list(SHAPES))


def _side(rng: random.Random, want: str | None) -> Item:
    """A fixed predicate (left column or not) on one object: Yes and No each half the test."""
    yes = (want or rng.choice(YES_NO)) == "Yes"
    cell = (rng.randrange(3), 0 if yes else rng.choice((1, 2)))
    scene = _one(rng, cell=cell)
    return Item(scene, f"Is the object on the left side?\n{YESNO}", "Yes" if yes else "No", list(YES_NO))


def _count(rng: random.Random, want: str | None) -> Item:
    """Options always in the same order (one .. four): the letter is a readout of the count."""
    n = "ABCD".index(want) + 1 if want else rng.randint(1, 4)
    scene = draw_shapes(rng, n)
    return Item(
        scene, f"How many shapes are in the image?\n{COUNT_OPTIONS}\n{MCQ}", "ABCD"[n - 1], list("ABCD")
    )


def _word(rng: random.Random, want: str | None) -> Item:
    scene = draw_word(rng, want.upper() if want else None)
    word = (scene.word or "").lower()
    return Item(scene, f"What word is written in the image?\n{SHORT}", word, [w.lower() for w in WORDS])


def _locate(rng: random.Random, want: str | None) -> Item:
    """One fixed-size object centred in its cell: nine boxes, all of the same token length."""
    cell = CELLS[LOCATE_BOXES.index(want)] if want else (rng.randrange(3), rng.randrange(3))
    o = Obj(rng.choice(SHAPES), rng.choice(list(COLOURS)), cell, centred_box(cell))
    box = o.norm_box()
    return Item(Scene(objects=[o]), f"{BOX_Q}the {o.name}.", box_string(box), list(LOCATE_BOXES), box=box)


# ---- the opt-in hard track: binding, verification, shuffled options (not learnable by the default model) ---


def _colour_binding(rng: random.Random, want: str | None) -> Item:
    """The named object among 1-3 (binding: never learned at this size, spec 2)."""
    n = rng.randint(1, 3)
    colours = rng.sample([c for c in COLOURS if c != want], n)
    if want:
        colours[0] = want
    scene = draw_shapes(rng, n)
    scene.objects = [replace(o, colour=c) for o, c in zip(scene.objects, colours, strict=True)]
    target = scene.objects[0]
    return Item(scene, f"What colour is the {target.shape}?\n{SHORT}", target.colour, list(COLOURS))


def _side_of(o: Obj, side: str) -> bool:
    r, c = o.cell
    return {"left": c == 0, "right": c == 2, "top": r == 0, "bottom": r == 2}[side]


def _position(rng: random.Random, want: str | None) -> Item:
    """Binding + verification: the named object among 1-3, one of four sides."""
    scene = draw_shapes(rng, rng.randint(1, 3))
    target = rng.choice(scene.objects)
    want_yes = (want or rng.choice(YES_NO)) == "Yes"
    sides = [s for s in SIDES if _side_of(target, s) == want_yes] or list(SIDES)
    side = rng.choice(sides)
    answer = "Yes" if _side_of(target, side) else "No"
    return Item(scene, f"Is the {target.name} on the {side} side?\n{YESNO}", answer, list(YES_NO))


def _count_shuffled(rng: random.Random, want: str | None) -> Item:
    """Options shuffled every time: the letter is an interaction of count x order."""
    n = rng.randint(1, 4)
    scene = draw_shapes(rng, n)
    others = rng.sample([NUMBER_WORDS[k] for k in range(1, 5) if k != n], 3)
    k = "ABCD".index(want) if want else rng.randrange(4)
    options = [*others[:k], NUMBER_WORDS[n], *others[k:]]
    lines = "\n".join(f"{'ABCD'[j]}. {opt}" for j, opt in enumerate(options))
    return Item(scene, f"How many shapes are in the image?\n{lines}\n{MCQ}", "ABCD"[k], list("ABCD"))


def _locate_among(rng: random.Random, want: str | None) -> Item:
    """The named object's jittered box among 2-3 objects (binding, irregular box tokens)."""
    scene = draw_shapes(rng, rng.randint(2, 3))
    target = rng.choice(scene.objects)
    cands = [box_string(target.norm_box())] + [box_string(o.norm_box()) for o in scene.objects if o != target]
    return Item(scene, f"{BOX_Q}the {target.name}.", cands[0], cands, box=target.norm_box())


_CLASS = {"candidates": "classes"}
TASKS: dict[str, TaskDef] = {
    "Colour": TaskDef("Colour", "short", "VQAv2", _CLASS, _colour, tuple(COLOURS)),
    "Shape": TaskDef("Shape", "short", "VQAv2", _CLASS, _shape, SHAPES),  # exact match, not ImageNet's
    "Side": TaskDef("Side", "yesno", "VizWiz", {"candidates": "model"}, _side, YES_NO),
    "Count": TaskDef("Count", "letter", "ScienceQA", _MCQ_ASD, _count, tuple("ABCD")),
    "Word": TaskDef("Word", "short", "TextVQA", _CLASS, _word, tuple(w.lower() for w in WORDS)),
    "Locate": TaskDef("Locate", "box", "Grounding", _BOX_ASD, _locate, LOCATE_BOXES),
    "ColourBinding": TaskDef(
        "ColourBinding", "short", "VQAv2", _CLASS, _colour_binding, tuple(COLOURS), True
    ),
    "Position": TaskDef("Position", "yesno", "VizWiz", {"candidates": "model"}, _position, YES_NO, True),
    "CountShuffled": TaskDef(
        "CountShuffled", "letter", "ScienceQA", _MCQ_ASD, _count_shuffled, tuple("ABCD"), True
    ),
    "LocateAmong": TaskDef("LocateAmong", "box", "Grounding", _BOX_ASD, _locate_among, None, True),
}


def _dump(path: Path, data: Any) -> None:
    atomic_write_bytes(path, orjson.dumps(data, option=orjson.OPT_INDENT_2))


def _write_image(path: Path, data: bytes) -> None:
    """Plain write (no fsync: thousands of small files; `tasks.json`, written last, marks a complete root)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def paraphrase(question: str) -> str:
    """The question with its trained instruction line (or box prefix) swapped for its held-out paraphrase."""
    if question.startswith(BOX_Q):
        return PARAPHRASES[BOX_Q] + question[len(BOX_Q) :]
    head, _, last = question.rpartition("\n")
    if last not in PARAPHRASES:
        raise ValueError(f"no paraphrase for the instruction line {last!r}")
    return f"{head}\n{PARAPHRASES[last]}"


def _rng(seed: int, *parts: object) -> random.Random:
    return random.Random(":".join(str(p) for p in (seed, *parts)))


def task_declarations(tasks: list[str]) -> list[dict[str, Any]]:
    """What `tasks.json` holds: per task its answer style, scorer and ASD declaration."""
    out = []
    for name in tasks:
        t = TASKS[name]
        lines = [MCQ] if t.style == "letter" else [YESNO] if t.style == "yesno" else [SHORT]
        out.append(
            {
                "name": name,
                "style": t.style,
                "scorer": t.scorer,
                "asd": {"name": name, "instruction_lines": lines, **t.asd},
            }
        )
    return out


def _warmstart(seed: int, n: int, images: dict[str, dict[str, Any]], root: Path) -> list[dict[str, Any]]:
    """Mixed-style pre-training over the same world, with question forms the tasks do not use.

    Captions (every fact of a picture), existence yes/no, existence MCQ with shuffled options, short answers
    (what is at <place>, the shape of the <colour> object, the colour at <place>, the number of shapes, the
    written word), boxes of "the object <where>", and answer-then-explanation: the model learns to see the
    world and to say every answer word in every style, so a task's stage has to learn only its mapping.
    """
    rng = _rng(seed, "warmstart")
    records = []
    for i in range(n):
        scene = draw_word(rng) if rng.random() < 0.2 else draw_shapes(rng, rng.randint(1, 4))
        rel = f"images/warmstart/{i:05d}.png"
        _write_image(root / rel, render(scene, rng))
        images[rel] = scene.to_json()
        # captions are long and mostly template words: one picture in four gets one, so short, picture-
        # dependent answers carry most of the loss and the vision path learns fast
        turns: list[tuple[str, str]] = []
        if rng.random() < 0.25:
            turns.append(("Describe the image in detail.", scene.caption()))
        if scene.word is None:
            o = rng.choice(scene.objects)
            present = {x.name for x in scene.objects}
            absent = [f"{c} {s}" for c in COLOURS for s in SHAPES if f"{c} {s}" not in present]
            probe = o.name if rng.random() < 0.5 else rng.choice(absent)
            yn = "Yes" if probe in present else "No"
            opts = rng.sample(absent, 3)
            k = rng.randint(0, 3)
            opts.insert(k, o.name)
            lines = "\n".join(f"{'ABCD'[j]}. {x}" for j, x in enumerate(opts))
            turns += [
                (f"Is there {article(probe)} {probe} in the picture?\n{YESNO}", yn),
                (f"Which of these is in the picture?\n{lines}\n{MCQ}", "ABCD"[k]),
                (f"What is {o.where}?\n{SHORT}", o.name),
                (f"What shape is the {o.colour} object?\n{SHORT}", o.shape),
                (f"Name the colour of the object {o.where}.\n{SHORT}", o.colour),
                (f"Count the shapes in the picture.\n{SHORT}", NUMBER_WORDS[len(scene.objects)]),
                (f"Where is the object {o.where}? Give its bounding box.", box_string(o.norm_box())),
                (
                    f"What colour is the object {o.where}?\nAnswer, then explain briefly.",
                    f"{o.colour}. The {o.shape} {o.where} is drawn in {o.colour}.",
                ),
            ]
        else:
            turns += [
                (f"Which colour is the text?\n{SHORT}", scene.word_colour or ""),
                (f"Read the text in the picture.\n{SHORT}", (scene.word or "").lower()),
            ]
        for j, (q, a) in enumerate(turns):  # one turn a record: short sequences, cheap steps
            conv = [{"from": "human", "value": f"<image>\n{q}"}, {"from": "gpt", "value": a}]
            records.append({"id": f"warm-{i:05d}-{j}", "image": rel, "conversations": conv})
    return records


def build_micro(
    out: Path,
    seed: int = 0,
    n_train: int = 600,
    n_test: int = 60,
    n_warm: int = 1500,
    tasks: list[str] | None = None,
    warm_seed: int | None = None,
) -> Path:
    """Write the Micro-CoIN data root under `out` (deterministic for the arguments); returns `out`.

    `warm_seed` (default `seed`) draws the warm-start corpus: roots of several seeds built with one warm seed
    share one warm start (its cache key is the corpus), while their task data differ."""
    out = Path(out)
    names = list(tasks or TASK_ORDER)
    unknown = [t for t in names if t not in TASKS]
    if unknown:
        known = ", ".join((*TASK_ORDER, *HARD_TASKS))
        raise ValueError(f"unknown Micro-CoIN task(s) {unknown}; known: {known}")
    images: dict[str, dict[str, Any]] = {}
    sqa_problems: dict[str, Any] = {}
    sqa_test: list[str] = []
    textvqa: list[dict[str, Any]] = []
    for name in names:
        t = TASKS[name]
        for split, n in (("train", n_train), ("test", n_test)):
            rng = _rng(seed, name, split)
            records: list[dict[str, Any]] = []
            wanted: list[str | None] = [None] * n
            if split == "test" and t.classes:
                wanted = list(_stratified(rng, t.classes, n))
            for i in range(n):
                item = t.make(rng, wanted[i])
                rel = f"images/{name}/{split}/{i:05d}.png"
                _write_image(out / rel, render(item.scene, rng))
                images[rel] = item.scene.to_json()
                qid = f"{name.lower()}-{split}-{i:05d}"
                if split == "train":
                    conv = [
                        {"from": "human", "value": f"<image>\n{item.question}"},
                        {"from": "gpt", "value": item.answer},
                    ]
                    records.append({"id": qid, "image": rel, "conversations": conv})
                    continue
                held_out = i % 2 == 1  # every other test item asks with a line no training record uses
                text = paraphrase(item.question) if held_out else item.question
                rec: dict[str, Any] = {
                    "question_id": qid,
                    "image": rel,
                    "text": text,
                    "instruction": "held-out" if held_out else "trained",
                }
                if item.box is not None:
                    rec.update(answer_bbox=box_string(item.box), size=[48, 48])
                else:
                    rec["answer"] = item.answer
                rec["candidates"] = item.candidates
                records.append(rec)
                if t.scorer == "ScienceQA":
                    options = [
                        ln[3:] for ln in item.question.split("\n") if ln[:3] in ("A. ", "B. ", "C. ", "D. ")
                    ]
                    sqa_problems[qid] = {
                        "question": item.question.split("\n")[0],
                        "choices": options,
                        "answer": "ABCD".index(item.answer),
                        "split": "test",
                    }
                    sqa_test.append(qid)
                if t.scorer == "TextVQA":
                    textvqa.append(
                        {"question_id": qid, "question": item.question, "answers": [item.answer] * 10}
                    )
            _dump(layout.task_dir(out, name) / f"{split}.json", records)
        pool = sorted({c for rec in records for c in rec.get("candidates", [])})
        _dump(layout.task_dir(out, name) / "distractors.json", {"task": name, "answers": pool})
    if sqa_test:
        problems_file, splits_file = layout.bundled_gt_files("ScienceQA")
        _dump(out / problems_file, sqa_problems)
        _dump(out / splits_file, {"test": sqa_test})
    if textvqa:
        _dump(
            out / layout.bundled_gt_files("TextVQA")[0],
            {"dataset_version": "0.5.1", "data": textvqa},
        )
    _dump(
        out / "warmstart" / "train.json",
        _warmstart(seed if warm_seed is None else warm_seed, n_warm, images, out),
    )
    _dump(out / "scenes.json", images)
    _dump(
        out / "tasks.json",
        {
            "benchmark": "micro-coin",
            "format": FORMAT_VERSION,
            "seed": seed,
            "warm_seed": seed if warm_seed is None else warm_seed,
            "sizes": {"train": n_train, "test": n_test, "warmstart": n_warm},
            "tasks": task_declarations(names),
        },
    )
    return out
