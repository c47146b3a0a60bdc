"""`sefe asd build` and `sefe asd plan`: select, ask the engine once, render every X, write, manifest.

Selections nest across X, so the largest X decides what the model is asked; every smaller X is a subset of
the same converted records. Output files are written atomically; an unselected record is written unchanged and
record order is preserved. One manifest per X: `<out>/annotations/asd_manifest_x{X}.json`.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from sefe.asd_gen import tokens
from sefe.asd_gen.backends.base import safe_url
from sefe.asd_gen.candidates import AnswerPool, BoxPool, ClassPool
from sefe.asd_gen.needs import Estimate, GenerationOutcome, Generator, Need
from sefe.asd_gen.options import BuildOptions
from sefe.asd_gen.selection import SELECTION_RULE, Selection, running_offsets, select
from sefe.asd_gen.styles.convert import (
    ConversionError,
    DistractorMode,
    ParsedRecord,
    Sources,
    convert_record,
    need_for,
    parse_record,
)
from sefe.asd_gen.styles.question import QuestionError, split_question
from sefe.asd_gen.styles.rng import digest
from sefe.atomic import atomic_write_bytes, remove_stale_temps
from sefe.coin import layout
from sefe.coin.instructions import CANDIDATE_PREFIX, GROUNDING_INSTRUCTIONS, INSTRUCTIONS
from sefe.coin.records import TrainRecord, dump_json, load_train, save_train
from sefe.coin.root_tasks import find_task, root_tasks
from sefe.coin.tasks import TaskSpec, coin_tasks
from sefe.errors import INTERRUPTED_EXIT, OPEN_EXIT, UnavailableError
from sefe.lock import folder_lock

ENGINE_HINT = (
    "Use `--distractors pool` to draw yes/no and MCQ distractors from the task's own answers (no model); "
    "explanations (brief/detail) always need a model backend (`--backend local|openai|vllm|batch`)."
)
# Exit codes of `sefe asd build` (README, "ASD"): 0 every file written; 2 bad input or options; 3 batch files
# are waiting for the provider; 4 some needs got no answer (model server down, spend cap): the tasks they
# belong to were not written, rerunning resumes; 130 interrupted (Ctrl-C / SIGTERM), rerunning resumes.
EXIT_PENDING = 3
EXIT_OPEN = OPEN_EXIT
EXIT_INTERRUPTED = INTERRUPTED_EXIT


class BuildError(UnavailableError):
    """A build that cannot proceed (missing engine, missing input, strict mode with failures)."""


@dataclass
class TaskWork:
    """One task prepared for the largest X: selection, parsed records, yes/no flags, model needs."""

    spec: TaskSpec
    path: Path
    ids: list[str | int]  # record ids in file order (the records themselves are re-read when writing)
    input_sha256: str
    top: Selection
    parsed: dict[int, ParsedRecord] = field(default_factory=dict)
    skipped: dict[int, str] = field(default_factory=dict)  # index -> why it keeps its original style
    yes: dict[int, list[bool]] = field(default_factory=dict)
    needs: dict[int, Need] = field(default_factory=dict)
    sources: Sources = field(default_factory=Sources)

    def selection(self, x: float, seed: int) -> Selection:
        return select(self.spec.name, self.ids, self.spec.target_styles, x, seed)


def resolve_tasks(opts: BuildOptions) -> list[tuple[TaskSpec, Path]]:
    """The chosen tasks (CoIN order for defaults) with their train files; errors name missing files."""
    root = opts.data_root
    if opts.tasks:
        chosen = [find_task(t, root) for t in opts.tasks]
        for spec in chosen:
            if not layout.train_path(root, spec.name).is_file():
                raise BuildError(
                    f"{layout.train_path(root, spec.name)}: train file of task {spec.name} not found"
                )
    else:
        declared = root_tasks(root)  # the root's own tasks (tasks.json), else CoIN's
        chosen = [t for t in declared or coin_tasks() if layout.train_path(root, t.name).is_file()]
        if not chosen:
            ann = layout.annotations_dir(root)
            which = "declared" if declared else "CoIN"
            raise BuildError(f"{ann}: no <Task>/train.json of any {which} task (use --data-root / --tasks)")
    return [(spec, layout.train_path(root, spec.name)) for spec in chosen]


def _sources(spec: TaskSpec, records: list[TrainRecord], mode: DistractorMode) -> Sources:
    """Candidate sources over all records of the task (not only the selected ones)."""
    src = Sources()
    if spec.candidates == "classes":
        src.classes = ClassPool(a for r in records for _, a in r.pairs())
    elif spec.candidates == "boxes":
        src.boxes = BoxPool()
        for r in records:
            for _, a in r.pairs():
                src.boxes.add(r.image, a)
    elif spec.candidates == "model" and mode == "pool":
        src.pool = AnswerPool()
        for r in records:
            for q, a in r.pairs():
                try:
                    parts = split_question(
                        q, context_prefixes=spec.context_prefixes, extra_instructions=spec.instruction_lines
                    )
                except QuestionError:
                    continue
                src.pool.add(parts.question, a)
    return src


def prepare(opts: BuildOptions, progress: Progress | None = None) -> list[TaskWork]:
    """Load, select (largest X), parse the selected records and list the model Needs; no model call."""
    if not opts.xs:
        raise BuildError("no X given (--x)")
    top_x = max(opts.xs)
    works: list[TaskWork] = []
    targets = resolve_tasks(opts)
    bar = progress.add_task("preparing", total=len(targets)) if progress else None
    for spec, path in targets:
        if progress is not None and bar is not None:
            progress.update(bar, description=f"preparing {spec.name}")
        records = load_train(path)
        top = select(spec.name, [r.id for r in records], spec.target_styles, top_x, opts.seed)
        work = TaskWork(
            spec=spec, path=path, ids=[r.id for r in records], input_sha256=_sha256(path), top=top
        )
        for idx in top.ordered:
            try:
                work.parsed[idx] = parse_record(spec, idx, records[idx])
            except ConversionError as e:
                work.skipped[idx] = str(e)
        sizes = [len(r.conversations) // 2 for r in records]
        offsets = running_offsets(top, sizes, "yn")
        first_yes = digest(opts.seed, spec.name, "yes-parity")[0] & 1
        for idx, off in offsets.items():
            work.yes[idx] = [(off + t + first_yes) % 2 == 0 for t in range(sizes[idx])]
        for idx in top.ordered:
            if idx in work.parsed:
                need = need_for(
                    spec, work.parsed[idx], top.styles[idx], opts.distractors, work.yes.get(idx, [])
                )
                if need is not None:
                    work.needs[idx] = need
        work.sources = _sources(spec, records, opts.distractors)
        works.append(work)
        if progress is not None and bar is not None:
            progress.advance(bar)
    return works


def load_engine(opts: BuildOptions, works: list[TaskWork]) -> Generator:
    """The generation engine, or a BuildError that says which styles need it and what to do instead."""
    try:
        from sefe.asd_gen.engine import Engine  # type: ignore[import-not-found,unused-ignore]
    except ModuleNotFoundError as e:
        if e.name not in ("sefe.asd_gen.engine",):
            raise
        need_counts = Counter(f"{w.spec.name}/{n.kind}" for w in works for n in w.needs.values())
        listed = ", ".join(f"{k} ({v})" for k, v in sorted(need_counts.items()))
        raise BuildError(
            f"these conversions need model-written content, but the generation engine "
            f"(sefe.asd_gen.engine) is not available: {listed}. {ENGINE_HINT}"
        ) from None
    return Engine(opts.generation, opts.data_root)


def all_needs(works: list[TaskWork]) -> list[Need]:
    return [n for w in works for n in w.needs.values()]


# ---------------------------------------------------------------------------------------------- plan


class TaskPlan(BaseModel):
    task: str
    records: int
    x: float
    selected: int
    styles: dict[str, int]
    productions: dict[str, str]  # style -> original / rule / data / model
    model_requests: int  # new requests (cached answers excluded when the engine can tell)
    tokens_in: int
    tokens_out: int
    unconvertible: int


class Plan(BaseModel):
    tasks: list[TaskPlan]
    estimate: Estimate  # all tasks at the largest X (one generation run serves every X)
    estimate_source: Literal["engine", "rough"]


def rough_estimate(needs: list[Need]) -> Estimate:
    """Estimate without rendering prompts (no engine): `sefe.asd_gen.tokens`, clearly a ballpark."""
    tin = sum(tokens.tokens_in_rough(n) for n in needs)
    tout = sum(tokens.tokens_out(n) for n in needs)
    return Estimate(requests=len(needs), cached=0, tokens_in=tin, tokens_out=tout)


def plan(opts: BuildOptions, works: list[TaskWork] | None = None, generator: Generator | None = None) -> Plan:
    """Per task and X: records, selection, style counts, model requests and tokens; no model call.

    Tokens come from `Engine.estimate` (real prompts, cache-aware) when the engine is available, else from
    `rough_estimate`; `Plan.estimate_source` says which.
    """
    works = works if works is not None else prepare(opts)
    needs = all_needs(works)
    engine = generator
    if engine is None and needs:
        try:
            engine = load_engine(opts, works)
        except BuildError:
            engine = None

    def estimate(subset: list[Need]) -> Estimate:
        if not subset:
            return Estimate(requests=0, cached=0, tokens_in=0, tokens_out=0)
        return engine.estimate(subset, str(opts.out)) if engine is not None else rough_estimate(subset)

    rows: list[TaskPlan] = []
    for w in works:
        for x in opts.xs:
            sel = w.selection(x, opts.seed)
            est = estimate([w.needs[i] for i in sel.ordered if i in w.needs])
            rows.append(
                TaskPlan(
                    task=w.spec.name,
                    records=len(w.ids),
                    x=x,
                    selected=len(sel.styles),
                    styles=sel.counts(),
                    productions={s: w.spec.production(s, opts.distractors) for s in w.spec.target_styles},
                    model_requests=est.requests - est.cached,
                    tokens_in=est.tokens_in,
                    tokens_out=est.tokens_out,
                    unconvertible=sum(1 for i in sel.styles if i in w.skipped),
                )
            )
    return Plan(tasks=rows, estimate=estimate(needs), estimate_source="engine" if engine else "rough")


# ---------------------------------------------------------------------------------------------- build


class TaskOutput(BaseModel):
    """Per task and X, for the manifest and the summary."""

    records: int
    selected: int
    converted: dict[str, int]  # style -> records actually converted
    kept_original: dict[str, list[dict[str, Any]]]  # why -> [{"index", "id", "style", "reason"}]
    distractor_sources: dict[str, list[str | int]]  # source -> record ids (yes/no and MCQ records)
    yes_no: dict[str, int]  # turns answered Yes / No
    output: str | None  # None: not written (needs still open)
    input_sha256: str
    status: Literal["complete", "partial", "not_written"] = "complete"
    open: dict[str, int] = Field(default_factory=dict)  # why not answered -> selected records waiting
    x: float = 0.0  # requested percentage
    effective_x: float = 0.0  # converted records as a percentage of the task
    effective_by_style: dict[str, float] = Field(default_factory=dict)  # style -> % of the task converted
    requested_by_style: dict[str, float] = Field(default_factory=dict)  # style -> % of the task selected


class BuildResult(BaseModel):
    """`done`: every file written; `open`: some tasks not written (needs open, exit 4); `partial`: written
    with open needs (--allow-partial); `pending`: batch files wait for the provider (exit 3)."""

    status: Literal["done", "open", "partial", "pending"]
    outputs: list[str]
    manifests: list[str]
    tasks: dict[str, dict[str, TaskOutput]]  # X -> task -> output
    pending_batch_files: list[str] = Field(default_factory=list)
    stopped: str | None = None  # why generation stopped early (circuit breaker)

    @property
    def open_by_task(self) -> dict[str, dict[str, int]]:
        """Task -> reason -> open needs, at the largest X (which holds every smaller X's needs)."""
        if not self.tasks:
            return {}
        top = max(self.tasks, key=float)
        return {name: t.open for name, t in self.tasks[top].items() if t.open}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class _Converted:
    record: TrainRecord | None  # None: keeps the original
    source: str | None = None
    why: str | None = None  # open / quarantined / unconvertible / invalid_model_output
    reason: str | None = None


def open_reason(error: str) -> str:
    """A short, countable reason for an open need: `connection error`, `HTTP 503`, `not sent: ...`."""
    if error.startswith("not sent:"):
        return error
    head = error.split(":", 1)[0].strip()
    return head or "no answer"


def _convert_all(w: TaskWork, opts: BuildOptions, outcome: GenerationOutcome | None) -> dict[int, _Converted]:
    failed = {f.key: f for f in outcome.failures} if outcome else {}
    open_ = {f.key: f for f in outcome.open} if outcome else {}
    out: dict[int, _Converted] = {}
    for idx in w.top.ordered:
        style = w.top.styles[idx]
        if idx in w.skipped:
            out[idx] = _Converted(None, why="unconvertible", reason=w.skipped[idx])
            continue
        need = w.needs.get(idx)
        result = None
        if need is not None:
            result = outcome.results.get(need.key) if outcome else None
            if result is None:
                f = failed.get(need.key)
                if f is not None:
                    out[idx] = _Converted(None, why="quarantined", reason=f.error)
                else:  # nobody answered (server down, spend cap, ...): a rerun asks again
                    o = open_.get(need.key)
                    out[idx] = _Converted(
                        None, why="open", reason=o.error if o else "no answer from the engine"
                    )
                continue
        try:
            rec, src = convert_record(
                w.spec,
                w.parsed[idx],
                style,
                seed=opts.seed,
                yes=w.yes.get(idx, []),
                mode=opts.distractors,
                sources=w.sources,
                result=result,
            )
        except ConversionError as e:
            why = "invalid_model_output" if need is not None else "unconvertible"
            out[idx] = _Converted(None, why=why, reason=str(e))
            continue
        out[idx] = _Converted(rec, source=src)
    return out


def _yes_no_counts(w: TaskWork, sel: Selection, conv: dict[int, _Converted]) -> dict[str, int]:
    c = Counter({"Yes": 0, "No": 0})
    for idx, style in sel.styles.items():
        if style == "yn" and conv[idx].record is not None:
            for flag in w.yes[idx]:
                c["Yes" if flag else "No"] += 1
    return dict(c)


def _pct(n: int, total: int) -> float:
    return round(100.0 * n / total, 2) if total else 0.0


def _task_output(
    w: TaskWork, x: float, sel: Selection, conv: dict[int, _Converted], path: Path, opts: BuildOptions
) -> TaskOutput:
    """What one task at one X got: converted and kept records, open needs, effective X."""
    kept: dict[str, list[dict[str, Any]]] = {}
    sources: dict[str, list[str | int]] = {}
    converted: Counter[str] = Counter()
    waiting: Counter[str] = Counter()
    for idx in sel.ordered:
        c = conv[idx]
        rid = w.ids[idx]
        if c.record is None:
            kept.setdefault(c.why or "kept", []).append(
                {"index": idx, "id": rid, "style": sel.styles[idx], "reason": c.reason}
            )
            if c.why == "open":
                waiting[open_reason(c.reason or "")] += 1
            continue
        converted[sel.styles[idx]] += 1
        if c.source:
            sources.setdefault(c.source, []).append(rid)
    n = len(w.ids)
    publish = not waiting or opts.allow_partial
    return TaskOutput(
        records=n,
        selected=len(sel.styles),
        converted=dict(sorted(converted.items())),
        kept_original=kept,
        distractor_sources=sources,
        yes_no=_yes_no_counts(w, sel, conv),
        output=os.path.relpath(path, opts.out) if publish else None,
        input_sha256=w.input_sha256,
        status="not_written" if not publish else "partial" if waiting else "complete",
        open=dict(sorted(waiting.items())),
        x=x,
        effective_x=_pct(sum(converted.values()), n),
        effective_by_style={s: _pct(converted.get(s, 0), n) for s in w.spec.target_styles},
        requested_by_style={s: _pct(c, n) for s, c in sorted(sel.counts().items())},
    )


def _manifest(
    opts: BuildOptions, x: float, tasks: dict[str, TaskOutput], outcome: GenerationOutcome | None
) -> dict[str, Any]:
    g = opts.generation
    report = outcome.report if outcome else None
    statuses = {t.status for t in tasks.values()}
    status = "incomplete" if "not_written" in statuses else "partial" if "partial" in statuses else "complete"
    return {
        "x": int(x) if float(x).is_integer() else x,
        "status": status,  # complete / partial (--allow-partial, needs open) / incomplete (tasks not written)
        "effective_x": {name: t.effective_x for name, t in tasks.items()},
        "seed": opts.seed,
        "selection_rule": SELECTION_RULE,
        "distractors": opts.distractors,
        "instructions": {
            "default": INSTRUCTIONS,
            "Grounding": GROUNDING_INSTRUCTIONS,
            "yes_no_candidate_prefix": CANDIDATE_PREFIX,
        },
        "data_root": str(opts.data_root),
        "backend": report.backend if report else None,
        "model": report.model if report else None,
        "base_url": safe_url(g.base_url),
        "prompt_hashes": report.prompt_hashes if report else {},
        "generation": report.model_dump(mode="json") if report else None,
        "generation_options": g.model_dump(mode="json", exclude={"base_url"}),
        "quarantined": [f.model_dump(mode="json", exclude={"raw_output"}) for f in outcome.failures]
        if outcome
        else [],
        "tasks": {name: t.model_dump(mode="json") for name, t in tasks.items()},
    }


# ---- build, step by step -----------------------------------------------------------------------------

_COLUMNS = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())


