"""The one way sefe opens a record's image: annotation files are untrusted input.

Annotation files come from dataset hubs and are passed around, so a record's `image` may be `../secret.txt` or
`/etc/passwd`. Every consumer (ASD request building, the training dataset, evaluation inference) goes through
this module, which enforces:

- the path is relative and stays inside the image root *as written*: `..` may not climb above the root, and
  the path is normalised before it is joined, so `COCO/../x` means `<root>/x` even when `COCO` is a link;
- symlinks the user placed inside the root are followed (datasets often link a shared COCO folder);
- the file decodes as an image (PIL identifies and verifies it, then decodes every pixel) before any of it
  goes anywhere, and is typed by its content, never by its extension (`image_payload`);
- it declares at most `max_image_pixels()` pixels (default 64 megapixels, `$SEFE_MAX_IMAGE_PIXELS`), checked
  from the header before any pixel is decoded: a 1 KB PNG declaring 30000x30000 pixels is a bad image like any
  other, not a multi-gigabyte allocation or PIL's `DecompressionBombError` traceback.

A violation raises `ImageError` naming the record (`where`) and the path; callers make it an error for that
record (ASD quarantines it, training and evaluation stop with the message).
"""

from __future__ import annotations

import io
import os
import posixpath
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sefe.errors import InputError

#: The environment variable that sets the pixel budget of one image (width x height).
PIXELS_ENV = "SEFE_MAX_IMAGE_PIXELS"
#: The default budget: 64 megapixels (8000x8000), far above any CoIN image, far below a bomb.
DEFAULT_MAX_IMAGE_PIXELS = 64_000_000
#: Types sent to model servers as stored; any other format is re-encoded as PNG.
SENT_AS_STORED = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})


class ImageError(InputError):
    """A record image that is unsafe (outside the root) or is not an image; the message names the record."""


class ImageNotFound(ImageError, FileNotFoundError):
    """The record's image file does not exist (inside the root)."""


def max_image_pixels() -> int:
    """The pixel budget of one image: `$SEFE_MAX_IMAGE_PIXELS` if set, else 64 megapixels."""
    raw = os.environ.get(PIXELS_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_IMAGE_PIXELS
    try:
        value = int(raw.replace("_", ""))
    except ValueError:
        value = 0
    if value <= 0:
        raise InputError(f"${PIXELS_ENV}={raw!r}: expected a positive whole number of pixels")
    return value


def image_path(root: Path | str, rel: str, where: str = "") -> Path:
    """`<root>/<rel>` if `rel` is a relative path that stays inside `root` (no I/O); else `ImageError`."""
    prefix = f"{where}: " if where else ""
    if not isinstance(rel, str) or not rel or "\x00" in rel:
        raise ImageError(f"{prefix}image path {rel!r} is not a file path")
    if rel.startswith(("/", "\\")) or (len(rel) > 1 and rel[1] == ":"):
        raise ImageError(f"{prefix}image path {rel!r} is absolute; it must be relative to the data root")
    depth = 0
    for part in rel.split("/"):
        if part == "..":
            depth -= 1
            if depth < 0:
                raise ImageError(f"{prefix}image path {rel!r} leaves the data root")
        elif part not in ("", "."):
            depth += 1
    return Path(root) / posixpath.normpath(rel)


@contextmanager
def _opened(src: bytes | Path, path: Path, prefix: str) -> Iterator[Any]:
    """PIL's image of `src` (header read, pixels not decoded), refused when it declares more pixels than the
    budget; every way of not being a readable image becomes `ImageError` naming the record."""
    from PIL import Image, UnidentifiedImageError

    budget = max_image_pixels()
    Image.MAX_IMAGE_PIXELS = budget  # PIL's own guard (error at twice this) backs ours up, never overrides it
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(src) if isinstance(src, bytes) else src) as im:
                width, height = im.size
                if width * height > budget:
                    raise ImageError(
                        f"{prefix}{path} declares {width}x{height} pixels, over the budget of {budget:,} "
                        f"(${PIXELS_ENV})"
                    )
                yield im
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageNotFound(f"{prefix}image file not found: {path}") from None
    except Image.DecompressionBombError:
        raise ImageError(
            f"{prefix}{path} declares more pixels than the budget of {budget:,} (${PIXELS_ENV})"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(f"{prefix}{path} is not a readable image ({exc})") from None


def _decode(src: bytes | Path, path: Path, prefix: str) -> str:
    """Check that `src` is a whole image within the budget (structure verified, then every pixel decoded: a
    PNG with broken compressed data passes `verify()` alone); its MIME type, from its content."""
    from PIL import Image

    with _opened(src, path, prefix) as im:
        im.verify()
    with _opened(src, path, prefix) as im:
        im.load()
        return Image.MIME.get(im.format or "", "application/octet-stream")


def check_image(root: Path | str, rel: str, where: str = "") -> Path:
    """The checked path of a record image: inside the root, an existing file that decodes as an image."""
    path = image_path(root, rel, where)
    prefix = f"{where}: " if where else ""
    if not path.is_file():
        raise ImageNotFound(f"{prefix}image file not found: {path}")
    _decode(path, path, prefix)
    return path


def _read(path: Path, prefix: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ImageNotFound(f"{prefix}image file not found: {path}") from None
    except OSError as exc:
        raise ImageError(f"{prefix}cannot read image {path}: {exc.strerror or exc}") from None


def read_image_bytes(root: Path | str, rel: str, where: str = "") -> bytes:
    """The file's bytes, only once they are known to decode as an image."""
    path = image_path(root, rel, where)
    prefix = f"{where}: " if where else ""
    data = _read(path, prefix)
    _decode(data, path, prefix)
    return data


def image_payload(root: Path | str, rel: str, where: str = "", decoded: bool = False) -> tuple[bytes, str]:
    """(bytes, MIME type) of a record image for a request to a model server, typed by what the file *is*.

    A JPEG, PNG, GIF or WebP is sent as stored with its own type whatever its extension says; any other
    format PIL reads (TIFF, BMP, ...) is re-encoded as PNG, which every vision server accepts. `decoded`:
    the caller has just decoded this file in full (`check_image`), so only its header is read again (the
    type and the pixel budget), not every pixel a second time.
    """
    from PIL import Image

    path = image_path(root, rel, where)
    prefix = f"{where}: " if where else ""
    data = _read(path, prefix)
    if decoded:
        with _opened(data, path, prefix) as im:
            mime = Image.MIME.get(im.format or "", "application/octet-stream")
    else:
        mime = _decode(data, path, prefix)
    if mime in SENT_AS_STORED:
        return data, mime
    with _opened(data, path, prefix) as im:
        out = io.BytesIO()
        im.save(out, format="PNG")
    return out.getvalue(), "image/png"


def open_image(root: Path | str, rel: str, where: str = "", mode: str | None = "RGB") -> Any:
    """A loaded PIL image (converted to `mode`; None keeps the file's mode), or `ImageError`."""
    path = image_path(root, rel, where)
    prefix = f"{where}: " if where else ""
    with _opened(path, path, prefix) as im:
        try:
            im.load()
            return im.convert(mode) if mode is not None else im.copy()
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise ImageError(f"{prefix}{path} is not a readable image ({exc})") from None


def image_size(root: Path | str, rel: str, where: str = "") -> tuple[int, int]:
    """(width, height) of a record image (inside the root, identified by PIL; pixels are not decoded)."""
    path = image_path(root, rel, where)
    prefix = f"{where}: " if where else ""
    with _opened(path, path, prefix) as im:
        size: tuple[int, int] = im.size
        return size
