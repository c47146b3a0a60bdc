"""`sefe micro run`: the Micro-CoIN comparison, method x data x seed, each a normal continual run.

    sefe micro run --methods lora,reglora --data original,asd --seeds 3 --out DIR

Steps, each resumable by rerunning the same command: build the benchmark (`DIR/data`, once), the warm start
(cached by hash), ASD for the `asd` data (`sefe asd build` with the scene backend and data distractors:
seconds), then every combination as a `ContinualRunner` run in `DIR/runs/<method>_<data>_seed<s>` (its own
resume: finished stages skipped, training from the last checkpoint), evaluated after every task on accuracy,
format errors and the knowledge probe; finally `DIR/report.md`, `DIR/report.json` and plots (`report.py`).
SEFE is `reglora` on `asd` data.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rich.console import Console

from sefe.errors import InputError
from sefe.micro.options import (
    DataKind,
    MicroOptions,
    RunSpec,
    asd_root,
    data_root,
    data_seed,
)


def ensure_benchmark(opts: MicroOptions, console: Console, seed: int = 0) -> Path:
    """Build seed `seed`'s data once (tasks.json is written last, so its presence means complete). Every
    seed's warm-start corpus is drawn from the benchmark seed: one warm start per benchmark version."""
    import orjson

    from sefe.micro.generate import build_micro

    root = data_root(opts, seed)
    want = {"train": opts.n_train, "test": opts.n_test, "warmstart": opts.n_warm}
    marker = root / "tasks.json"
    if marker.is_file():
        info = orjson.loads(marker.read_bytes())
        if info.get("sizes") == want and info.get("seed") == data_seed(opts, seed):
            return root
        raise InputError(f"{marker}: built with other sizes/seed ({info.get('sizes')}); use another --out")
    t0 = time.perf_counter()
    build_micro(
        root,
        seed=data_seed(opts, seed),
        n_train=opts.n_train,
        n_test=opts.n_test,
        n_warm=opts.n_warm,
        warm_seed=opts.benchmark_seed,
    )
    console.print(f"benchmark (seed {seed}) built in {time.perf_counter() - t0:.0f} s: {root}")
    return root


def ensure_asd(opts: MicroOptions, root: Path, console: Console, seed: int = 0) -> Path:
    """`sefe asd build --x X --backend scene --distractors pool --seed S` on seed S's data root (cached)."""
    from sefe.asd_gen.build import BuildOptions, build
    from sefe.asd_gen.needs import GenerationOptions
    from sefe.coin.layout import asd_train_path

    asd_out = asd_root(opts, seed)
    if all(asd_train_path(asd_out, t, opts.x).is_file() for t in opts.tasks):
        return asd_out
    build(
        BuildOptions(
            data_root=root,
            out=asd_out,
            tasks=list(opts.tasks),
            xs=[opts.x],
            seed=seed if opts.vary_data else 0,
            distractors="pool",
            generation=GenerationOptions(backend="scene"),
        ),
        console=console,
    )
    return asd_out


def run_config(
    opts: MicroOptions,
    method: str,
    data: DataKind,
    seed: int,
    root: Path,
    warm: Path,
    spec: RunSpec | None = None,
) -> Any:
    from sefe.coin.layout import TRAIN_PATTERN, asd_train_path
    from sefe.sefe_train.config import RunConfig

    spec = spec or RunSpec(
        name=opts.run_name(method, data, seed),
        method=method,
        data=data,
        seed=seed,
        tasks=opts.tasks,
        lam=opts.lam,
    )
    asd = asd_root(opts, seed).resolve()
    train_file = TRAIN_PATTERN if data == "original" else str(asd_train_path(asd, "{task}", opts.x))
    return RunConfig.model_validate(
        {
            "output_dir": str(Path(opts.out) / "runs" / spec.name),
            "data_root": str(root),
            "train_file": train_file,
            "tasks": list(spec.tasks),
            "method": method,
            "model": {"path": str(warm), "family": opts.family, "dtype": "fp32"},
            "lora": {"r": opts.lora_r, "alpha": 2 * opts.lora_r, "dropout": 0.0},
            "reglora": {"lam": spec.lam},
            "train": {
                "lr": opts.lr,
                "projector_lr": opts.lr / 10 if opts.projector_lr is None else opts.projector_lr,
                "epochs": opts.epochs,
                "global_batch_size": opts.batch_size,
                "per_device_batch_size": opts.batch_size,
                "max_length": 256,
                "cache_examples": True,  # 48 px pictures: encoding an item costs as much as its step
                "gradient_checkpointing": False,
                "group_by_length": False,
                "save_steps": 100,
                "logging_steps": 10,
                "seed": seed,
                "warmup_ratio": 0.05,
            },
            # a Locate box is 24 tokens (one per digit): room for it and the end of the reply
            "eval": {"mode": "fixed", "batch_size": 32, "max_new_tokens": 32, "max_samples": opts.n_test},
        }
    )


