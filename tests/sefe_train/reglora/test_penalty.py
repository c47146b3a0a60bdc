"""The penalty equals the direct dense formula, in value and gradient, for both implementations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sefe.sefe_train.reglora.config import RegLoRAConfig
from sefe.sefe_train.reglora.keys import KeyStore
from sefe.sefe_train.reglora.modules import adapted_linears
from sefe.sefe_train.reglora.penalty import RegLoRAPenalty, choose_impl
from tests.helpers.reglora import make_peft_llama, randomise_lora


def direct_penalty(model: torch.nn.Module, store: KeyStore, scaled: bool) -> torch.Tensor:
    """The spec's formula written plainly in fp64: dense ΔW, list of key entries (repeats per count), mean."""
    mods = adapted_linears(model)
    total = torch.zeros((), dtype=torch.float64)
    for m in mods:
        if m.name not in store:
            continue
        delta = m.lora_B.double() @ m.lora_A.double()
        if scaled:
            delta = delta * m.scaling
        idx = torch.from_numpy(store.indices(m.name))
        counts = store.counts(m.name)
        if counts is not None:  # the reference's concatenated list: a position chosen twice appears twice
            idx = torch.repeat_interleave(idx, torch.from_numpy(counts.astype(np.int64)))
        total = total + delta.reshape(-1)[idx].abs().mean()
    return total / len(mods)


def lora_params(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for n, p in model.named_parameters() if "lora_" in n]


def grads_of(fn, params: list[torch.nn.Parameter]) -> list[torch.Tensor]:
    return [g.double() for g in torch.autograd.grad(fn(), params)]


def two_task_store(
    accumulate: str, top_percent: float = 10.0, seed: int = 0
) -> tuple[torch.nn.Module, KeyStore]:
    model = make_peft_llama(seed=seed)
    cfg = RegLoRAConfig(accumulate=accumulate, top_percent=top_percent)
    store = KeyStore.empty().update_from_peft(model, cfg)
    randomise_lora(model, seed + 10)
    store.update_from_peft(model, cfg)
    randomise_lora(model, seed + 20)  # the current task's LoRA
    for p in lora_params(model):
        p.requires_grad_(True)
    return model, store


@pytest.mark.parametrize("impl", ["dense", "sampled"])
@pytest.mark.parametrize("accumulate", ["union", "concat"])
@pytest.mark.parametrize("reg_delta", ["ba", "scaled"])
def test_penalty_and_gradients_equal_direct_formula_fp32(impl: str, accumulate: str, reg_delta: str) -> None:
    model, store = two_task_store(accumulate)
    if accumulate == "concat":
        assert any(store.counts(n).max() > 1 for n in store.module_names)
    cfg = RegLoRAConfig(impl=impl, accumulate=accumulate, reg_delta=reg_delta)
    pen = RegLoRAPenalty(store, model, cfg)
    assert pen.n_modules == 14 and set(pen.impls.values()) <= {impl}
    params = lora_params(model)
    ours = pen()
    ref = direct_penalty(model, store, reg_delta == "scaled")
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours.double(), ref, rtol=1e-5, atol=0)
    g_direct = grads_of(lambda: direct_penalty(model, store, reg_delta == "scaled"), params)
    for g_ours, g_ref in zip(grads_of(pen, params), g_direct, strict=True):
        torch.testing.assert_close(g_ours, g_ref, rtol=1e-4, atol=1e-9)
    assert set(pen.impls.values()) == {impl}


@pytest.mark.parametrize("impl", ["dense", "sampled"])
def test_bf16_params_within_bf16_tolerance(impl: str) -> None:
    model, store = two_task_store("concat")
    model.to(torch.bfloat16)
    params = lora_params(model)
    pen = RegLoRAPenalty(store, model, RegLoRAConfig(impl=impl))
    ours = pen()
    ref = direct_penalty(model, store, scaled=False)  # fp64 on the same bf16 values
    torch.testing.assert_close(ours.double(), ref, rtol=2e-2, atol=0)
    g_ours = torch.autograd.grad(pen(), params)
    g_ref = torch.autograd.grad(direct_penalty(model, store, scaled=False), params)
    for a, b in zip(g_ours, g_ref, strict=True):
        assert a.dtype == torch.bfloat16
        # sign flips of entries near zero move a few gradient terms: compare in aggregate
        assert (a.double() - b).norm() <= 0.05 * b.norm()


