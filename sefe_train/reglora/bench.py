"""`sefe bench reglora`: our penalty vs the reference dense computation at real 7B shapes.

Per (shape, density) one module with rank-r LoRA factors and random key positions at that density. Times are
medians of forward+backward, ours and the reference interleaved rep by rep so load from other processes hits
both alike. Peak memory is the extra memory one forward+backward needs beyond the live parameters and keys:
- CUDA: `torch.cuda.max_memory_allocated` minus the allocation before the step.
- CPU: a fresh subprocess per measurement; for memory, glibc's mmap threshold at 128 KiB (freed buffers go
  back to the OS, so they cannot hide reuse; timings keep the default allocator); after a warm-up step the
  kernel's RSS high-water mark is reset (`/proc/self/clear_refs` = 5); peak = VmHWM - VmRSS over one step.
The reference is what the SEFE code does each step: keys as int64 (row, col) pairs, `(B @ A)[rows, cols]`,
abs, mean, in the parameters' dtype.
"""

from __future__ import annotations

import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Literal

import numpy as np
from pydantic import BaseModel

from sefe.errors import InputError
from sefe.sefe_train.reglora.config import BenchDType, BenchOptions, PenaltyImpl
from sefe.sefe_train.reglora.topk import n_top

LAYER_7B = ((4096, 4096),) * 4 + ((11008, 4096),) * 2 + ((4096, 11008),)  # q k v o, gate up, down
LAYERS_7B = 32


_DEFAULTS = BenchOptions()  # `sefe bench reglora`'s defaults, one source for the CLI and this API


class BenchRow(BaseModel):
    """One (shape, density) measurement; times in seconds, memory in MiB."""

    shape: str
    density: float  # percent of entries that are keys
    ours_s: float
    reference_s: float
    ours_peak_mb: float
    reference_peak_mb: float
    ours_impl: str
    n_keys: int
    rank: int
    dtype: str
    device: str


class StorageRow(BaseModel):
    """Key storage after `tasks` tasks at `density` percent: packed bitmask vs the reference's int64 pairs."""

    scope: str
    tasks: int
    density: float
    int64_pairs_bytes: int
    bitmask_union_bytes: int
    bitmask_concat_bytes: int
    union_ratio: float
    concat_ratio: float


class BenchResult(BaseModel):
    rows: list[BenchRow]
    storage: list[StorageRow]
    machine: dict[str, str]


def parse_shapes(text: str) -> list[tuple[int, int]]:
    """'4096x4096,11008x4096' -> [(4096, 4096), (11008, 4096)]."""
    shapes = []
    for part in text.split(","):
        try:
            out_f, in_f = (int(v) for v in part.lower().strip().split("x"))
        except ValueError:
            raise InputError(f"--shapes: {part!r} is not OUTxIN (e.g. 4096x11008)") from None
        shapes.append((out_f, in_f))
    return shapes


# ---- one measurement (runs in a worker process on CPU) ----------------------------------------------
class Spec(BaseModel):
    shape: tuple[int, int]
    density: float
    rank: int
    dtype: BenchDType
    device: str
    reps: int
    mode: Literal["time", "mem_ours", "mem_reference"]
    impl: PenaltyImpl = "auto"
    threads: int | None = None  # torch intra-op threads; None keeps torch's default
    seed: int = 0


