"""The regularisers' share of a LoRA training step on a 7B-shaped decoder stack (goal: at most 2 %).

A LLaMA-7B-shaped stack (hidden 4096, MLP 11008, 32 heads; `--layers` of its 32 layers, a small vocabulary
so the LM head does not dilute the layers' cost) with LoRA r 128 on all seven linears, trained as the paper
config does (bf16 autocast, fp32 LoRA weights, activation checkpointing). Timed, as medians of `--reps`
synchronised steps after a warm-up: one LoRA step (forward + backward of a micro-batch of `--batch` x `--seq`
tokens), the same step plus RegLoRA's penalty over `--tasks` earlier tasks' keys (top 2 % each, concatenated
as the release), and plus O-LoRA's orthogonality term against `--tasks` earlier A's. Both terms and the step
scale with the number of layers, so the share at 4 layers is the share at 32.

    python bench/penalty_share.py --out penalty_share.json            # on a CUDA machine
    python bench/penalty_share.py --device cpu --hidden 64 --intermediate 160 --heads 4 --batch 2 --seq 32
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

GOAL = 0.02


def build(args: argparse.Namespace) -> Any:
    """The peft-wrapped decoder stack on the device: base in the run dtype, LoRA weights in fp32."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        hidden_size=args.hidden,
        intermediate_size=args.intermediate,
        num_attention_heads=args.heads,
        num_key_value_heads=args.heads,
        num_hidden_layers=args.layers,
        vocab_size=args.vocab,
        max_position_embeddings=max(2048, args.seq),
    )
    dtype = getattr(torch, args.dtype)
    with torch.device(args.device):
        base = LlamaForCausalLM(config).to(dtype)
    if args.checkpointing:
        enable = getattr(base, "activation_checkpointing_enable", None) or base.gradient_checkpointing_enable
        kwarg = "activation_checkpointing_kwargs" if enable.__name__.startswith("activation") else None
        enable(**{kwarg or "gradient_checkpointing_kwargs": {"use_reentrant": False}})
        base.config.use_cache = False
    targets = r".*layers\.\d+\.(self_attn\.(q_proj|k_proj|v_proj|o_proj)|mlp\.(gate_proj|up_proj|down_proj))$"
    lora = LoraConfig(r=args.rank, lora_alpha=2 * args.rank, lora_dropout=0.0, target_modules=targets)
    model = get_peft_model(base, lora)
    for p in model.parameters():
        if p.requires_grad:
            p.data = p.data.float()
    return model


def randomise(model: Any, seed: int) -> None:
    """Fresh random A and B, as after a task's training (so B·A and its top 2 % are not degenerate)."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_A" in name or "lora_B" in name:
                p.copy_((torch.randn(p.shape, generator=gen) * 0.02).to(p.device, p.dtype))


def earlier_tasks(model: Any, tasks: int) -> tuple[Any, Any]:
    """RegLoRA keys (top 2 % of B·A per linear, concatenated) and O-LoRA A's of `tasks` earlier LoRAs."""
    from sefe.sefe_train.methods._orthogonal import PrevAStore
    from sefe.sefe_train.reglora.config import RegLoRAConfig
    from sefe.sefe_train.reglora.keys import KeyStore
    from sefe.sefe_train.reglora.modules import adapted_linears

    keys, prev_a = KeyStore.empty(), PrevAStore()
    for t in range(tasks):
        randomise(model, 1000 + t)
        keys.update_from_peft(model, RegLoRAConfig(top_percent=2.0, accumulate="concat"))
        prev_a.add_task(adapted_linears(model))
    randomise(model, 0)  # the task being trained
    return keys, prev_a


def timed(step: Callable[[], None], reps: int, device: str) -> float:
    """Median seconds of `step` after two warm-up runs, synchronised on CUDA."""

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    for _ in range(2):
        step()
    times = []
    for _ in range(reps):
        sync()
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=4096)
    ap.add_argument("--intermediate", type=int, default=11008)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--vocab", type=int, default=1024)
    ap.add_argument("--rank", type=int, default=128)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=700)
    ap.add_argument("--tasks", type=int, default=7, help="earlier tasks (7: training CoIN's last task)")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--no-checkpointing", dest="checkpointing", action="store_false")
    ap.add_argument("--out", type=Path, default=None, help="JSON file for the figures")
    args = ap.parse_args()

    from sefe.sefe_train.methods._orthogonal import OLoRARegularizer
    from sefe.sefe_train.reglora.config import RegLoRAConfig
    from sefe.sefe_train.reglora.penalty import RegLoRAPenalty

    torch.manual_seed(0)
    model = build(args)
    model.train()
    keys, prev_a = earlier_tasks(model, args.tasks)
    penalty = RegLoRAPenalty(keys, model, RegLoRAConfig(accumulate="concat"))
    orth = OLoRARegularizer(model, prev_a, lam_orth=1.0, lam_l2=0.0).orth
    ids = torch.randint(0, args.vocab, (args.batch, args.seq), device=args.device)
    autocast = torch.autocast(args.device.split(":")[0], dtype=getattr(torch, args.dtype))

    def step(extra: Callable[[], torch.Tensor] | None) -> Callable[[], None]:
        def run() -> None:
            model.zero_grad(set_to_none=True)
            with autocast:
                loss = model(input_ids=ids, labels=ids).loss
            if extra is not None:
                loss = loss + 1e-3 * extra()
            loss.backward()

        return run

    def alone(term: Callable[[], torch.Tensor]) -> Callable[[], None]:
        def run() -> None:
            model.zero_grad(set_to_none=True)
            (1e-3 * term()).backward()

        return run

    lora_s = timed(step(None), args.reps, args.device)
    rows: dict[str, Any] = {}
    for name, term in (("reglora_penalty", penalty), ("olora_orth", orth)):
        with_s = timed(step(term), args.reps, args.device)
        alone_s = timed(alone(term), args.reps, args.device)
        rows[name] = {
            "alone_s": alone_s,
            "step_with_term_s": with_s,
            "share_alone": alone_s / lora_s,
            "share_of_step": max(0.0, with_s - lora_s) / with_s,
        }
        rows[name]["meets_goal"] = rows[name]["share_alone"] <= GOAL
    result = {
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else args.device,
        "torch": torch.__version__,
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "penalty_impls": sorted(set(penalty.impls.values())),
        "lora_step_s": lora_s,
        "goal_share": GOAL,
        "terms": rows,
    }
    text = json.dumps(result, indent=2, default=str)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
