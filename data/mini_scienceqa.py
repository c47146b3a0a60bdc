"""ScienceQA for coin-mini: multiple-choice problems whose answers follow from the drawn picture or a rule.

Problem kinds: magnets (attract/repel from the facing poles), map directions (which labelled city is
farthest north/south/east/west), thermometers (highest reading), and two text-only kinds (dictionary guide
words, states of matter). Besides the CoIN records it writes the official ground truth the scorer reads:
`eval_gt/ScienceQA/problems.json` (pid -> problem) and `pid_splits.json`.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from PIL import Image

from sefe.coin.instructions import MCQ_LETTER
from sefe.coin.layout import bundled_gt_files
from sefe.data.mini_bundle import TaskData, conversation, human, task_rng
from sefe.data.mini_draw import COLOURS, draw_text, new_canvas, text_size

Problem = dict[str, Any]
Maker = Callable[[random.Random], tuple[Problem, Image.Image | None]]

N_TRAIN, N_VAL, N_TEST = 36, 6, 14


def _problem(
    question: str,
    choices: list[str],
    answer: int,
    *,
    hint: str,
    has_image: bool,
    grade: str,
    subject: str,
    topic: str,
    category: str,
    skill: str,
    lecture: str,
    solution: str,
) -> Problem:
    return {
        "question": question,
        "choices": choices,
        "answer": answer,
        "hint": hint,
        "image": "image.png" if has_image else None,
        "task": "closed choice",
        "grade": grade,
        "subject": subject,
        "topic": topic,
        "category": category,
        "skill": skill,
        "lecture": lecture,
        "solution": solution,
    }


def _shuffled_choices(rng: random.Random, correct: str, wrong: list[str]) -> tuple[list[str], int]:
    choices = [correct, *wrong]
    rng.shuffle(choices)
    return choices, choices.index(correct)


def _magnets(rng: random.Random) -> tuple[Problem, Image.Image]:
    img = new_canvas(96, 64, (245, 245, 240))
    left = rng.choice(["NS", "SN"])
    right = rng.choice(["NS", "SN"])
    for x0, poles in ((4, left), (52, right)):
        for k, pole in enumerate(poles):
            colour = COLOURS["red"] if pole == "N" else COLOURS["blue"]
            box = (x0 + 20 * k, 22, x0 + 20 * k + 19, 41)
            img.paste(Image.new("RGB", (20, 20), colour), box[:2])
            draw_text(img, (x0 + 20 * k + 7, 26), pole, COLOURS["white"])
    facing = (left[1], right[0])
    repel = facing[0] == facing[1]
    correct = "repel" if repel else "attract"
    choices, answer = _shuffled_choices(rng, correct, ["attract" if repel else "repel"])
    poles = f"the {facing[0]} pole of one magnet faces the {facing[1]} pole of the other"
    solution = f"In the picture {poles}. " + (
        "Like poles repel, so these magnets will repel."
        if repel
        else "Opposite poles attract, so these magnets will attract."
    )
    return (
        _problem(
            "Will these magnets attract or repel each other?",
            choices,
            answer,
            hint="Two magnets are placed as shown. "
            "Magnets that attract pull together; magnets that repel push apart.",
            has_image=True,
            grade=rng.choice(["grade2", "grade3", "grade4"]),
            subject="natural science",
            topic="physics",
            category="Magnets",
            skill="Predict magnetic forces",
            lecture="Magnets can pull or push on each other without touching. "
            "Like poles repel and opposite poles attract.",
            solution=solution,
        ),
        img,
    )


_CITIES = ["Avon", "Bly", "Cade", "Dunn", "Elm", "Fenn", "Gale", "Hale", "Ives", "Joss", "Kent", "Lodi"]
_DIRECTIONS = {"north": (1, -1), "south": (1, 1), "east": (0, 1), "west": (0, -1)}  # (axis, sign)


def _map(rng: random.Random) -> tuple[Problem, Image.Image]:
    img = new_canvas(96, 96, (225, 205, 160))
    direction = rng.choice(sorted(_DIRECTIONS))
    axis, sign = _DIRECTIONS[direction]
    n = rng.choice([3, 4, 5])
    names = rng.sample(_CITIES, n)
    # distinct coordinates on the asked axis, at least 10 px apart, so the answer is unambiguous on the map
    # and spread on the other axis too, so no two labels overlap
    slots = rng.sample(range(10, 80, 12), n)
    others = rng.sample(range(6, 72, 16), n)
    points = [(s, o) if axis == 0 else (o, s) for s, o in zip(slots, others, strict=True)]
    for (x, y), name in zip(points, names, strict=True):
        img.paste(Image.new("RGB", (4, 4), COLOURS["black"]), (x, y))
        w, _ = text_size(name)
        tx = min(max(x - w // 2, 0), 96 - w)
        draw_text(img, (tx, y + 5 if y < 80 else y - 12), name, COLOURS["blue"])
    draw_text(img, (86, 1), "N", COLOURS["red"])
    key = [p[axis] * sign for p in points]
    best = names[key.index(max(key))]
    choices = names[:]
    rng.shuffle(choices)
    return (
        _problem(
            f"Which of these cities is farthest {direction}?",
            choices,
            choices.index(best),
            hint="",
            has_image=True,
            grade=rng.choice(["grade3", "grade4", "grade5"]),
            subject="social science",
            topic="geography",
            category="Geography",
            skill="Read a map: cardinal directions",
            lecture="Maps have four cardinal directions: north, south, east, and west. "
            "North is at the top of this map.",
            solution=f"To find the answer, look at the map. {best} is farthest {direction}.",
        ),
        img,
    )


_POSITIONS = ["the left one", "the middle one", "the right one"]


def _thermometers(rng: random.Random) -> tuple[Problem, Image.Image]:
    img = new_canvas(96, 80, (245, 245, 240))
    temps = rng.sample(range(5, 95, 10), 3)
    for k, t in enumerate(temps):
        x = 12 + 30 * k
        img.paste(Image.new("RGB", (8, 56), (200, 200, 200)), (x, 6))
        h = 4 + t // 2
        img.paste(Image.new("RGB", (8, h), COLOURS["red"]), (x, 62 - h))
        label = f"{t}C"
        draw_text(img, (x + 4 - text_size(label)[0] // 2, 66), label, COLOURS["black"])
    hottest = temps.index(max(temps))
    choices = _POSITIONS[:]
    return (
        _problem(
            "Which thermometer shows the highest temperature?",
            choices,
            hottest,
            hint="The thermometers show the temperature of three cups of water, in degrees Celsius.",
            has_image=True,
            grade=rng.choice(["grade3", "grade5"]),
            subject="natural science",
            topic="physics",
            category="Heat and thermal energy",
            skill="Read a thermometer",
            lecture="A thermometer shows temperature: the higher the red bar, the higher the temperature.",
            solution=f"{_POSITIONS[hottest].capitalize()} reads {max(temps)} degrees Celsius, "
            "the highest of the three.",
        ),
        img,
    )


_WORDS = [
    "apple", "badge", "basket", "berry", "cabin", "candle", "cobalt", "dancer", "desert", "eagle", "fabric",
    "garden", "gentle", "harbor", "island", "jacket", "kettle", "lantern", "meadow", "nectar", "orbit",
    "pepper", "quartz", "river", "saddle", "timber", "tunnel", "velvet", "walnut", "yellow",
]  # fmt: skip


def _guide_words(rng: random.Random) -> tuple[Problem, None]:
    lo, mid, hi = sorted(rng.sample(_WORDS, 3))
    outside = rng.choice([w for w in _WORDS if w < lo or w > hi] or ["zebra"])
    choices, answer = _shuffled_choices(rng, mid, [outside])
    return (
        _problem(
            f"Which word would you find on a dictionary page with the following guide words?\n{lo} - {hi}",
            choices,
            answer,
            hint="",
            has_image=False,
            grade=rng.choice(["grade3", "grade4"]),
            subject="language science",
            topic="reference-skills",
            category="Reference skills",
            skill="Use guide words",
            lecture="Guide words show the first and last words on a dictionary page; "
            "words in alphabetical order between them are on that page.",
            solution=f"{mid.capitalize()} comes between {lo} and {hi} in alphabetical order; "
            f"{outside} does not.",
        ),
        None,
    )


_MATTER = {
    "solid": ["rock", "wooden spoon", "ice cube", "coin", "brick"],
    "liquid": ["milk", "orange juice", "rain water", "vinegar", "olive oil"],
    "gas": ["steam", "the air in a balloon", "helium", "water vapor"],
}


def _matter(rng: random.Random) -> tuple[Problem, None]:
    state = rng.choice(sorted(_MATTER))
    correct = rng.choice(_MATTER[state])
    others = [rng.choice(v) for k, v in sorted(_MATTER.items()) if k != state]
    choices, answer = _shuffled_choices(rng, correct, others)
    hint = rng.choice(
        [
            "",
            f"Hint: a {state} "
            + {
                "solid": "has its own shape.",
                "liquid": "takes the shape of its container.",
                "gas": "spreads out to fill a space.",
            }[state],
        ]
    )
    return (
        _problem(
            f"Select the {state}.",
            choices,
            answer,
            hint=hint,
            has_image=False,
            grade=rng.choice(["grade1", "grade2", "grade3"]),
            subject="natural science",
            topic="physics",
            category="States of matter",
            skill="Identify solids, liquids, and gases",
            lecture="Matter is usually a solid, a liquid, or a gas.",
            solution=f"{correct.capitalize()} is a {state}.",
        ),
        None,
    )


_MAKERS: tuple[Maker, ...] = (_magnets, _map, _thermometers, _guide_words, _matter, _map, _magnets)


def question_text(problem: Problem) -> str:
    """CoIN's ScienceQA layout: optional `Context:` line, the question, one `A. ...` line per option."""
    lines = [f"Context: {problem['hint']}"] if problem["hint"] else []
    lines.append(problem["question"])
    lines += [f"{chr(65 + i)}. {c}" for i, c in enumerate(problem["choices"])]
    return "\n".join(lines)


