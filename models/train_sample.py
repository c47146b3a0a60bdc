"""`TrainSample`: one training record as the model stack trains on it (id, image, question/answer turns).

Why a module of its own: continual methods choose and mix these records (replay) and are imported to list
them in `sefe train --help`, so the type must come without the dataset's torch import.
"""

from __future__ import annotations

from typing import Any, NamedTuple


class TrainSample(NamedTuple):
    """A validated CoIN training record, reduced to what training reads."""

    id: Any  # the record's `id` as in the file (string or number)
    image: str | None  # path under the data root; None for a text-only record
    turns: list[tuple[str, str]]  # (question, answer) pairs in conversation order
