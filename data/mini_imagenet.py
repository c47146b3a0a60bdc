"""ImageNet for coin-mini: eight "classes", each a distinct drawn object with seeded pose, size and colours.

Class names and WordNet ids are real ImageNet ones, so the ImageNet layout (`train/<wnid>/<wnid>_<n>.JPEG`,
`val/ILSVRC2012_val_<8 digits>.JPEG`) and answers ("Traffic light") look like CoIN's.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from PIL import Image, ImageDraw

from sefe.coin.instructions import SHORT_ANSWER
from sefe.data.mini_bundle import TaskData, conversation, human, task_rng
from sefe.data.mini_draw import COLOURS, RGB, new_canvas

N_TRAIN_PER_CLASS, N_TEST_PER_CLASS = 4, 2
SIZE = 80
QUESTION = "What is the object in the image?"

Painter = Callable[[ImageDraw.ImageDraw, random.Random, float, float, float], None]


def _goldfish(d: ImageDraw.ImageDraw, rng: random.Random, cx: float, cy: float, s: float) -> None:
    body = (255, rng.randint(110, 150), 20)
    d.polygon([(cx + 8 * s, cy), (cx + 22 * s, cy - 10 * s), (cx + 22 * s, cy + 10 * s)], fill=body)
    d.ellipse((cx - 18 * s, cy - 10 * s, cx + 10 * s, cy + 10 * s), fill=body)
    d.ellipse((cx - 12 * s, cy - 4 * s, cx - 8 * s, cy), fill=COLOURS["black"])


def _traffic_light(d: ImageDraw.ImageDraw, rng: random.Random, cx: float, cy: float, s: float) -> None:
    d.rectangle((cx - 9 * s, cy - 26 * s, cx + 9 * s, cy + 26 * s), fill=(30, 30, 30))
    lit = rng.randrange(3)
    for k, colour in enumerate(("red", "yellow", "green")):
        rgb = COLOURS[colour] if k == lit else tuple(c // 3 for c in COLOURS[colour])
        y = cy + (k - 1) * 16 * s
        d.ellipse((cx - 6 * s, y - 6 * s, cx + 6 * s, y + 6 * s), fill=rgb)


def _daisy(d: ImageDraw.ImageDraw, rng: random.Random, cx: float, cy: float, s: float) -> None:
    for dx, dy in ((0, -1), (1, 0), (0, 1), (-1, 0), (0.7, 0.7), (-0.7, 0.7), (0.7, -0.7), (-0.7, -0.7)):
        px, py = cx + dx * 14 * s, cy + dy * 14 * s
        d.ellipse((px - 7 * s, py - 7 * s, px + 7 * s, py + 7 * s), fill=COLOURS["white"])
    d.ellipse((cx - 8 * s, cy - 8 * s, cx + 8 * s, cy + 8 * s), fill=COLOURS["yellow"])


def _umbrella(d: ImageDraw.ImageDraw, rng: random.Random, cx: float, cy: float, s: float) -> None:
    colour = COLOURS[rng.choice(["red", "blue", "purple", "green"])]
    d.pieslice((cx - 26 * s, cy - 22 * s, cx + 26 * s, cy + 22 * s), 180, 360, fill=colour)
    d.line((cx, cy, cx, cy + 22 * s), fill=COLOURS["black"], width=2)
    d.arc((cx - 8 * s, cy + 16 * s, cx, cy + 26 * s), 0, 180, fill=COLOURS["black"], width=2)


def _balloon(d: ImageDraw.ImageDraw, rng: random.Random, cx: float, cy: float, s: float) -> None:
    colour = COLOURS[rng.choice(["red", "blue", "purple", "orange"])]
    d.ellipse((cx - 14 * s, cy - 24 * s, cx + 14 * s, cy + 10 * s), fill=colour)
    d.polygon([(cx, cy + 9 * s), (cx - 4 * s, cy + 14 * s), (cx + 4 * s, cy + 14 * s)], fill=colour)
    d.line((cx, cy + 14 * s, cx + 3 * s, cy + 30 * s), fill=COLOURS["black"], width=1)


def _ladybug(d: ImageDraw.ImageDraw, rng: random.Random, cx: float, cy: float, s: float) -> None:
    d.ellipse((cx - 8 * s, cy - 24 * s, cx + 8 * s, cy - 10 * s), fill=COLOURS["black"])
    d.ellipse((cx - 18 * s, cy - 16 * s, cx + 18 * s, cy + 20 * s), fill=COLOURS["red"])
    d.line((cx, cy - 16 * s, cx, cy + 20 * s), fill=COLOURS["black"], width=2)
    for dx, dy in ((-9, -4), (9, -4), (-8, 9), (8, 9)):
        d.ellipse(
            (cx + (dx - 3) * s, cy + (dy - 3) * s, cx + (dx + 3) * s, cy + (dy + 3) * s),
            fill=COLOURS["black"],
        )


def _envelope(d: ImageDraw.ImageDraw, rng: random.Random, cx: float, cy: float, s: float) -> None:
    x1, y1, x2, y2 = cx - 28 * s, cy - 18 * s, cx + 28 * s, cy + 18 * s
    d.rectangle((x1, y1, x2, y2), fill=(250, 245, 225), outline=(120, 120, 120))
    d.line((x1, y1, cx, cy + 2 * s, x2, y1), fill=(120, 120, 120), width=2)


def _mushroom(d: ImageDraw.ImageDraw, rng: random.Random, cx: float, cy: float, s: float) -> None:
    d.rectangle((cx - 6 * s, cy - 4 * s, cx + 6 * s, cy + 22 * s), fill=(240, 225, 190))
    d.pieslice((cx - 24 * s, cy - 22 * s, cx + 24 * s, cy + 14 * s), 180, 360, fill=COLOURS["red"])
    for dx, dy in ((-12, -10), (0, -15), (12, -10)):
        d.ellipse(
            (cx + (dx - 3) * s, cy + (dy - 3) * s, cx + (dx + 3) * s, cy + (dy + 3) * s),
            fill=COLOURS["white"],
        )


# (class name, wnid, painter, backgrounds)
CLASSES: tuple[tuple[str, str, Painter, tuple[RGB, ...]], ...] = (
    ("Goldfish", "n01443537", _goldfish, ((70, 120, 200), (40, 90, 160))),
    ("Traffic light", "n06874185", _traffic_light, ((170, 210, 240), (200, 200, 200))),
    ("Daisy", "n11939491", _daisy, ((60, 140, 60), (90, 160, 70))),
    ("Umbrella", "n04507155", _umbrella, ((200, 200, 200), (170, 210, 240))),
    ("Balloon", "n02782093", _balloon, ((170, 210, 240), (245, 245, 240))),
    ("Ladybug", "n02165456", _ladybug, ((90, 160, 70), (130, 180, 90))),
    ("Envelope", "n03291819", _envelope, ((120, 80, 40), (90, 90, 90))),
    ("Mushroom", "n07734744", _mushroom, ((60, 110, 50), (110, 90, 60))),
)


def _picture(rng: random.Random, painter: Painter, backgrounds: tuple[RGB, ...]) -> Image.Image:
    img = new_canvas(SIZE, SIZE, rng.choice(backgrounds))
    scale = rng.uniform(0.8, 1.2)
    cx = SIZE / 2 + rng.uniform(-6, 6)
    cy = SIZE / 2 + rng.uniform(-4, 4)
    painter(ImageDraw.Draw(img), rng, cx, cy, scale)
    return img


def build(seed: int) -> TaskData:
    rng = task_rng(seed, "ImageNet")
    out = TaskData("ImageNet")
    val_numbers = iter(sorted(rng.sample(range(1, 50001), len(CLASSES) * N_TEST_PER_CLASS)))
    jobs = [(c, "train") for c in CLASSES for _ in range(N_TRAIN_PER_CLASS)]
    jobs += [(c, "val") for c in CLASSES for _ in range(N_TEST_PER_CLASS)]
    rng.shuffle(jobs)  # classes interleaved, as in a shuffled train file
    text = human(QUESTION, SHORT_ANSWER)
    for (name, wnid, painter, backgrounds), split in jobs:
        img = _picture(rng, painter, backgrounds)
        if split == "train":
            stem = f"{wnid}_{rng.randint(1, 99999)}"
            rel = f"ImageNet/train/{wnid}/{stem}.JPEG"
            while rel in out.files:
                stem = f"{wnid}_{rng.randint(1, 99999)}"
                rel = f"ImageNet/train/{wnid}/{stem}.JPEG"
            out.add_image(rel, img)
            out.train.append(
                {
                    "id": stem,
                    "image": rel,
                    "conversations": conversation([(human(QUESTION, SHORT_ANSWER, image=True), name)]),
                }
            )
        else:
            qid = f"ILSVRC2012_val_{next(val_numbers):08d}.JPEG"
            rel = out.add_image(f"ImageNet/val/{qid}", img)
            out.test.append({"question_id": qid, "image": rel, "text": text, "answer": name})
    return out
