"""Key elements: the positions RegLoRA protects, stored as packed bitmasks per adapted linear.

A packed bitmask costs one bit per weight at any density and merging a task is a bitwise OR, versus 16 bytes
per key for the reference's int64 (row, col) pairs (13.7 GB after seven tasks of a 7B model). With
`accumulate="concat"` a position chosen by several tasks must weigh more, so a uint8 count per set bit
(in row-major order) is stored beside the mask.

File format (`keys.safetensors`): per module a uint8 tensor named by the module's base-model name holding
`numpy.packbits(mask.reshape(-1), bitorder="little")`; with concat also `<name>:counts` (uint8, one per set
bit in flat order). Metadata: `format`, `version`, `accumulate`, `tasks`, `top_percent`, `reg_delta`, and
`shapes` (JSON object name -> [out, in]).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sefe.atomic import atomic_path
from sefe.errors import InputError, MissingFile
from sefe.sefe_train.reglora.config import Accumulate, RegLoRAConfig
from sefe.sefe_train.reglora.modules import adapted_linears
from sefe.sefe_train.reglora.topk import n_top, top_k_mask

FORMAT = "sefe.reglora.keys"
VERSION = "1"
COUNTS_SUFFIX = ":counts"


class KeysFileError(InputError):
    """A `keys.safetensors` file that cannot be read (the message names the file and the field or tensor)."""


def canonical_safetensors(raw: bytes) -> bytes:
    """The same safetensors file with its `__metadata__` keys sorted, so equal keys give equal bytes.

    safetensors writes the metadata map in hash order, which changes from process to process; tensor
    entries and data are already in a fixed order. The header stays space-padded to 8 bytes.
    """
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    if "__metadata__" in header:
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + raw[8 + n :]


@dataclass
class ModuleKeys:
    """Accumulated key positions of one (out, in) matrix."""

    shape: tuple[int, int]
    bits: np.ndarray  # uint8, packbits(mask, bitorder="little")
    counts: np.ndarray | None = None  # uint8 per set bit (concat only)

    @property
    def numel(self) -> int:
        return self.shape[0] * self.shape[1]

    def mask(self) -> np.ndarray:
        """Flat bool mask of the key positions."""
        return np.unpackbits(self.bits, count=self.numel, bitorder="little").view(bool)

    def indices(self) -> np.ndarray:
        """Sorted flat (row-major) indices of the key positions, int64."""
        return np.flatnonzero(self.mask())

    @property
    def n_keys(self) -> int:
        return int(np.unpackbits(self.bits, bitorder="little").sum(dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return int(self.bits.nbytes + (0 if self.counts is None else self.counts.nbytes))


def _merge(
    old: ModuleKeys | None, new_mask: np.ndarray, shape: tuple[int, int], mode: Accumulate
) -> ModuleKeys:
    if old is not None and old.shape != shape:
        raise ValueError(f"shape changed from {old.shape} to {shape}")
    if mode == "union":
        bits = np.packbits(new_mask, bitorder="little")
        if old is not None:
            bits |= old.bits
        return ModuleKeys(shape=shape, bits=bits)
    dense = new_mask.astype(np.uint8)
    if old is not None:
        old_mask = old.mask()
        old_counts = old.counts if old.counts is not None else np.ones(int(old_mask.sum()), np.uint8)
        if old_counts.size and int(old_counts.max()) >= 255:
            raise ValueError("a key position was chosen by 255 tasks: uint8 counts would overflow")
        dense[old_mask] += old_counts
    mask = dense.view(bool) if dense.max(initial=0) <= 1 else dense > 0
    return ModuleKeys(shape=shape, bits=np.packbits(mask, bitorder="little"), counts=dense[mask])


class KeyStore:
    """Accumulated key elements of all adapted linears, by base-model module name."""

    def __init__(
        self,
        modules: dict[str, ModuleKeys] | None = None,
        *,
        accumulate: Accumulate | None = None,
        tasks: int = 0,
        meta: dict[str, str] | None = None,
    ) -> None:
        self.modules: dict[str, ModuleKeys] = dict(modules or {})
        self.accumulate: Accumulate | None = accumulate
        self.tasks = tasks
        self.meta: dict[str, str] = dict(meta or {})

    @classmethod
    def empty(cls) -> KeyStore:
        """The store before the first task: no keys, so the penalty is zero."""
        return cls()

    # ---- queries ---------------------------------------------------------------------------------------
    @property
    def module_names(self) -> list[str]:
        return list(self.modules)

    @property
    def nbytes(self) -> int:
        """Bytes of the packed masks (and counts): what the file and memory hold."""
        return sum(m.nbytes for m in self.modules.values())

    @property
    def is_empty(self) -> bool:
        return not self.modules

    def __contains__(self, name: object) -> bool:
        return name in self.modules

    def __len__(self) -> int:
        return len(self.modules)

    def shape(self, name: str) -> tuple[int, int]:
        return self._get(name).shape

    def indices(self, name: str) -> np.ndarray:
        """Sorted flat row-major key indices of one module (int64): row = idx // in, col = idx % in."""
        return self._get(name).indices()

    def counts(self, name: str) -> np.ndarray | None:
        """Per-key counts aligned with `indices(name)` (concat), or None (union: every key weighs one)."""
        return self._get(name).counts

    def mask(self, name: str) -> np.ndarray:
        """Bool key mask of one module with its (out, in) shape."""
        m = self._get(name)
        return m.mask().reshape(m.shape)

    def _get(self, name: str) -> ModuleKeys:
        try:
            return self.modules[name]
        except KeyError:
            raise KeyError(f"no key elements for module {name!r}") from None

    # ---- updates ---------------------------------------------------------------------------------------
    def add_task(
        self, masks: Iterable[tuple[str, np.ndarray | torch.Tensor]], accumulate: Accumulate
    ) -> KeyStore:
        """Accumulate one task's key masks ((out, in) bool arrays), one module at a time."""
        if self.accumulate is not None and self.accumulate != accumulate:
            raise ValueError(f"key store accumulates by {self.accumulate!r}, asked to add by {accumulate!r}")
        for name, mask in masks:
            if isinstance(mask, torch.Tensor):
                mask = mask.detach().to("cpu").numpy()
            if mask.ndim != 2:
                raise ValueError(f"{name}: key mask must be 2-D (out, in), got shape {mask.shape}")
            shape = (int(mask.shape[0]), int(mask.shape[1]))
            try:
                flat = mask.astype(bool).reshape(-1)
                self.modules[name] = _merge(self.modules.get(name), flat, shape, accumulate)
            except ValueError as err:
                raise ValueError(f"{name}: {err}") from None
        self.accumulate = accumulate
        self.tasks += 1
        return self

    def update_from_peft(self, peft_model: torch.nn.Module, cfg: RegLoRAConfig) -> KeyStore:
        """Add the key elements of the model's current LoRA update (call after a task, before merging).

        Per adapted linear: ΔW = B·A (times alpha/r with reg_delta="scaled") as fp32 values on the parameters'
        device, top M percent of |ΔW| with deterministic ties; one module at a time (one dense ΔW alive).
        """
        modules = adapted_linears(peft_model)
        if not modules:
            raise ValueError("no LoRA-adapted linear layers found in the model")

        def masks() -> Iterable[tuple[str, torch.Tensor]]:
            with torch.no_grad():
                for item in modules:
                    # fp64 product rounded once to fp32: exact fp32 values whatever TF32 / matmul settings
                    # the trainer enabled (TF32 would reorder near-ties between runs and devices).
                    delta = item.lora_B.detach().double() @ item.lora_A.detach().double()
                    if cfg.reg_delta == "scaled":
                        delta.mul_(item.scaling)
                    magnitude = delta.abs_().float()
                    if not bool(torch.isfinite(magnitude).all()):
                        raise ValueError(f"{item.name}: ΔW = B·A has non-finite entries, cannot pick keys")
                    mask = top_k_mask(magnitude, n_top(magnitude.numel(), cfg.top_percent))
                    del delta, magnitude
                    yield item.name, mask.view(item.shape)

        self.add_task(masks(), cfg.accumulate)
        self.meta.update(top_percent=repr(cfg.top_percent), reg_delta=cfg.reg_delta)
        return self

    # ---- files -----------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write `keys.safetensors` atomically (temp file in the same folder, fsync, rename)."""
        from safetensors.numpy import save

        path = Path(path)
        tensors: dict[str, np.ndarray] = {}
        for name, m in self.modules.items():
            tensors[name] = m.bits
            if m.counts is not None:
                tensors[name + COUNTS_SUFFIX] = m.counts
        metadata = {
            **self.meta,
            "format": FORMAT,
            "version": VERSION,
            "accumulate": self.accumulate or "union",
            "tasks": str(self.tasks),
            "shapes": json.dumps({n: list(m.shape) for n, m in self.modules.items()}),
        }
        with atomic_path(path) as tmp:
            tmp.write_bytes(canonical_safetensors(save(tensors, metadata=metadata)))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> KeyStore:
        """Read a `keys.safetensors` file, checking every tensor against its recorded shape."""
        from safetensors import SafetensorError, safe_open

        path = Path(path)
        if not path.is_file():
            raise MissingFile(f"{path}: no such key file")
        try:
            opened = safe_open(str(path), framework="np")
        except (OSError, SafetensorError) as err:
            raise KeysFileError(f"{path}: not a safetensors file ({err})") from None
        with opened as fh:
            meta = dict(fh.metadata() or {})
            if meta.get("format") != FORMAT:
                fmt = meta.get("format")
                raise KeysFileError(f"{path}: not a RegLoRA key file (metadata 'format' is {fmt!r})")
            try:
                shapes: Mapping[str, list[int]] = json.loads(meta["shapes"])
                tasks = int(meta.get("tasks", "0"))
            except (KeyError, ValueError) as err:
                raise KeysFileError(f"{path}: bad metadata field 'shapes'/'tasks': {err}") from None
            accumulate = meta.get("accumulate", "union")
            if accumulate not in ("union", "concat"):
                raise KeysFileError(
                    f"{path}: metadata 'accumulate' must be union or concat, got {accumulate!r}"
                )
            names = set(fh.keys())
            modules: dict[str, ModuleKeys] = {}
            for name, shp in shapes.items():
                if name not in names:
                    raise KeysFileError(f"{path}: module {name!r} listed in metadata 'shapes' has no tensor")
                shape = (int(shp[0]), int(shp[1]))
                bits = fh.get_tensor(name)
                if bits.dtype != np.uint8 or bits.size != -(-shape[0] * shape[1] // 8):
                    raise KeysFileError(
                        f"{path}: tensor {name!r} must be uint8 with ceil({shape[0]}*{shape[1]}/8) entries, "
                        f"got {bits.dtype} with {bits.size}"
                    )
                keys = ModuleKeys(shape=shape, bits=bits.reshape(-1))
                if name + COUNTS_SUFFIX in names:
                    counts = fh.get_tensor(name + COUNTS_SUFFIX).reshape(-1)
                    if counts.dtype != np.uint8 or counts.size != keys.n_keys:
                        raise KeysFileError(
                            f"{path}: tensor {name + COUNTS_SUFFIX!r} must be uint8 with one entry per key "
                            f"({keys.n_keys}), got {counts.dtype} with {counts.size}"
                        )
                    keys.counts = counts
                elif accumulate == "concat":
                    raise KeysFileError(f"{path}: concat key file lacks tensor {name + COUNTS_SUFFIX!r}")
                modules[name] = keys
        reserved = ("format", "version", "accumulate", "tasks", "shapes")
        extra = {k: v for k, v in meta.items() if k not in reserved}
        return cls(modules, accumulate=accumulate, tasks=tasks, meta=extra)