def _add_seconds(run: Path, seconds: float, stages: int) -> float:
    """Wall seconds spent on a run, summed over the invocations that worked on it (resume adds up)."""
    import orjson

    from sefe.atomic import atomic_write_bytes

    path = run / "micro_timing.json"
    old = orjson.loads(path.read_bytes()) if path.is_file() else {"seconds": 0.0, "stages": 0}
    if stages > old.get("stages", 0):  # skip the near-zero time of a rerun that only found it done
        old = {"seconds": round(old["seconds"] + seconds, 1), "stages": stages}
        atomic_write_bytes(path, orjson.dumps(old))
    return float(old["seconds"])


def run_micro(opts: MicroOptions, console: Console | None = None) -> Path:
    """Run every combination (resuming), then write the report; returns DIR/report.md. DIR is locked
    (`sefe.lock`) for the whole run: a second `sefe micro run` into it refuses."""
    from sefe.lock import folder_lock

    with folder_lock(opts.out, "sefe micro run"):
        return _run_micro(opts, console)


def _run_micro(opts: MicroOptions, console: Console | None) -> Path:
    import orjson

    from sefe.atomic import atomic_write_bytes
    from sefe.micro.report import write_report
    from sefe.micro.warmstart import warmstart_dir

    console = console or Console(stderr=True)
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    if opts.threads:
        import torch

        torch.set_num_threads(opts.threads)
    atomic_write_bytes(
        out / "micro.json", orjson.dumps(opts.model_dump(mode="json"), option=orjson.OPT_INDENT_2)
    )
    roots = [ensure_benchmark(opts, console, s) for s in range(opts.seeds if opts.vary_data else 1)]
    t0 = time.perf_counter()
    # one torch thread unless told: on a busy machine two threads stalled the warm start (1,453 s against 350)
    warm_opts = (
        opts.warm if opts.warm.threads or opts.threads else opts.warm.model_copy(update={"threads": 1})
    )
    console.print("warm start: found in the cache, or built once (progress below)")
    warm = warmstart_dir(roots[0], opts=warm_opts, console=console, family=opts.family)
    console.print(f"warm start: {warm} ({time.perf_counter() - t0:.0f} s)")
    for seed in sorted({spec.seed for spec in opts.specs() if spec.data == "asd"}):
        ensure_asd(opts, roots[seed] if opts.vary_data else roots[0], console, seed)
    timings: dict[str, float] = {}
    todo = opts.specs()
    if opts.jobs > 1:
        timings = _run_parallel(opts, todo, warm, console)
    else:
        for spec in todo:
            console.rule(f"micro run {spec.name}")
            timings[spec.name] = _run_one(opts, spec, data_root(opts, spec.seed), warm)
    return write_report(opts, warm, timings)


def _run_one(opts: MicroOptions, spec: RunSpec, root: Path, warm: Path) -> float:
    """One continual run (resumed if begun); returns its wall seconds summed over invocations."""
    from sefe.micro.latent import record_latent
    from sefe.sefe_train.runner import ContinualRunner

    t1 = time.perf_counter()
    cfg = run_config(opts, spec.method, spec.data, spec.seed, root, warm, spec)
    state = ContinualRunner(cfg).run()
    record_latent(Path(cfg.output_dir), root, list(spec.tasks), console=Console(stderr=True))
    return _add_seconds(Path(cfg.output_dir), time.perf_counter() - t1, len(state.done))


def _run_parallel(opts: MicroOptions, todo: list[RunSpec], warm: Path, console: Console) -> dict[str, float]:
    """`opts.jobs` runs at once, one spawned process each (torch threads split between them).

    Why: the tiny model's steps use two threads poorly, so two one-thread runs side by side finish sooner
    than the same runs one after the other. Each worker writes its progress to `runs/<name>.log`."""
    import multiprocessing
    import os
    from concurrent.futures import ProcessPoolExecutor, as_completed

    threads = opts.threads or max(1, (os.cpu_count() or 1) // opts.jobs)
    payload = opts.model_dump(mode="json")
    timings: dict[str, float] = {}
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(opts.jobs, mp_context=ctx) as pool:
        futures = {
            pool.submit(
                _worker,
                payload,
                spec.model_dump(mode="json"),
                str(data_root(opts, spec.seed)),
                str(warm),
                threads,
            ): spec.name
            for spec in todo
        }
        console.print(f"{len(todo)} runs, {opts.jobs} at a time; logs: {Path(opts.out) / 'runs'}/<run>.log")
        for fut in as_completed(futures):
            name = futures[fut]
            timings[name] = fut.result()
            console.print(f"finished {name} ({timings[name]:.0f} s)")
    return timings


def _worker(payload: dict[str, Any], spec_json: dict[str, Any], root: str, warm: str, threads: int) -> float:
    """One continual run in a spawned process, its console output sent to `runs/<name>.log`."""
    import os
    import sys

    import torch

    opts = MicroOptions.model_validate(payload)
    spec = RunSpec.model_validate(spec_json)
    log = Path(opts.out) / "runs" / f"{spec.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as fh:
        os.dup2(fh.fileno(), 1)
        os.dup2(fh.fileno(), 2)
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115 (the process's own streams)
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    torch.set_num_threads(threads)
    return _run_one(opts, spec, Path(root), Path(warm))
