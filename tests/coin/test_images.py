"""`sefe.coin.images`: record image paths stay inside the root as written; only images are read."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from sefe.coin.images import ImageError, ImageNotFound, check_image, image_path, open_image, read_image_bytes
from sefe.errors import InputError
from tests.helpers.bad_images import bomb_png, broken_png, saved_as


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


def test_a_decompression_bomb_is_a_bad_image_naming_the_record(tmp_path: Path) -> None:
    from sefe.coin.images import image_payload, image_size

    bomb_png(tmp_path / "bomb.png")
    for fn in (check_image, read_image_bytes, open_image, image_size, image_payload):
        with pytest.raises(ImageError, match=r"^t\.json, record 3: .*bomb\.png declares .*budget"):
            fn(tmp_path, "bomb.png", "t.json, record 3")


def test_the_pixel_budget_is_explicit_and_settable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sefe.coin.images import DEFAULT_MAX_IMAGE_PIXELS, PIXELS_ENV, max_image_pixels

    Image.new("RGB", (40, 30)).save(tmp_path / "img.png")
    assert max_image_pixels() == DEFAULT_MAX_IMAGE_PIXELS == 64_000_000
    assert open_image(tmp_path, "img.png").size == (40, 30)
    monkeypatch.setenv(PIXELS_ENV, "1199")  # 40 x 30 = 1200 pixels: one over
    with pytest.raises(ImageError, match=r"declares 40x30 pixels, over the budget of 1,199"):
        open_image(tmp_path, "img.png", "r")
    monkeypatch.setenv(PIXELS_ENV, "1200")
    assert open_image(tmp_path, "img.png").size == (40, 30)
    monkeypatch.setenv(PIXELS_ENV, "lots")
    with pytest.raises(InputError, match="SEFE_MAX_IMAGE_PIXELS='lots'"):
        open_image(tmp_path, "img.png")


def test_a_png_with_broken_pixel_data_is_refused_although_verify_passes(tmp_path: Path) -> None:
    broken_png(tmp_path / "broken.jpg")
    with Image.open(tmp_path / "broken.jpg") as im:
        im.verify()  # PIL's structural check alone lets it through
    for fn in (check_image, read_image_bytes, open_image):
        with pytest.raises(ImageError, match=r"broken\.jpg is not a readable image"):
            fn(tmp_path, "broken.jpg", "r")


def test_the_payload_is_typed_by_content_not_by_extension(tmp_path: Path) -> None:
    from sefe.coin.images import image_payload

    saved_as(tmp_path / "tiff.jpg", "TIFF")
    saved_as(tmp_path / "jpeg.png", "JPEG")
    saved_as(tmp_path / "webp.jpg", "WEBP")
    data, mime = image_payload(tmp_path, "tiff.jpg")
    assert mime == "image/png" and data.startswith(b"\x89PNG")  # re-encoded: servers take PNG
    with Image.open(io.BytesIO(data)) as im:
        assert im.size == (8, 8) and im.convert("RGB").getpixel((4, 4))[1] > 100
    assert image_payload(tmp_path, "jpeg.png") == ((tmp_path / "jpeg.png").read_bytes(), "image/jpeg")
    assert image_payload(tmp_path, "webp.jpg") == ((tmp_path / "webp.jpg").read_bytes(), "image/webp")
    for name in ("tiff.jpg", "jpeg.png", "webp.jpg"):  # after check_image: the header alone gives the same
        assert image_payload(tmp_path, name, decoded=True) == image_payload(tmp_path, name)
