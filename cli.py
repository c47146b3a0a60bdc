"""The `sefe` command line: parse, call, print. Logic lives in asd_gen/ and sefe_train/.

Heavy imports (torch, transformers) happen inside commands so `sefe --help` stays fast; the option models
imported here are plain pydantic. Choices are the models' `Literal` types and defaults are read from the
models, so the CLI never retypes them. Every command reports user errors (`sefe.errors.SefeError`) as one
line with exit code 2 (see `_report_errors_everywhere` at the end). Each section below is owned by one area;
keep commands thin.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import typer
from pydantic import BaseModel

from sefe.asd_gen.needs import BackendName, DistractorMode, GenerationOptions
from sefe.asd_gen.options import BuildOptions
from sefe.errors import report_errors
from sefe.evaluation import inference
from sefe.evaluation.inference import Engine, InferenceDType
from sefe.evaluation.judge import JudgeBackend
from sefe.models.conversation import ScienceQAInstruction
from sefe.sefe_train.config import ScoringMode
from sefe.sefe_train.reglora.config import Accumulate, BenchDType, PenaltyImpl, RegDelta

if TYPE_CHECKING:
    from rich.console import Console

    from sefe.evaluation.judge import JudgeResult

app = typer.Typer(
    name="sefe",
    help="SEFE: Answer Style Diversification (ASD) and RegLoRA for multimodal continual instruction tuning.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
asd_app = typer.Typer(help="Answer Style Diversification: build train_x{X}.json files.", no_args_is_help=True)
eval_app = typer.Typer(help="CoIN inference and scoring.", no_args_is_help=True)
bench_app = typer.Typer(help="Micro-benchmarks on the current device.", no_args_is_help=True)
keys_app = typer.Typer(
    help="RegLoRA key files: convert the release's *_topP.pth to and from keys.safetensors.",
    no_args_is_help=True,
)
app.add_typer(asd_app, name="asd")
app.add_typer(eval_app, name="eval")
app.add_typer(bench_app, name="bench")
app.add_typer(keys_app, name="keys")


def _arg_default(func: Any, name: str) -> Any:
    """The default of one keyword argument of a library function the command calls."""
    import inspect

    return inspect.signature(func).parameters[name].default


def _default(model: type[BaseModel], name: str) -> Any:
    """The default of one field of a pydantic model (the one source of CLI defaults)."""
    return model.model_fields[name].get_default(call_default_factory=True)


# ---- asd (owner: ASD core) -------------------------------------------------------------------------------
_GEN = GenerationOptions
_DEFAULT_XS = ",".join(f"{x:g}" for x in _default(BuildOptions, "xs"))


def _split_list(values: list[str] | None) -> list[str]:
    """`--x 10 --x 20` and `--x 10,20` both work (same for --tasks)."""
    return [v.strip() for raw in values or [] for v in raw.split(",") if v.strip()]


def _key_values(items: list[str] | None) -> dict[str, object]:
    """`--vllm-arg tensor_parallel_size=2` -> {"tensor_parallel_size": 2} (values parsed as YAML scalars)."""
    import yaml

    out: dict[str, object] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--vllm-arg")
        out[key.strip()] = yaml.safe_load(value)
    return out


def asd_build_cmd(
    data_root: Path | None = typer.Option(None, help="CoIN data root (default: bundled coin-mini)."),
    out: Path = typer.Option(_default(BuildOptions, "out"), help="Output root (<out>/annotations/<Task>/)."),
    tasks: list[str] | None = typer.Option(
        None, "--tasks", metavar="TASK", help="Tasks (repeat or comma list)."
    ),
    task_file: list[Path] | None = typer.Option(
        None, "--task-file", metavar="FILE", help="YAML task declaration (repeat)."
    ),
    seed: int = typer.Option(
        _default(BuildOptions, "seed"), help="Seed of selection, styles, option order and yes/no balance."
    ),
    x: list[str] | None = typer.Option(
        None,
        "--x",
        metavar="X",
        help=f"Percent converted (repeat or comma list); default {_DEFAULT_XS}.",
    ),
    distractors: DistractorMode = typer.Option(
        _default(BuildOptions, "distractors"), help="model: the model writes distractors; pool: task answers."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only print the plan (same as `sefe asd plan`)."),
    backend: BackendName = typer.Option(
        _default(_GEN, "backend"), help="Generation backend (scene: generated data roots such as Micro-CoIN)."
    ),
    model: str | None = typer.Option(None, help="Model name or folder (default: the backend's default)."),
    base_url: str | None = typer.Option(None, help="OpenAI-compatible endpoint (key from OPENAI_API_KEY)."),
    concurrency: int = typer.Option(
        _default(_GEN, "concurrency"), help="Requests in flight (openai backend)."
    ),
    prompts: Path | None = typer.Option(None, "--prompts", help="Template or official SEFE prompt folder."),
    strict: bool = typer.Option(
        _default(_GEN, "strict"), "--strict", help="Fail when any request is quarantined."
    ),
    allow_partial: bool = typer.Option(
        _default(BuildOptions, "allow_partial"),
        "--allow-partial",
        help="Write tasks with unanswered needs too (marked partial).",
    ),
    max_requests: int | None = typer.Option(None, help="Spend cap: send at most this many new requests."),
    price_in: float | None = typer.Option(None, help="USD per million input tokens (cost)."),
    price_out: float | None = typer.Option(None, help="USD per million output tokens."),
    batch_input: Path | None = typer.Option(None, help="Batch backend: provider output folder."),
    max_retries: int = typer.Option(
        _default(_GEN, "max_retries"), help="Tries per request before it is quarantined."
    ),
    max_tokens: int = typer.Option(_default(_GEN, "max_tokens"), help="Output token cap per request."),
    temperature: float = typer.Option(
        _default(_GEN, "temperature"), help="Sampling temperature of first tries (retries sample)."
    ),
    request_timeout: float = typer.Option(
        _default(_GEN, "request_timeout_s"), help="Seconds per HTTP request (openai backend)."
    ),
    chunk_size: int = typer.Option(
        _default(_GEN, "chunk_size"), help="Requests per flushed chunk (vllm / local backends)."
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

    from sefe.asd_gen.backends.base import BackendUnreachable
    from sefe.asd_gen.backends.guard import RESUME_HINT
    from sefe.asd_gen.build import EXIT_INTERRUPTED, EXIT_OPEN, EXIT_PENDING, build, plan
    from sefe.asd_gen.summary import build_table, open_needs_text, plan_table
    from sefe.coin.tasks import load_task_file
    from sefe.data import coin_mini_root

    console = Console()
    for f in task_file or []:
        load_task_file(f)
    try:
        xs = [float(v) for v in _split_list(x)] or _default(BuildOptions, "xs")
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--x") from None
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
        vllm_args=_key_values(vllm_arg),
    )
    opts = BuildOptions(
        data_root=data_root or coin_mini_root(),
        out=out,
        tasks=_split_list(tasks) or None,
        xs=xs,
        seed=seed,
        distractors=distractors,
        allow_partial=allow_partial,
        generation=gen,
    )
    if dry_run:
        console.print(plan_table(plan(opts)))
        return
    try:
        result = build(opts)
    except KeyboardInterrupt as e:  # graceful (RunInterrupted) or not: every stored answer is on disk
        msg = str(e) or f"interrupted; {RESUME_HINT}"
        console.print(f"[yellow]{msg}[/yellow]", highlight=False)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except BackendUnreachable as e:
        console.print(
            f"[red]error:[/red] {e}. Is it running? Nothing was written; rerun this command once it is up.",
            highlight=False,
        )
        raise typer.Exit(EXIT_OPEN) from None
    if result.status == "pending":
        console.print("[yellow]batch files written; rerun this command once the provider is done:[/yellow]")
        for p in result.pending_batch_files:
            console.print(f"  {p}", highlight=False)
        raise typer.Exit(EXIT_PENDING)
    console.print(build_table(result))
    _print_quarantined(console, result.manifests)
    for m in result.manifests:
        console.print(f"manifest: {m}", highlight=False)
    if result.status in ("open", "partial"):
        console.print(open_needs_text(result), highlight=False)
    if result.status == "open":
        raise typer.Exit(EXIT_OPEN)


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
asd_app.command("build")(asd_build_cmd)
asd_app.command("plan")(asd_plan_cmd)
# ---- end asd ---------------------------------------------------------------------------------------------


# ---- train (owner: trainer) ------------------------------------------------------------------------------
def _methods_help() -> str:
    """The installed continual methods, one per line, for `sefe train --help` (light imports only)."""
    from sefe.sefe_train.methods import list_methods

    return "\n\n".join(f"{m.name}: {m.summary}" for m in list_methods())


def _method_names() -> str:
    from sefe.sefe_train.methods import method_names

    return " | ".join(method_names())


@app.command(
    "train",
    help="Continual training task after task with one of the installed methods. Rerun the same command "
    "to resume.\n\nInstalled methods (docs/METHODS.md; options: -o KEY=VALUE or --set "
    "method_options.NAME.KEY=VALUE):\n\n" + _methods_help(),
)
def train_cmd(
    config: Path | None = typer.Option(
        None, "--config", "-c", help="Run config YAML (default: tiny model, coin-mini, 3 tasks)."
    ),
    set_: list[str] = typer.Option(
        [], "--set", help="Override any config key, repeatable: --set train.lr=1e-4 --set reglora.lam=100."
    ),
    method: str | None = typer.Option(None, "--method", "-m", help=f"Continual method: {_method_names()}."),
    option: list[str] = typer.Option(
        [],
        "--option",
        "-o",
        help="An option of the chosen method, repeatable: -o share=0.1 (= --set method_options.M.share=0.1).",
    ),
    out: Path | None = typer.Option(None, "--out", help="Run folder (output_dir)."),
    tasks: str | None = typer.Option(None, "--tasks", help="Comma-separated task names, in training order."),
    data_root: Path | None = typer.Option(None, "--data-root", help="CoIN data root."),
    max_steps: int | None = typer.Option(None, "--max-steps", help="Cap the steps of every stage."),
    reg_delta: RegDelta | None = typer.Option(None, "--reg-delta", help="RegLoRA ΔW."),
    accumulate: Accumulate | None = typer.Option(None, "--accumulate", help="Key accumulation over tasks."),
    no_eval: bool = typer.Option(False, "--no-eval", help="Skip evaluating tasks 1..k after each stage."),
    print_config: bool = typer.Option(False, "--print-config", help="Print the resolved config and exit."),
) -> None:
    from sefe.sefe_train.config import (
        cli_overrides,
        dump_config,
        load_config,
        method_option_overrides,
        select_tasks,
    )

    overrides = cli_overrides(
        method=method,
        out=out,
        data_root=data_root,
        max_steps=max_steps,
        reg_delta=reg_delta,
        accumulate=accumulate,
        no_eval=no_eval,
    )
    cfg = load_config(config, overrides + list(set_))
    if option:
        cfg = load_config(config, overrides + list(set_) + method_option_overrides(cfg.method, option))
    if tasks:
        cfg = select_tasks(cfg, [t.strip() for t in tasks.split(",") if t.strip()])
    if print_config:
        typer.echo(dump_config(cfg))
        return
    from sefe.sefe_train.runner import ContinualRunner

    state = ContinualRunner(cfg).run()
    typer.echo(f"run folder: {cfg.output_dir} ({len(state.done)}/{len(cfg.tasks)} stages done)")


# ---- end train -------------------------------------------------------------------------------------------


# ---- eval run (owner: inference) -------------------------------------------------------------------------
@eval_app.command("run")
def eval_run_cmd(
    model: Path = typer.Option(..., "--model", "-m", help="Merged LLaVA folder (HF save_pretrained)."),
    data_root: Path = typer.Option(..., "--data-root", help="CoIN data root (annotations/<Task>/test.json)."),
    tasks: str | None = typer.Option(
        None, "--tasks", help="Comma-separated tasks (default: every task with a test.json, CoIN order)."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for <Task>.jsonl prediction files."),
    batch_size: int = typer.Option(
        _arg_default(inference.run_inference, "batch_size"),
        "--batch-size",
        help="Prompts per generate call (left padded).",
    ),
    max_new_tokens: int = typer.Option(
        _arg_default(inference.run_inference, "max_new_tokens"),
        "--max-new-tokens",
        help="Generation cap per answer (the release's 1024).",
    ),
    limit: int | None = typer.Option(None, "--limit", help="Only the first N test records per task."),
    model_id: str | None = typer.Option(None, "--model-id", help="model_id field (default: folder name)."),
    dtype: InferenceDType = typer.Option(
        _arg_default(inference.run_inference, "dtype"),
        "--dtype",
        help="auto: bfloat16 on CUDA, else float32.",
    ),
    device: str | None = typer.Option(None, "--device", help="torch device (default: cuda if available)."),
    engine: Engine = typer.Option(
        _arg_default(inference.run_inference, "engine"),
        "--engine",
        help="hf: transformers; vllm: pip install 'sefe[vllm]'.",
    ),
    scienceqa_instruction: ScienceQAInstruction = typer.Option(
        _arg_default(inference.run_inference, "scienceqa_instruction"),
        "--scienceqa-instruction",
        help="ScienceQA letter line: always (appended, as the release) | once (not repeated).",
    ),
) -> None:
    """CoIN predictions, greedy, one JSONL per task. Rerun the same command to resume."""
    from sefe.errors import MissingFile
    from sefe.evaluation.inference import default_tasks, run_inference

    names = [t.strip() for t in tasks.split(",") if t.strip()] if tasks else default_tasks(data_root)
    if not names:
        raise MissingFile(f"no annotations/<Task>/test.json under {data_root}")
    paths = run_inference(
        model,
        data_root,
        names,
        out,
        batch_size=batch_size,
        max_new_tokens=max_new_tokens,
        limit=limit,
        model_id=model_id,
        dtype=dtype,
        device=device,
        engine=engine,
        scienceqa_instruction=scienceqa_instruction,
    )
    for task, path in paths.items():
        typer.echo(f"{task}: {path}")


# ---- end eval run ----------------------------------------------------------------------------------------


# ---- eval score + report (owner: scoring/report) ---------------------------------------------------------
@eval_app.command("score")
def eval_score_cmd(
    task: str = typer.Option(..., "--task", "-t", help="CoIN task, e.g. ScienceQA, TextVQA, Grounding."),
    predictions: Path = typer.Option(..., "--predictions", "-p", help="Prediction JSONL (`sefe eval run`)."),
    data_root: Path | None = typer.Option(
        None,
        "--data-root",
        help="CoIN data root: annotations/<Task>/test.json and the official ground truth are found in it.",
    ),
    annotations: Path | None = typer.Option(
        None, "--annotations", "-a", help="The task's test.json (default: from --data-root)."
    ),
    gt: Path | None = typer.Option(
        None,
        "--gt",
        help="Official ground truth: ScienceQA folder with problems.json + pid_splits.json, "
        "TextVQA_0.5.1_val.json, or GQA testdev_balanced_questions.json (default: found in the data root).",
    ),
    mode: ScoringMode = typer.Option(
        "compat", "--mode", help="compat: published scorers, quirks kept; fixed: quirks fixed."
    ),
    variant: str | None = typer.Option(
        None, "--variant", help="ScienceQA only: coin-legacy (CoIN's older scorer)."
    ),
    allow_approximate: bool = typer.Option(
        False,
        "--allow-approximate",
        help="Without the official ground truth, score from test.json's answer (marked approximate).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
) -> None:
    """Score one prediction file with the CoIN rules; the output always names the scoring mode."""
    import orjson

    from sefe.coin.layout import root_of_annotations
    from sefe.evaluation.scorers import score_in_root
    from sefe.root_tasks import register_root

    register_root(data_root or root_of_annotations(annotations))
    res = score_in_root(
        task,
        predictions,
        data_root=data_root,
        annotations=annotations,
        gt=gt,
        mode=mode,
        variant=variant,
        allow_approximate=allow_approximate,
    )
    if as_json:
        typer.echo(orjson.dumps(res.model_dump(mode="json")).decode())
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{res.task} ({res.mode}{', ' + res.variant if res.variant else ''})")
    for col in ("accuracy", "correct", "total", "missing", "unknown ids", "ground truth"):
        table.add_column(col)
    table.add_row(
        res.shown_accuracy,
        f"{res.correct:g}",
        str(res.total),
        str(res.missing),
        str(len(res.unknown_ids)),
        res.gt_source,
    )
    console = Console()
    console.print(table)
    for note in res.notes:
        console.print(f"[yellow]note:[/yellow] {note}")


@app.command("report")
def report_cmd(
    runs: list[Path] = typer.Argument(..., help="Run folders (or accuracy.json files), shown side by side."),
    out: Path | None = typer.Option(
        None,
        "--out",
        "-o",
        help="Output folder (default: the run folder, or ./sefe-report for several runs).",
    ),
    no_plots: bool = typer.Option(False, "--no-plots", help="Skip the PNG plots."),
) -> None:
    """Write report.md, report.json and PNG plots (heatmap, accuracy over stages, runs side by side)."""
    from sefe.evaluation.report import build_report

    target = out or (runs[0] if len(runs) == 1 and runs[0].is_dir() else Path("sefe-report"))
    report = build_report(runs, target, plots=not no_plots)
    for r in report.runs:
        m = r.metrics
        typer.echo(
            f"{r.label} ({r.mode}): MFT {m.MFT if m.MFT is None else round(m.MFT, 2)}, "
            f"MFN {m.MFN if m.MFN is None else round(m.MFN, 2)}, stages {m.stages}/{len(r.matrix.tasks)}"
        )
    typer.echo(f"report: {target / 'report.md'}")


@eval_app.command("judge")
def eval_judge_cmd(
    task: str = typer.Option(..., "--task", "-t", help="CoIN task of the predictions."),
    predictions: Path = typer.Option(..., "--predictions", "-p", help="Prediction JSONL (`sefe eval run`)."),
    annotations: Path = typer.Option(..., "--annotations", "-a", help="The task's test.json."),
    backend: JudgeBackend = typer.Option("openai", "--backend", help="The ASD backend the judge runs on."),
    model: str | None = typer.Option(None, "--model", help="Judge model (default: the backend's)."),
    base_url: str | None = typer.Option(None, "--base-url", help="OpenAI-compatible endpoint URL."),
    concurrency: int = typer.Option(
        _default(_GEN, "concurrency"), "--concurrency", help="Requests in flight (openai backend)."
    ),
    cache: Path | None = typer.Option(None, "--cache", help="Ratings cache (default: <P>.judge.jsonl)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Knowledge capability: an LLM judge rates each answer 0-10; score = sum / (10 N) x 100. Resumable."""
    import orjson

    from sefe.asd_gen.backends.base import BackendUnreachable
    from sefe.asd_gen.backends.factory import make_backend
    from sefe.asd_gen.backends.guard import RESUME_HINT
    from sefe.asd_gen.build import EXIT_INTERRUPTED, EXIT_OPEN
    from sefe.evaluation.judge import run_judge

    opts = GenerationOptions(backend=backend, model=model, base_url=base_url, concurrency=concurrency)
    engine = make_backend(opts)
    try:
        res = run_judge(task, predictions, annotations, engine, cache or Path(f"{predictions}.judge.jsonl"))
    except KeyboardInterrupt as exc:  # ratings received so far are in the cache
        typer.echo(str(exc) or f"interrupted; {RESUME_HINT}", err=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except BackendUnreachable as exc:
        typer.echo(f"error: {exc}. Is it running? Rerun this command once it is up.", err=True)
        raise typer.Exit(EXIT_OPEN) from None
    if as_json:
        typer.echo(orjson.dumps(res.model_dump(mode="json")).decode())
    else:
        _print_judge(res)
    if res.open:
        why = "; ".join(f"{n} {reason}" for reason, n in res.open_reasons.items())
        typer.echo(f"{res.open} ratings open ({why}); {RESUME_HINT}", err=True)
        raise typer.Exit(EXIT_OPEN)


def _print_judge(res: JudgeResult) -> None:
    score = "–" if res.score is None else f"{res.score:.2f}"
    typer.echo(
        f"{res.task} judge ({res.judge_model}): {score} over {res.judged} answers "
        f"(failed {res.failed}, missing {res.missing})"
    )
    for note in res.notes:
        typer.echo(f"note: {note}")


# ---- end eval score + report -----------------------------------------------------------------------------


# ---- bench (owner: RegLoRA core) -------------------------------------------------------------------------
@bench_app.command("reglora")
def bench_reglora(
    reps: int = typer.Option(5, min=1, help="Timed forward+backward steps per measurement (median)."),
    densities: str = typer.Option("2,6,14", help="Key densities in percent, comma-separated."),
    device: str = typer.Option("cpu", help="cpu or cuda (cuda:N)."),
    dtype: BenchDType = typer.Option("float32", help="dtype of the LoRA parameters."),
    shapes: str = typer.Option("4096x4096,11008x4096,4096x11008", help="OUTxIN weight shapes, comma list."),
    rank: int = typer.Option(128, min=1, help="LoRA rank."),
    impl: PenaltyImpl = typer.Option("auto", help="Our implementation."),
    storage: bool = typer.Option(True, help="Also measure key storage after seven tasks."),
    threads: int | None = typer.Option(None, min=1, help="torch intra-op threads (default: torch's)."),
    out: Path | None = typer.Option(None, help="Also write rows + storage + machine as JSON here."),
    markdown_out: Path | None = typer.Option(None, "--markdown", help="Also write the markdown table here."),
) -> None:
    """Time the RegLoRA penalty against the reference dense computation (B@A, then gather) at 7B shapes.

    Prints a JSON list, one object per (shape, density): shape, density, ours_s, reference_s (median
    forward+backward seconds), ours_peak_mb, reference_peak_mb, and the implementation `auto` chose.
    """
    import orjson

    from sefe.sefe_train.reglora.bench import markdown, parse_shapes, run_bench

    try:
        shape_list = parse_shapes(shapes)
        density_list = [float(d) for d in densities.split(",")]
    except ValueError as err:
        raise typer.BadParameter(str(err)) from None
    result = run_bench(
        shape_list,
        density_list,
        reps=reps,
        device=device,
        dtype=dtype,
        rank=rank,
        impl=impl,
        with_storage=storage,
        threads=threads,
    )
    if out is not None:
        out.write_bytes(orjson.dumps(result.model_dump(), option=orjson.OPT_INDENT_2))
    if markdown_out is not None:
        markdown_out.write_text(markdown(result))
    typer.echo(orjson.dumps([r.model_dump() for r in result.rows], option=orjson.OPT_INDENT_2).decode())


# ---- end bench -------------------------------------------------------------------------------------------


# ---- micro (owner: micro) -------------------------------------------------------------------------------
micro_app = typer.Typer(
    help="Micro-CoIN: a generated benchmark that shows superficial and essential forgetting."
)
app.add_typer(micro_app, name="micro")


@micro_app.command("build")
def micro_build_cmd(
    out: Path = typer.Option(..., "--out", "-o", help="Data root to write (CoIN layout)."),
    seed: int = typer.Option(0, help="Benchmark seed (same seed, same bytes)."),
    n_train: int = typer.Option(400, "--train", help="Train records per task."),
    n_test: int = typer.Option(50, "--test", help="Test records per task."),
    n_warm: int = typer.Option(1500, "--warm", help="Pictures in the warm-start corpus."),
) -> None:
    """Generate the six Micro-CoIN tasks, their ground truth, distractor pools and the warm-start corpus."""
    from sefe.micro.generate import build_micro

    root = build_micro(out, seed=seed, n_train=n_train, n_test=n_test, n_warm=n_warm)
    typer.echo(f"Micro-CoIN data root: {root}")


@micro_app.command("run")
def micro_run_cmd(
    out: Path = typer.Option(
        ..., "--out", "-o", help="Folder for data, runs, report.md / report.json / plots."
    ),
    methods: str = typer.Option("lora,reglora", help="Comma-separated methods (any `sefe train --method`)."),
    data: str = typer.Option("original,asd", help="Comma-separated: original | asd (SEFE = reglora on asd)."),
    seeds: int = typer.Option(3, help="Training seeds per combination (0..N-1)."),
    tasks: str | None = typer.Option(None, help="Comma-separated subset of the tasks, in order."),
    epochs: float | None = typer.Option(None, help="Epochs per task (default 4)."),
    n_train: int | None = typer.Option(None, "--train", help="Train records per task (default 400)."),
    n_test: int | None = typer.Option(None, "--test", help="Test records per task (default 50)."),
    warm_steps: int | None = typer.Option(
        None, help="Warm-start language-model steps (default 1000; the vision tower's are separate)."
    ),
    vision_steps: int | None = typer.Option(None, help="Warm-start vision-tower steps (default 1600)."),
    threads: int | None = typer.Option(None, help="torch threads (default: torch's)."),
    jobs: int = typer.Option(1, help="Runs trained at once, one process each (logs in DIR/runs/)."),
) -> None:
    """Train the task sequence per method x data x seed, evaluate after every task, write the report.

    Rerun the same command to resume after a kill."""
    from pydantic import ValidationError

    from sefe.micro.run import MicroOptions, run_micro
    from sefe.micro.warmstart import WarmStartOptions
    from sefe.sefe_train.config import ConfigError

    raw: dict[str, object] = {
        "out": out,
        "methods": _split_list([methods]),
        "data": _split_list([data]),
        "seeds": seeds,
        "threads": threads,
        "jobs": jobs,
    }
    if tasks:
        raw["tasks"] = _split_list([tasks])
    for key, value in (("epochs", epochs), ("n_train", n_train), ("n_test", n_test)):
        if value is not None:
            raw[key] = value
    warm: dict[str, object] = {}
    if warm_steps is not None:
        warm["steps"] = warm_steps
        warm["simple_steps"] = min(warm_steps, WarmStartOptions().simple_steps)
    if vision_steps is not None:
        warm["vision"] = {"steps": vision_steps}
    if warm:
        raw["warm"] = WarmStartOptions.model_validate(warm)
    try:
        opts = MicroOptions.model_validate(raw)
        report = run_micro(opts)
    except (ValidationError, ConfigError, ValueError, FileNotFoundError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"report: {report}")


# ---- end micro -------------------------------------------------------------------------------------------


# ---- demo (owner: lead) ----------------------------------------------------------------------------------
@app.command("demo")
def demo_cmd(
    out: Path = typer.Option(Path("out/demo"), help="Where ASD data, both runs and the report go."),
    x: float = typer.Option(20.0, "--x", help="Percent of each task converted by ASD."),
    backend: BackendName = typer.Option(
        _default(_GEN, "backend"), help="ASD generation backend (local = embedded SmolLM2)."
    ),
    max_steps: int | None = typer.Option(None, help="Cap the steps of every training stage (coin-mini)."),
    on: Literal["micro", "coin-mini"] = typer.Option(
        "micro", help="micro: LoRA vs SEFE on Micro-CoIN; coin-mini: the CoIN sample data, SmolLM2 ASD."
    ),
) -> None:
    """The main job on bundled data: ASD, then LoRA vs SEFE over the task sequence, then a report."""
    from sefe.demo import run_demo, run_micro_demo

    if on == "micro":
        report = run_micro_demo(out, x=x)
    else:
        report = run_demo(out, x=x, backend=backend, max_steps=max_steps)
    typer.echo(f"done: open {report / 'report.md'}")


# ---- end demo --------------------------------------------------------------------------------------------


# ---- keys (owner: RegLoRA keys / release parity) ----------------------------------------------------------
@keys_app.command("import")
def keys_import_cmd(
    files: list[Path] = typer.Argument(..., help="Release *_topP.pth files; their pairs are concatenated."),
    model: Path = typer.Option(..., "--model", help="Model folder (or config.json) the keys belong to."),
    out: Path = typer.Option(..., "--out", "-o", help="keys.safetensors to write."),
    accumulate: Accumulate = typer.Option("concat", "--accumulate", help="concat: the release's lists."),
    tasks: int | None = typer.Option(None, "--tasks", help="Tasks the keys cover (default: files given)."),
) -> None:
    """Import the release's key files, e.g. to continue a run begun with the release code."""
    from sefe.errors import MissingFile
    from sefe.sefe_train.reglora.release_keys import import_release_keys, linear_shapes

    for f in files:
        if not f.is_file():
            raise MissingFile(f"{f}: no such file")
    store = import_release_keys(files, linear_shapes(model), accumulate, tasks)
    store.save(out)
    n = sum(
        int(c.sum()) if (c := store.counts(m)) is not None else len(store.indices(m))
        for m in store.module_names
    )
    typer.echo(f"{out}: {len(store)} modules, {int(n)} key pairs ({accumulate})")


@keys_app.command("export")
def keys_export_cmd(
    keys: Path = typer.Argument(..., help="A sefe keys.safetensors file (a run stage's key elements)."),
    out: Path = typer.Option(..., "--out", "-o", help="Release-format *_topP.pth to write."),
) -> None:
    """Export sefe's key elements in the release's format (int64 (row, col) pairs per peft module name)."""
    from safetensors import SafetensorError

    from sefe.sefe_train.reglora.keys import KeyStore
    from sefe.sefe_train.reglora.release_keys import export_release_keys

    try:
        store = KeyStore.load(keys)
        export_release_keys(store, out)
    except (OSError, ValueError, SafetensorError) as exc:  # ReleaseKeysError is a ValueError
        typer.echo(f"error: {keys}: {exc}" if str(keys) not in str(exc) else f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"{out}: {len(store)} modules")


# ---- end keys --------------------------------------------------------------------------------------------


def _report_errors_everywhere(root: typer.Typer) -> None:
    """Wrap every registered command (sub-apps included) so user errors become one line and exit code 2."""
    for info in root.registered_commands:
        if info.callback is not None and not getattr(info.callback, "__wrapped__", None):
            info.callback = report_errors(info.callback)
    for group in root.registered_groups:
        if group.typer_instance is not None:
            _report_errors_everywhere(group.typer_instance)


_report_errors_everywhere(app)

if __name__ == "__main__":
    app()
