"""MoELoRA's defining properties on a real tiny Llama: per-token router weights sum to one, every expert of
every layer gets a gradient, the layer is CoIN's formula, its state round-trips, it cannot be merged."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sefe.sefe_train.methods import _moe_layer as M
from tests.helpers.method_models import LINEARS, batch, tiny_llama

R, ALPHA, E = 8, 16, 4


def _injected(seed: int = 0) -> torch.nn.Module:
    model = tiny_llama(seed)
    names = M.inject(model, LINEARS, r=R, alpha=ALPHA, experts=E)
    assert len(names) == 14  # 2 layers x 7 linears
    for n, p in model.named_parameters():
        p.requires_grad_(any(k in n for k in ("lora_A", "lora_B", "router")))
    return model


def _randomise_b(model: torch.nn.Module, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, layer in M.layers(model):
            layer.lora_B.copy_(0.1 * torch.randn(layer.lora_B.shape, generator=gen))


def test_router_weights_sum_to_one_per_token() -> None:
    layer = M.MoELoRALinear(torch.nn.Linear(6, 5), r=R, alpha=ALPHA, experts=E)
    x = torch.randn(3, 7, 6)
    g = layer.gates(x)
    assert g.shape == (3, 7, E)
    torch.testing.assert_close(g.sum(-1), torch.ones(3, 7))
    assert bool((g > 0).all())
    assert not torch.allclose(g[0, 0], g[0, 1])  # per token, not per sequence


def test_layer_is_coins_formula_and_starts_at_the_base() -> None:
    base = torch.nn.Linear(6, 5)
    layer = M.MoELoRALinear(base, r=R, alpha=ALPHA, experts=E)
    x = torch.randn(2, 3, 6)
    torch.testing.assert_close(layer(x), base(x))  # B = 0 at init
    with torch.no_grad():
        layer.lora_B.normal_()
    g = torch.softmax(x @ layer.router.weight.T, -1)
    want = base(x)
    for e in range(E):  # CoIN's loop over experts, scaling alpha / total r
        want = want + (x @ layer.lora_A[e].T @ layer.lora_B[e].T) * (ALPHA / R) * g[..., e : e + 1]
    torch.testing.assert_close(layer(x), want)
    assert layer.lora_A.shape == (E, R // E, 6) and layer.lora_B.shape == (E, 5, R // E)


def test_every_expert_of_every_layer_gets_gradient() -> None:
    model = _injected()
    _randomise_b(model)
    model(**batch(0)).loss.backward()
    for name, layer in M.layers(model):
        for e in range(E):
            for what, grad in (
                ("A", layer.lora_A.grad[e]),
                ("B", layer.lora_B.grad[e]),
                ("router", layer.router.weight.grad[e]),
            ):
                assert grad is not None and float(grad.abs().sum()) > 0, f"{name} expert {e}: no {what} grad"
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert all(p.grad is None for n, p in model.named_parameters() if n in frozen)


def test_state_round_trips_and_unwrap_restores_the_base(tmp_path: Path) -> None:
    model = _injected(0)
    _randomise_b(model, 1)
    base_weights = {n: layer.base.weight.detach().clone() for n, layer in M.layers(model)}
    inputs = batch(3)
    with torch.no_grad():
        want = model(**inputs).logits
    path = tmp_path / "moelora.safetensors"
    M.save(model, path, meta={"task": "x"})
    state, meta = M.load(path)
    assert meta["experts"] == str(E) and meta["r"] == str(R) and meta["task"] == "x"
    fresh = _injected(0)  # same base weights, fresh experts
    with torch.no_grad():
        assert not torch.allclose(fresh(**inputs).logits, want)
    M.load_state_dict(fresh, state)
    with torch.no_grad():
        torch.testing.assert_close(fresh(**inputs).logits, want)
    M.unwrap(fresh)
    assert not list(M.layers(fresh))
    plain = dict(fresh.named_modules())
    for n, w in base_weights.items():
        assert type(plain[n]) is torch.nn.Linear and torch.equal(plain[n].weight, w)
    with pytest.raises(ValueError, match="does not fit"):
        M.load_state_dict(_injected(0), {k: v for k, v in state.items() if "layers.0." not in k})


def test_update_is_input_dependent_so_it_cannot_be_merged() -> None:
    layer = M.MoELoRALinear(torch.nn.Linear(6, 5, bias=False), r=R, alpha=ALPHA, experts=E)
    with torch.no_grad():
        layer.lora_B.normal_()
        layer.router.weight.mul_(10)
    x1, x2 = torch.randn(6), torch.randn(6)
    d = layer.delta
    # a merged ΔW would make the update linear in x; the router makes it not
    assert not torch.allclose(d(x1 + x2), d(x1) + d(x2), atol=1e-4)


def test_bad_configurations_are_named() -> None:
    with pytest.raises(ValueError, match="multiple of the expert count"):
        M.MoELoRALinear(torch.nn.Linear(4, 4), r=6, alpha=12, experts=4)
    with pytest.raises(ValueError, match=r"no nn\.Linear"):
        M.inject(tiny_llama(0), r".*nothing$", r=R, alpha=ALPHA, experts=E)


def test_plain_state_saves_a_plain_checkpoint() -> None:
    plain = tiny_llama(0)
    want = {k: v.clone() for k, v in plain.state_dict().items()}
    model = _injected(0)
    _randomise_b(model)
    assert any(".lora_A" in k or ".base." in k for k in model.state_dict())  # training checkpoints: all
    M.set_plain_state(model, True)
    got = model.state_dict()
    assert set(got) == set(want)
    assert all(torch.equal(got[k], want[k]) for k in want)
    M.set_plain_state(model, False)
    assert any(".lora_B" in k for k in model.state_dict())
