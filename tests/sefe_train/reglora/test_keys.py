"""Key elements: exact top-k (ties included), union / concat accumulation, file format and round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file

from sefe.sefe_train.reglora.config import RegLoRAConfig
from sefe.sefe_train.reglora.keys import KeyStore
from sefe.sefe_train.reglora.modules import adapted_linears, base_name
from sefe.sefe_train.reglora.topk import n_top, top_k_mask
from tests.helpers.reglora import make_peft_llama, randomise_lora


def numpy_top_k(values: np.ndarray, k: int) -> np.ndarray:
    """Independent reference: stable descending argsort, ties to the lowest flat index."""
    flat = np.abs(values.reshape(-1).astype(np.float64))
    chosen = np.argsort(-flat, kind="stable")[:k]
    mask = np.zeros(flat.size, dtype=bool)
    mask[chosen] = True
    return mask


@pytest.mark.parametrize("seed", range(6))
def test_top_k_matches_stable_argsort_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    # Few distinct values: many ties at the threshold, the case bf16 produces.
    values = rng.integers(-4, 5, size=(37, 23)).astype(np.float32)
    for k in (1, 5, 17, 100, 850, 851):
        got = top_k_mask(torch.from_numpy(np.abs(values)), k).numpy()
        assert got.sum() == k
        np.testing.assert_array_equal(got, numpy_top_k(values, k))


def test_n_top_is_floor_of_percent_with_minimum_one() -> None:
    assert n_top(4096 * 4096, 2.0) == 335544
    assert n_top(100, 2.0) == 2
    assert n_top(10, 2.0) == 1
    assert n_top(10, 100.0) == 10


def test_base_names_strip_peft_and_ddp_prefixes() -> None:
    name = "base_model.model.model.language_model.layers.0.self_attn.q_proj"
    assert base_name(name) == "model.language_model.layers.0.self_attn.q_proj"
    assert base_name("module." + name) == "model.language_model.layers.0.self_attn.q_proj"


@pytest.mark.parametrize("reg_delta", ["ba", "scaled"])
def test_update_from_peft_picks_top_percent_per_module(reg_delta: str) -> None:
    model = make_peft_llama(seed=1)
    cfg = RegLoRAConfig(top_percent=3.0, reg_delta=reg_delta)
    store = KeyStore.empty().update_from_peft(model, cfg)
    mods = adapted_linears(model)
    assert len(mods) == 14 and store.module_names == [m.name for m in mods]
    assert mods[0].name == "model.layers.0.self_attn.q_proj"
    for m in mods:
        delta = m.lora_B.detach().double().numpy() @ m.lora_A.detach().double().numpy()
        if reg_delta == "scaled":
            delta = delta * m.scaling
        delta = delta.astype(np.float32)  # the spec: selection on fp32 values
        k = n_top(delta.size, 3.0)
        np.testing.assert_array_equal(store.mask(m.name).reshape(-1), numpy_top_k(delta, k), err_msg=m.name)
        np.testing.assert_array_equal(store.indices(m.name), np.flatnonzero(numpy_top_k(delta, k)))
        counts = store.counts(m.name)  # the default accumulates as the release (concat): one task, ones
        assert counts is not None and counts.size == k and bool((counts == 1).all())


def _random_masks(rng: np.random.Generator, shapes: dict[str, tuple[int, int]], p: float):
    return [(n, rng.random(s) < p) for n, s in shapes.items()]


def test_union_is_bitwise_or_and_concat_counts_repeats() -> None:
    rng = np.random.default_rng(0)
    shapes = {"a": (13, 7), "b": (5, 9)}
    tasks = [_random_masks(rng, shapes, 0.3) for _ in range(4)]
    union, concat = KeyStore.empty(), KeyStore.empty()
    for masks in tasks:
        union.add_task(masks, "union")
        concat.add_task(masks, "concat")
    for name, shape in shapes.items():
        stacked = np.stack([dict(t)[name] for t in tasks]).astype(np.int64)
        expected_mask = stacked.sum(0) > 0
        np.testing.assert_array_equal(union.mask(name), expected_mask)
        np.testing.assert_array_equal(concat.mask(name), expected_mask)
        # concat: one count per set bit, in row-major order, equal to how many tasks chose the position
        expected_counts = stacked.sum(0).reshape(-1)[expected_mask.reshape(-1)]
        np.testing.assert_array_equal(concat.counts(name), expected_counts)
        assert concat.counts(name).max() > 1  # repeats really happened in this draw
        assert union.shape(name) == shape
    assert union.tasks == concat.tasks == 4
    with pytest.raises(ValueError, match="accumulates by 'union'"):
        union.add_task(tasks[0], "concat")


def test_shape_change_is_refused_naming_the_module() -> None:
    store = KeyStore.empty().add_task([("m", np.ones((2, 3), bool))], "union")
    with pytest.raises(ValueError, match=r"m: shape changed"):
        store.add_task([("m", np.ones((3, 2), bool))], "union")


@pytest.mark.parametrize("accumulate", ["union", "concat"])
def test_save_load_round_trip_and_plain_numpy_format(tmp_path, accumulate: str) -> None:
    model = make_peft_llama(seed=2)
    cfg = RegLoRAConfig(accumulate=accumulate, top_percent=5.0)
    store = KeyStore.empty().update_from_peft(model, cfg)
    randomise_lora(model, 3)
    store.update_from_peft(model, cfg)
    path = tmp_path / "run" / "1_GQA" / "keys.safetensors"
    store.save(path)
    assert not list(path.parent.glob("*.tmp"))

    loaded = KeyStore.load(path)
    assert loaded.module_names == store.module_names and loaded.tasks == 2 and loaded.accumulate == accumulate
    assert loaded.nbytes == store.nbytes
    for name in store.module_names:
        np.testing.assert_array_equal(loaded.mask(name), store.mask(name))
        if accumulate == "concat":
            np.testing.assert_array_equal(loaded.counts(name), store.counts(name))

    # A plain numpy + safetensors reader: tensors named by module, little packbits, shapes in metadata.
    from safetensors import safe_open

    with safe_open(str(path), framework="np") as fh:
        shapes = json.loads(fh.metadata()["shapes"])
    raw = load_file(str(path))
    name = "model.layers.1.mlp.down_proj"
    out_f, in_f = shapes[name]
    assert (out_f, in_f) == (24, 40)
    assert raw[name].dtype == np.uint8
    mask = np.unpackbits(raw[name], count=out_f * in_f, bitorder="little").reshape(out_f, in_f).astype(bool)
    np.testing.assert_array_equal(mask, store.mask(name))
    assert (name + ":counts" in raw) == (accumulate == "concat")


def test_load_errors_name_file_and_module(tmp_path) -> None:
    bad = tmp_path / "keys.safetensors"
    meta = {
        "format": "sefe.reglora.keys",
        "version": "1",
        "accumulate": "union",
        "tasks": "1",
        "shapes": json.dumps({"model.layers.0.mlp.up_proj": [8, 8]}),
    }
    save_file({"model.layers.0.mlp.up_proj": np.zeros(3, np.uint8)}, str(bad), metadata=meta)
    expected = r"keys\.safetensors: tensor 'model\.layers\.0\.mlp\.up_proj' must be"
    with pytest.raises(ValueError, match=expected):
        KeyStore.load(bad)
    save_file({"x": np.zeros(8, np.uint8)}, str(bad), metadata={"format": "other"})
    with pytest.raises(ValueError, match="not a RegLoRA key file"):
        KeyStore.load(bad)
