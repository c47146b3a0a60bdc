"""CoIN train records as a torch Dataset for any model family (`sefe.models.family`).

The same interface as `LlavaDataset` (records validated once at load, `set_records` for methods that mix in
earlier tasks, `lengths` / `modality_lengths` for length grouping), with tokenisation, image expansion and
batching delegated to the family, so the runner can train any family by constructing this instead. LLaVA
keeps `LlavaDataset` (the parity path, with the release's mismatch handling).

Grounding: with `box_answers`, every answer's first box is converted from CoIN's convention into the
family's for this image (`ModelFamily.target_to_family`) before tokenisation; with `box_optional` too, an
answer without a box is kept as it is (a corpus that mixes boxes with other answers, Micro-CoIN's warm start).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sefe.coin.images import open_image
from sefe.errors import InputError
from sefe.models.dataset import RecordsDataset, load_records
from sefe.models.family import Encoded, ModelFamily
from sefe.models.train_sample import TrainSample


class FamilyDataset(RecordsDataset):
    """Items: `input_ids`, `labels` (lists, image tokens expanded) and `vision` (the image's model inputs,
    empty for text-only records); `FamilyCollator` batches them."""

    def __init__(
        self,
        records_path: str | Path,
        data_root: str | Path,
        family: ModelFamily,
        processor: Any,
        max_length: int = 2048,
        box_answers: bool = False,
        box_optional: bool = False,
    ) -> None:
        self.records_path = Path(records_path)
        self.data_root = Path(data_root)
        self.family = family
        self.processor = processor
        self.max_length = max_length
        self.box_answers = box_answers
        self.box_optional = box_optional
        self.set_records(load_records(self.records_path, self.data_root))

    def set_records(self, records: list[TrainSample]) -> None:
        """Train on `records` and refresh `lengths` (words, plus one for an image: a family's image-token
        count depends on the image's size, which is not read until the item is)."""
        self.records = records
        self.forget_encoded()
        self.lengths = [
            sum(len(q.split()) + len(a.split()) for q, a in rec.turns) + (1 if rec.image else 0)
            for rec in records
        ]

    def encode_item(self, i: int) -> dict[str, Any]:
        rec = self.records[i]
        where = f"{self.records_path}, record {i}, id {rec.id!r}"
        image = open_image(self.data_root, rec.image, f"{where}, field 'image'") if rec.image else None
        turns = list(rec.turns)
        if self.box_answers and image is not None:
            turns = [(q, self._boxed(a, image.size, f"{where}, turn {k}")) for k, (q, a) in enumerate(turns)]
        enc = self.family.encode(self.processor, turns, image, self.max_length, where)
        return {"input_ids": enc.input_ids, "labels": enc.labels, "vision": enc.vision}

    def _boxed(self, answer: str, size: tuple[int, int], where: str) -> str:
        try:
            return self.family.target_to_family(answer, size, self.processor, where)
        except InputError:  # the answer has no box
            if self.box_optional:
                return answer
            raise


@dataclass
class FamilyCollator:
    """Batches `FamilyDataset` items with the family's collator."""

    family: ModelFamily
    processor: Any

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        items = [
            Encoded(list(f["input_ids"]), list(f["labels"]), dict(f.get("vision") or {})) for f in features
        ]
        return self.family.collate(self.processor, items)
