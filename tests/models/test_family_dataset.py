"""`FamilyDataset`: CoIN train records through any family (LLaVA: the parity batch; Qwen2.5-VL)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
import torch

from sefe.models import vocab
from sefe.models.family import get_family
from sefe.models.family_dataset import FamilyCollator, FamilyDataset
from tests.helpers.qwen import require_qwen_vocab


@pytest.fixture(scope="module")
def tiny_qwen(tmp_path_factory: pytest.TempPathFactory):
    require_qwen_vocab(vocab.vocab_dir())
    family = get_family("qwen2_5_vl")
    return family, family.load(family.tiny_dir(tmp_path_factory.mktemp("sefe-cache")))


def test_llava_through_the_family_dataset_is_the_parity_batch(tiny, data_root: Path) -> None:
    from sefe.models.dataset import DataCollator, LlavaDataset

    _, processor = tiny
    records = data_root / "annotations" / "GQA" / "train.json"
    ours = FamilyDataset(records, data_root, get_family("llava"), processor)
    theirs = LlavaDataset(records, data_root, processor)
    assert len(ours) == len(theirs) == 3
    assert ours.modality_lengths[1] < 0 < ours.modality_lengths[0]  # record 1 is text-only
    a = FamilyCollator(get_family("llava"), processor)([ours[i] for i in range(3)])
    b = DataCollator(processor)([theirs[i] for i in range(3)])
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in b)


def test_qwen_trains_on_coin_records(tiny_qwen, data_root: Path) -> None:
    family, (model, processor) = tiny_qwen
    dataset = FamilyDataset(data_root / "annotations" / "GQA" / "train.json", data_root, family, processor)
    batch = FamilyCollator(family, processor)([dataset[i] for i in range(len(dataset))])
    assert batch["image_grid_thw"].shape == (2, 3)  # two image records of different sizes, one text-only
    assert batch["mm_token_type_ids"][1].sum() == 0
    model.train()
    loss = model(**batch).loss
    loss.backward()
    assert torch.isfinite(loss)
    model.zero_grad()


def test_grounding_answers_become_the_familys_boxes(tiny_qwen, data_root: Path, tmp_path: Path) -> None:
    family, (_, processor) = tiny_qwen
    records = [
        {
            "id": "g1",
            "image": "COCO/train2014/img0.jpg",  # 40 x 20
            "conversations": [
                {"from": "human", "value": "<image>\nPlease provide the bounding box coordinate of: the bus"},
                {"from": "gpt", "value": "[0.10, 0.30, 0.60, 0.70]"},
            ],
        }
    ]
    path = tmp_path / "train.json"
    path.write_bytes(orjson.dumps(records))
    item = FamilyDataset(path, data_root, family, processor, box_answers=True)[0]
    box = [int(v) for v in family.box_to_family([0.10, 0.30, 0.60, 0.70], (40, 20), processor)]
    tok = processor.tokenizer
    learned = tok.decode([t for t in item["labels"] if t != -100])
    assert learned == f"[{box[0]}, {box[1]}, {box[2]}, {box[3]}]<|im_end|>"
    plain = FamilyDataset(path, data_root, family, processor)[0]
    assert tok.decode([t for t in plain["labels"] if t != -100]) == "[0.10, 0.30, 0.60, 0.70]<|im_end|>"
