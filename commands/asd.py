"""`sefe asd build` / `sefe asd plan`: Answer Style Diversification of CoIN train files."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from sefe.asd_gen.needs import BackendName, DistractorMode, GenerationOptions
from sefe.asd_gen.options import BuildOptions
from sefe.commands.common import default, model_option, names_option, parse_floats, split_list
from sefe.vllm_args import parse_key_values

if TYPE_CHECKING:
    from rich.console import Console

    from sefe.asd_gen.needs import Generator

app = typer.Typer(help="Answer Style Diversification: build train_x{X}.json files.", no_args_is_help=True)
_GEN = GenerationOptions
_DEFAULT_XS = ",".join(f"{x:g}" for x in default(BuildOptions, "xs"))


def asd_build_cmd(
    data_root: Path | None = typer.Option(None, help="CoIN data root (default: bundled coin-mini)."),
    out: Path = model_option(BuildOptions, "out", help="Output root (<out>/annotations/<Task>/)."),
    tasks: list[str] | None = typer.Option(
        None,
        "--tasks",
        metavar="TASK",
        help="Tasks (repeat or comma list; default: those the root's tasks.json declares, else CoIN's).",
    ),
    task_file: list[Path] | None = typer.Option(
        None, "--task-file", metavar="FILE", help="YAML task declaration (repeat)."
    ),
    seed: int = typer.Option(
        default(BuildOptions, "seed"), help="Seed of selection, styles, option order and yes/no balance."
    ),
    x: list[str] | None = typer.Option(
        None,
        "--x",
        metavar="X",
        help=f"Percent converted (repeat or comma list); default {_DEFAULT_XS}.",
    ),
    distractors: DistractorMode = typer.Option(
        default(BuildOptions, "distractors"), help="model: the model writes distractors; pool: task answers."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only print the plan (same as `sefe asd plan`)."),
    backend: BackendName = model_option(
        _GEN, "backend", help="Generation backend (scene: generated data roots such as Micro-CoIN)."
    ),
    model: str | None = typer.Option(None, help="Model name or folder (default: the backend's default)."),
    base_url: str | None = model_option(
        _GEN, "base_url", help="OpenAI-compatible endpoint (key from OPENAI_API_KEY)."
    ),
    concurrency: int = model_option(_GEN, "concurrency", help="Requests in flight (openai backend)."),
    prompts: Path | None = typer.Option(None, "--prompts", help="Template or official SEFE prompt folder."),
    strict: bool = model_option(_GEN, "strict", "--strict", help="Fail when any request is quarantined."),
    allow_partial: bool = typer.Option(
        default(BuildOptions, "allow_partial"),
        "--allow-partial",
        help="Write tasks with unanswered needs too (marked partial).",
    ),
    max_requests: int | None = model_option(
        _GEN, "max_requests", help="Spend cap: send at most this many new requests."
    ),
    price_in: float | None = model_option(
        _GEN, "price_in_per_mtok", help="USD per million input tokens (cost)."
    ),
    price_out: float | None = model_option(_GEN, "price_out_per_mtok", help="USD per million output tokens."),
    batch_input: Path | None = model_option(
        _GEN, "batch_input_dir", "--batch-input", help="Batch backend: provider output folder."
    ),
    max_retries: int = model_option(_GEN, "max_retries", help="Tries per request before it is quarantined."),
    max_tokens: int = model_option(_GEN, "max_tokens", help="Output token cap per request."),
    temperature: float = model_option(
        _GEN, "temperature", help="Sampling temperature of first tries (retries sample)."
    ),
    request_timeout: float = model_option(
        _GEN, "request_timeout_s", help="Seconds per HTTP request (openai backend)."
    ),
    chunk_size: int = model_option(
        _GEN, "chunk_size", help="Requests per flushed chunk (vllm / local backends)."
    ),
    vllm_arg: list[str] | None = typer.Option(
        None, "--vllm-arg", help="vLLM engine argument KEY=VALUE, repeatable (tensor_parallel_size=2)."
    ),
) -> None:
    """Convert X percent of each task into the other four answer styles; write train_x{X}.json + manifest.

    Exit codes: 0 written; 2 a user error; 3 batch pending; 4 needs unanswered (tasks not written);
    130 interrupted.
    """
    from rich.console import Console

    from sefe.asd_gen.build import EXIT_OPEN, EXIT_PENDING, build, plan
    from sefe.asd_gen.summary import build_table, open_needs_text, plan_table
    from sefe.coin.tasks import load_task_file
    from sefe.data import coin_mini_root

    console = Console()
    for f in task_file or []:
        load_task_file(f)
    xs = parse_floats(split_list(x), "--x") or default(BuildOptions, "xs")
    gen = GenerationOptions(
        backend=backend,
        model=model,
        base_url=base_url,
        concurrency=concurrency,
        prompts_dir=str(prompts) if prompts else None,
        strict=strict,
        max_requests=max_requests,
        price_in_per_mtok=price_in,
        price_out_per_mtok=price_out,
        max_retries=max_retries,
        batch_input_dir=str(batch_input) if batch_input else None,
        max_tokens=max_tokens,
        temperature=temperature,
        request_timeout_s=request_timeout,
        chunk_size=chunk_size,
        vllm_args=parse_key_values(vllm_arg),
    )
    opts = BuildOptions(
        data_root=data_root or coin_mini_root(),
        out=out,
        tasks=names_option(tasks, "--tasks"),
        xs=xs,
        seed=seed,
        distractors=distractors,
        allow_partial=allow_partial,
        generation=gen,
    )
    if dry_run:
        console.print(plan_table(plan(opts)))
        return
    result = build(
        opts, generator=_family_engine(gen, opts)
    )  # Ctrl-C and a dead server: every stored answer is on disk (the CLI says so)
    if result.status == "pending":
        console.print("[yellow]batch files written; rerun this command once the provider is done:[/yellow]")
        for p in result.pending_batch_files:
            console.print(f"  {p}", highlight=False)
        raise typer.Exit(EXIT_PENDING)
    console.print(build_table(result))
    _print_quarantined(console, result.manifests)
    for m in result.manifests:
        console.print(f"manifest: {m}", highlight=False)
    if result.status == "partial":
        console.print(open_needs_text(result), highlight=False)
    if result.status == "open":  # exit 4: what is open and how to resume goes to stderr, as errors do
        Console(stderr=True).print(open_needs_text(result), highlight=False)
        raise typer.Exit(EXIT_OPEN)


def _family_engine(gen: GenerationOptions, opts: BuildOptions) -> Generator | None:
    """An engine whose local backend prompts `--model` through its model family (Qwen2.5-VL, InternVL, ...),
    so the image reaches the model; None (the default engine) for every other backend and model."""
    from sefe.commands.asd_family import family_chat_inputs

    inputs = family_chat_inputs(gen.model) if gen.backend == "local" else None
    if inputs is None:
        return None
    from sefe.asd_gen.backends.local_backend import LocalBackend
    from sefe.asd_gen.engine import Engine

    return Engine(gen, opts.data_root, backend=LocalBackend(gen, chat_inputs=inputs))


def _print_quarantined(console: Console, manifests: list[str], shown: int = 20) -> None:
    """Name the quarantined records (bad images, invalid model output) in the output, not only in files."""
    import orjson

    if not manifests:
        return
    failed = orjson.loads(Path(manifests[0]).read_bytes()).get("quarantined", [])
    for f in failed[:shown]:
        console.print(
            f"[yellow]quarantined:[/yellow] {f['task']} id {f['record_id']!r} ({f['kind']}): {f['error']}",
            highlight=False,
        )
    if len(failed) > shown:
        console.print(f"... and {len(failed) - shown} more (asd_quarantine.jsonl)")


def asd_plan_cmd(**kwargs: object) -> None:
    """Print per task and X: records, selected, per-style counts, model requests and estimated tokens."""
    asd_build_cmd(**{**kwargs, "dry_run": True})  # type: ignore[arg-type]


def _plan_signature() -> None:
    import inspect

    sig = inspect.signature(asd_build_cmd)
    asd_plan_cmd.__signature__ = sig.replace(  # type: ignore[attr-defined]
        parameters=[p for name, p in sig.parameters.items() if name != "dry_run"]
    )
    asd_plan_cmd.__annotations__ = {k: v for k, v in asd_build_cmd.__annotations__.items() if k != "dry_run"}


_plan_signature()
app.command("build")(asd_build_cmd)
app.command("plan")(asd_plan_cmd)
