"""O-LoRA's defining properties on a real peft LoRA: the loss is its formula, its gradient lowers the overlap
with earlier tasks' A matrices, and the stored A's accumulate task by task and survive a save/load."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from sefe.sefe_train.methods._orthogonal import (
    OLoRARegularizer,
    PrevAStore,
    l2_loss,
    orthogonality_loss,
)
from sefe.sefe_train.reglora.modules import adapted_linears
from tests.helpers.method_models import peft_lora, tiny_llama


def _two_tasks(r: int = 4) -> tuple[torch.nn.Module, PrevAStore]:
    """Task 1's LoRA recorded in a store, then a fresh task-2 LoRA on the (unmerged) base."""
    first = peft_lora(tiny_llama(0), r=r, seed=1)
    store = PrevAStore().add_task(adapted_linears(first))
    second = peft_lora(tiny_llama(0), r=r, seed=2)
    return second, store


def test_loss_equals_its_formula() -> None:
    model, store = _two_tasks()
    reg = OLoRARegularizer(model, store, lam_orth=0.5, lam_l2=0.01)
    terms = reg.terms()
    want_orth = 0.0
    want_l2 = 0.0
    for m in adapted_linears(model):
        a_prev = store.prev[m.name].double().numpy()
        a_t = m.lora_A.detach().double().numpy()
        assert a_prev.shape == a_t.shape  # one earlier task of the same rank
        want_orth += np.abs(a_prev @ a_t.T).sum()
        want_l2 += np.linalg.norm(a_t) + np.linalg.norm(m.lora_B.detach().double().numpy())
    assert len(adapted_linears(model)) == 14
    assert float(terms["olora_orth"]) == pytest.approx(want_orth, rel=1e-5)
    assert float(terms["olora_l2"]) == pytest.approx(want_l2, rel=1e-5)
    assert float(reg.loss()) == pytest.approx(0.5 * want_orth + 0.01 * want_l2, rel=1e-5)


def test_first_task_has_no_orthogonality_term_and_zero_lambda_skips_terms() -> None:
    model = peft_lora(tiny_llama(0), seed=1)
    assert OLoRARegularizer(model, PrevAStore(), lam_orth=0.5, lam_l2=0.0).loss() is None
    assert set(OLoRARegularizer(model, PrevAStore(), 0.5, 0.1).terms()) == {"olora_l2"}
    model2, store = _two_tasks()
    assert set(OLoRARegularizer(model2, store, 0.0, 0.0).terms()) == set()


def test_gradient_of_the_orthogonality_loss_lowers_the_overlap() -> None:
    model, store = _two_tasks()
    reg = OLoRARegularizer(model, store, lam_orth=1.0, lam_l2=0.0)
    a_params = [m.lora_A for m in adapted_linears(model)]
    b_before = [m.lora_B.detach().clone() for m in adapted_linears(model)]
    opt = torch.optim.SGD(a_params, lr=0.05)
    history = []
    for _ in range(5):
        opt.zero_grad()
        loss = reg.loss()
        loss.backward()
        history.append(float(loss))
        opt.step()
    history.append(float(reg.loss()))
    assert all(b < a for a, b in itertools.pairwise(history)), history
    assert history[-1] < 0.5 * history[0]
    # only the new A's move; the earlier tasks' A's are constants, B has no gradient from this loss
    for m, b in zip(adapted_linears(model), b_before, strict=True):
        assert torch.equal(m.lora_B.detach(), b)
    assert all(not t.requires_grad for t in store.prev.values())


def test_orthogonal_a_has_zero_loss() -> None:
    q, _ = torch.linalg.qr(torch.randn(16, 16, dtype=torch.float64))
    prev, new = q[:4], q[4:8]  # rows of an orthogonal matrix: mutually orthogonal
    assert float(orthogonality_loss(prev, new)) == pytest.approx(0.0, abs=1e-12)
    assert float(orthogonality_loss(prev, prev)) > 1.0
    with pytest.raises(ValueError, match="in_features"):
        orthogonality_loss(prev, new[:, :8])
    assert float(l2_loss([torch.ones(2, 2), torch.ones(3)])) == pytest.approx(2.0 + 3**0.5)


