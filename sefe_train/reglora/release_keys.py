"""The release's key files (`*_topP.pth`) to and from sefe's `keys.safetensors`.

The release stores, per LoRA-adapted linear, the (row, col) positions of its key elements as an int64 tensor
of shape (K, 2) in a torch-saved dict keyed by the module's name inside the peft model, e.g.
`base_model.model.model.layers.0.self_attn.q_proj` (LLaVA's `LlavaLlamaForCausalLM` keeps the language
model's layers under `model.layers`), and concatenates each task's pairs to the earlier tasks' pairs (a
position chosen twice appears twice). sefe keys the same modules by base-model name: in a transformers
`LlavaForConditionalGeneration` that is `model.language_model.layers.0.self_attn.q_proj`, in a plain Llama
`model.layers.0.self_attn.q_proj`. Import maps the names, checks every pair against the module's shape
(computed from the model's `config.json`) and stores the positions with `concat` counts or as a `union`;
export writes the pairs back (a `concat` position once per count), so a run begun with the release code can
continue under sefe and the other way round.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sefe.atomic import atomic_path
from sefe.errors import InputError
from sefe.sefe_train.reglora.keys import Accumulate, KeyStore, ModuleKeys
from sefe.sefe_train.reglora.modules import base_name

RELEASE_PREFIX = "base_model.model."
_LAYER = re.compile(
    r"^model\.(?:language_model\.)?layers\.(\d+)\.(self_attn\.[qkvo]_proj|mlp\.(?:gate|up|down)_proj)$"
)
_LINEARS = (
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
)


class ReleaseKeysError(InputError):
    """A release key file or model config that cannot be converted (the message names file and key)."""


def linear_shapes(config_path: str | os.PathLike[str]) -> dict[str, tuple[int, int]]:
    """(out, in) of every adapted linear, by sefe module name, from a model folder's `config.json`."""
    path = Path(config_path)
    if path.is_dir():
        path = path / "config.json"
    try:
        cfg: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ReleaseKeysError(f"{path}: cannot read the model config: {exc}") from None
    # A multimodal config (LLaVA, Qwen2.5-VL, Qwen3-VL, InternVL in transformers 5) keeps its language model
    # under `model.language_model`; its text sizes sit in `text_config`, or at the top level as the published
    # Qwen2.5-VL config.json writes them.
    text_nested = isinstance(cfg.get("text_config"), dict)
    multimodal = text_nested or isinstance(cfg.get("vision_config"), dict)
    text = cfg["text_config"] if text_nested else cfg
    try:
        hidden, inter = int(text["hidden_size"]), int(text["intermediate_size"])
        layers, heads = int(text["num_hidden_layers"]), int(text["num_attention_heads"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ReleaseKeysError(f"{path}: field {exc} of the language model config is missing") from None
    kv_heads = int(text.get("num_key_value_heads") or heads)
    head_dim = int(text.get("head_dim") or hidden // heads)
    q, kv = heads * head_dim, kv_heads * head_dim
    per_layer = {
        "self_attn.q_proj": (q, hidden),
        "self_attn.k_proj": (kv, hidden),
        "self_attn.v_proj": (kv, hidden),
        "self_attn.o_proj": (hidden, q),
        "mlp.gate_proj": (inter, hidden),
        "mlp.up_proj": (inter, hidden),
        "mlp.down_proj": (hidden, inter),
    }
    prefix = "model.language_model.layers" if multimodal else "model.layers"
    return {f"{prefix}.{i}.{lin}": per_layer[lin] for i in range(layers) for lin in _LINEARS}


def _layer_of(name: str) -> tuple[int, str] | None:
    m = _LAYER.match(base_name(name))
    return (int(m.group(1)), m.group(2)) if m else None


def release_name(sefe_name: str) -> str:
    """sefe's base-model module name -> the name the release's peft model gives the same linear."""
    found = _layer_of(sefe_name)
    if found is None:
        raise ReleaseKeysError(f"module {sefe_name!r} is not a language-model linear the release adapts")
    return f"{RELEASE_PREFIX}model.layers.{found[0]}.{found[1]}"


def _sefe_names(shapes: dict[str, tuple[int, int]]) -> dict[tuple[int, str], str]:
    out = {}
    for name in shapes:
        found = _layer_of(name)
        if found is not None:
            out[found] = name
    return out


def _pairs(value: Any, where: str) -> np.ndarray:
    import torch

    if (
        not isinstance(value, torch.Tensor)
        or value.dtype != torch.int64
        or value.ndim != 2
        or value.shape[1] != 2
    ):
        got = (
            f"{value.dtype} {tuple(value.shape)}" if isinstance(value, torch.Tensor) else type(value).__name__
        )
        raise ReleaseKeysError(
            f"{where}: expected an int64 tensor of (row, col) pairs, shape (K, 2); got {got}"
        )
    return value.numpy()


def import_release_keys(
    files: Sequence[str | os.PathLike[str]],
    shapes: dict[str, tuple[int, int]],
    accumulate: Accumulate = "concat",
    tasks: int | None = None,
) -> KeyStore:
    """A KeyStore from release `*_topP.pth` files, their pairs concatenated in the order given.

    Give the release's accumulated file alone when it already holds the earlier tasks' pairs, or one file
    per task. `tasks` (default: the number of files) is recorded in the store's metadata.
    """
    import torch

    if tasks is not None and tasks < 1:
        raise ReleaseKeysError(f"tasks must be at least 1 (the tasks the keys cover), got {tasks}")
    by_layer = _sefe_names(shapes)
    flat: dict[str, list[np.ndarray]] = {}
    for f in files:
        try:
            data = torch.load(Path(f), map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ReleaseKeysError(f"{f}: not a torch-saved key file: {exc}") from None
        if not isinstance(data, dict) or not data:
            what = "an empty dict" if isinstance(data, dict) else type(data).__name__
            raise ReleaseKeysError(f"{f}: expected a dict of module name -> (K, 2) int64 pairs, got {what}")
        for key, value in data.items():
            where = f"{f}, key {key!r}"
            found = _layer_of(str(key))
            name = by_layer.get(found) if found else None
            if name is None:
                raise ReleaseKeysError(
                    f"{where}: no such adapted linear in the model (expected names like "
                    f"'{RELEASE_PREFIX}model.layers.0.self_attn.q_proj')"
                )
            pairs = _pairs(value, where)
            out_f, in_f = shapes[name]
            bad = (pairs[:, 0] < 0) | (pairs[:, 0] >= out_f) | (pairs[:, 1] < 0) | (pairs[:, 1] >= in_f)
            if bad.any():
                row, col = pairs[int(np.flatnonzero(bad)[0])]
                raise ReleaseKeysError(
                    f"{where}: pair ({row}, {col}) is outside the module's shape {shapes[name]}"
                )
            flat.setdefault(name, []).append(pairs[:, 0] * in_f + pairs[:, 1])
    modules: dict[str, ModuleKeys] = {}
    for name, parts in flat.items():
        shape = shapes[name]
        idx, counts = np.unique(np.concatenate(parts), return_counts=True)
        if accumulate == "concat" and counts.size and int(counts.max()) > 255:
            raise ReleaseKeysError(
                f"module {name}: a position repeats {int(counts.max())} times (at most 255)"
            )
        mask = np.zeros(shape[0] * shape[1], dtype=bool)
        mask[idx] = True
        keys = ModuleKeys(shape=shape, bits=np.packbits(mask, bitorder="little"))
        if accumulate == "concat":
            keys.counts = counts.astype(np.uint8)
        modules[name] = keys
    n_tasks = len(files) if tasks is None else tasks
    return KeyStore(
        modules, accumulate=accumulate, tasks=n_tasks, meta={"imported_from": "release *_topP.pth"}
    )


def export_release_keys(store: KeyStore, path: str | os.PathLike[str]) -> Path:
    """Write the store as a release `*_topP.pth` file (atomic): int64 (row, col) pairs per module, row-major,
    a `concat` position repeated once per count."""
    import torch

    out: dict[str, torch.Tensor] = {}
    for name in store.module_names:
        idx = store.indices(name)
        counts = store.counts(name)
        if counts is not None:
            idx = np.repeat(idx, counts.astype(np.int64))
        cols = store.shape(name)[1]
        pairs = np.stack([idx // cols, idx % cols], axis=1).astype(np.int64)
        out[release_name(name)] = torch.from_numpy(pairs)
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(out, tmp)
    return path
