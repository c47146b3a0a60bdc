"""`sefe eval run | score | judge`: CoIN predictions, their scores, and the LLM judge's knowledge score."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from sefe.asd_gen.needs import GenerationOptions
from sefe.commands.common import arg_default, field_check, model_option, names_option, type_check
from sefe.evaluation import inference
from sefe.evaluation.inference import Engine, InferenceBounds, InferenceDType
from sefe.evaluation.judge import DEFAULT_JUDGE_BACKEND, JudgeBackend
from sefe.evaluation.scorers import score_in_root
from sefe.models.conversation import ScienceQAInstruction
from sefe.paths import OutputFile
from sefe.sefe_train.config import ScoringMode

if TYPE_CHECKING:
    from sefe.evaluation.judge import JudgeResult

app = typer.Typer(help="CoIN inference and scoring.", no_args_is_help=True)
_GEN = GenerationOptions


@app.command("run")
def eval_run_cmd(
    model: Path = typer.Option(
        ...,
        "--model",
        "-m",
        help="Merged model folder (HF save_pretrained; its config.json model_type picks the family: "
        "docs/MODELS.md), or a run's stage folder <run>/<k>_<Task> (loaded as "
        "its method loads it: MoELoRA's experts too; hf engine).",
    ),
    data_root: Path = typer.Option(..., "--data-root", help="CoIN data root (annotations/<Task>/test.json)."),
    tasks: str | None = typer.Option(
        None, "--tasks", help="Comma-separated tasks (default: every task with a test.json, CoIN order)."
    ),
    out: Path = typer.Option(
        ...,
        "--out",
        "-o",
        callback=field_check(InferenceBounds, "out_dir"),
        help="Folder for <Task>.jsonl prediction files.",
    ),
    batch_size: int = typer.Option(
        arg_default(inference.run_inference, "batch_size"),
        "--batch-size",
        callback=field_check(InferenceBounds, "batch_size"),
        help="Prompts per generate call (left padded).",
    ),
    max_new_tokens: int = typer.Option(
        arg_default(inference.run_inference, "max_new_tokens"),
        "--max-new-tokens",
        callback=field_check(InferenceBounds, "max_new_tokens"),
        help="Generation cap per answer (the release's 1024).",
    ),
    limit: int | None = model_option(
        InferenceBounds,
        "limit",
        "--limit",
        default_value=None,
        help="Only the first N test records per task.",
    ),
    model_id: str | None = typer.Option(None, "--model-id", help="model_id field (default: folder name)."),
    dtype: InferenceDType = typer.Option(
        arg_default(inference.run_inference, "dtype"),
        "--dtype",
        help="auto: bfloat16 on CUDA, else float32.",
    ),
    device: str | None = model_option(
        InferenceBounds,
        "device",
        "--device",
        default_value=None,
        help="torch device (default: cuda if available).",
    ),
    engine: Engine = typer.Option(
        arg_default(inference.run_inference, "engine"),
        "--engine",
        help="hf: transformers; vllm: pip install 'sefe[vllm]'.",
    ),
    scienceqa_instruction: ScienceQAInstruction = typer.Option(
        arg_default(inference.run_inference, "scienceqa_instruction"),
        "--scienceqa-instruction",
        help="ScienceQA letter line: always (appended, as the release) | once (not repeated).",
    ),
    vllm_arg: list[str] | None = typer.Option(
        None,
        "--vllm-arg",
        help="vLLM engine argument KEY=VALUE, repeatable (tensor_parallel_size=2); over $SEFE_VLLM_ARGS.",
    ),
) -> None:
    """CoIN predictions, greedy, one JSONL per task. Rerun the same command to resume."""
    from sefe.errors import InputError, MissingFile
    from sefe.evaluation.inference import default_tasks, run_inference
    from sefe.sefe_train.stage_folder import is_stage_folder, load_stage
    from sefe.vllm_args import parse_key_values

    vllm_args = parse_key_values(vllm_arg)

    names = names_option(tasks, "--tasks") or default_tasks(data_root)
    if not names:
        raise MissingFile(f"no annotations/<Task>/test.json under {data_root}")
    source: Path | tuple[Any, Any] = model
    if is_stage_folder(model):
        if engine != "hf":
            raise InputError(
                f"{model}: a stage folder loads through its method, on the hf engine only; for --engine "
                f"{engine} give its merged/ folder (the whole model for the methods that merge)"
            )
        source = load_stage(model, device)
        model_id = model_id or model.resolve().name
    paths = run_inference(
        source,
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
        vllm_args=vllm_args,
    )
    for task, path in paths.items():
        typer.echo(f"{task}: {path}")


@app.command("score")
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
        arg_default(score_in_root, "mode"),
        "--mode",
        help="compat: published scorers, quirks kept; fixed: quirks fixed.",
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


@app.command("judge")
def eval_judge_cmd(
    task: str = typer.Option(..., "--task", "-t", help="CoIN task of the predictions."),
    predictions: Path = typer.Option(..., "--predictions", "-p", help="Prediction JSONL (`sefe eval run`)."),
    annotations: Path = typer.Option(..., "--annotations", "-a", help="The task's test.json."),
    backend: JudgeBackend = typer.Option(
        DEFAULT_JUDGE_BACKEND, "--backend", help="The ASD backend the judge runs on."
    ),
    model: str | None = typer.Option(None, "--model", help="Judge model (default: the backend's)."),
    base_url: str | None = model_option(
        _GEN, "base_url", "--base-url", help="OpenAI-compatible endpoint URL."
    ),
    concurrency: int = model_option(
        _GEN, "concurrency", "--concurrency", help="Requests in flight (openai backend)."
    ),
    cache: Path | None = typer.Option(
        None, "--cache", callback=type_check(OutputFile), help="Ratings cache (default: <P>.judge.jsonl)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Knowledge capability: an LLM judge rates each answer 0-10; score = sum / (10 N) x 100. Resumable."""
    import orjson

    from sefe.asd_gen.backends.factory import make_backend
    from sefe.asd_gen.backends.guard import RESUME_HINT
    from sefe.asd_gen.build import EXIT_OPEN
    from sefe.evaluation.judge import run_judge

    opts = GenerationOptions(backend=backend, model=model, base_url=base_url, concurrency=concurrency)
    engine = make_backend(opts)
    # Ctrl-C and a dead server end here too: the ratings received so far are in the cache
    res = run_judge(task, predictions, annotations, engine, cache or Path(f"{predictions}.judge.jsonl"))
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
