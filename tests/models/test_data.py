"""LlavaDataset + DataCollator on LLaVA train records: shapes, masking, lazy images, a real training step."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
import torch

from sefe.coin.instructions import MCQ_LETTER
from sefe.models.conversation import IGNORE_INDEX
from sefe.models.dataset import DataCollator, LlavaDataset
from sefe.models.tokenization import IMAGE_PLACEHOLDER, expand_image


def test_items_and_lengths(tiny, data_root: Path) -> None:
    _, processor = tiny
    ds = LlavaDataset(data_root / "annotations" / "GQA" / "train.json", data_root, processor, max_length=512)
    assert len(ds) == 3
    image_id = processor.tokenizer.convert_tokens_to_ids("<image>")
    first = ds[0]
    assert first["pixel_values"].shape == (3, 32, 32)
    # one placeholder per image in the item; the collator turns it into the model's 16 image tokens
    assert int((first["input_ids"] == IMAGE_PLACEHOLDER).sum()) == 1
    assert int((first["input_ids"] == image_id).sum()) == 0
    expanded = DataCollator(processor)([first])["input_ids"][0]
    assert int((expanded == image_id).sum()) == 16 and len(expanded) == len(first["input_ids"]) + 15
    answers = processor.tokenizer.decode(first["labels"][first["labels"] != IGNORE_INDEX])
    assert answers.replace(" ", "") == "Whiteandred</s>Advertisement</s>"
    text_only = ds[1]
    assert text_only["pixel_values"] is None
    assert int((text_only["input_ids"] == image_id).sum()) == 0
    assert int((text_only["input_ids"] == IMAGE_PLACEHOLDER).sum()) == 0
    # LLaVA's cheap length estimate: words + image tokens (no image decoding needed)
    question = f"Which is a solid?\nA. milk\nB. rock\n{MCQ_LETTER}"
    assert ds.lengths[1] == len(question.split()) + 1
    assert ds.lengths[0] > 16 and ds.modality_lengths[1] < 0 < ds.modality_lengths[0]


def test_collator_pads_right_and_trains(tiny, data_root: Path) -> None:
    model, processor = tiny
    ds = LlavaDataset(data_root / "annotations" / "GQA" / "train.json", data_root, processor)
    items = [ds[i] for i in range(3)]
    batch = DataCollator(processor)(items)
    image_id = processor.tokenizer.convert_tokens_to_ids("<image>")
    expanded = [
        expand_image(it["input_ids"].tolist(), it["labels"].tolist(), image_id, ds.image_tokens)[0]
        for it in items
    ]
    longest = max(len(e) for e in expanded)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape == (3, longest)
    assert batch["pixel_values"].shape == (2, 3, 32, 32)  # only the two image records
    assert int((batch["input_ids"] == image_id).sum()) == 2 * ds.image_tokens
    assert not (batch["input_ids"] == IMAGE_PLACEHOLDER).any()
    pad = processor.tokenizer.pad_token_id
    for row, it in enumerate(expanded):
        k = len(it)
        assert batch["input_ids"][row, :k].tolist() == it
        assert (batch["input_ids"][row, k:] == pad).all() and (batch["labels"][row, k:] == IGNORE_INDEX).all()
        assert int(batch["attention_mask"][row].sum()) == k
    model.train()
    try:
        out = model(**batch)
        assert torch.isfinite(out.loss)
        out.loss.backward()
        assert model.model.multi_modal_projector.linear_1.weight.grad.abs().sum() > 0
    finally:
        model.zero_grad(set_to_none=True)
        model.eval()


def test_missing_image_names_the_record(tiny, tmp_path: Path) -> None:
    _, processor = tiny
    path = tmp_path / "train.json"
    rec = {
        "id": "r9",
        "image": "COCO/none.jpg",
        "conversations": [{"from": "human", "value": "<image>\nq"}, {"from": "gpt", "value": "a"}],
    }
    path.write_bytes(orjson.dumps([rec]))
    ds = LlavaDataset(path, tmp_path, processor)
    with pytest.raises(FileNotFoundError, match=r"record 0, id 'r9', field 'image'.*none.jpg"):
        ds[0]


def test_bad_record_names_file_index_and_field(tiny, tmp_path: Path) -> None:
    _, processor = tiny
    path = tmp_path / "train.json"
    good = {"id": 1, "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}
    bad = {"id": 2, "conversations": [{"from": "human", "value": "q"}, {"from": "human", "value": "a"}]}
    path.write_bytes(orjson.dumps([good, bad]))
    with pytest.raises(ValueError, match=r"train.json.*record 1.*id 2.*conversations"):
        LlavaDataset(path, tmp_path, processor)


def test_kept_items_are_encoded_once_and_equal_fresh_ones(tiny, data_root: Path) -> None:
    """`train.cache_examples`: the second epoch reads kept items, equal to freshly encoded ones; collating
    them leaves them unchanged (the collator copies); new records (`set_records`) drop what was kept."""
    _, processor = tiny
    path = data_root / "annotations" / "GQA" / "train.json"
    fresh, kept = LlavaDataset(path, data_root, processor), LlavaDataset(path, data_root, processor)
    kept.keep_encoded()
    calls: list[int] = []
    encode = kept.encode_item
    kept.encode_item = lambda i: calls.append(i) or encode(i)  # type: ignore[method-assign]
    collate = DataCollator(processor)
    for _epoch in range(2):
        items = [kept[i] for i in range(len(kept))]
        collate(items)
    assert sorted(calls) == list(range(len(kept)))  # each record encoded once over two epochs
    for i in range(len(kept)):
        a, b = kept[i], fresh[i]
        assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["labels"], b["labels"])
        assert (a["pixel_values"] is None) == (b["pixel_values"] is None)
        if a["pixel_values"] is not None:
            assert torch.equal(a["pixel_values"], b["pixel_values"])
    kept.set_records(kept.records[:1])
    kept[0]
    assert calls[-1] == 0 and len(calls) == len(fresh) + 1  # encoded again after the records changed