def test_gradient_is_zero_off_key_positions() -> None:
    """Keys confined to some rows / columns: B rows and A columns that touch no key get exactly zero grad."""
    model = make_peft_llama(seed=4)
    mods = adapted_linears(model)
    m = mods[3]
    out_f, in_f = m.shape
    mask = np.zeros((out_f, in_f), dtype=bool)
    mask[2:5, 1:in_f:3] = True
    mask[10, 7] = True
    store = KeyStore.empty().add_task([(m.name, mask)], "union")
    params = [m.lora_A, m.lora_B]
    for impl in ("dense", "sampled"):
        pen = RegLoRAPenalty(store, model, RegLoRAConfig(impl=impl))
        g_a, g_b = torch.autograd.grad(pen(), params)
        rows_with_keys = mask.any(1)
        cols_with_keys = mask.any(0)
        assert torch.count_nonzero(g_b[torch.from_numpy(~rows_with_keys)]) == 0
        assert torch.count_nonzero(g_a[:, torch.from_numpy(~cols_with_keys)]) == 0
        assert torch.count_nonzero(g_b[torch.from_numpy(rows_with_keys)]) > 0
        # ΔW outside the keys does not enter: changing B on key-free rows leaves the value
        before = pen().item()
        with torch.no_grad():
            m.lora_B[~torch.from_numpy(rows_with_keys)] += 1.0
        assert pen().item() == pytest.approx(before, rel=1e-6)


@pytest.mark.parametrize("impl", ["dense", "sampled"])
def test_zero_penalty_and_gradient_when_b_is_zero(impl: str) -> None:
    """The first step of a task: B = 0, so ΔW = 0. dP/dA = Bᵀ·G = 0 always. dP/dB = G·Aᵀ with G = sign(0) = 0
    (PyTorch's subgradient of |x| at 0, which the direct formula's autograd uses too): also zero."""
    model, store = two_task_store("union")
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.zero_()
    params = lora_params(model)
    pen = RegLoRAPenalty(store, model, RegLoRAConfig(impl=impl))
    value = pen()
    assert value.item() == 0.0
    for g_ours, g_ref in zip(
        torch.autograd.grad(pen(), params),
        torch.autograd.grad(direct_penalty(model, store, False), params),
        strict=True,
    ):
        assert torch.count_nonzero(g_ours) == 0
        torch.testing.assert_close(g_ours.double(), g_ref.double())


def test_empty_store_gives_zero_and_modules_without_keys_still_count() -> None:
    model = make_peft_llama(seed=5)
    pen = RegLoRAPenalty(KeyStore.empty(), model, RegLoRAConfig())
    assert pen.is_empty and pen().item() == 0.0
    mods = adapted_linears(model)
    only = mods[0]
    store = KeyStore.empty().add_task([(only.name, np.ones(only.shape, bool))], "union")
    pen = RegLoRAPenalty(store, model, RegLoRAConfig(impl="sampled"))
    expected = (only.lora_B @ only.lora_A).abs().mean() / len(mods)
    torch.testing.assert_close(pen(), expected.detach())


def test_keys_from_another_model_are_refused() -> None:
    store = KeyStore.empty().add_task([("model.layers.9.mlp.up_proj", np.ones((2, 2), bool))], "union")
    with pytest.raises(ValueError, match=r"model\.layers\.9\.mlp\.up_proj"):
        RegLoRAPenalty(store, make_peft_llama(), RegLoRAConfig())
    m = adapted_linears(make_peft_llama())[0]
    store = KeyStore.empty().add_task([(m.name, np.ones((3, 3), bool))], "union")
    with pytest.raises(ValueError, match="keys have shape"):
        RegLoRAPenalty(store, make_peft_llama(), RegLoRAConfig())


@pytest.mark.parametrize("impl", ["dense", "sampled"])
def test_training_on_the_penalty_shrinks_delta_at_keys(impl: str) -> None:
    """A real optimisation loop on the peft model: the penalty pulls ΔW at key positions towards zero."""
    model, store = two_task_store("union", top_percent=5.0)
    pen = RegLoRAPenalty(store, model, RegLoRAConfig(impl=impl))
    opt = torch.optim.Adam(lora_params(model), lr=3e-2)
    first = pen().item()
    for _ in range(10):
        opt.zero_grad()
        pen().backward()
        opt.step()
    assert pen().item() < 0.5 * first


def test_auto_rule_is_per_device_density_and_size() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert choose_impl(cpu, 0.02, 4096 * 4096) == "sampled"
    assert choose_impl(cpu, 0.14, 11008 * 4096) == "sampled"
    assert choose_impl(cpu, 0.9, 4096 * 4096) == "dense"
    assert choose_impl(cpu, 0.02, 24 * 40) == "dense"  # tiny matrices: sparse call overhead dominates
    assert choose_impl(cuda, 0.02, 4096 * 4096) == "dense"
