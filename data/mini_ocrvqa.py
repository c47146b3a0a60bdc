"""OCRVQA for coin-mini: book covers with a title, an author and a genre (cover colour + icon).

Train records are multi-turn (several questions about one cover), as in LLaVA-1.5's OCR-VQA data: author,
title, genre, and yes/no genre checks. Covers are portrait, like real book covers.
"""

from __future__ import annotations

import random
from typing import Any

from PIL import Image, ImageDraw

from sefe.coin.instructions import SHORT_ANSWER
from sefe.data.mini_bundle import TaskData, conversation, human, task_rng
from sefe.data.mini_draw import COLOURS, RGB, draw_shape, draw_text_centered, fit_scale, new_canvas

N_TRAIN, N_TEST = 28, 14
W, H = 72, 96

# genre -> (cover colour, icon, short name used in "Is this a ... book?")
GENRES: dict[str, tuple[RGB, str, str]] = {
    "Cookbooks, Food & Wine": ((235, 120, 30), "plate", "cookbook"),
    "Travel": ((90, 160, 220), "mountain", "travel book"),
    "Science Fiction & Fantasy": ((70, 30, 110), "star", "sci-fi book"),
    "History": ((120, 80, 40), "column", "history book"),
    "Children's Books": ((240, 200, 40), "balloon", "children's book"),
    "Business & Money": ((40, 130, 70), "coin", "business book"),
}
_FIRST = ["Jane", "Omar", "Lena", "Paul", "Rita", "Ken", "Ava", "Tom", "Mia", "Sam", "Eve", "Leo"]
_LAST = ["Moss", "Reed", "Hart", "Cole", "Fox", "Lane", "Shaw", "Wood", "Frost", "Park", "Grey", "Stone"]
_ADJ = ["Silent", "Red", "Golden", "Hidden", "Last", "Wild", "Quiet", "Lost", "Bright", "Iron"]
_NOUN = ["River", "Moon", "Garden", "Road", "Kitchen", "Empire", "Island", "Market", "Forest", "Harbor"]


def _icon(img: Image.Image, icon: str) -> None:
    d = ImageDraw.Draw(img)
    if icon == "plate":
        d.ellipse((26, 58, 46, 78), fill=COLOURS["white"])
        d.rectangle((48, 58, 50, 78), fill=(200, 200, 200))
    elif icon == "mountain":
        d.polygon([(18, 80), (34, 56), (50, 80)], fill=COLOURS["white"])
        d.polygon([(36, 80), (46, 64), (56, 80)], fill=(200, 200, 200))
    elif icon == "star":
        draw_shape(img, "star", (26, 56, 46, 76), COLOURS["yellow"])
    elif icon == "column":
        for x in (24, 33, 42):
            d.rectangle((x, 60, x + 5, 80), fill=(230, 220, 190))
        d.rectangle((21, 56, 50, 59), fill=(230, 220, 190))
    elif icon == "balloon":
        d.ellipse((28, 54, 44, 72), fill=COLOURS["red"])
        d.line((36, 72, 36, 84), fill=COLOURS["black"])
    elif icon == "coin":
        d.ellipse((26, 56, 46, 76), fill=(230, 190, 40))
        d.rectangle((35, 60, 37, 72), fill=(150, 110, 20))


def _cover(title: str, author: str, genre: str) -> Image.Image:
    colour, icon, _ = GENRES[genre]
    img = new_canvas(W, H, colour)
    text_colour = COLOURS["black"] if sum(colour) > 450 else COLOURS["white"]
    for k, word in enumerate(title.upper().split()):
        draw_text_centered(img, 10 + 14 * k, word, text_colour, fit_scale(word, W - 6, 2))
    draw_text_centered(img, 44, author.upper(), text_colour, 1)
    _icon(img, icon)
    return img


def _asin(rng: random.Random) -> str:
    body = "".join(str(rng.randint(0, 9)) for _ in range(9))
    return body + rng.choice("0123456789X")


def _questions(rng: random.Random, title: str, author: str, genre: str) -> list[tuple[str, str]]:
    other = rng.choice([g for g in sorted(GENRES) if g != genre])
    asked_yes = rng.random() < 0.5
    probe = genre if asked_yes else other
    qs = [
        ("Who wrote this book?", author),
        ("What is the title of this book?", title),
        ("What type of book is this?", genre),
        (f"Is this a {GENRES[probe][2]}?", "Yes" if asked_yes else "No"),
    ]
    probe2 = rng.choice([genre, other])
    qs.append((f"Is this book related to {probe2}?", "Yes" if probe2 == genre else "No"))
    rng.shuffle(qs)
    return qs


def build(seed: int) -> TaskData:
    rng = task_rng(seed, "OCRVQA")
    out = TaskData("OCRVQA")
    seen: set[str] = set()
    for i in range(N_TRAIN + N_TEST):
        asin = _asin(rng)
        while asin in seen:
            asin = _asin(rng)
        seen.add(asin)
        title = f"{rng.choice(_ADJ)} {rng.choice(_NOUN)}"
        author = f"{rng.choice(_FIRST)} {rng.choice(_LAST)}"
        genre = rng.choice(sorted(GENRES))
        rel = out.add_image(f"OCRVQA/images/{asin}.jpg", _cover(title, author, genre))
        qs = _questions(rng, title, author, genre)
        if i < N_TRAIN:
            n_turns = rng.randint(3, 5)
            turns = [(human(q, SHORT_ANSWER, image=(k == 0)), a) for k, (q, a) in enumerate(qs[:n_turns])]
            out.train.append({"id": asin, "image": rel, "conversations": conversation(turns)})
        else:
            k = rng.randrange(len(qs))
            q, a = qs[k]
            rec: dict[str, Any] = {
                "question_id": f"{asin}_{k}",
                "image": rel,
                "text": f"{q}\n{SHORT_ANSWER}",
                "answer": a,
            }
            out.test.append(rec)
    return out
