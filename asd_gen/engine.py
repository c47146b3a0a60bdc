"""The generation engine: Needs -> prompts -> fingerprinted requests -> cache / backend -> validated results.

Flow per Need: resolve its prompt template, pick the output shape and strict schema, compute the request
fingerprint (Need key, template sha256, model, schema, sampling). A fingerprint found in the cache is answered
without a request. The others go to the backend; each answer is parsed leniently, validated strictly and
written to the cache at once. Invalid output is asked again (up to `max_retries` more times, at a raised
temperature so a greedy model can answer differently); what still fails is quarantined with its raw output.
"""

from __future__ import annotations

import base64
import hashlib
import mimetypes
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, overload

import orjson
from rich.console import Console

from sefe.asd_gen.backends.base import Backend, ChatRequest, ChatResult
from sefe.asd_gen.backends.factory import make_backend
from sefe.asd_gen.cache import ResultCache
from sefe.asd_gen.needs import (
    Estimate,
    GenerationOptions,
    GenerationOutcome,
    GenerationReport,
    Need,
    NeedFailure,
    NeedResult,
)
from sefe.asd_gen.parsing import OutputError, parse_and_validate
from sefe.asd_gen.progress import GenerationProgress
from sefe.asd_gen.prompt_templates import PromptError, PromptSet, ResolvedPrompt
from sefe.asd_gen.schemas import OutputSpec, output_spec
from sefe.asd_gen.stats import RunStats, cost_usd

QUARANTINE_NAME = "asd_quarantine.jsonl"
RETRY_TEMPERATURE = 0.7
# Rough output sizes per question, for `sefe asd plan` only (JSON overhead included).
_OUT_TOKENS = {"mcq": 30, "yn": 12, "brief": 40, "detail": 90}
_IMAGE_TOKENS = 600  # order of magnitude of one image in a chat request (LLaVA-1.5: 576; OpenAI: 85..765)