def _remove_stale_temps(out: Path, works: list[TaskWork]) -> None:
    """Temp files of output and manifest writes that a kill cut short (`.train_x20.json.<random>.tmp`):
    never renamed into place, so nothing reads them; removed under the output folder's lock."""
    remove_stale_temps(layout.asd_manifest_path(out, 0).parent, "asd_manifest_x*.json")
    for w in works:
        remove_stale_temps(layout.asd_train_path(out, w.spec.name, 0).parent, "train_x*.json")


def _generate(
    opts: BuildOptions, works: list[TaskWork], engine: Generator | None
) -> GenerationOutcome | None:
    """Ask the engine for every Need of the largest X (one run serves every X); None when no Need."""
    needs = all_needs(works)
    if not needs or engine is None:
        return None
    return engine.fulfil(needs, str(opts.out))


def _check_strict(opts: BuildOptions, outcome: GenerationOutcome | None) -> None:
    if opts.generation.strict and outcome is not None and outcome.failures:
        first = outcome.failures[0]
        raise BuildError(
            f"{len(outcome.failures)} requests were quarantined and --strict is set "
            f"(first: {first.task} id {first.record_id}: {first.error})"
        )


def _write_task(
    w: TaskWork, opts: BuildOptions, outcome: GenerationOutcome | None
) -> dict[str, tuple[TaskOutput, Path]]:
    """Convert one task once and write `train_x{X}.json` for every X whose selected records are settled
    (or every X with --allow-partial). Only this task's records are in memory."""
    conv = _convert_all(w, opts, outcome)
    records = load_train(w.path)
    if _sha256(w.path) != w.input_sha256:
        raise BuildError(f"{w.path}: changed while the build was running; rerun the build")
    out: dict[str, tuple[TaskOutput, Path]] = {}
    for x in opts.xs:
        sel = w.selection(x, opts.seed)
        path = layout.asd_train_path(opts.out, w.spec.name, x)
        summary = _task_output(w, x, sel, conv, path, opts)
        if summary.output is not None:
            save_train(path, [conv[i].record or r if i in sel.styles else r for i, r in enumerate(records)])
        out[layout.format_x(x)] = (summary, path)
    return out