def build(seed: int) -> TaskData:
    rng = task_rng(seed, "ScienceQA")
    out = TaskData("ScienceQA")
    total = N_TRAIN + N_VAL + N_TEST
    pids = [str(p) for p in rng.sample(range(1, 21209), total)]
    splits = ["train"] * N_TRAIN + ["val"] * N_VAL + ["test"] * N_TEST
    problems: dict[str, Problem] = {}
    for i, (pid, split) in enumerate(zip(pids, splits, strict=True)):
        problem, img = _MAKERS[i % len(_MAKERS)](rng)
        problem["split"] = split
        problems[pid] = problem
        image_rel = f"ScienceQA/images/{split}/{pid}/image.png"
        if img is not None and split != "val":  # val problems live only in the side files
            out.add_image(image_rel, img)
        text = question_text(problem)
        letter = chr(65 + problem["answer"])
        if split == "train":
            rec: dict[str, Any] = {"id": pid}
            if img is not None:
                rec["image"] = image_rel
            rec["conversations"] = conversation([(human(text, MCQ_LETTER, image=img is not None), letter)])
            out.train.append(rec)
        elif split == "test":
            test: dict[str, Any] = {"question_id": pid}
            if img is not None:
                test["image"] = image_rel
            test["text"] = f"{text}\n{MCQ_LETTER}"
            test["answer"] = letter
            out.test.append(test)
    test_ids = [p for p, s in zip(pids, splits, strict=True) if s == "test"]
    val_ids = [p for p, s in zip(pids, splits, strict=True) if s == "val"]
    train_ids = [p for p, s in zip(pids, splits, strict=True) if s == "train"]
    problems_file, splits_file = bundled_gt_files("ScienceQA")
    out.add_json(problems_file, dict(sorted(problems.items(), key=lambda kv: int(kv[0]))))
    out.add_json(
        splits_file,
        {
            "train": train_ids,
            "val": val_ids,
            "test": test_ids,
            "minival": val_ids[: len(val_ids) // 2],
            "minitest": test_ids[: len(test_ids) // 2],
            "trainval": train_ids + val_ids,
        },
    )
    return out
