"""The Micro-CoIN visual world: small pictures of coloured shapes on a 3x3 grid, or a rendered word.

Every picture comes with its scene (what is drawn where), so every answer, distractor, box and explanation is
computed from the truth. Drawing reuses the pixel-deterministic primitives of coin-mini (`mini_draw`): integer
coordinates, bitmap-font text, PNG without metadata, so a seed gives the same bytes on any machine.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from sefe.data.mini_draw import RGB, draw_shape, draw_text, encode, new_canvas, text_size

IMAGE_SIZE = 48  # pixels, square: the warm-start model sees 3x3 patches of 16 px, one per grid cell
GRID = 3
CELL = IMAGE_SIZE // GRID
COLOURS: dict[str, RGB] = {
    "red": (220, 30, 30),
    "green": (30, 160, 50),
    "blue": (30, 70, 220),
    "yellow": (235, 200, 20),
    "purple": (130, 40, 170),
    "orange": (245, 130, 20),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "star")
WORDS: tuple[str, ...] = ("SUN", "CAT", "BOX", "MAP", "CUP", "KEY", "PEN", "BUS")
BACKGROUND: RGB = (250, 250, 250)
ROWS = ("top", "middle", "bottom")
COLS = ("left", "centre", "right")
NUMBER_WORDS = ("zero", "one", "two", "three", "four")


@dataclass(frozen=True)
class Obj:
    shape: str
    colour: str
    cell: tuple[int, int]  # (row, col)
    box: tuple[int, int, int, int]  # pixels x1, y1, x2, y2 (inclusive)

    @property
    def name(self) -> str:
        return f"{self.colour} {self.shape}"

    @property
    def where(self) -> str:
        r, c = self.cell
        if (r, c) == (1, 1):
            return "in the centre"
        if r == 1:
            return f"on the {COLS[c]}"
        if c == 1:
            return f"at the {ROWS[r]}"
        return f"at the {ROWS[r]} {COLS[c]}"

    def norm_box(self) -> list[float]:
        """[x1, y1, x2, y2] / size (the image is square, so CoIN's padding is a no-op)."""
        x1, y1, x2, y2 = self.box
        return [round(v / IMAGE_SIZE, 2) for v in (x1, y1, x2 + 1, y2 + 1)]


@dataclass
class Scene:
    objects: list[Obj] = field(default_factory=list)
    word: str | None = None
    word_colour: str | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "objects": [
                {"shape": o.shape, "colour": o.colour, "cell": list(o.cell), "box": o.norm_box()}
                for o in self.objects
            ],
            "word": self.word,
            "word_colour": self.word_colour,
        }

    def caption(self) -> str:
        """A full description (the warm-start caption and the scene answerer's explanation source)."""
        if self.word is not None:
            return f'The word "{self.word}" is written in {self.word_colour} letters.'
        n = len(self.objects)
        parts = [f"{article(o.name)} {o.name} {o.where}" for o in self.objects]
        body = parts[0] if n == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
        count = "one shape" if n == 1 else f"{NUMBER_WORDS[n]} shapes"
        return f"There {'is' if n == 1 else 'are'} {count}: {body}."


def article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def box_string(box: list[float]) -> str:
    return "[" + ", ".join(f"{v:.2f}" for v in box) + "]"


def cell_box(cell: tuple[int, int], rng: random.Random) -> tuple[int, int, int, int]:
    """A shape of 11..14 px inside its 16 px cell, jittered."""
    r, c = cell
    size = rng.randint(11, CELL - 2)
    x0 = c * CELL + rng.randint(0, CELL - size - 1)
    y0 = r * CELL + rng.randint(0, CELL - size - 1)
    return (x0, y0, x0 + size - 1, y0 + size - 1)


def centred_box(cell: tuple[int, int]) -> tuple[int, int, int, int]:
    """A 12 px shape centred in its cell: one box per cell, so a box answer is a readout of the cell."""
    r, c = cell
    return (c * CELL + 2, r * CELL + 2, c * CELL + CELL - 3, r * CELL + CELL - 3)


def draw_shapes(rng: random.Random, n: int, distinct_shapes: bool = True) -> Scene:
    """`n` objects in distinct cells; shapes distinct (so 'the circle' names one object), colours too."""
    cells = rng.sample([(r, c) for r in range(GRID) for c in range(GRID)], n)
    shapes = rng.sample(SHAPES, n) if distinct_shapes else [rng.choice(SHAPES) for _ in range(n)]
    colours = rng.sample(list(COLOURS), n)
    objs = [
        Obj(s, col, cell, cell_box(cell, rng)) for s, col, cell in zip(shapes, colours, cells, strict=True)
    ]
    return Scene(objects=objs)


def draw_word(rng: random.Random, word: str | None = None) -> Scene:
    word = word or rng.choice(WORDS)
    return Scene(word=word, word_colour=rng.choice(["red", "green", "blue", "purple"]))


def render(scene: Scene, rng: random.Random) -> bytes:
    """PNG bytes of the scene."""
    img = new_canvas(IMAGE_SIZE, IMAGE_SIZE, BACKGROUND)
    for o in scene.objects:
        draw_shape(img, o.shape, o.box, COLOURS[o.colour])  # type: ignore[arg-type]
    if scene.word is not None:
        # one letter per grid column, centred in the middle row with a few pixels of jitter: a small vision
        # tower reads letters where it looks for objects (free placement left words unreadable to it)
        scale = 2
        w, h = text_size(scene.word, scale)
        x = max(0, (IMAGE_SIZE - w) // 2 + rng.randint(-2, 2))
        y = max(0, (IMAGE_SIZE - h) // 2 + rng.randint(-2, 2))
        draw_text(img, (x, y), scene.word, COLOURS[scene.word_colour or "blue"], scale)
    return encode(img, "PNG")