@dataclass
class _Job:
    need: Need
    prompt: ResolvedPrompt
    spec: OutputSpec
    fingerprint: str
    attempts: int = 0
    last_raw: str | None = None
    last_error: str | None = None
    sent: list[str] = field(default_factory=list)


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

    def _jobs(self, needs: list[Need]) -> tuple[dict[str, _Job], list[NeedFailure]]:
        """One job per distinct Need key. A broken prompt file raises PromptError (naming the file) before
        anything is sent: it is a configuration error, not a bad record."""
        jobs: dict[str, _Job] = {}
        for need in needs:
            key = need.key
            if key not in jobs:
                rp = self.prompts.resolve(need.task, need.kind, need.image is not None)
                spec = self._spec(need, rp)
                jobs[key] = _Job(need, rp, spec, self.fingerprint(need, rp, spec))
        return jobs, []

    # ---- requests --------------------------------------------------------------------------------------
    def _image_url(self, need: Need) -> tuple[str, str]:
        path = self.data_root / str(need.image)
        if not path.is_file():
            raise PromptError(f"record {need.record_id}: image {need.image} not found under {self.data_root}")
        mime = mimetypes.guess_type(path.name)[0] or "image/jpeg"
        return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()}", str(path.resolve())

    def _precheck(self, job: _Job) -> str | None:
        """What would make building this request fail, found before sending (cheap: no image is read)."""
        need = job.need
        if need.image is not None and not (self.data_root / need.image).is_file():
            return f"record {need.record_id}: image {need.image} not found under {self.data_root}"
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
        if self._backend is None:
            self._backend = make_backend(self.options, out_dir=out_dir)
        return self._backend

    # ---- Generator protocol ----------------------------------------------------------------------------
    def estimate(self, needs: list[Need], out_dir: str) -> Estimate:
        jobs, _ = self._jobs(needs)
        cache = ResultCache(out_dir)
        todo = [j for j in jobs.values() if j.fingerprint not in cache]
        tokens_in = tokens_out = 0
        for j in todo:
            try:
                _, system, user = self.prompts.render(j.need, self.data_root)
            except PromptError:
                continue
            tokens_in += (len(system) + len(user)) // 4 + (_IMAGE_TOKENS if j.need.image else 0)
            tokens_out += 8 + _OUT_TOKENS[j.need.kind] * len(j.need.items)
        return Estimate(
            requests=len(todo), cached=len(jobs) - len(todo), tokens_in=tokens_in, tokens_out=tokens_out
        )

    def fulfil(self, needs: list[Need], out_dir: str) -> GenerationOutcome:
        out = Path(out_dir)
        jobs, failures = self._jobs(needs)
        cache = ResultCache(out)
        stats = RunStats(total=len(jobs) + len(failures), failed=len(failures))
        results: dict[str, NeedResult] = {}
        queue: list[_Job] = []
        for key, job in jobs.items():
            hit = cache.get(job.fingerprint)
            if hit is not None:
                results[key] = hit
                stats.cached += 1
            else:
                queue.append(job)
        answered_by = {
            cache.model_of[j.fingerprint] for j in jobs.values() if j.fingerprint in cache.model_of
        }
        report = GenerationReport(
            backend=self.options.backend,
            model=", ".join(sorted(answered_by)) or self.model_id,  # replaced by the backend's name once used
            prompt_hashes={j.prompt.name: j.prompt.sha256 for j in jobs.values()},
            cached=stats.cached,
        )
        max_tries = 1 + self.options.max_retries
        by_req: dict[str, _Job] = {}
        retry: list[_Job] = []
        progress = GenerationProgress(stats, enabled=self.show_progress and bool(queue), console=self.console)

        def fail(job: _Job, error: str, raw: str | None, attempts: int) -> None:
            failures.append(_failure(job.need, job.need.key, error, raw, attempts))
            stats.failed += 1

        def on_result(res: ChatResult) -> None:
            job = by_req.pop(res.key, None)
            if job is None:
                return  # unknown or duplicate delivery: never double-count
            stats.tokens_in += res.tokens_in
            stats.tokens_out += res.tokens_out
            if res.extra.get("pending"):
                stats.pending += 1
                failures.append(_failure(job.need, job.need.key, str(res.error), None, job.attempts))
            elif res.error is not None:
                fail(job, res.error, res.text, job.attempts + res.attempts)
            else:
                job.attempts += 1
                try:
                    if res.finish_reason == "length":
                        raise OutputError(
                            f"truncated output (finish_reason=length at max_tokens={self.options.max_tokens})"
                        )
                    value = parse_and_validate(job.need, job.spec, res.text or "")
                except OutputError as e:
                    stats.invalid += 1
                    job.last_raw, job.last_error = res.text, str(e)
                    if job.attempts >= max_tries:
                        fail(job, str(e), res.text, job.attempts)
                    else:
                        retry.append(job)
                else:
                    cache.put(
                        job.fingerprint,
                        value,
                        need=job.need.key,
                        model=report.model,
                        record_id=job.need.record_id,
                        kind=job.need.kind,
                        raw=res.text,
                        tokens_in=res.tokens_in,
                        tokens_out=res.tokens_out,
                    )
                    results[job.need.key] = value
                    stats.done += 1
            progress.advance()

        cap = self.options.max_requests
        try:
            with progress:
                while queue:
                    items: list[tuple[_Job, int, str]] = []
                    for job in queue:
                        if cap is not None and stats.sent >= cap:
                            stats.pending += 1
                            msg = f"not sent: --max-requests {cap} reached"
                            failures.append(_failure(job.need, job.need.key, msg, None, 0))
                            continue
                        problem = self._precheck(job)
                        if problem is not None:
                            fail(job, f"prompt: {problem}", None, job.attempts)
                            continue
                        attempt = job.attempts + 1
                        key = _request_key(job, attempt)
                        by_req[key] = job
                        items.append((job, attempt, key))
                        stats.sent += 1
                    retry.clear()
                    if items:
                        backend = self._backend_for(out_dir)
                        report.model = backend.model_name
                        backend.run(_LazyRequests(self._request, items), on_result)
                        for key in list(by_req):  # a backend that skipped a request: report, never hang
                            fail(by_req.pop(key), "backend returned no result", None, 0)
                    queue = list(retry)
        finally:
            cache.close()
            self._write_quarantine(out, [f for f in failures if _quarantined(f)])
        report.requests_sent = stats.sent
        report.failed = stats.failed
        report.tokens_in = stats.tokens_in
        report.tokens_out = stats.tokens_out
        report.cost_usd = cost_usd(
            stats.tokens_in, stats.tokens_out, self.options.price_in_per_mtok, self.options.price_out_per_mtok
        )
        if self._backend is not None:
            report.pending_batch_files = list(getattr(self._backend, "pending_files", []))
        return GenerationOutcome(results=results, failures=failures, report=report)

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()

    def _write_quarantine(self, out: Path, failures: list[NeedFailure]) -> None:
        """This run's quarantine, replaced atomically (a rerun retries quarantined Needs, so old ones go)."""
        path = out / QUARANTINE_NAME
        if not failures and not path.exists():
            return
        out.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("wb") as f:
            for fl in failures:
                f.write(orjson.dumps(fl.model_dump()) + b"\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)


def _request_key(job: _Job, attempt: int) -> str:
    """First try: the fingerprint (the Batch API custom_id). Retries get their own id, so a provider's answer
    to an earlier try is never taken for a later one."""
    return job.fingerprint if attempt == 1 else f"{job.fingerprint}~{attempt}"


def _failure(need: Need, key: str, error: str, raw: str | None, attempts: int) -> NeedFailure:
    return NeedFailure(
        key=key,
        task=need.task,
        record_id=need.record_id,
        kind=need.kind,
        error=error,
        raw_output=raw,
        attempts=attempts,
    )


def _quarantined(f: NeedFailure) -> bool:
    """Pending batch answers and requests held back by --max-requests are not failures of the model."""
    return not (f.error.startswith("pending:") or f.error.startswith("not sent:"))
