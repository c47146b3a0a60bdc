"""Untrusted annotation files in `sefe asd build`: images outside the data root, or not images, never reach
the server (every raw request body of the real loopback chat server is checked); symlinked folders work."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from PIL import Image
from typer.testing import CliRunner

from sefe.cli import app
from sefe.coin.instructions import SHORT_ANSWER
from tests.helpers.chat_server import ChatServer

SECRET = b"TOP-SECRET-4f1c9e0b-do-not-upload"


@pytest.fixture
def keeping_server() -> Iterator[ChatServer]:
    srv = ChatServer(keep_bodies=True).start()
    yield srv
    srv.stop()


def _png(path: Path, colour: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), colour).save(path)


def _root(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A data root whose VizWiz records use a good image, a symlinked shared folder, and three attacks."""
    root = tmp_path / "root"
    outside = tmp_path / "secret.txt"
    outside.write_bytes(SECRET)
    _png(root / "VizWiz" / "ok.png", "red")
    _png(tmp_path / "shared_coco" / "linked.png", "blue")
    (root / "COCO").symlink_to(tmp_path / "shared_coco", target_is_directory=True)
    (root / "VizWiz" / "fake.jpg").write_bytes(SECRET)  # inside the root, but not an image
    images = {
        "good": "VizWiz/ok.png",
        "symlinked": "COCO/linked.png",
        "escape": "../secret.txt",
        "absolute": str(outside),
        "not_image": "VizWiz/fake.jpg",
    }
    records = [
        {
            "id": rid,
            "image": rel,
            "conversations": [
                {"from": "human", "value": f"<image>\nWhat is shown in picture {rid}?\n{SHORT_ANSWER}"},
                {"from": "gpt", "value": f"thing {rid}"},
            ],
        }
        for rid, rel in images.items()
    ]
    ann = root / "annotations" / "VizWiz" / "train.json"
    ann.parent.mkdir(parents=True)
    ann.write_bytes(orjson.dumps(records))
    return root, images


def test_asd_never_sends_files_outside_the_root_or_non_images(
    tmp_path: Path, keeping_server: ChatServer
) -> None:
    root, _ = _root(tmp_path)
    out = tmp_path / "asd"
    args = ["asd", "build", "--data-root", str(root), "--out", str(out), "--x", "100", "--tasks", "VizWiz"]
    res = CliRunner().invoke(
        app, [*args, "--backend", "openai", "--base-url", keeping_server.base_url], env={"COLUMNS": "300"}
    )
    assert res.exit_code == 0, res.output
    # the rest of the run went on: the good and the symlinked records were sent, with their images
    assert keeping_server.bodies, "nothing reached the server"
    sent = b"".join(keeping_server.bodies)
    for forbidden in (SECRET, base64.b64encode(SECRET), base64.b64encode(SECRET)[:24]):
        assert forbidden not in sent
    asked = {
        rid
        for rid in ("good", "symlinked", "escape", "absolute", "not_image")
        if f"picture {rid}?".encode() in sent
    }
    assert asked == {"good", "symlinked"}
    with_images = [h for h in keeping_server.hits if h.images]
    assert with_images and all(h.images[0].startswith("data:image/png;base64,") for h in with_images)
    # each bad record is an error for that record: in the quarantine and named in the output
    quarantine = [orjson.loads(line) for line in (out / "asd_quarantine.jsonl").read_bytes().splitlines()]
    reasons = {q["record_id"]: q["error"] for q in quarantine}
    # (seed 0 gives `absolute` the yes/no style with the true answer: no request, nothing to quarantine;
    # the engine test below covers it)
    assert set(reasons) == {"escape", "not_image"}
    assert "leaves the data root" in reasons["escape"]
    assert "not a readable image" in reasons["not_image"]
    flat = " ".join(res.output.split())
    for rid in reasons:
        assert f"quarantined: VizWiz id '{rid}'" in flat
    rows = orjson.loads((out / "annotations" / "VizWiz" / "train_x100.json").read_bytes())
    assert [r["id"] for r in rows] == ["good", "symlinked", "escape", "absolute", "not_image"]


def test_engine_quarantines_each_unsafe_image_and_sends_the_rest(
    tmp_path: Path, keeping_server: ChatServer
) -> None:
    from sefe.asd_gen.engine import QUARANTINE_NAME, Engine
    from tests.helpers.engine import need, openai_options

    root, images = _root(tmp_path)
    needs = [need(rid, "brief").model_copy(update={"image": rel}) for rid, rel in images.items()]
    outcome = Engine(openai_options(keeping_server), root, show_progress=False).fulfil(
        needs, str(tmp_path / "o")
    )
    sent = b"".join(keeping_server.bodies)
    assert SECRET not in sent and base64.b64encode(SECRET) not in sent
    assert keeping_server.count() == 2 and len(outcome.results) == 2  # good + symlinked
    errors = {f.record_id: f.error for f in outcome.failures}
    assert set(errors) == {"escape", "absolute", "not_image"}
    assert "leaves the data root" in errors["escape"] and "is absolute" in errors["absolute"]
    assert "not a readable image" in errors["not_image"]
    quarantined = (tmp_path / "o" / QUARANTINE_NAME).read_text()
    assert all(rid in quarantined for rid in errors)
