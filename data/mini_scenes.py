"""Scenes of coloured shapes: the checkable content behind GQA, VQAv2, VizWiz and Grounding questions.

A scene is generated from a seeded `random.Random`, rendered with `mini_draw`, and queried for facts
(colour of the only circle, number of squares, which side an object is on), so every answer in coin-mini is
true of its image and a model could learn it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from PIL import Image

from sefe.data.mini_draw import COLOURS, RGB, SHAPE_KINDS, ShapeKind, draw_shape, new_canvas

BACKGROUNDS: dict[str, RGB] = {
    "white": (245, 245, 240),
    "gray": (150, 150, 150),
    "beige": (225, 205, 160),
    "light blue": (170, 210, 240),
}


@dataclass(frozen=True)
class Obj:
    kind: ShapeKind
    colour: str
    box: tuple[int, int, int, int]  # x1, y1, x2, y2 in pixels, inclusive

    @property
    def centre_x(self) -> float:
        return (self.box[0] + self.box[2]) / 2

    @property
    def area(self) -> int:
        return (self.box[2] - self.box[0] + 1) * (self.box[3] - self.box[1] + 1)


@dataclass
class Scene:
    width: int
    height: int
    background: str
    objects: list[Obj] = field(default_factory=list)

    def render(self) -> Image.Image:
        img = new_canvas(self.width, self.height, BACKGROUNDS[self.background])
        for o in self.objects:
            draw_shape(img, o.kind, o.box, COLOURS[o.colour])
        return img

    def of_kind(self, kind: str) -> list[Obj]:
        return [o for o in self.objects if o.kind == kind]

    def unique_kinds(self) -> list[ShapeKind]:
        """Kinds present exactly once (so 'the circle' names one object)."""
        return [k for k in SHAPE_KINDS if len(self.of_kind(k)) == 1]

    def side_of(self, obj: Obj) -> str:
        return "left" if obj.centre_x < self.width / 2 else "right"

    def identifying_phrase(self, obj: Obj) -> str | None:
        """A referring expression that picks out `obj` alone, or None when the scene has no short one."""
        same_kind = self.of_kind(obj.kind)
        if len(same_kind) == 1:
            return f"the {obj.colour} {obj.kind}" if len(self.objects) > 2 else f"the {obj.kind}"
        same_both = [o for o in same_kind if o.colour == obj.colour]
        if len(same_both) == 1:
            return f"the {obj.colour} {obj.kind}"
        sides = [self.side_of(o) for o in same_both]
        if sides.count(self.side_of(obj)) == 1:
            return f"the {obj.colour} {obj.kind} on the {self.side_of(obj)}"
        return None


def _overlaps(a: tuple[int, int, int, int], b: tuple[int, int, int, int], gap: int) -> bool:
    return not (a[2] + gap < b[0] or b[2] + gap < a[0] or a[3] + gap < b[1] or b[3] + gap < a[1])


def random_scene(
    rng: random.Random,
    width: int,
    height: int,
    n_objects: int,
    *,
    kinds: tuple[ShapeKind, ...] = SHAPE_KINDS,
    colours: tuple[str, ...] = ("red", "green", "blue", "yellow", "purple", "orange"),
    min_size: int = 14,
    max_size: int = 28,
) -> Scene:
    """Place `n_objects` non-overlapping shapes (a 3-pixel gap) on a random background."""
    background = rng.choice(sorted(BACKGROUNDS))
    scene = Scene(width, height, background)
    attempts = 0
    while len(scene.objects) < n_objects:
        attempts += 1
        if attempts > 2000:
            raise RuntimeError(f"could not place {n_objects} objects on a {width}x{height} canvas")
        size = rng.randint(min_size, min(max_size, width - 4, height - 4))
        x1 = rng.randint(2, width - size - 2)
        y1 = rng.randint(2, height - size - 2)
        box = (x1, y1, x1 + size - 1, y1 + size - 1)
        if any(_overlaps(box, o.box, 3) for o in scene.objects):
            continue
        scene.objects.append(Obj(rng.choice(kinds), rng.choice(colours), box))
    return scene
