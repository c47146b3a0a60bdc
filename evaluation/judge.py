"""Knowledge capability: an LLM judge rates each answer 0-10 against the ground truth (CoIN's optional score).

score = sum of ratings / (10 N) x 100 over the N judged answers. The judge sees the question without its
instruction line (CoIN treats the last line as the instruction), the gt answer and the model's answer, and
must reply with `{"score": n}` under a strict JSON schema. Requests go through the ASD generation backends
(`asd_gen/backends`), so any OpenAI-compatible server, vLLM or the embedded local model can judge.
Ratings are appended to a cache file (`sefe.jsonl_store`) as they arrive: a rerun only asks for what is
missing. The same rules as ASD generation: the backend is checked before the first request, a request
nobody answered (server down, timeout, 5xx after retries, crashed engine) is *open*, not a failure, and no
score is given while any is open (`JudgeResult.open`; the CLI exits 4, rerunning resumes); a circuit breaker
stops sending to a dead server, and Ctrl-C / SIGTERM lets in-flight ratings land, then raises
`RunInterrupted`.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from pathlib import Path
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

from sefe.asd_gen.backends.guard import DEFAULT_BREAKER_THRESHOLD, RESUME_HINT, RunGuard, RunInterrupted
from sefe.coin.layout import root_of_annotations
from sefe.coin.records import TestField
from sefe.evaluation.loading import ScoringError, load_predictions, load_test_records
from sefe.evaluation.scorers import canonical_task
from sefe.jsonl_store import JsonlStore

#: Backends a judge can run on (the ASD backends that answer at once; batch does not).
JudgeBackend = Literal["openai", "vllm", "local"]
#: The judge's backend unless told otherwise: an OpenAI-compatible server hosting the judge model.
DEFAULT_JUDGE_BACKEND: JudgeBackend = "openai"

# the published judge: Qwen1.5-32B-Chat, temperature 0.7, top_p 0.8, at most 20 new tokens
JUDGE_TEMPERATURE = 0.7
JUDGE_MAX_TOKENS = 20
JUDGE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"score": {"type": "integer", "minimum": 0, "maximum": 10}},
    "required": ["score"],
    "additionalProperties": False,
}
JUDGE_FIELDS: tuple[TestField, ...] = ("text",)  # the question the judge is shown
SYSTEM_PROMPT = (
    "You grade answers to questions about images. Compare the model's answer with the reference answer "
    "and rate its correctness from 0 (wrong) to 10 (fully correct). Judge the meaning, not the wording "
    'or the length. Reply with JSON only: {"score": <integer 0-10>}.'
)
_SCORE_IN_TEXT = re.compile(r'"?score"?\s*[:=]\s*(\d+)')


class JudgeItem(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    question_id: str
    question: str
    gt: str
    answer: str


class JudgeResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    task: str
    judge_model: str
    score: float | None  # percent over the judged answers; None while ratings are open
    rating_sum: int
    judged: int
    failed: int  # answers the judge gave no usable rating for (not in the score; listed in failures)
    missing: int  # test records with no prediction (not judged)
    open: int = 0  # requests nobody answered (server down, ...): rerun to finish; no score until then
    open_reasons: dict[str, int] = Field(default_factory=dict)  # why -> count
    stopped: str | None = None  # why the circuit breaker stopped sending, if it did
    failures: list[dict[str, str]] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)


def question_without_instruction(text: str) -> str:
    """Drop the `<image>` token and, for multi-line text, the last line (the response-format instruction)."""
    lines = text.replace("<image>", "").strip().split("\n")
    if len(lines) > 1:
        lines = lines[:-1]
    return "\n".join(lines).strip()


def judge_messages(item: JudgeItem) -> list[dict[str, Any]]:
    user = f"Question: {item.question}\nReference answer: {item.gt}\nModel answer: {item.answer}"
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def parse_rating(text: str | None) -> int | None:
    """`{"score": n}`, or a lenient `score: n` / bare integer from servers without structured output."""
    if text is None:
        return None
    value: Any = None
    try:
        obj = orjson.loads(text)
        value = obj.get("score") if isinstance(obj, dict) else obj
    except orjson.JSONDecodeError:
        m = _SCORE_IN_TEXT.search(text) or re.fullmatch(r"\s*(\d+)\s*", text)
        value = int(m.group(1)) if m else None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 10:
        return None
    return value


def build_items(predictions: Path, annotations: Path) -> tuple[list[JudgeItem], int]:
    """Join predictions to test records by id; also returns how many test records lack a prediction."""
    preds = load_predictions(predictions)
    records = {r.qid: r for r in load_test_records(annotations, require=JUDGE_FIELDS)}
    items: list[JudgeItem] = []
    for p in preds:
        rec = records.get(p.qid)
        if rec is None:
            raise ScoringError(
                f"{predictions} line {p.line}: question_id {p.question_id!r} is not in {annotations}"
            )
        gt = rec.answer if rec.answer is not None else rec.answer_bbox
        if gt is None:
            raise ScoringError(
                f"{annotations} record {rec.index} (question_id {rec.qid!r}): missing field 'answer'"
            )
        items.append(
            JudgeItem(
                question_id=p.qid, question=question_without_instruction(rec.text or ""), gt=gt, answer=p.text
            )
        )
    seen = {i.question_id for i in items}
    return items, sum(1 for q in records if q not in seen)


def request_key(model: str, messages: list[dict[str, Any]], temperature: float, max_tokens: int) -> str:
    payload = orjson.dumps(
        {"model": model, "messages": messages, "schema": JUDGE_SCHEMA, "t": temperature, "max": max_tokens},
        option=orjson.OPT_SORT_KEYS,
    )
    return hashlib.sha256(payload).hexdigest()[:32]


def _read_cache(path: Path) -> dict[str, dict[str, Any]]:
    return {row["key"]: row for _, row in JsonlStore(path).rows() if row.get("rating") is not None}


def _requests(
    items: list[JudgeItem], model: str, temperature: float, max_tokens: int, cache: dict[str, Any]
) -> tuple[dict[str, JudgeItem], list[Any]]:
    """Request key -> item for every item, and the requests of those not rated yet."""
    from sefe.asd_gen.backends.base import ChatRequest

    by_key: dict[str, JudgeItem] = {}
    requests: list[ChatRequest] = []
    for item in items:
        messages = judge_messages(item)
        key = request_key(model, messages, temperature, max_tokens)
        by_key[key] = item
        if key not in cache:
            requests.append(
                ChatRequest(
                    key=key,
                    messages=messages,
                    json_schema=JUDGE_SCHEMA,
                    schema_name="judge_score",
                    max_tokens=max_tokens,
                    temperature=temperature,
                )
            )
    return by_key, requests


def run_judge(
    task: str,
    predictions: Path,
    annotations: Path,
    backend: Any,
    cache_path: Path,
    temperature: float = JUDGE_TEMPERATURE,
    max_tokens: int = JUDGE_MAX_TOKENS,
    max_consecutive_failures: int = DEFAULT_BREAKER_THRESHOLD,
) -> JudgeResult:
    """Rate every prediction with `backend` (an asd_gen `Backend`), resuming from `cache_path`."""
    from rich.progress import Progress

    from sefe.asd_gen.backends.base import ChatResult

    name = canonical_task(task, root_of_annotations(Path(annotations)))
    items, missing = build_items(Path(predictions), Path(annotations))
    cache_path = Path(cache_path)
    cache = _read_cache(cache_path)
    model = backend.model_name
    by_key, requests = _requests(items, model, temperature, max_tokens, cache)
    if requests:
        backend.check()  # before the first request: a dead server or an unserved model fails here
    errors: dict[str, str] = {}
    unanswered: dict[str, str] = {}
    guard = RunGuard(max_consecutive_failures)
    with JsonlStore(cache_path) as store, guard, Progress(transient=True) as progress:
        bar = progress.add_task(f"judging {name}", total=len(requests))

        def on_result(res: ChatResult) -> None:
            guard.observe(res)
            if res.error is not None and res.unanswered:
                unanswered[res.key] = res.error
            else:
                rating = parse_rating(res.text) if res.error is None else None
                if rating is None:
                    errors[res.key] = res.error or f"no 0-10 rating in {res.text!r}"
                else:
                    entry = {
                        "key": res.key,
                        "question_id": by_key[res.key].question_id,
                        "rating": rating,
                        "raw": res.text,
                    }
                    cache[res.key] = entry
                    store.append(entry)
            progress.advance(bar)

        if requests:
            guard.attach(backend)
            backend.run(requests, on_result)
    if guard.interrupted:
        raise RunInterrupted(f"{guard.stop_reason}: ratings received so far are cached; {RESUME_HINT}")
    return _result(name, model, by_key, cache, errors, unanswered, missing, guard.tripped)


def _result(
    name: str,
    model: str,
    by_key: dict[str, JudgeItem],
    cache: dict[str, dict[str, Any]],
    errors: dict[str, str],
    unanswered: dict[str, str],
    missing: int,
    stopped: str | None,
) -> JudgeResult:
    ratings = [cache[k]["rating"] for k in by_key if k in cache]
    open_keys = [k for k in by_key if k not in cache and k not in errors]  # not answered, or not sent
    reasons = Counter(
        unanswered.get(k, f"not sent: {stopped}" if stopped else "no answer").split(":")[0] for k in open_keys
    )
    failures = [{"question_id": by_key[k].question_id, "error": errors[k]} for k in by_key if k in errors]
    notes = [f"{len(failures)} answer(s) got no usable rating and are not in the score"] if failures else []
    if missing:
        notes.append(f"{missing} test record(s) have no prediction and were not judged")
    if open_keys:
        notes.append(f"{len(open_keys)} rating request(s) got no answer: no score yet; {RESUME_HINT}")
    total = sum(ratings)
    return JudgeResult(
        task=name,
        judge_model=model,
        score=100.0 * total / (10 * len(ratings)) if ratings and not open_keys else None,
        rating_sum=total,
        judged=len(ratings),
        failed=len(failures),
        missing=missing,
        open=len(open_keys),
        open_reasons=dict(sorted(reasons.items())),
        stopped=stopped,
        failures=failures,
        notes=notes,
    )
