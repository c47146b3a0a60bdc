"""LoTA's defining properties on a real tiny Llama: the mask is the exact top-k of |task vector|, training
with it changes only masked entries, and a later task's mask (LoTTO) is disjoint from the earlier ones."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from sefe.sefe_train.methods._sparse_mask import GradientMask, lottery_masks, n_keep
from tests.helpers.method_models import LINEARS, batch, tiny_llama


def _brute_force(tv: dict[str, torch.Tensor], k: int, exclude=None) -> dict[str, np.ndarray]:
    """Stable descending argsort over the concatenation (ties by matrix order, then flat index)."""
    names = list(tv)
    mags = []
    for n in names:
        m = tv[n].abs().double().numpy().reshape(-1).copy()
        if exclude is not None and n in exclude:
            m[exclude[n].numpy().reshape(-1)] = -1.0
        mags.append(m)
    flat = np.concatenate(mags)
    order = np.argsort(-flat, kind="stable")[:k]
    chosen = np.zeros(flat.size, bool)
    chosen[order] = True
    out, start = {}, 0
    for n, m in zip(names, mags, strict=True):
        out[n] = chosen[start : start + m.size].reshape(tv[n].shape)
        start += m.size
    return out


def test_global_mask_is_the_exact_top_k_with_ties() -> None:
    gen = torch.Generator().manual_seed(0)
    tv = {
        "a": torch.randn(7, 5, generator=gen),
        "b": torch.randn(3, 11, generator=gen),
        "c": torch.randn(4, 4, generator=gen),
    }
    tv["b"][0, :6] = 1.5  # ties across and at the threshold
    tv["c"][1, :] = -1.5
    for pct in (1.0, 10.0, 37.5, 100.0):
        got = lottery_masks(tv, pct)
        k = n_keep(sum(t.numel() for t in tv.values()), pct)
        want = _brute_force(tv, k)
        assert sum(int(m.sum()) for m in got.values()) == k
        for n in tv:
            np.testing.assert_array_equal(got[n].numpy(), want[n], err_msg=f"{n} at {pct}%")


def test_radix_select_handles_tiny_and_huge_magnitudes() -> None:
    tv = {"w": torch.tensor([[1e-30, 3e-38, 0.0, 5e20], [2e-30, 7.0, 0.0, 1e-45]])}
    got = lottery_masks(tv, 50.0)["w"]
    assert got.tolist() == [[True, False, False, True], [True, True, False, False]]


def test_per_matrix_scope_and_exclusion() -> None:
    gen = torch.Generator().manual_seed(1)
    tv = {"a": torch.randn(10, 10, generator=gen), "b": 100 * torch.randn(10, 10, generator=gen)}
    per = lottery_masks(tv, 10.0, scope="per_matrix")
    assert [int(m.sum()) for m in per.values()] == [10, 10]
    glob = lottery_masks(tv, 10.0)
    assert int(glob["b"].sum()) == 20 and int(glob["a"].sum()) == 0  # one threshold: b dominates
    excl = {"b": glob["b"]}
    second = lottery_masks(tv, 10.0, exclude=excl)
    assert not bool((second["b"] & glob["b"]).any())
    assert sum(int(m.sum()) for m in second.values()) == 20
    np.testing.assert_array_equal(second["b"].numpy(), _brute_force(tv, 20, excl)["b"])
    # fewer free entries than the budget: all free entries, nothing excluded
    full = {"a": torch.ones(10, 10, dtype=torch.bool), "b": ~glob["b"]}
    rest = lottery_masks(tv, 50.0, exclude=full)
    assert int(rest["a"].sum()) == 0 and torch.equal(rest["b"], glob["b"])
    with pytest.raises(ValueError, match="non-finite"):
        lottery_masks({"a": torch.tensor([[float("nan")]])}, 10.0)


def _linear_weights(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    pat = re.compile(LINEARS)
    return {n + ".weight": m.weight for n, m in model.named_modules() if pat.match(n)}


def _calibrate(model: torch.nn.Module, steps: int, seed: int) -> dict[str, torch.Tensor]:
    """LoTA phase 1+2 by hand: fine-tune the linears a few steps, return the task vector and restore."""
    weights = _linear_weights(model)
    before = {n: p.detach().clone() for n, p in weights.items()}
    opt = torch.optim.AdamW(weights.values(), lr=1e-2, weight_decay=0.0)
    for s in range(steps):
        opt.zero_grad()
        model(**batch(seed * 100 + s)).loss.backward()
        opt.step()
    tv = {n: weights[n].detach() - before[n] for n in weights}
    with torch.no_grad():
        for n, p in weights.items():
            p.copy_(before[n])
    return tv


def _sparse_train(model: torch.nn.Module, masks: dict[str, torch.Tensor], steps: int, seed: int) -> None:
    weights = _linear_weights(model)
    for p in model.parameters():
        p.requires_grad_(False)
    for p in weights.values():
        p.requires_grad_(True)
    hook = GradientMask(weights, masks)
    opt = torch.optim.AdamW(weights.values(), lr=1e-2, weight_decay=0.0)
    for s in range(steps):
        opt.zero_grad()
        model(**batch(seed * 100 + 50 + s)).loss.backward()
        opt.step()
    hook.remove()


def test_training_changes_only_masked_entries_and_lotto_masks_are_disjoint() -> None:
    model = tiny_llama(0)
    w0 = {n: p.detach().clone() for n, p in _linear_weights(model).items()}
    masks1 = lottery_masks(_calibrate(model, 3, seed=1), 10.0)
    assert all(torch.equal(p.detach(), w0[n]) for n, p in _linear_weights(model).items())  # restored
    _sparse_train(model, masks1, 4, seed=1)
    w1 = {n: p.detach().clone() for n, p in _linear_weights(model).items()}
    changed = 0
    for n in w0:
        moved = w1[n] != w0[n]
        assert not bool((moved & ~masks1[n]).any()), f"{n}: an entry outside the mask moved"
        changed += int(moved.sum())
    assert changed > 0.9 * sum(int(m.sum()) for m in masks1.values())  # the masked entries did train

    # task 2 (LoTTO): calibrate from the task-1 model, exclude task 1's entries
    masks2 = lottery_masks(_calibrate(model, 3, seed=2), 10.0, exclude=masks1)
    _sparse_train(model, masks2, 4, seed=2)
    for n in w0:
        assert not bool((masks1[n] & masks2[n]).any()), f"{n}: task-2 mask overlaps task 1"
        w2 = _linear_weights(model)[n].detach()
        assert torch.equal(w2[masks1[n]], w1[n][masks1[n]]), f"{n}: task 2 moved a task-1 entry"
        assert not bool(((w2 != w1[n]) & ~masks2[n]).any())
    total = sum(m.numel() for m in masks1.values())
    assert sum(int(m.sum()) for m in masks2.values()) == n_keep(total, 10.0)


def test_gradient_mask_checks_names_and_shapes() -> None:
    p = torch.nn.Parameter(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="no mask"):
        GradientMask({"w": p}, {})
    with pytest.raises(ValueError, match="shape"):
        GradientMask({"w": p}, {"w": torch.ones(3, 2, dtype=torch.bool)})


def test_gradient_mask_follows_the_gradients_device_and_dtype() -> None:
    """Registered on CPU weights, applied to the gradient of weights that moved (meta stands in for CUDA:
    an elementwise op mixing it with a CPU tensor raises as CUDA does)."""
    p = torch.nn.Parameter(torch.zeros(2, 3))
    mask = torch.tensor([[True, False, True], [False, False, True]])
    hooks = GradientMask({"w": p}, {"w": mask})
    p.data = p.data.to(torch.bfloat16)  # the Trainer's cast: same parameter, the hook stays
    (p.float() * torch.arange(6.0).view(2, 3)).sum().backward()
    assert p.grad is not None and torch.equal(p.grad.float(), torch.arange(6.0).view(2, 3) * mask)
    g = hooks.apply("w", torch.ones(2, 3, device="meta", dtype=torch.bfloat16))
    assert g.device.type == "meta" and g.dtype == torch.bfloat16
    assert hooks.masks["w"].device.type == "meta"  # moved once, kept for the next steps


def test_calibrated_weights_take_deepspeeds_fp32_masters(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under DeepSpeed bf16 the trained weights are bf16 copies; τ must come from the fp32 masters."""
    import sys
    import types
    from types import SimpleNamespace

    from sefe.sefe_train.methods.lota import adopt_fp32_masters

    master = torch.tensor([[1.0 + 2.0**-12, 1.0]])  # the update 2^-12 is below bf16's resolution at 1.0
    p = torch.nn.Parameter(master.to(torch.bfloat16))
    assert float(p[0, 0]) == 1.0
    utils = types.ModuleType("deepspeed.utils")
    utils.safe_get_full_fp32_param = lambda param: master.clone() if param is p else None  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "deepspeed", types.ModuleType("deepspeed"))
    monkeypatch.setitem(sys.modules, "deepspeed.utils", utils)
    adopt_fp32_masters(SimpleNamespace(is_deepspeed_enabled=True), {"w": p})
    assert p.dtype == torch.float32 and torch.equal(p.detach(), master)
    other = torch.nn.Parameter(torch.zeros(1, dtype=torch.bfloat16))
    with pytest.raises(RuntimeError, match="no fp32 master"):
        adopt_fp32_masters(SimpleNamespace(is_deepspeed_enabled=True), {"v": other})
    with pytest.raises(RuntimeError, match="not fp32"):
        adopt_fp32_masters(SimpleNamespace(is_deepspeed_enabled=False), {"v": other})
