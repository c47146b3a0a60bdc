"""GPU check of the RegLoRA penalty: both implementations equal the direct formula on CUDA (fp32 and bf16).

    python bench/check_reglora_cuda.py      # exits non-zero on a mismatch; prints one line per case
Run it on a CUDA machine before trusting `sefe bench reglora --device cuda` figures.
"""

from __future__ import annotations

import sys

import numpy as np
import torch


def main() -> int:
    from sefe.sefe_train.reglora.bench import Spec, measure  # noqa: F401  (import check of the bench path)
    from sefe.sefe_train.reglora.penalty import build_pattern, module_penalty

    if not torch.cuda.is_available():
        print("no CUDA device")
        return 2
    dev = torch.device("cuda")
    failures = 0
    rng = np.random.default_rng(0)
    for dtype in (torch.float32, torch.bfloat16):
        for impl in ("dense", "sampled"):
            for concat in (False, True):
                out_f, in_f, r = 1024, 768, 32
                a = (torch.randn(r, in_f, device=dev) * 0.1).to(dtype).requires_grad_()
                b = (torch.randn(out_f, r, device=dev) * 0.1).to(dtype).requires_grad_()
                flat = np.sort(rng.choice(out_f * in_f, size=out_f * in_f // 20, replace=False))
                counts = rng.integers(1, 4, size=flat.size).astype(np.uint8) if concat else None
                pat = build_pattern(flat, (out_f, in_f), counts, impl, dev)
                ours = module_penalty(a, b, pat)
                ga, gb = torch.autograd.grad(ours, (a, b))
                idx = torch.from_numpy(flat).to(dev)
                if counts is not None:
                    idx = torch.repeat_interleave(idx, torch.from_numpy(counts.astype(np.int64)).to(dev))
                ref = (b.double() @ a.double()).view(-1)[idx].abs().mean()
                ra, rb = torch.autograd.grad(ref, (a, b))
                tol = 1e-5 if dtype == torch.float32 else 2e-2
                v_err = abs(ours.item() - ref.item()) / ref.item()
                g_err = max(
                    ((ga.double() - ra.double()).norm() / ra.double().norm()).item(),
                    ((gb.double() - rb.double()).norm() / rb.double().norm()).item(),
                )
                ok = v_err <= tol and g_err <= (1e-4 if dtype == torch.float32 else 5e-2)
                failures += not ok
                print(
                    f"{'ok  ' if ok else 'FAIL'} {dtype} {impl} concat={concat} value_rel_err={v_err:.2e} "
                    f"grad_rel_err={g_err:.2e}"
                )
    failures += check_keys_on_cuda()
    return 1 if failures else 0


def check_keys_on_cuda() -> int:
    """Key selection on CUDA (fp64 product, kthvalue) picks the same positions as on CPU."""
    from peft import LoraConfig, get_peft_model
    from torch import nn

    from sefe.sefe_train.reglora.config import RegLoRAConfig
    from sefe.sefe_train.reglora.keys import KeyStore
    from sefe.sefe_train.reglora.penalty import RegLoRAPenalty

    torch.manual_seed(0)
    base = nn.Sequential(nn.Linear(512, 1536), nn.Linear(1536, 512))
    model = get_peft_model(base, LoraConfig(r=16, lora_alpha=32, target_modules=["0", "1"]))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_()
    cfg = RegLoRAConfig(top_percent=2.0)
    cpu = KeyStore.empty().update_from_peft(model, cfg)
    model.cuda()
    gpu = KeyStore.empty().update_from_peft(model, cfg)
    bad = 0
    for name in cpu.module_names:
        diff = int((cpu.mask(name) != gpu.mask(name)).sum())
        ok = diff <= 0.001 * cpu.mask(name).size
        bad += not ok
        print(f"{'ok  ' if ok else 'FAIL'} keys on cuda vs cpu {name}: {diff} positions differ")
    pen = RegLoRAPenalty(gpu, model, RegLoRAConfig())
    value = pen()
    value.backward()
    print(f"ok   penalty on cuda {value.item():.4f} impls {sorted(set(pen.impls.values()))}")
    return bad


if __name__ == "__main__":
    sys.exit(main())
