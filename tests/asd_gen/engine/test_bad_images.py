"""Bad images in ASD against the real loopback server: a decompression bomb is quarantined like any other bad
image (the other records are still sent), and every image is sent with the MIME type of what it is."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from sefe.asd_gen.engine import QUARANTINE_NAME, Engine
from tests.helpers.bad_images import bomb_png, broken_png, saved_as
from tests.helpers.chat_server import ChatServer
from tests.helpers.engine import need, openai_options


@pytest.fixture
def server() -> Iterator[ChatServer]:
    srv = ChatServer(keep_bodies=True).start()
    yield srv
    srv.stop()


def test_bombs_and_broken_images_are_quarantined_and_the_rest_typed_by_content(
    tmp_path: Path, server: ChatServer
) -> None:
    root = tmp_path / "root"
    (root / "x").mkdir(parents=True)
    Image.new("RGB", (8, 8), "red").save(root / "x" / "png.png")
    bomb_png(root / "x" / "bomb.png")
    broken_png(root / "x" / "broken.jpg")
    saved_as(root / "x" / "tiff.jpg", "TIFF")
    saved_as(root / "x" / "jpeg.png", "JPEG")
    images = {
        "png": "x/png.png",
        "bomb": "x/bomb.png",
        "broken": "x/broken.jpg",
        "tiff": "x/tiff.jpg",
        "jpeg": "x/jpeg.png",
    }
    needs = [need(rid, "brief").model_copy(update={"image": rel}) for rid, rel in images.items()]
    outcome = Engine(openai_options(server), root, show_progress=False).fulfil(needs, str(tmp_path / "o"))

    errors = {f.record_id: f.error for f in outcome.failures}
    assert set(errors) == {"bomb", "broken"}
    assert "record bomb: " in errors["bomb"] and "declares" in errors["bomb"] and "budget" in errors["bomb"]
    assert "not a readable image" in errors["broken"]
    quarantined = (tmp_path / "o" / QUARANTINE_NAME).read_text()
    assert "bomb" in quarantined and "broken" in quarantined
    # the other three were sent, each typed by its content: the TIFF re-encoded as PNG, the JPEG as JPEG
    assert server.count() == 3 and len(outcome.results) == 3
    sent = {}
    for body, hit in zip(server.bodies, server.hits, strict=True):
        rid = next(r for r in ("png", "tiff", "jpeg") if f"record {r}?".encode() in body)
        sent[rid] = hit.images[0].split(";")[0]
    assert sent == {"png": "data:image/png", "tiff": "data:image/png", "jpeg": "data:image/jpeg"}
