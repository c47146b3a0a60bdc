"""VizWiz for coin-mini: close-up "photos" of products, clothes and bank notes, some too blurred to read.

Questions carry VizWiz's extra instruction to answer `Unanswerable` when the picture does not allow an answer;
about a quarter of the items are unanswerable because their picture is degraded beyond reading.
"""

from __future__ import annotations

import random

from PIL import Image

from sefe.coin.instructions import SHORT_ANSWER, VIZWIZ_UNANSWERABLE
from sefe.data.mini_bundle import TaskData, cap, conversation, human, task_rng
from sefe.data.mini_draw import COLOURS, degrade, draw_text_centered, fit_scale, new_canvas

N_TRAIN, N_TEST = 32, 14
SIZE = 80
_FOODS = ["BEANS", "CORN", "SOUP", "TEA", "RICE", "PEAS", "TUNA"]
_CLOTH_COLOURS = [
    "red",
    "green",
    "blue",
    "yellow",
    "purple",
    "orange",
    "white",
]  # no black: reads as "too dark"


def _product(rng: random.Random) -> tuple[Image.Image, str, str]:
    img = new_canvas(SIZE, SIZE, (rng.randint(90, 140),) * 3)
    food = rng.choice(_FOODS)
    img.paste(Image.new("RGB", (60, 60), COLOURS[rng.choice(["red", "blue", "green", "orange"])]), (10, 10))
    draw_text_centered(img, 40, food, COLOURS["white"], fit_scale(food, 56, 2))
    question = rng.choice(["What is in this can?", "What kind of food is this?", "What is this?"])
    return img, question, food.lower()


def _cloth(rng: random.Random) -> tuple[Image.Image, str, str]:
    colour = rng.choice(_CLOTH_COLOURS)
    img = new_canvas(SIZE, SIZE, COLOURS[colour])
    # a fold line and a seam, so it reads as fabric rather than a flat swatch
    shade = tuple(max(c - 40, 0) for c in COLOURS[colour])
    img.paste(Image.new("RGB", (SIZE, 3), shade), (0, rng.randint(20, 60)))
    img.paste(Image.new("RGB", (2, SIZE), shade), (rng.randint(15, 65), 0))
    question = rng.choice(["What color is this shirt?", "What color is this?"])
    return img, question, colour


def _banknote(rng: random.Random) -> tuple[Image.Image, str, str]:
    img = new_canvas(SIZE, SIZE, (rng.randint(150, 200),) * 3)
    value = rng.choice(["1", "5", "10", "20", "50"])
    img.paste(Image.new("RGB", (70, 40), (120, 170, 120)), (5, 20))
    draw_text_centered(img, 40, value, (20, 60, 20), 3)
    question = rng.choice(["How much is this bill?", "What denomination is this money?"])
    return img, question, value


_MAKERS = (_product, _cloth, _banknote)


def _photo(rng: random.Random) -> tuple[Image.Image, str, str]:
    img, question, answer = rng.choice(_MAKERS)(rng)
    if rng.random() < 0.25:  # unreadable: heavy blur and almost black, whatever was in front of the camera
        return degrade(img, blur=rng.uniform(7, 10), darken=rng.uniform(0.9, 0.95)), question, "unanswerable"
    return degrade(img, blur=rng.uniform(0, 0.8), darken=rng.uniform(0, 0.3)), question, answer


def build(seed: int) -> TaskData:
    rng = task_rng(seed, "VizWiz")
    out = TaskData("VizWiz")
    train_numbers = sorted(rng.sample(range(0, 20000), N_TRAIN))
    val_numbers = sorted(rng.sample(range(0, 7750), N_TEST))
    for n in train_numbers:
        img, question, answer = _photo(rng)
        name = f"VizWiz_train_{n:08d}"
        rel = out.add_image(f"VizWiz/train/{name}.jpg", img)
        text = human(question, VIZWIZ_UNANSWERABLE, SHORT_ANSWER, image=True)
        out.train.append({"id": name, "image": rel, "conversations": conversation([(text, cap(answer))])})
    for n in val_numbers:
        img, question, answer = _photo(rng)
        qid = f"VizWiz_val_{n:08d}.jpg"
        rel = out.add_image(f"VizWiz/val/{qid}", img)
        out.test.append(
            {
                "question_id": qid,
                "image": rel,
                "text": f"{question}\n{VIZWIZ_UNANSWERABLE}\n{SHORT_ANSWER}",
                "answer": answer,
            }
        )
    return out
