"""LLaVA train records as a torch Dataset: vicuna_v1 tokens, assistant-only labels, lazily loaded images.

Records are validated once at load (`sefe.coin.records.load_train`); tokenisation and image decoding happen
per item so a 200 MB GQA file costs its parsed records, not its tokens or pixels. `lengths` is a cheap length
estimate (LLaVA's: words + image tokens) for length-grouped sampling without touching images.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from sefe.sefe_train.conversation import IGNORE_INDEX, tokenize_conversation
from sefe.sefe_train.model import image_token_count


def load_records(path: Path) -> list[tuple[Any, str | None, list[tuple[str, str]]]]:
    """(id, image, turns) per record; bad records raise an error naming file, index, id and field."""
    from sefe.coin.records import load_train

    return [(rec.id, rec.image, rec.pairs()) for rec in load_train(path)]


def load_image(path: Path, where: str, mode: str | None = "RGB"):
    """A PIL image converted to `mode` (None: decoded as stored, e.g. palette or RGBA for release parity);
    a clear error names the record when the file is missing or unreadable."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            if mode is None:
                im.load()
                return im.copy()
            return im.convert(mode)
    except FileNotFoundError:
        raise FileNotFoundError(f"{where}: image file not found: {path}") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"{where}: cannot read image {path}: {exc}") from None


class LlavaDataset(Dataset):
    """Items: `input_ids`, `labels` (LongTensor) and `pixel_values` (3xHxW) or None for text-only records."""

    def __init__(
        self,
        records_path: str | Path,
        data_root: str | Path,
        processor: Any,
        max_length: int = 2048,
    ) -> None:
        self.records_path = Path(records_path)
        self.data_root = Path(data_root)
        self.processor = processor
        self.max_length = max_length
        self.image_tokens = image_token_count(processor)
        self.set_records(load_records(self.records_path))

    def set_records(self, records: list[tuple[Any, str | None, list[tuple[str, str]]]]) -> None:
        """Train on `records` (a continual method may mix in earlier tasks' ones) and refresh `lengths`."""
        self.records = records
        self.lengths: list[int] = [
            sum(len(q.split()) + len(a.split()) for q, a in turns) + (self.image_tokens if image else 0)
            for _, image, turns in self.records
        ]

    @property
    def modality_lengths(self) -> list[int]:
        """LLaVA's convention: positive for image records, negative for text-only ones."""
        return [n if rec[1] else -n for n, rec in zip(self.lengths, self.records, strict=True)]

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict[str, Any]:
        rid, image, turns = self.records[i]
        where = f"{self.records_path}, record {i}, id {rid!r}"
        ids, labels = tokenize_conversation(
            turns,
            self.processor.tokenizer,
            self.image_tokens if image else 0,
            max_length=self.max_length,
            where=where,
        )
        pixel_values = None
        if image:
            img = load_image(self.data_root / image, f"{where}, field 'image'")
            pixel_values = self.processor.image_processor(images=img, return_tensors="pt")["pixel_values"][0]
        return {
            "input_ids": torch.tensor(ids, dtype=torch.long),
            "labels": torch.tensor(labels, dtype=torch.long),
            "pixel_values": pixel_values,
        }


@dataclass
class DataCollator:
    """Right-pads a training batch; stacks the pixel values of image records only (model order = batch order).

    Accepts the processor, its tokenizer, or a pad token id.
    """

    processor: Any

    @property
    def pad_token_id(self) -> int:
        if isinstance(self.processor, int):
            return self.processor
        tok = getattr(self.processor, "tokenizer", self.processor)
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.unk_token_id
        if pad is None:
            raise ValueError("DataCollator: the tokenizer has neither a pad nor an unk token")
        return pad

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        pad = self.pad_token_id
        longest = max(len(f["input_ids"]) for f in features)
        n = len(features)
        input_ids = torch.full((n, longest), pad, dtype=torch.long)
        labels = torch.full((n, longest), IGNORE_INDEX, dtype=torch.long)
        attention = torch.zeros((n, longest), dtype=torch.long)
        for row, f in enumerate(features):
            k = len(f["input_ids"])
            input_ids[row, :k] = torch.as_tensor(f["input_ids"])
            labels[row, :k] = torch.as_tensor(f["labels"])
            attention[row, :k] = 1
        batch = {"input_ids": input_ids, "labels": labels, "attention_mask": attention}
        pixels = [f["pixel_values"] for f in features if f.get("pixel_values") is not None]
        if pixels:
            batch["pixel_values"] = torch.stack(pixels)
        return batch
