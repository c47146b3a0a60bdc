"""`sefe.coin.images`: record image paths stay inside the root as written; only images are read."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from sefe.coin.images import ImageError, ImageNotFound, check_image, image_path, open_image, read_image_bytes


@pytest.mark.parametrize(
    ("rel", "why"),
    [
        ("../secret.txt", "leaves the data root"),
        ("COCO/../../secret.txt", "leaves the data root"),
        ("a/b/../../../x.png", "leaves the data root"),
        ("/etc/passwd", "is absolute"),
        ("C:/Windows/x.png", "is absolute"),
        ("", "is not a file path"),
        ("a\x00b.png", "is not a file path"),
    ],
)
def test_paths_that_leave_the_root_are_refused(tmp_path: Path, rel: str, why: str) -> None:
    with pytest.raises(ImageError, match=why):
        image_path(tmp_path, rel, "t.json, record 3")


def test_paths_inside_the_root_are_normalised_before_joining(tmp_path: Path) -> None:
    assert image_path(tmp_path, "COCO/train/x.jpg") == tmp_path / "COCO" / "train" / "x.jpg"
    # `..` inside the path is resolved as written, so a symlinked folder cannot be climbed out of
    assert image_path(tmp_path, "COCO/../x.png") == tmp_path / "x.png"
    assert image_path(tmp_path, "./a//b.png") == tmp_path / "a" / "b.png"


def test_only_files_that_decode_are_read(tmp_path: Path) -> None:
    Image.new("RGB", (4, 4), "red").save(tmp_path / "ok.png")
    (tmp_path / "fake.png").write_bytes(b"secret text, not an image")
    assert read_image_bytes(tmp_path, "ok.png") == (tmp_path / "ok.png").read_bytes()
    assert open_image(tmp_path, "ok.png").mode == "RGB" and check_image(tmp_path, "ok.png").is_file()
    for fn in (read_image_bytes, open_image, check_image):
        with pytest.raises(ImageError, match=r"fake\.png is not a readable image"):
            fn(tmp_path, "fake.png")
        with pytest.raises(ImageNotFound):
            fn(tmp_path, "none.png")


def test_symlinked_folders_inside_the_root_are_followed(tmp_path: Path) -> None:
    shared = tmp_path / "shared_coco"
    shared.mkdir()
    Image.new("RGB", (4, 4), "blue").save(shared / "x.png")
    root = tmp_path / "root"
    root.mkdir()
    (root / "COCO").symlink_to(shared, target_is_directory=True)
    assert open_image(root, "COCO/x.png").size == (4, 4)
