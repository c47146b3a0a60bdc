"""The contract between rule-based ASD (styles, build) and the model-driven generation engine.

A `Need` is one request for model-written content about one record: distractors for the yes/no or MCQ
style, or explanations / region descriptions for the brief and detailed styles. Multi-turn records ask for
all their questions in one Need (the question-list form). The engine answers with a `NeedResult` per Need
key, or records a failure; the build then renders the styles from the results.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Literal, Protocol
from urllib.parse import urlsplit

import orjson
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from sefe.paths import InputDir

NeedKind = Literal["mcq", "yn", "brief", "detail"]
#: Where wrong options come from: the model writes them, or they are drawn from the task's own answers.
DistractorMode = Literal["model", "pool"]
#: The generation backends (`sefe asd build --backend`, `sefe eval judge --backend`).
BackendName = Literal["local", "openai", "vllm", "batch", "scene"]


class QAItem(BaseModel):
    """One question of a record, without its `<image>` token and without its instruction line."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    question: str
    answer: str  # the correct answer text; for Grounding the box string `[x1, y1, x2, y2]` (normalised)
    context: str | None = None  # ScienceQA `Context:` text, when present
    options: list[str] | None = None  # ScienceQA options text (without letters), when present


class Need(BaseModel):
    """A request for model-written content for one record in one target style."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    task: str  # task name from the registry, e.g. "GQA"
    record_id: str
    kind: NeedKind
    image: str | None = None  # path relative to the data root; None for text-only records
    items: list[QAItem] = Field(min_length=1)

    @property
    def key(self) -> str:
        """Stable identity of what is asked (not of how: prompts/model/sampling are added by the engine)."""
        payload = orjson.dumps(self.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)
        return hashlib.sha256(payload).hexdigest()[:32]


class NeedResult(BaseModel):
    """Validated model output for a Need: one entry per item, in item order."""

    model_config = ConfigDict(extra="forbid")

    distractors: list[list[str]] | None = None  # kind mcq: 3 per item; kind yn: 1 per item
    explanations: list[str] | None = None  # kind brief/detail: one text per item (Grounding: a description)


class NeedFailure(BaseModel):
    """A Need without an answer: quarantined after its retries (with what the model said), or left open
    (nobody answered; `error` says why)."""

    model_config = ConfigDict(extra="forbid")

    key: str
    task: str
    record_id: str
    kind: NeedKind
    error: str
    raw_output: str | None = None
    attempts: int = 0


def check_base_url(url: str) -> str:
    """An http(s) URL with a host; the OpenAI client would take `notaurl` and report a dead server."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - parses the port: 'http://h:x' raises here
    except ValueError as exc:
        raise ValueError(f"{url!r} is not a URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{url!r} is not an http(s) URL such as http://localhost:8000/v1")
    return url


#: An OpenAI-compatible endpoint (`--base-url`).
BaseURL = Annotated[str, AfterValidator(check_base_url)]
#: USD per million tokens: a finite amount, 0 or more.
Price = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class GenerationOptions(BaseModel):
    """Everything `sefe asd build` passes to the engine. No secrets here: API keys come from the env.

    The bounds are the CLI's too: `sefe asd build` checks each option against its field while parsing."""

    model_config = ConfigDict(extra="forbid")

    backend: BackendName = "local"
    model: str | None = None  # None: the backend's default (local: embedded SmolLM2-135M-Instruct)
    base_url: BaseURL | None = None
    concurrency: int = Field(16, ge=1)
    prompts_dir: str | None = None  # override templates, or a folder of official SEFE prompt files
    max_retries: int = Field(4, ge=0)
    request_timeout_s: float = Field(120.0, gt=0, allow_inf_nan=False)
    temperature: float = Field(0.0, ge=0, allow_inf_nan=False)
    max_tokens: int = Field(512, ge=1)
    max_requests: int | None = Field(None, ge=0)  # spend cap: stop sending new requests after this many
    strict: bool = False  # fail the build when any Need is quarantined
    price_in_per_mtok: Price | None = None
    price_out_per_mtok: Price | None = None
    batch_input_dir: InputDir | None = None  # batch backend: where the provider's output files are read from
    vllm_args: dict[str, object] = Field(default_factory=dict)  # tensor_parallel_size, data_parallel_size
    chunk_size: int = Field(256, ge=1)  # vllm/local: requests per flushed chunk
    # circuit breaker: stop sending after this many requests in a row got no answer (0: never stop early)
    max_consecutive_failures: int = Field(default=8, ge=0)


class Spend(BaseModel):
    """Answers paid for and their tokens: what a build used from its cache, over every run that filled it."""

    model_config = ConfigDict(extra="forbid")

    answers: int = 0  # answers stored in the cache that this build uses (new and earlier runs')
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float | None = None  # at this run's prices


class GenerationReport(BaseModel):
    """What the engine did, for the manifest: `requests_sent`, tokens and `cost_usd` count this invocation
    only (a resumed build pays only for what was missing); `cumulative` counts every answer this build
    uses from the cache, earlier invocations' included, so a resumed build's manifest shows the total."""

    model_config = ConfigDict(extra="forbid")

    backend: str
    model: str
    prompt_hashes: dict[str, str] = Field(default_factory=dict)  # template name -> sha256
    requests_sent: int = 0
    cached: int = 0
    failed: int = 0  # quarantined
    open: int = 0  # not answered (server down, pending, spend cap, interrupted): asked again by a rerun
    stopped: str | None = None  # why the circuit breaker stopped sending, if it did
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float | None = None
    pending_batch_files: list[str] = Field(default_factory=list)  # batch backend: written, not yet ingested
    cumulative: Spend = Field(default_factory=Spend)


class GenerationOutcome(BaseModel):
    results: dict[str, NeedResult] = Field(default_factory=dict)  # Need.key -> result
    failures: list[NeedFailure] = Field(default_factory=list)  # quarantined: invalid output, rejected request
    open: list[NeedFailure] = Field(default_factory=list)  # not answered: left for the next run
    report: GenerationReport


class Estimate(BaseModel):
    """What answering a list of Needs would take, without calling a model (for `sefe asd plan`)."""

    requests: int
    cached: int
    tokens_in: int
    tokens_out: int


class Generator(Protocol):
    """What the build calls; implemented by `sefe.asd_gen.engine.Engine(options, data_root)`."""

    def estimate(self, needs: list[Need], out_dir: str) -> Estimate:
        """Count requests (minus those already cached under out_dir) and estimated tokens; no model call."""
        ...

    def fulfil(self, needs: list[Need], out_dir: str) -> GenerationOutcome:
        """Answer every Need (cache first, then the backend); never raises for a single bad request.

        A Need neither in `results` nor in `failures` is open (listed in `open` with the reason, when known).
        """
        ...
