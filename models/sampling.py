"""LLaVA's modality-grouped length sampler: image and text-only records never share a batch.

Why: LLaVA-1.5 (and the SEFE release) train with `group_by_modality_length`. A batch that mixes image and
text-only records pads the text ones to hundreds of image-token positions, and the per-batch token mean then
weighs the two kinds differently; the release's numbers come from single-modality batches. The order built
here follows the release's algorithm (written from its description, not copied):

1. split the indices by modality (length > 0: image record, < 0: text-only record, |length| = length);
2. per modality: shuffle, cut into megabatches of `world_size * batch_size`, sort each by length (longest
   first) and deal it into `world_size` batches of about equal total length;
3. the two modalities' megabatches, except each one's last (incomplete) megabatch, are shuffled together;
   the two leftovers form one final megabatch (the only one that may mix modalities), sorted by index.

`world_size` is the number of processes times the gradient-accumulation steps (the release's call), so every
device micro-batch of one optimizer step comes from one megabatch of one modality.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler


def _even_chunks(indices: list[int], lengths: Sequence[int], n: int) -> list[list[int]]:
    """Deal `indices` (sorted longest first) into `n` equal-size chunks, each to the lightest open chunk."""
    if len(indices) % n:
        return [indices[i::n] for i in range(n)]
    size = len(indices) // n
    chunks: list[list[int]] = [[] for _ in range(n)]
    totals = [0] * n
    for idx in indices:
        open_chunks = [c for c in range(n) if len(chunks[c]) < size]
        target = min(open_chunks, key=lambda c: totals[c])
        chunks[target].append(idx)
        totals[target] += lengths[idx]
    return chunks


def length_grouped_order(
    lengths: Sequence[int], batch_size: int, world_size: int, generator: torch.Generator | None = None
) -> list[int]:
    """Shuffled megabatches, each sorted by length and dealt evenly into `world_size` batches."""
    perm = torch.randperm(len(lengths), generator=generator).tolist()
    mega = world_size * batch_size
    order: list[int] = []
    for start in range(0, len(perm), mega):
        block = sorted(perm[start : start + mega], key=lambda i: lengths[i], reverse=True)
        for chunk in _even_chunks(block, lengths, world_size):
            order.extend(chunk)
    return order


def modality_length_grouped_order(
    modality_lengths: Sequence[int],
    batch_size: int,
    world_size: int,
    generator: torch.Generator | None = None,
) -> list[int]:
    """The full order (see the module docstring); one modality only: plain length grouping."""
    if any(n == 0 for n in modality_lengths):
        raise ValueError("modality lengths must be non-zero (positive: image record, negative: text-only)")
    if all(n > 0 for n in modality_lengths) or all(n < 0 for n in modality_lengths):
        return length_grouped_order([abs(n) for n in modality_lengths], batch_size, world_size, generator)
    mega = world_size * batch_size
    groups: list[list[list[int]]] = []
    for keep in (lambda n: n > 0, lambda n: n < 0):
        members = [i for i, n in enumerate(modality_lengths) if keep(n)]
        sub = [abs(modality_lengths[i]) for i in members]
        # As the release: within a modality, the length grouping draws from the global RNG.
        order = [members[j] for j in length_grouped_order(sub, batch_size, world_size, None)]
        groups.append([order[s : s + mega] for s in range(0, len(order), mega)])
    (image_mb, text_mb) = groups
    leftover = image_mb[-1] + text_mb[-1]
    full = image_mb[:-1] + text_mb[:-1]
    shuffled = [full[i] for i in torch.randperm(len(full), generator=generator).tolist()]
    if leftover:
        shuffled.append(sorted(leftover))
    return [i for block in shuffled for i in block]


class ModalityLengthGroupedSampler(Sampler[int]):
    """Yields `modality_length_grouped_order` afresh at every epoch (from torch's seeded global RNG)."""

    def __init__(
        self,
        modality_lengths: Sequence[int],
        batch_size: int,
        world_size: int = 1,
        generator: torch.Generator | None = None,
    ) -> None:
        self.modality_lengths = list(modality_lengths)
        self.batch_size = batch_size
        self.world_size = world_size
        self.generator = generator

    def __len__(self) -> int:
        return len(self.modality_lengths)

    def __iter__(self) -> Iterator[int]:
        order = modality_length_grouped_order(
            self.modality_lengths, self.batch_size, self.world_size, self.generator
        )
        return iter(order)
