"""The one way sefe opens a record's image: annotation files are untrusted input.

Annotation files come from dataset hubs and are passed around, so a record's `image` may be `../secret.txt` or
`/etc/passwd`. Every consumer (ASD request building, the training dataset, evaluation inference) goes through
this module, which enforces:

- the path is relative and stays inside the image root *as written*: `..` may not climb above the root, and
  the path is normalised before it is joined, so `COCO/../x` means `<root>/x` even when `COCO` is a link;
- symlinks the user placed inside the root are followed (datasets often link a shared COCO folder);
- the file decodes as an image (PIL identifies and verifies it) before any of it goes anywhere.

A violation raises `ImageError` naming the record (`where`) and the path; callers make it an error for that
record (ASD quarantines it, training and evaluation stop with the message).
"""

from __future__ import annotations

import io
import posixpath
from pathlib import Path
from typing import Any

from sefe.errors import InputError


class ImageError(InputError):
    """A record image that is unsafe (outside the root) or is not an image; the message names the record."""


class ImageNotFound(ImageError, FileNotFoundError):
    """The record's image file does not exist (inside the root)."""


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


def _verify(data: bytes | Path, path: Path, prefix: str) -> None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as im:
            im.verify()
    except FileNotFoundError:
        raise ImageNotFound(f"{prefix}image file not found: {path}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{prefix}{path} is not a readable image ({exc})") from None


def check_image(root: Path | str, rel: str, where: str = "") -> Path:
    """The checked path of a record image: inside the root, an existing file that decodes as an image."""
    path = image_path(root, rel, where)
    prefix = f"{where}: " if where else ""
    if not path.is_file():
        raise ImageNotFound(f"{prefix}image file not found: {path}")
    _verify(path, path, prefix)
    return path


def read_image_bytes(root: Path | str, rel: str, where: str = "") -> bytes:
    """The file's bytes, only once they are known to decode as an image (for requests to a model server)."""
    path = image_path(root, rel, where)
    prefix = f"{where}: " if where else ""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ImageNotFound(f"{prefix}image file not found: {path}") from None
    except OSError as exc:
        raise ImageError(f"{prefix}cannot read image {path}: {exc.strerror or exc}") from None
    _verify(data, path, prefix)
    return data


def open_image(root: Path | str, rel: str, where: str = "", mode: str | None = "RGB") -> Any:
    """A loaded PIL image (converted to `mode`; None keeps the file's mode), or `ImageError`."""
    from PIL import Image, UnidentifiedImageError

    path = image_path(root, rel, where)
    prefix = f"{where}: " if where else ""
    try:
        with Image.open(path) as im:
            im.load()
            return im.convert(mode) if mode is not None else im.copy()
    except FileNotFoundError:
        raise ImageNotFound(f"{prefix}image file not found: {path}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{prefix}{path} is not a readable image ({exc})") from None


def image_size(root: Path | str, rel: str, where: str = "") -> tuple[int, int]:
    """(width, height) of a record image (inside the root, identified by PIL; pixels are not decoded)."""
    from PIL import Image, UnidentifiedImageError

    path = image_path(root, rel, where)
    prefix = f"{where}: " if where else ""
    try:
        with Image.open(path) as im:
            return im.size
    except FileNotFoundError:
        raise ImageNotFound(f"{prefix}image file not found: {path}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{prefix}{path} is not a readable image ({exc})") from None
