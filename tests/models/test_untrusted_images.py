"""Untrusted annotation files in training and evaluation: image paths must stay inside the data root.

A path that leaves the root (relative `..` or absolute) fails before any work, naming file, record, id and
field; a file that is not an image fails when the record is read; a symlinked image folder keeps working.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from PIL import Image

from sefe.coin.images import ImageError
from sefe.coin.instructions import SHORT_ANSWER
from sefe.evaluation.inference import run_inference
from sefe.models.dataset import LlavaDataset

SECRET = b"TOP-SECRET-not-an-image"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """<tmp>/root with a real image, an image in a symlinked shared folder, a fake image; a secret outside."""
    r = tmp_path / "root"
    (r / "VizWiz").mkdir(parents=True)
    Image.new("RGB", (12, 8), (200, 30, 30)).save(r / "VizWiz" / "ok.png")
    (tmp_path / "shared").mkdir()
    Image.new("RGB", (8, 12), (30, 30, 200)).save(tmp_path / "shared" / "linked.png")
    (r / "COCO").symlink_to(tmp_path / "shared", target_is_directory=True)
    (r / "VizWiz" / "fake.jpg").write_bytes(SECRET)
    (tmp_path / "secret.txt").write_bytes(SECRET)
    return r


def _train(root: Path, image: str) -> Path:
    rec = {
        "id": "r7",
        "image": image,
        "conversations": [
            {"from": "human", "value": f"<image>\nWhat colour?\n{SHORT_ANSWER}"},
            {"from": "gpt", "value": "Red"},
        ],
    }
    path = root / "annotations" / "VizWiz" / "train.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps([rec]))
    return path


def _test(root: Path, images: list[str]) -> None:
    recs = [
        {"question_id": f"q{i}", "image": im, "text": f"What colour?\n{SHORT_ANSWER}", "answer": "red"}
        for i, im in enumerate(images)
    ]
    path = root / "annotations" / "VizWiz" / "test.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(recs))


def _outside(root: Path) -> list[tuple[str, str]]:
    return [("../secret.txt", "leaves the data root"), (str(root.parent / "secret.txt"), "is absolute")]


def test_training_refuses_images_outside_the_root(tiny, root: Path) -> None:
    _, processor = tiny
    for image, why in _outside(root):
        path = _train(root, image)
        with pytest.raises(ImageError, match=rf"train\.json, record 0, id 'r7', field 'image'.*{why}"):
            LlavaDataset(path, root, processor)


def test_training_refuses_a_file_that_is_not_an_image(tiny, root: Path) -> None:
    _, processor = tiny
    ds = LlavaDataset(_train(root, "VizWiz/fake.jpg"), root, processor)
    with pytest.raises(
        ImageError, match=r"record 0, id 'r7', field 'image'.*fake\.jpg is not a readable image"
    ):
        ds[0]


def test_training_follows_a_symlinked_image_folder(tiny, root: Path) -> None:
    _, processor = tiny
    item = LlavaDataset(_train(root, "COCO/linked.png"), root, processor)[0]
    assert item["pixel_values"] is not None and item["pixel_values"].shape[0] == 3


def test_evaluation_refuses_images_outside_the_root_first(root: Path, tmp_path: Path) -> None:
    """Before any model is loaded (the model folder here does not even exist) or a prediction is written."""
    for image, why in _outside(root):
        _test(root, ["VizWiz/ok.png", image])
        with pytest.raises(ImageError, match=rf"test\.json, record 1, id 'q1', field 'image'.*{why}"):
            run_inference(tmp_path / "no-model", root, ["VizWiz"], tmp_path / "pred", show_progress=False)
        assert not (tmp_path / "pred" / "VizWiz.jsonl").exists()


def test_evaluation_reads_symlinked_images_and_refuses_non_images(tiny, root: Path, tmp_path: Path) -> None:
    _test(root, ["VizWiz/ok.png", "COCO/linked.png"])
    paths = run_inference(tiny, root, ["VizWiz"], tmp_path / "ok", max_new_tokens=2, show_progress=False)
    lines = paths["VizWiz"].read_bytes().splitlines()
    assert [orjson.loads(x)["question_id"] for x in lines] == ["q0", "q1"]
    _test(root, ["VizWiz/fake.jpg"])
    with pytest.raises(
        ImageError, match=r"record 0, id 'q0', field 'image'.*fake\.jpg is not a readable image"
    ):
        run_inference(tiny, root, ["VizWiz"], tmp_path / "bad", max_new_tokens=2, show_progress=False)


def test_sefe_train_reports_an_escaping_image_as_one_line_exit_2(root: Path, tmp_path: Path) -> None:
    """`sefe train` on a record whose image leaves the root: a user error (one line, exit 2), no traceback."""
    from typer.testing import CliRunner

    from sefe.cli import app

    _train(root, "../secret.txt")
    _test(root, ["VizWiz/ok.png"])
    args = ["train", "--data-root", str(root), "--tasks", "VizWiz", "--out", str(tmp_path / "run")]
    result = CliRunner().invoke(app, [*args, "--max-steps", "1", "--no-eval"])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert "field 'image'" in result.output and "leaves the data root" in result.output


def test_a_decompression_bomb_is_one_bad_record_in_training_and_evaluation(
    tiny, root: Path, tmp_path: Path
) -> None:
    """A 1 KB PNG declaring 30000x30000 pixels: an `ImageError` naming the record (the CLI's one line,
    exit 2), never PIL's `DecompressionBombError` traceback."""
    from tests.helpers.bad_images import bomb_png

    bomb_png(root / "VizWiz" / "bomb.png")
    _, processor = tiny
    ds = LlavaDataset(_train(root, "VizWiz/bomb.png"), root, processor)
    with pytest.raises(ImageError, match=r"record 0, id 'r7', field 'image'.*bomb\.png declares .*budget"):
        ds[0]
    _test(root, ["VizWiz/ok.png", "VizWiz/bomb.png"])
    with pytest.raises(ImageError, match=r"record 1, id 'q1', field 'image'.*bomb\.png declares .*budget"):
        run_inference(tiny, root, ["VizWiz"], tmp_path / "bomb", max_new_tokens=2, show_progress=False)


def test_sefe_train_reports_a_bomb_as_one_line_exit_2(root: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from sefe.cli import app
    from tests.helpers.bad_images import bomb_png

    bomb_png(root / "VizWiz" / "bomb.png")
    _train(root, "VizWiz/bomb.png")
    _test(root, ["VizWiz/ok.png"])
    args = ["train", "--data-root", str(root), "--tasks", "VizWiz", "--out", str(tmp_path / "run")]
    result = CliRunner().invoke(app, [*args, "--max-steps", "1", "--no-eval"])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and "DecompressionBomb" not in result.output
    assert "id 'r7', field 'image'" in result.output and "bomb.png declares" in result.output
