"""Drawing primitives for the synthetic coin-mini images.

Everything here is pixel-deterministic on any machine: shapes use integer coordinates and text uses Pillow's
built-in *bitmap* font (no FreeType, whose rasterisation differs between versions), scaled up with nearest
neighbour so a small vision model can read it. Images are saved without metadata so bytes depend only on
pixels and the encoder.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Literal

from PIL import Image, ImageDraw, ImageFilter, ImageFont

RGB = tuple[int, int, int]
ShapeKind = Literal["circle", "square", "triangle", "diamond", "star"]

# Colour names are the answers; keep hues far apart so the names are unambiguous after JPEG.
COLOURS: dict[str, RGB] = {
    "red": (220, 30, 30),
    "green": (30, 160, 50),
    "blue": (30, 70, 220),
    "yellow": (245, 210, 20),
    "purple": (130, 40, 170),
    "orange": (245, 130, 20),
    "black": (15, 15, 15),
    "white": (250, 250, 250),
}
SHAPE_KINDS: tuple[ShapeKind, ...] = ("circle", "square", "triangle", "diamond", "star")

_FONT = ImageFont.load_default_imagefont()


def new_canvas(width: int, height: int, background: RGB) -> Image.Image:
    return Image.new("RGB", (width, height), background)


def draw_shape(img: Image.Image, kind: ShapeKind, box: tuple[int, int, int, int], colour: RGB) -> None:
    """Draw a filled shape touching all four sides of `box` (x1, y1, x2, y2, inclusive): the box is exact."""
    d = ImageDraw.Draw(img)
    x1, y1, x2, y2 = box
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    if kind == "circle":
        d.ellipse(box, fill=colour)
    elif kind == "square":
        d.rectangle(box, fill=colour)
    elif kind == "triangle":
        d.polygon([(cx, y1), (x2, y2), (x1, y2)], fill=colour)
    elif kind == "diamond":
        d.polygon([(cx, y1), (x2, cy), (cx, y2), (x1, cy)], fill=colour)
    elif kind == "star":
        # five-pointed star scaled so its outer points touch the box edges (top point, widest points, feet)
        rx = (x2 - x1) / 2 / 0.9511
        ry = (y2 - y1) / 1.809
        sy = y1 + ry
        pts = []
        for i, (ax, ay) in enumerate(_STAR_DIRS):
            r = 1.0 if i % 2 == 0 else 0.4
            pts.append((cx + ax * r * rx, sy + ay * r * ry))
        d.polygon(pts, fill=colour)
    else:  # pragma: no cover - guarded by the Literal type
        raise ValueError(f"unknown shape kind {kind!r}")


# unit directions for the 10 star vertices, top first, clockwise (sin/cos of k*36 degrees, rounded to 4 dp)
_STAR_DIRS: tuple[tuple[float, float], ...] = (
    (0.0, -1.0),
    (0.5878, -0.809),
    (0.9511, -0.309),
    (0.9511, 0.309),
    (0.5878, 0.809),
    (0.0, 1.0),
    (-0.5878, 0.809),
    (-0.9511, 0.309),
    (-0.9511, -0.309),
    (-0.5878, -0.809),
)


def text_size(text: str, scale: int = 1) -> tuple[int, int]:
    left, top, right, bottom = _FONT.getbbox(text)
    return (right - left) * scale, (bottom - top) * scale


def draw_text(img: Image.Image, xy: tuple[int, int], text: str, colour: RGB, scale: int = 1) -> None:
    """Draw `text` with the bitmap font at `xy` (top-left), magnified `scale` times."""
    w, h = text_size(text, 1)
    mask = Image.new("L", (max(w, 1), max(h, 1)), 0)
    ImageDraw.Draw(mask).text((0, 0), text, font=_FONT, fill=255)
    if scale != 1:
        mask = mask.resize((mask.width * scale, mask.height * scale), Image.Resampling.NEAREST)
    img.paste(Image.new("RGB", mask.size, colour), xy, mask)


def draw_text_centered(img: Image.Image, cy: int, text: str, colour: RGB, scale: int = 1) -> None:
    w, h = text_size(text, scale)
    draw_text(img, ((img.width - w) // 2, cy - h // 2), text, colour, scale)


def fit_scale(text: str, max_width: int, max_scale: int = 3) -> int:
    """Largest integer magnification (at least 1) at which `text` fits in `max_width` pixels."""
    for s in range(max_scale, 0, -1):
        if text_size(text, s)[0] <= max_width:
            return s
    return 1


def degrade(img: Image.Image, blur: float, darken: float) -> Image.Image:
    """Blur and darken a picture: the VizWiz 'photo taken by a blind user' look (darken in 0..1)."""
    out = img.filter(ImageFilter.GaussianBlur(blur)) if blur > 0 else img
    if darken > 0:
        out = Image.blend(out, Image.new("RGB", out.size, (0, 0, 0)), darken)
    return out


def encode(img: Image.Image, fmt: Literal["PNG", "JPEG"]) -> bytes:
    """Encode without metadata (fixed quality / no optimisation passes) so output bytes are reproducible."""
    buf = io.BytesIO()
    if fmt == "PNG":
        img.save(buf, format="PNG", optimize=False, compress_level=9)
    else:
        img.save(buf, format="JPEG", quality=88, subsampling=0, optimize=False, progressive=False)
    return buf.getvalue()


def format_for(path: str | Path) -> Literal["PNG", "JPEG"]:
    suffix = Path(path).suffix.lower()
    if suffix == ".png":
        return "PNG"
    if suffix in {".jpg", ".jpeg"}:
        return "JPEG"
    raise ValueError(f"{path}: unsupported image extension {suffix!r}")
