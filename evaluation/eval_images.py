"""Images as the release's evaluation opens them: RGB for every task but ScienceQA.

The release's ScienceQA script opens images without converting them to RGB and pads them to a square in their
own mode (LLaVA's `expand2square`: a new image of the same mode filled with the processor's mean colour, the
original pasted in the middle); the CLIP processor converts to RGB only after that. For RGB and RGBA images
the result equals converting first; for palette (`P`) images that are not square the pasted pixel indices
meet the new image's palette, so their colours change. That is what the published ScienceQA numbers saw, so
sefe does the same. Modes the release cannot pad (a 3-tuple fill is refused for `L`, `LA`, ...: its script
stops there) are converted to RGB first, the only reasonable continuation.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sefe.coin.images import open_image

#: Tasks whose evaluation images are opened as stored (no RGB conversion before padding).
UNCONVERTED_TASKS = frozenset({"ScienceQA"})


def fill_colour(image_mean: Sequence[float]) -> tuple[int, ...]:
    """LLaVA's padding colour: the processor's mean, times 255, truncated to int."""
    return tuple(int(x * 255) for x in image_mean)


def expand_to_square(image: Any, fill: tuple[int, ...]) -> Any:
    """LLaVA's `expand2square` in the image's own mode (square images are returned unchanged)."""
    from PIL import Image

    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    try:
        canvas = Image.new(image.mode, (side, side), fill)
    except (TypeError, ValueError):
        image = image.convert("RGB")
        canvas = Image.new("RGB", (side, side), fill)
    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
    return canvas


def open_eval_image(root: Path, rel: str, where: str, task: str, fill: tuple[int, ...] | None) -> Any:
    """The image handed to the processor: RGB, or for ScienceQA as stored and padded like the release.

    `rel` is the record's `image`, opened inside `root` only (`sefe.coin.images`). `fill` None (no processor
    at hand, e.g. the vLLM engine): ScienceQA images are only left unconverted.
    """
    if task not in UNCONVERTED_TASKS:
        return open_image(root, rel, where)
    image = open_image(root, rel, where, mode=None)
    return image if fill is None else expand_to_square(image, fill)