def build(
    opts: BuildOptions, console: Console | None = None, generator: Generator | None = None
) -> BuildResult:
    """Write `train_x{X}.json` for every chosen task and X, plus one manifest per X.

    A task whose selected records still have open needs (nobody answered them) gets no file unless
    `allow_partial`; the result's status says so. `generator` defaults to `sefe.asd_gen.engine.Engine`;
    any object with the `Generator` protocol works. Once the inputs are read and the engine is at hand,
    the output folder is locked (`sefe.lock`): a second build into it refuses instead of paying for every
    request again.
    """
    console = console or Console(stderr=True)
    with Progress(*_COLUMNS, console=console, transient=True) as progress:
        works = prepare(opts, progress)
    engine = generator or (load_engine(opts, works) if all_needs(works) else None)
    with folder_lock(opts.out, "sefe asd build"):
        return _build(opts, console, works, engine)


def _build(
    opts: BuildOptions, console: Console, works: list[TaskWork], engine: Generator | None
) -> BuildResult:
    _remove_stale_temps(opts.out, works)
    outcome = _generate(opts, works, engine)
    if outcome is not None and outcome.report.pending_batch_files:
        return BuildResult(
            status="pending",
            outputs=[],
            manifests=[],
            tasks={},
            pending_batch_files=outcome.report.pending_batch_files,
        )
    _check_strict(opts, outcome)
    outputs: list[str] = []
    per_x: dict[str, dict[str, TaskOutput]] = {}
    with Progress(*_COLUMNS, console=console, transient=True) as progress:
        bar = progress.add_task("writing", total=len(works))
        for w in works:
            progress.update(bar, description=f"converting {w.spec.name}")
            for x_tag, (summary, path) in _write_task(w, opts, outcome).items():
                per_x.setdefault(x_tag, {})[w.spec.name] = summary
                if summary.output is not None:
                    outputs.append(str(path))
            progress.advance(bar)
    manifests: list[str] = []
    for x in opts.xs:
        mpath = layout.asd_manifest_path(opts.out, x)
        atomic_write_bytes(mpath, dump_json(_manifest(opts, x, per_x[layout.format_x(x)], outcome)))
        manifests.append(str(mpath))
    statuses = {t.status for tasks in per_x.values() for t in tasks.values()}
    status = "open" if "not_written" in statuses else "partial" if "partial" in statuses else "done"
    stopped = outcome.report.stopped if outcome else None
    return BuildResult(status=status, outputs=outputs, manifests=manifests, tasks=per_x, stopped=stopped)