def _proc_kib(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def measure(spec: Spec) -> dict[str, float | int | str]:
    """Set up one module and time or measure ours / the reference (see the module docstring)."""
    import torch

    from sefe.sefe_train.reglora.penalty import build_pattern, module_penalty
    from sefe.sefe_train.reglora.sampled import CsrPattern

    if spec.threads:
        torch.set_num_threads(spec.threads)
    device = torch.device(spec.device)
    dtype = getattr(torch, spec.dtype)
    out_f, in_f = spec.shape
    gen = torch.Generator().manual_seed(spec.seed)
    lora_a = (torch.randn(spec.rank, in_f, generator=gen) * 0.01).to(device, dtype).requires_grad_()
    lora_b = (torch.randn(out_f, spec.rank, generator=gen) * 0.01).to(device, dtype).requires_grad_()
    rng = np.random.default_rng(spec.seed)
    k = n_top(out_f * in_f, spec.density)
    flat = np.sort(rng.choice(out_f * in_f, size=k, replace=False))
    pattern = build_pattern(flat, spec.shape, None, spec.impl, device)
    rows = torch.from_numpy(flat // in_f).to(device)  # the reference's int64 (row, col) pairs
    cols = torch.from_numpy(flat % in_f).to(device)
    del flat

    def ours() -> None:
        module_penalty(lora_a, lora_b, pattern).backward()

    def reference() -> None:
        (lora_b @ lora_a)[rows, cols].abs().mean().backward()

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def step(fn: Callable[[], None]) -> float:
        lora_a.grad = lora_b.grad = None
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        return time.perf_counter() - t0

    impl = "sampled" if isinstance(pattern, CsrPattern) else "dense"
    result: dict[str, float | int | str] = {"n_keys": k, "ours_impl": impl}
    if spec.mode == "time":
        step(ours), step(reference)  # warm-up
        t_ours, t_ref = [], []
        for _ in range(spec.reps):
            t_ours.append(step(ours))
            t_ref.append(step(reference))
        result.update(ours_s=statistics.median(t_ours), reference_s=statistics.median(t_ref))
        return result
    fn = ours if spec.mode == "mem_ours" else reference
    step(fn)  # warm-up: library workspaces, thread pools
    lora_a.grad = lora_b.grad = None
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated(device) - base
    else:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        base_kib = _proc_kib("VmRSS")
        fn()
        peak = (_proc_kib("VmHWM") - base_kib) * 1024
    result["peak_mb"] = peak / 2**20
    return result


def _run_isolated(spec: Spec) -> dict[str, float | int | str]:
    env = dict(os.environ)
    if spec.mode != "time":  # memory only: freed buffers must not hide; timing keeps glibc's defaults
        env |= {"MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}
    proc = subprocess.run(
        [sys.executable, "-m", "sefe.sefe_train.reglora.bench", spec.model_dump_json()],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        what = f"{spec.shape} {spec.density}% {spec.mode}"
        raise RuntimeError(f"bench worker failed for {what}:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---- storage ---------------------------------------------------------------------------------------------
def storage_rows(tasks: int = 7, density: float = 2.0, seed: int = 0) -> list[StorageRow]:
    """Real KeyStores for one 7B decoder layer over `tasks` random tasks; the 7B row scales by 32 layers."""
    from sefe.sefe_train.reglora.keys import KeyStore

    rng = np.random.default_rng(seed)
    union, concat = KeyStore.empty(), KeyStore.empty()
    pairs = 0
    for _ in range(tasks):
        masks = []
        for i, (out_f, in_f) in enumerate(LAYER_7B):
            k = n_top(out_f * in_f, density)
            mask = np.zeros(out_f * in_f, dtype=bool)
            mask[rng.choice(out_f * in_f, size=k, replace=False)] = True
            masks.append((f"layer.{i}", mask.reshape(out_f, in_f)))
            pairs += k * 16
        union.add_task(masks, "union")
        concat.add_task(masks, "concat")

    def row(scope: str, mult: int) -> StorageRow:
        return StorageRow(
            scope=scope,
            tasks=tasks,
            density=density,
            int64_pairs_bytes=pairs * mult,
            bitmask_union_bytes=union.nbytes * mult,
            bitmask_concat_bytes=concat.nbytes * mult,
            union_ratio=pairs / union.nbytes,
            concat_ratio=pairs / concat.nbytes,
        )

    return [row("one 7B decoder layer (7 linears)", 1), row("7B model, 32 layers (random keys)", LAYERS_7B)]


def machine_info(device: str, threads: int | None = None) -> dict[str, str]:
    import torch

    if threads:
        torch.set_num_threads(threads)

    info = {
        "platform": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": str(os.cpu_count()),
        "torch_threads": str(torch.get_num_threads()),
        "torch": torch.__version__,
        "device": device,
    }
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def run_bench(
    shapes: list[tuple[int, int]],
    densities: list[float],
    reps: int = _DEFAULTS.reps,
    device: str = _DEFAULTS.device,
    dtype: BenchDType = _DEFAULTS.dtype,
    rank: int = _DEFAULTS.rank,
    impl: PenaltyImpl = _DEFAULTS.impl,
    with_storage: bool = _DEFAULTS.storage,
    threads: int | None = _DEFAULTS.threads,
) -> BenchResult:
    """All (shape, density) rows with rich progress on stderr; CPU measurements run in worker processes."""
    from rich.console import Console
    from rich.progress import Progress

    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda: torch sees no CUDA device (CPU-only torch build?)")
    run = measure if device.startswith("cuda") else _run_isolated
    rows: list[BenchRow] = []
    grid = [(s, d) for s in shapes for d in densities]
    with Progress(console=Console(stderr=True)) as progress:
        task = progress.add_task("reglora penalty", total=len(grid) * 3 + (1 if with_storage else 0))
        for shape, dens in grid:
            common = dict(
                shape=shape,
                density=dens,
                rank=rank,
                dtype=dtype,
                device=device,
                reps=reps,
                impl=impl,
                threads=threads,
            )
            got: dict[str, dict[str, float | int | str]] = {}
            for mode in ("time", "mem_ours", "mem_reference"):
                progress.update(task, description=f"{shape[0]}x{shape[1]} {dens:g}% {mode}")
                got[mode] = run(Spec(mode=mode, **common))
                progress.advance(task)
            rows.append(
                BenchRow(
                    shape=f"{shape[0]}x{shape[1]}",
                    density=dens,
                    ours_s=float(got["time"]["ours_s"]),
                    reference_s=float(got["time"]["reference_s"]),
                    ours_peak_mb=float(got["mem_ours"]["peak_mb"]),
                    reference_peak_mb=float(got["mem_reference"]["peak_mb"]),
                    ours_impl=str(got["time"]["ours_impl"]),
                    n_keys=int(got["time"]["n_keys"]),
                    rank=rank,
                    dtype=dtype,
                    device=device,
                )
            )
        storage: list[StorageRow] = []
        if with_storage:
            progress.update(task, description="key storage, 7 tasks")
            storage = storage_rows()
            progress.advance(task)
    return BenchResult(rows=rows, storage=storage, machine=machine_info(device, threads))


def markdown(result: BenchResult) -> str:
    """The BENCHMARKS.md table of one run."""
    m = result.machine
    lines = [
        f"Machine: {m.get('gpu', m['cpu'])}, {m['cpu_count']} CPUs ({m['torch_threads']} torch threads), "
        f"torch {m['torch']}, device {m['device']}.",
        "",
        "| shape | density % | impl | ours s | reference s | speed-up | ours peak MiB | reference peak MiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result.rows:
        lines.append(
            f"| {r.shape} | {r.density:g} | {r.ours_impl} | {r.ours_s:.4f} | {r.reference_s:.4f} | "
            f"{r.reference_s / r.ours_s:.1f}x | {r.ours_peak_mb:.1f} | {r.reference_peak_mb:.1f} |"
        )
    if result.storage:
        lines += [
            "",
            "| key storage | tasks | density % | int64 pairs | bitmask (union) | ratio | "
            "bitmask + counts (concat) | ratio |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for s in result.storage:
            lines.append(
                f"| {s.scope} | {s.tasks} | {s.density:g} | {s.int64_pairs_bytes / 2**20:.1f} MiB | "
                f"{s.bitmask_union_bytes / 2**20:.1f} MiB | {s.union_ratio:.1f}x | "
                f"{s.bitmask_concat_bytes / 2**20:.1f} MiB | {s.concat_ratio:.1f}x |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # worker: one Spec as JSON in argv[1], one JSON result line on stdout
    print(json.dumps(measure(Spec.model_validate_json(sys.argv[1]))))
