"""Fixtures for the model/data/inference tests: a tiny LLaVA built into a per-session cache and a small
CoIN-layout data root written here (real JPEG/PNG files and JSON in the released formats)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from PIL import Image

from sefe.coin.instructions import MCQ_LETTER

SHORT = "Answer the question using a single word or phrase."


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sefe.models.tiny import tiny_llava_dir

    return tiny_llava_dir(cache_dir=tmp_path_factory.mktemp("sefe-cache"))


@pytest.fixture(scope="session")
def tiny(tiny_dir: Path):
    from sefe.models.llava import load_llava

    return load_llava(tiny_dir)


def _image(path: Path, size: tuple[int, int], colour: tuple[int, int, int]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path.as_posix()


@pytest.fixture(scope="session")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("coin")
    ann = root / "annotations"
    for i, (size, colour) in enumerate([((40, 20), (200, 10, 10)), ((20, 48), (10, 200, 10))]):
        _image(root / "COCO" / "train2014" / f"img{i}.jpg", size, colour)
        _image(root / "ImageNet" / "val" / f"val{i}.png", size, colour)
    _image(root / "ScienceQA" / "test" / "7" / "image.png", (30, 30), (0, 0, 250))
    train = [
        {
            "id": "000000033471",
            "image": "COCO/train2014/img0.jpg",
            "conversations": [
                {"from": "human", "value": f"What are the colors of the bus?\n<image>\n{SHORT}"},
                {"from": "gpt", "value": "White and red"},
                {"from": "human", "value": f"What feature can be seen on the back?\n{SHORT}"},
                {"from": "gpt", "value": "Advertisement"},
            ],
        },
        {
            "id": 17,
            "conversations": [
                {"from": "human", "value": f"Which is a solid?\nA. milk\nB. rock\n{MCQ_LETTER}"},
                {"from": "gpt", "value": "B"},
            ],
        },
        {
            "id": "x1",
            "image": "COCO/train2014/img1.jpg",
            "conversations": [
                {"from": "human", "value": f"<image>\nWhat is green? {SHORT}"},
                {"from": "gpt", "value": "grass"},
            ],
        },
    ]
    (ann / "GQA").mkdir(parents=True)
    (ann / "GQA" / "train.json").write_bytes(orjson.dumps(train))
    sqa = [
        {
            "question_id": "5",
            "text": f"Context: A lake.\nWhich is water?\nA. lake\nB. sand\n{MCQ_LETTER}",
            "answer": "A",
        },
        {
            "question_id": "7",
            "image": "ScienceQA/test/7/image.png",
            "text": "Which colour is shown?\nA. blue\nB. red",
            "answer": "A",
        },
        {"question_id": "9", "text": f"Pick one.\nA. x\nB. y\n{MCQ_LETTER}", "answer": "B"},
    ]
    (ann / "ScienceQA").mkdir()
    (ann / "ScienceQA" / "test.json").write_bytes(orjson.dumps(sqa))
    imagenet = [
        {
            "question_id": f"ILSVRC2012_val_{i:08d}.JPEG",
            "image": f"ImageNet/val/val{i % 2}.png",
            "text": f"What is the object in the image?\n{SHORT}",
            "answer": "Espresso maker",
        }
        for i in range(5)
    ]
    (ann / "ImageNet").mkdir()
    (ann / "ImageNet" / "test.json").write_bytes(orjson.dumps(imagenet))
    return root


@pytest.fixture(scope="session")
def family_folder(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """`family_folder(name)`: the family's tiny model loaded and written back by `family.save`, as a merged
    stage is (built once per session and family; skipped without the real Qwen vocabulary)."""
    from sefe.models import vocab
    from sefe.models.family import get_family
    from tests.helpers.qwen import require_qwen_vocab

    cache = tmp_path_factory.mktemp("sefe-cache")
    folders: dict[str, Path] = {}

    def folder(name: str) -> Path:
        if name not in folders:
            require_qwen_vocab(vocab.vocab_dir())
            family = get_family(name)
            model, processor = family.load(family.tiny_dir(cache))
            folders[name] = family.save(model, processor, tmp_path_factory.mktemp(name) / "merged")
        return folders[name]

    return folder
