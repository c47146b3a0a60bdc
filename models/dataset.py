"""LLaVA train records as a torch Dataset: vicuna_v1 tokens, assistant-only labels, lazily loaded images.

Records are validated once at load (`sefe.coin.records.load_train`); tokenisation and image decoding happen
per item so a 200 MB GQA file costs its parsed records, not its tokens or pixels. `lengths` is a cheap length
estimate (LLaVA's: words + image tokens) for length-grouped sampling without touching images.

Ids and labels are the release's (`sefe.models.tokenization`): an item carries one `IMAGE_PLACEHOLDER`
where the image goes, and the collator expands it into the model's image-token ids (as many as the vision
tower gives features), which is what transformers' LlavaForConditionalGeneration scatters the features into.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from sefe.coin.images import image_path, open_image
from sefe.models.conversation import IGNORE_INDEX, IMAGE_TOKEN, Turn, move_image_to_front
from sefe.models.tokenization import (
    IMAGE_PLACEHOLDER,
    chunk_tokenizer,
    expand_image,
    image_token_count,
    preprocess_record,
    truncate_expanded,
)
from sefe.models.train_sample import TrainSample

log = logging.getLogger(__name__)


def load_records(path: Path, image_root: Path | None = None) -> list[TrainSample]:
    """One `TrainSample` per record; bad records raise an error naming file, index, id and field.

    With `image_root`, every image path is checked to stay inside it before training starts (no I/O; the
    image itself is opened, and checked again, when the item is read).
    """
    from sefe.coin.records import load_train

    records = load_train(path)
    if image_root is not None:
        for i, rec in enumerate(records):
            if rec.image is not None:
                image_path(image_root, rec.image, f"{path}, record {i}, id {rec.id!r}, field 'image'")
    return [TrainSample(rec.id, rec.image, rec.pairs()) for rec in records]


class RecordsDataset(Dataset):
    """What every training dataset of `models/` shares: its records, their lengths for the length-grouped
    samplers (`models/sampling.py`), and LLaVA's signed modality lengths."""

    records_path: Path
    records: list[TrainSample]
    lengths: list[int]
    #: encoded items kept after their first read (`keep_encoded`); None: every read encodes again
    _encoded: dict[int, dict[str, Any]] | None = None

    def keep_encoded(self) -> None:
        """Keep every encoded item in memory after its first read (`train.cache_examples`).

        Why: on small data (Micro-CoIN: 48 px pictures, 30-token records) decoding and tokenising an item
        costs about as much as the training step it feeds, and every epoch repeats it. CoIN's 336 px images
        would not fit in memory, so this is off by default. Items are returned as built; collators copy.
        """
        self._encoded = {}

    def __getitem__(self, i: int) -> dict[str, Any]:
        if self._encoded is None:
            return self.encode_item(i)
        item = self._encoded.get(i)
        if item is None:
            item = self._encoded[i] = self.encode_item(i)
        return item

    def encode_item(self, i: int) -> dict[str, Any]:
        """Record `i` as the collator takes it (ids, labels, the image's model inputs)."""
        raise NotImplementedError

    def forget_encoded(self) -> None:
        """Drop kept items (the records changed: `set_records`)."""
        if self._encoded is not None:
            self._encoded = {}

    @property
    def modality_lengths(self) -> list[int]:
        """LLaVA's convention: positive for image records, negative for text-only ones."""
        return [n if rec.image else -n for n, rec in zip(self.lengths, self.records, strict=True)]

    def __len__(self) -> int:
        return len(self.records)