def test_store_stacks_tasks_and_round_trips(tmp_path: Path) -> None:
    models = [peft_lora(tiny_llama(0), r=r, seed=s) for r, s in ((4, 1), (2, 2))]
    store = PrevAStore()
    for m in models:
        store.add_task(adapted_linears(m))
    name = adapted_linears(models[0])[0].name
    assert name.startswith("model.layers.0.")  # base-model names, wrapper prefixes stripped
    assert store.tasks == 2 and store.rows(name) == 6  # rank 4 then rank 2, stacked
    first_a = adapted_linears(models[0])[0].lora_A.detach()
    assert torch.equal(store.prev[name][:4], first_a)
    path = tmp_path / "olora_prev_a.safetensors"
    store.save(path)
    back = PrevAStore.load(path)
    assert back.tasks == 2 and set(back.prev) == set(store.prev)
    assert all(torch.equal(back.prev[n], store.prev[n]) for n in store.prev)
    (tmp_path / "bad.safetensors").write_bytes(path.read_bytes()[:20])
    with pytest.raises(Exception):  # noqa: B017 - safetensors' own error for a cut file
        PrevAStore.load(tmp_path / "bad.safetensors")


def test_missing_module_in_store_is_named() -> None:
    model, store = _two_tasks()
    name = next(iter(store.prev))
    del store.prev[name]
    with pytest.raises(ValueError, match="no earlier A matrices"):
        OLoRARegularizer(model, store, 0.5, 0.0)


def test_default_lambda_is_the_ports_rescaled_by_the_terms_r_squared_growth() -> None:
    """λ1 = 0.05 · (16 / r)²: the term sums r_prev x r entries whose size at init does not depend on r, so
    λ1 · L_orth starts at the same size for every rank (the port's at r = 16)."""
    import math

    from sefe.sefe_train.config import load_config
    from sefe.sefe_train.methods.olora import OLoRA, scaled_lam_orth

    assert scaled_lam_orth(16) == pytest.approx(0.05)
    assert scaled_lam_orth(128) == pytest.approx(0.05 / 64)
    cfg = load_config(None, ["method=olora", "lora.r=128"])
    assert OLoRA.from_config(cfg).lam_orth == pytest.approx(0.05 / 64)
    cfg = load_config(None, ["method=olora", "lora.r=128", "method_options.olora.lam_orth=0.5"])
    assert OLoRA.from_config(cfg).lam_orth == 0.5

    def start(r: int) -> float:  # λ1 · L_orth of two freshly initialised A's (peft's init), in = 1024
        torch.manual_seed(r)
        prev, new = torch.empty(r, 1024), torch.empty(r, 1024)
        for a in (prev, new):
            torch.nn.init.kaiming_uniform_(a, a=math.sqrt(5))
        return scaled_lam_orth(r) * float(orthogonality_loss(prev, new))

    assert start(64) == pytest.approx(start(16), rel=0.1)
    assert start(128) == pytest.approx(start(16), rel=0.1)


def test_earlier_as_follow_the_model_after_a_move() -> None:
    """Built while the model is on the CPU (as the runner does), the term runs where the A's are after the
    Trainer moved them: on the meta device (standing in for CUDA) and in bf16, never on the CPU copy."""
    model = peft_lora(tiny_llama(0), seed=5)
    store = PrevAStore().add_task(adapted_linears(peft_lora(tiny_llama(0), seed=6)))
    reg = OLoRARegularizer(model, store, lam_orth=1.0, lam_l2=0.0)
    fp32 = float(reg.orth())
    model.to(torch.bfloat16)
    value = reg.orth()
    assert value.dtype == torch.bfloat16 and value.item() == pytest.approx(fp32, rel=2e-2)
    model.to("meta")
    assert reg.orth().device.type == "meta"
