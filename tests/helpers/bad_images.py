"""Real bad image files for the image-rule tests: a decompression bomb, a PNG whose pixel data is broken
(chunk checksums intact, so `verify()` passes), and files whose extension lies about their format."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

from PIL import Image

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(path: Path, width: int = 30000, height: int = 30000) -> Path:
    """A valid-looking PNG under 1 KB that declares `width` x `height` RGB pixels."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 4096, 9)
    path.write_bytes(PNG_MAGIC + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b""))
    assert path.stat().st_size < 1024
    return path


def broken_png(path: Path, size: int = 16) -> Path:
    """A PNG whose compressed pixel data is garbage under a correct CRC: `verify()` passes, decoding fails."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ihdr = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    garbage = bytes((i * 37 + 11) % 256 for i in range(64))
    path.write_bytes(PNG_MAGIC + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", garbage) + _chunk(b"IEND", b""))
    return path


def saved_as(path: Path, fmt: str, colour: str = "green", size: int = 8) -> Path:
    """A real `fmt` image (TIFF, JPEG, ...) written under whatever name `path` has."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), colour).save(path, format=fmt)
    return path
