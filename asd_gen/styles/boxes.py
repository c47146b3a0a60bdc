"""Grounding boxes: parse and format `[x1, y1, x2, y2]` strings, IoU, perturbed wrong boxes, and the
conversions a prompt to the assisting model needs (unpadded box, referring expression).

CoIN boxes are normalised to the image padded to a square (coordinates in [0, 1]); see the CoIN data spec.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

Box = tuple[float, float, float, float]
_NUM = r"\s*(-?\d+(?:\.\d+)?(?:[eE]-?\d+)?)\s*"
BOX_RE = re.compile(rf"^\[{_NUM},{_NUM},{_NUM},{_NUM}\]\.?$")


def parse_box(text: str) -> Box | None:
    """The box in a string like `[0.12, 0.34, 0.56, 0.78]`, or None when it is not exactly one box."""
    m = BOX_RE.match(text.strip())
    if not m:
        return None
    x1, y1, x2, y2 = (float(g) for g in m.groups())
    if x2 < x1 or y2 < y1:
        return None
    return (x1, y1, x2, y2)


def unpad_box(box: Sequence[float], width: int, height: int) -> Box:
    """A box normalised to the square-padded image, as fractions of the unpadded image's width and height.

    CoIN pads the shorter side equally on both ends and divides by max(W, H); the assisting model is sent the
    original image, and the official prompt says its boxes are "normalized with the image width and height
    as 1". Values are clipped to [0, 1] (two-decimal CoIN boxes can overshoot the image by a rounding step).
    """
    side = float(max(width, height))
    x1, y1, x2, y2 = (v * side for v in box)
    dx, dy = (side - width) / 2, (side - height) / 2
    out = ((x1 - dx) / width, (y1 - dy) / height, (x2 - dx) / width, (y2 - dy) / height)
    return tuple(min(1.0, max(0.0, v)) for v in out)  # type: ignore[return-value]


_REFERRING_HEAD = re.compile(r"\b(describes?|description|region|bounding box|coordinates?|locate)\b", re.I)


def referring_expression(question: str) -> str:
    """The phrase a Grounding question asks to locate, without the instruction sentence around it.

    CoIN's question is `Please provide the bounding box coordinate of the region this sentence describes:
    <expression>.`: the text after the instruction's colon, without the period the template adds. A question
    without such an instruction head is already the expression.
    """
    text = question.strip()
    head, sep, tail = text.partition(":")
    if sep and tail.strip() and _REFERRING_HEAD.search(head):
        text = tail.strip()
    return text[:-1].rstrip() if text.endswith(".") and len(text) > 1 else text


def decimals_of(text: str) -> int:
    """How many decimals the data uses (CoIN boxes use two); formatted boxes match the source."""
    nums = re.findall(r"\d+\.(\d+)", text)
    return max((len(n) for n in nums), default=2)


def format_box(box: Box, decimals: int = 2) -> str:
    return "[" + ", ".join(f"{v:.{decimals}f}" for v in box) + "]"


def iou(a: Box, b: Box) -> float:
    """Intersection over union; 0 when the union is not positive."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def perturbed_box(target: Box, rng: random.Random, decimals: int = 2, max_iou: float = 0.5) -> Box:
    """A plausible wrong box: the target moved and rescaled inside the unit square, IoU < max_iou.

    Shifts grow with every failed try, and the last resort is a box in the farthest corner, so it always ends.
    """
    w = max(target[2] - target[0], 10**-decimals)
    h = max(target[3] - target[1], 10**-decimals)
    for attempt in range(64):
        spread = 0.5 + attempt / 16
        nw = min(1.0, w * (0.6 + 0.8 * rng.random()))
        nh = min(1.0, h * (0.6 + 0.8 * rng.random()))
        cx = (target[0] + target[2]) / 2 + (rng.random() * 2 - 1) * spread * max(w, 0.2)
        cy = (target[1] + target[3]) / 2 + (rng.random() * 2 - 1) * spread * max(h, 0.2)
        x1 = min(max(cx - nw / 2, 0.0), 1.0 - nw)
        y1 = min(max(cy - nh / 2, 0.0), 1.0 - nh)
        box = _rounded((x1, y1, x1 + nw, y1 + nh), decimals)
        if box[2] > box[0] and box[3] > box[1] and iou(box, target) < max_iou:
            return box
    # Fallback: a quarter-size box in the corner farthest from the target centre.
    cx, cy = (target[0] + target[2]) / 2, (target[1] + target[3]) / 2
    x1 = 0.0 if cx > 0.5 else 0.75
    y1 = 0.0 if cy > 0.5 else 0.75
    return _rounded((x1, y1, x1 + 0.25, y1 + 0.25), decimals)


def _rounded(box: Box, decimals: int) -> Box:
    return tuple(round(v, decimals) for v in box)  # type: ignore[return-value]
