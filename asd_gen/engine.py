"""The generation engine: Needs -> prompts -> fingerprinted requests -> cache / backend -> validated results.

Flow per Need: resolve its prompt template, pick the output shape and strict schema, compute the request
fingerprint (Need key, template sha256, model, schema, sampling). A fingerprint found in the cache is answered
without a request. The others go to the backend; each answer is parsed leniently, validated strictly and
written to the cache at once. Invalid output is asked again (up to `max_retries` more times, at a raised
temperature so a greedy model can answer differently); what still fails is quarantined with its raw output.

A request nobody answered (server down, timeout, 5xx after the SDK's retries, a crashed engine, a pending
batch, the spend cap) is never quarantined: it is returned as *open* and the next run asks it again. The
backend is checked before the first request (`Backend.check`), a circuit breaker stops sending after
`max_consecutive_failures` unanswered results in a row, and Ctrl-C / SIGTERM stops sending, lets in-flight
answers reach the cache and raises `RunInterrupted` (see `backends/guard.py`). A full disk (the cache cannot
be written) stops sending at once too: answers still arriving are held in memory with the one that failed,
their write is retried for `$SEFE_DISK_RETRY_S` seconds, and the run ends with `DiskFull` (exit 5) naming
the folder and the free space needed.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, overload

import orjson
from rich.console import Console

from sefe.asd_gen import tokens
from sefe.asd_gen.backends.base import Backend, ChatRequest, ChatResult
from sefe.asd_gen.backends.factory import make_backend
from sefe.asd_gen.backends.guard import RESUME_HINT, RunGuard, RunInterrupted
from sefe.asd_gen.cache import CACHE_NAME, ResultCache
from sefe.asd_gen.needs import (
    Estimate,
    GenerationOptions,
    GenerationOutcome,
    GenerationReport,
    Need,
    NeedFailure,
    NeedResult,
    Spend,
)
from sefe.asd_gen.parsing import OutputError, parse_and_validate
from sefe.asd_gen.progress import GenerationProgress
from sefe.asd_gen.prompt_templates import PromptError, PromptSet, ResolvedPrompt, TemplateRenderError
from sefe.asd_gen.schemas import OutputSpec, output_spec
from sefe.asd_gen.stats import RunStats, cost_usd
from sefe.atomic import atomic_write_bytes
from sefe.coin.images import ImageError, check_image, image_path, image_payload
from sefe.errors import DiskFull

QUARANTINE_NAME = "asd_quarantine.jsonl"
RETRY_TEMPERATURE = 0.7
#: How long answers held in memory on a full disk are retried (someone may free space meanwhile).
DISK_RETRY_ENV = "SEFE_DISK_RETRY_S"
DEFAULT_DISK_RETRY_S = 10.0


@dataclass
class _Job:
    need: Need
    prompt: ResolvedPrompt
    spec: OutputSpec
    fingerprint: str
    attempts: int = 0
    last_raw: str | None = None
    last_error: str | None = None


@dataclass
class _Run:
    """The state of one `fulfil` call, shared by its steps."""

    cache: ResultCache
    stats: RunStats
    report: GenerationReport = field(default_factory=lambda: GenerationReport(backend="", model=""))
    results: dict[str, NeedResult] = field(default_factory=dict)  # Need.key -> answer
    quarantined: list[NeedFailure] = field(default_factory=list)  # invalid output / rejected request
    open: list[NeedFailure] = field(default_factory=list)  # not answered: asked again by the next run
    queue: list[_Job] = field(default_factory=list)  # to send in the next round
    by_req: dict[str, _Job] = field(default_factory=dict)  # request key -> job, while in flight
    guard: RunGuard | None = None
    fingerprints: list[str] = field(default_factory=list)  # every job's, for the cumulative spend


class _LazyRequests(Sequence[ChatRequest]):
    """Requests built on access, so images are read and base64-encoded only while a backend needs them:
    at dataset scale (hundreds of thousands of image requests) a prebuilt list would not fit in memory."""

    def __init__(self, build: Callable[[_Job, int], ChatRequest], items: list[tuple[_Job, int, str]]) -> None:
        self._build = build
        self._items = items

    def __len__(self) -> int:
        return len(self._items)

    @overload
    def __getitem__(self, i: int) -> ChatRequest: ...
    @overload
    def __getitem__(self, i: slice) -> list[ChatRequest]: ...
    def __getitem__(self, i: int | slice) -> ChatRequest | list[ChatRequest]:
        if isinstance(i, slice):
            return [self._build(job, attempt) for job, attempt, _ in self._items[i]]
        job, attempt, _ = self._items[i]
        return self._build(job, attempt)


class Engine:
    """Implements `sefe.asd_gen.needs.Generator`."""

    def __init__(
        self,
        options: GenerationOptions,
        data_root: Path,
        *,
        show_progress: bool = True,
        backend: Backend | None = None,
        console: Console | None = None,
    ) -> None:
        self.options = options
        self.data_root = Path(data_root)
        self.show_progress = show_progress
        self.console = console
        self._backend = backend
        self.prompts = PromptSet(options.prompts_dir)
        self._schema_hash: dict[str, str] = {}
        self._specs: dict[tuple[str, int, str], OutputSpec] = {}
        self._checked = False

    # ---- identities ------------------------------------------------------------------------------------
    @property
    def model_id(self) -> str:
        """The model as it enters fingerprints: the named one, else the backend's default (stable, no I/O)."""
        return self.options.model or f"default:{self.options.backend}"

    def _spec(self, need: Need, rp: ResolvedPrompt) -> OutputSpec:
        k = (need.kind, len(need.items), rp.shape)
        spec = self._specs.get(k)
        if spec is None:
            spec = self._specs[k] = output_spec(need.kind, len(need.items), rp.shape)
            self._schema_hash[spec.name] = hashlib.sha256(
                orjson.dumps(spec.json_schema, option=orjson.OPT_SORT_KEYS)
            ).hexdigest()
        return spec

    def fingerprint(self, need: Need, rp: ResolvedPrompt, spec: OutputSpec) -> str:
        o = self.options
        payload = (
            f"{need.key}|{rp.sha256}|{self.model_id}|{spec.name}:{self._schema_hash[spec.name]}|"
            f"t={o.temperature}|max={o.max_tokens}"
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:32]

    def _jobs(self, needs: list[Need]) -> dict[str, _Job]:
        """One job per distinct Need key. A broken prompt file raises PromptError (naming the file) before
        anything is sent: it is a configuration error, not a bad record."""
        jobs: dict[str, _Job] = {}
        for need in needs:
            key = need.key
            if key not in jobs:
                rp = self.prompts.resolve(need.task, need.kind, need.image is not None)
                spec = self._spec(need, rp)
                jobs[key] = _Job(need, rp, spec, self.fingerprint(need, rp, spec))
        return jobs

    # ---- requests --------------------------------------------------------------------------------------
    def _image_url(self, need: Need) -> tuple[str, str]:
        """The record's image as a data URL (and its path): only a file inside the data root that decodes as
        an image, typed by its content (`sefe.coin.images`); `_precheck` has already turned any other into a
        quarantined record."""
        where = f"record {need.record_id}"
        data, mime = image_payload(self.data_root, str(need.image), where, decoded=True)  # by _precheck
        path = image_path(self.data_root, str(need.image), where)
        return f"data:{mime};base64,{base64.b64encode(data).decode()}", str(path.resolve())

    def _precheck(self, job: _Job) -> str | None:
        """What would make building this request fail, found before sending: an image outside the data
        root (absolute, or `..` leaving it), missing, or not decodable as an image is an error for this
        record; nothing of it is read into a request."""
        need = job.need
        if need.image is not None:
            try:
                check_image(self.data_root, need.image, f"record {need.record_id}")
            except ImageError as exc:
                return str(exc)
        if job.prompt.shape == "official_single" and len(need.items) != 1:
            return f"{job.prompt.name}: single-question prompt, record {need.record_id} has {len(need.items)}"
        return None

    def _request(self, job: _Job, attempt: int) -> ChatRequest:
        _, system, user = self.prompts.render(job.need, self.data_root)
        content: Any = user
        image_path = None
        if job.need.image is not None:
            url, image_path = self._image_url(job.need)
            content = [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": user}]
        temp = self.options.temperature if attempt == 1 else max(self.options.temperature, RETRY_TEMPERATURE)
        return ChatRequest(
            key=_request_key(job, attempt),
            messages=[{"role": "system", "content": system}, {"role": "user", "content": content}],
            json_schema=job.spec.json_schema,
            schema_name=job.spec.name,
            max_tokens=self.options.max_tokens,
            temperature=temp,
            image_path=image_path,
        )

    def _backend_for(self, out_dir: str) -> Backend:
        """The backend, created and checked (`Backend.check`: endpoint up, model served) on first use."""
        if self._backend is None:
            self._backend = make_backend(self.options, out_dir=out_dir)
        if not self._checked:
            self._backend.check()
            self._checked = True
        return self._backend

    # ---- Generator protocol ----------------------------------------------------------------------------
    def estimate(self, needs: list[Need], out_dir: str) -> Estimate:
        jobs = self._jobs(needs)
        cache = ResultCache(out_dir)
        todo = [j for j in jobs.values() if j.fingerprint not in cache]
        tokens_in = tokens_out = 0
        for j in todo:
            try:
                _, system, user = self.prompts.render(j.need, self.data_root)
            except TemplateRenderError:
                raise
            except PromptError:
                continue
            tokens_in += tokens.tokens_in_rendered(j.need, system, user)
            tokens_out += tokens.tokens_out(j.need)
        return Estimate(
            requests=len(todo), cached=len(jobs) - len(todo), tokens_in=tokens_in, tokens_out=tokens_out
        )

    def fulfil(self, needs: list[Need], out_dir: str) -> GenerationOutcome:
        """Cache first, then rounds of requests (first tries, then retries of invalid output) until every
        Need is answered, quarantined or left open; raises `RunInterrupted` after a graceful Ctrl-C."""
        out = Path(out_dir)
        run = self._start(needs, out)
        try:
            self._send_rounds(run, out_dir)
            full = run.guard is not None and run.guard.disk_full is not None
            if full:
                self._store_held(run, out)
        finally:
            run.cache.close()
            if (run.guard is None or not run.guard.interrupted) and not run.cache.write_error:
                self._write_quarantine(out, run.quarantined)
        if full:
            raise self._disk_full(run, out, stored=True)
        if run.guard is not None and run.guard.interrupted:
            raise RunInterrupted(
                f"{run.guard.stop_reason}: {run.stats.done} new answers are cached, "
                f"{len(run.open)} requests left open; {RESUME_HINT}"
            )
        return self._outcome(run)

    # ---- fulfil, step by step --------------------------------------------------------------------------
    def _start(self, needs: list[Need], out: Path) -> _Run:
        """Jobs, cache hits, the report's identities and the queue of what must be asked."""
        jobs = self._jobs(needs)
        cache = ResultCache(out)
        run = _Run(
            cache=cache, stats=RunStats(total=len(jobs)), fingerprints=[j.fingerprint for j in jobs.values()]
        )
        for key, job in jobs.items():
            hit = cache.get(job.fingerprint)
            if hit is not None:
                run.results[key] = hit
                run.stats.cached += 1
            else:
                run.queue.append(job)
        answered_by = {
            cache.model_of[j.fingerprint] for j in jobs.values() if j.fingerprint in cache.model_of
        }
        run.report = GenerationReport(
            backend=self.options.backend,
            model=", ".join(sorted(answered_by)) or self.model_id,  # replaced by the backend's name once used
            prompt_hashes={j.prompt.name: j.prompt.sha256 for j in jobs.values()},
            cached=run.stats.cached,
        )
        return run

    def _send_rounds(self, run: _Run, out_dir: str) -> None:
        """Round after round until the queue is empty or the guard (breaker, Ctrl-C) stops the run."""
        enabled = self.show_progress and bool(run.queue)
        progress = GenerationProgress(run.stats, enabled=enabled, console=self.console)
        guard = run.guard = RunGuard(self.options.max_consecutive_failures)
        with guard, progress:
            while run.queue and not guard.stop_reason:
                items = self._dispatch(run)
                if items:
                    backend = self._backend_for(out_dir)
                    run.report.model = backend.model_name
                    guard.attach(backend)
                    requests = _LazyRequests(self._request, items)
                    backend.run(requests, lambda res: self._on_result(run, res, progress))
                    self._collect_skipped(run)
            if run.queue:
                self._leave_open(run, run.queue, f"not sent: {guard.stop_reason}")
                run.queue = []

    def _dispatch(self, run: _Run) -> list[tuple[_Job, int, str]]:
        """This round's requests: the queue minus what the spend cap holds back or cannot be built."""
        queue, run.queue = run.queue, []
        cap = self.options.max_requests
        items: list[tuple[_Job, int, str]] = []
        for job in queue:
            if cap is not None and run.stats.sent >= cap:
                self._leave_open(run, [job], f"not sent: --max-requests {cap} reached")
                continue
            problem = self._precheck(job)
            if problem is not None:
                self._quarantine(run, job, f"prompt: {problem}", None, job.attempts)
                continue
            attempt = job.attempts + 1
            key = _request_key(job, attempt)
            run.by_req[key] = job
            items.append((job, attempt, key))
            run.stats.sent += 1
        return items

    def _on_result(self, run: _Run, res: ChatResult, progress: GenerationProgress) -> None:
        job = run.by_req.pop(res.key, None)
        if job is None:
            return  # unknown or duplicate delivery: never double-count
        stats = run.stats
        stats.tokens_in += res.tokens_in
        stats.tokens_out += res.tokens_out
        if run.guard is not None:
            run.guard.observe(res)
        if res.error is not None and res.unanswered:
            if res.extra.get("pending"):
                stats.pending += 1
            self._leave_open(run, [job], res.error)
        elif res.error is not None:
            self._quarantine(run, job, res.error, res.text, job.attempts + res.attempts)
        else:
            self._accept(run, job, res)
        progress.advance()

    def _accept(self, run: _Run, job: _Job, res: ChatResult) -> None:
        """An answer: validated and cached, or asked again, or quarantined once its tries are used up."""
        job.attempts += 1
        try:
            if res.finish_reason == "length":
                raise OutputError(
                    f"truncated output (finish_reason=length at max_tokens={self.options.max_tokens})"
                )
            value = parse_and_validate(job.need, job.spec, res.text or "")
        except OutputError as e:
            run.stats.invalid += 1
            job.last_raw, job.last_error = res.text, str(e)
            if job.attempts >= 1 + self.options.max_retries:
                self._quarantine(run, job, str(e), res.text, job.attempts)
            else:
                run.queue.append(job)
            return
        run.cache.put(
            job.fingerprint,
            value,
            need=job.need.key,
            model=run.report.model,
            record_id=job.need.record_id,
            kind=job.need.kind,
            raw=res.text,
            tokens_in=res.tokens_in,
            tokens_out=res.tokens_out,
        )
        run.results[job.need.key] = value
        run.stats.done += 1
        if run.cache.unwritten and run.guard is not None:
            run.guard.stop_disk_full(f"no space left to write {run.cache.path}")

    def _store_held(self, run: _Run, out: Path) -> None:
        """A full disk stopped the run: write the answers held in memory, retrying while someone may free
        space (`$SEFE_DISK_RETRY_S`, default 10 s); raises `DiskFull` when they cannot be stored."""
        cache = run.cache
        if not cache.unwritten:
            return
        seconds = disk_retry_seconds()
        (self.console or Console(stderr=True)).print(
            f"[red]{out}: no space left to store answers: sending stopped; {len(cache.unwritten)} paid "
            f"answers are held in memory ({_size(cache.unwritten_bytes())}); free space there, retrying "
            f"the write for {seconds:.0f} s[/red]"
        )
        if not cache.retry_unwritten(seconds):
            raise self._disk_full(run, out, stored=False)

    def _disk_full(self, run: _Run, out: Path, stored: bool) -> DiskFull:
        """One line: the folder, what was kept or lost, and the free space the rest of the run needs."""
        cache = run.cache
        done = max(run.stats.done, 1)
        row = cache.path.stat().st_size / max(len(cache), 1) if cache.path.exists() else 2048.0
        left = len(run.open)
        needed = cache.unwritten_bytes() + int(row * left * 2)  # answers to come, and room for the outputs
        try:
            free = _size(shutil.disk_usage(out).free)
        except OSError:
            free = "unknown"
        kept = (
            f"every answer paid for is stored ({run.stats.done} new)"
            if stored
            else f"{len(cache.unwritten)} of {done} new answers paid for could not be stored"
        )
        return DiskFull(
            f"{out}: no space left to write {CACHE_NAME}: {kept}, {left} requests not sent; about "
            f"{_size(needed)} more free space is needed there ({free} free)"
        )

    def _collect_skipped(self, run: _Run) -> None:
        """Requests the backend gave no result for (stopped early, or a backend bug): open, never lost."""
        reason = run.guard.stop_reason if run.guard is not None else None
        skipped = [run.by_req.pop(k) for k in list(run.by_req)]
        self._leave_open(run, skipped, f"not sent: {reason}" if reason else "backend returned no result")

    def _quarantine(self, run: _Run, job: _Job, error: str, raw: str | None, attempts: int) -> None:
        run.quarantined.append(_failure(job.need, error, raw, attempts))
        run.stats.failed += 1

    def _leave_open(self, run: _Run, jobs: list[_Job], reason: str) -> None:
        for job in jobs:
            run.open.append(_failure(job.need, reason, None, job.attempts))
            run.stats.open += 1

    def _outcome(self, run: _Run) -> GenerationOutcome:
        stats, report = run.stats, run.report
        report.requests_sent = stats.sent
        report.failed = stats.failed
        report.open = len(run.open)
        report.tokens_in = stats.tokens_in
        report.tokens_out = stats.tokens_out
        report.cost_usd = cost_usd(
            stats.tokens_in, stats.tokens_out, self.options.price_in_per_mtok, self.options.price_out_per_mtok
        )
        report.cumulative = self._cumulative(run)
        if run.guard is not None and run.guard.tripped:
            report.stopped = run.guard.tripped
        if self._backend is not None:
            report.pending_batch_files = list(getattr(self._backend, "pending_files", []))
        return GenerationOutcome(results=run.results, failures=run.quarantined, open=run.open, report=report)

    def _cumulative(self, run: _Run) -> Spend:
        """Every answer this build uses, as the cache stores it (earlier invocations' included)."""
        used = {f for f in run.fingerprints if f in run.cache}
        tin = sum(run.cache.tokens_of.get(f, (0, 0))[0] for f in used)
        tout = sum(run.cache.tokens_of.get(f, (0, 0))[1] for f in used)
        o = self.options
        cost = cost_usd(tin, tout, o.price_in_per_mtok, o.price_out_per_mtok)
        return Spend(answers=len(used), tokens_in=tin, tokens_out=tout, cost_usd=cost)

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()

    def _write_quarantine(self, out: Path, failures: list[NeedFailure]) -> None:
        """This run's quarantine, replaced atomically (a rerun retries quarantined Needs, so old ones go)."""
        path = out / QUARANTINE_NAME
        if not failures and not path.exists():
            return
        atomic_write_bytes(path, b"".join(orjson.dumps(f.model_dump()) + b"\n" for f in failures))


def disk_retry_seconds() -> float:
    """How long a full disk's held answers are retried: `$SEFE_DISK_RETRY_S`, default 10 s."""
    try:
        return max(0.0, float(os.environ.get(DISK_RETRY_ENV, "") or DEFAULT_DISK_RETRY_S))
    except ValueError:
        return DEFAULT_DISK_RETRY_S


def _size(n: float) -> str:
    return f"{n / 2**20:,.1f} MiB" if n >= 2**20 else f"{n / 1024:,.1f} KiB"


def _request_key(job: _Job, attempt: int) -> str:
    """First try: the fingerprint (the Batch API custom_id). Retries get their own id, so a provider's answer
    to an earlier try is never taken for a later one."""
    return job.fingerprint if attempt == 1 else f"{job.fingerprint}~{attempt}"


def _failure(need: Need, error: str, raw: str | None, attempts: int) -> NeedFailure:
    return NeedFailure(
        key=need.key,
        task=need.task,
        record_id=need.record_id,
        kind=need.kind,
        error=error,
        raw_output=raw,
        attempts=attempts,
    )