class LlavaDataset(RecordsDataset):
    """Items: `input_ids` (one `IMAGE_PLACEHOLDER` per image), `labels` (LongTensor) and `pixel_values`
    (3xHxW) or None for text-only records.

    `tokenization`: `auto` (the release's `preprocess_v1` on the LLaMA SentencePiece vocabulary, offset labels
    for other tokenizers), `release` or `offsets`; `tokenizer_backend`: `auto`, `sentencepiece` or `hf`
    (`sefe.models.tokenization.chunk_tokenizer`). A record whose counted length disagrees with its real
    length is trained with all labels masked, as the release does; `mismatches` counts them.
    """

    def __init__(
        self,
        records_path: str | Path,
        data_root: str | Path,
        processor: Any,
        max_length: int = 2048,
        tokenization: str = "auto",
        tokenizer_backend: str = "auto",
    ) -> None:
        self.records_path = Path(records_path)
        self.data_root = Path(data_root)
        self.processor = processor
        self.max_length = max_length
        self.tokenization = tokenization
        self.chunk_tokenizer = chunk_tokenizer(processor.tokenizer, tokenizer_backend)
        self.image_tokens = image_token_count(processor)
        self.mismatches = 0
        self.set_records(load_records(self.records_path, self.data_root))

    def set_records(self, records: list[TrainSample]) -> None:
        """Train on `records` (a continual method may mix in earlier tasks' ones) and refresh `lengths`."""
        self.records = records
        self.forget_encoded()
        self.lengths: list[int] = [
            sum(len(q.split()) + len(a.split()) for q, a in rec.turns)
            + (self.image_tokens if rec.image else 0)
            for rec in self.records
        ]

    def encode_item(self, i: int) -> dict[str, Any]:
        rec = self.records[i]
        where = f"{self.records_path}, record {i}, id {rec.id!r}"
        ids, labels = self.tokenize(rec.turns, bool(rec.image), where)
        pixel_values = None
        if rec.image:
            img = open_image(self.data_root, rec.image, f"{where}, field 'image'")
            pixel_values = self.processor.image_processor(images=img, return_tensors="pt")["pixel_values"][0]
        return {
            "input_ids": torch.tensor(ids, dtype=torch.long),
            "labels": torch.tensor(labels, dtype=torch.long),
            "pixel_values": pixel_values,
        }

    def tokenize(self, turns: Sequence[Turn], has_image: bool, where: str) -> tuple[list[int], ...]:
        """Placeholder ids and labels of one record, cut so that the expanded sequence fits `max_length`."""
        turns = move_image_to_front(turns, has_image, where=where)
        pre = preprocess_record(
            turns,
            self.processor.tokenizer,
            self.chunk_tokenizer,
            has_image,
            max_length=self.max_length,
            mode=self.tokenization,
        )
        if pre.mismatch is not None:
            self.mismatches += 1
            log.warning(
                "%s: tokenization mismatch: %d counted vs %d tokens; sample trained with all labels masked "
                "(as the release does; %d so far)",
                where,
                *pre.mismatch,
                self.mismatches,
            )
        return truncate_expanded(pre.input_ids, pre.labels, self.image_tokens, self.max_length, where)


@dataclass
class DataCollator:
    """Expands each image placeholder into the model's image-token ids, right-pads the batch, and stacks the
    pixel values of image records only (model order = batch order).

    Accepts the processor (needed for image records: it knows the image token and how many features an image
    gives), its tokenizer, or a pad token id (text-only batches).
    """

    processor: Any

    def image_expansion(self) -> tuple[int, int]:
        """(image token id, tokens per image) of the processor."""
        proc = self.processor
        if isinstance(proc, int) or not hasattr(proc, "image_processor"):
            raise ValueError("DataCollator: image records need the LlavaProcessor (image token and count)")
        tok = proc.tokenizer
        image_id = getattr(proc, "image_token_id", None)
        if image_id is None:
            image_id = tok.convert_tokens_to_ids(IMAGE_TOKEN)
        return int(image_id), image_token_count(proc)

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
        if any(IMAGE_PLACEHOLDER in [int(t) for t in f["input_ids"]] for f in features):
            image_id, count = self.image_expansion()
            features = [self._expand(f, image_id, count) for f in features]
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

    @staticmethod
    def _expand(feature: dict[str, Any], image_id: int, count: int) -> dict[str, Any]:
        ids, labels = expand_image(
            [int(t) for t in feature["input_ids"]], [int(t) for t in feature["labels"]], image_id, count
        )
        return {**feature, "input_ids": ids, "labels": labels}
