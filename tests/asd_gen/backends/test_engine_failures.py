"""In-process engines that fail: a crash or out-of-memory in the model is *not answered* (the request stays
open for the next run), a bad input is rejected alone (quarantined), and `request_stop()` ends a run between
batches. The local backend is the real embedded model with its generate step made to fail; vLLM is not
installed here, so its chunk logic runs against an object that raises what vLLM raises."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sefe.asd_gen.backends.base import ChatResult
from sefe.asd_gen.backends.vllm_backend import VllmBackend
from sefe.asd_gen.engine import QUARANTINE_NAME, Engine
from sefe.asd_gen.needs import GenerationOptions, Need, QAItem
from tests.helpers.backends import YN_ONE, collect, request


def _requests(n: int) -> list[Any]:
    return [
        request(f"r{i}", f"Question: What is item {i}? Correct answer: cup\nGive one wrong answer.", YN_ONE)
        for i in range(n)
    ]


@pytest.mark.slow
def test_local_model_crash_is_open_and_bad_input_is_rejected(
    embedded_backend: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def oom(lm: Any, batch: list[Any]) -> list[ChatResult]:
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(embedded_backend, "_generate", oom)
    got = collect(embedded_backend, _requests(3))
    assert len(got) == 3 and all(r.unanswered and "out of memory" in (r.error or "") for r in got.values())

    def bad_input(lm: Any, batch: list[Any]) -> list[ChatResult]:
        raise ValueError("image cannot be decoded")

    monkeypatch.setattr(embedded_backend, "_generate", bad_input)
    got = collect(embedded_backend, _requests(2))
    assert all(r.error and not r.unanswered for r in got.values())

    # request_stop() from the callback: the rest of the run is skipped (no result), nothing is lost
    monkeypatch.setattr(embedded_backend, "_generate", oom)
    seen: list[ChatResult] = []

    def on_result(res: ChatResult) -> None:
        seen.append(res)
        embedded_backend.request_stop()

    try:
        embedded_backend.run(_requests(4), on_result)
    finally:
        embedded_backend.reset_stop()
    assert len(seen) == 1


@pytest.mark.slow
def test_engine_keeps_a_crashed_local_model_open(
    embedded_backend: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def oom(lm: Any, batch: list[Any]) -> list[ChatResult]:
        raise RuntimeError("out of memory")

    monkeypatch.setattr(embedded_backend, "_generate", oom)
    needs = [
        Need(task="GQA", record_id=f"n{i}", kind="yn", items=[QAItem(question=f"What is {i}?", answer="cup")])
        for i in range(3)
    ]
    opts = GenerationOptions(backend="local", max_consecutive_failures=2)
    res = Engine(opts, tmp_path, show_progress=False, backend=embedded_backend).fulfil(
        needs, str(tmp_path / "o")
    )
    assert not res.results and not res.failures and len(res.open) == 3  # never quarantined
    assert res.report.stopped and not (tmp_path / "o" / QUARANTINE_NAME).exists()


class _DyingLLM:
    """Stands in for `vllm.LLM` (not installed here): `chat` raises what a dead or overfull engine raises."""

    def __init__(self, exc: Exception, bad_key: str | None = None) -> None:
        self.exc = exc
        self.bad_key = bad_key
        self.calls = 0

    def chat(self, conversations: list[Any], sampling_params: Any, use_tqdm: bool) -> list[Any]:
        self.calls += 1
        if self.bad_key is None or len(conversations) > 1 or self.bad_key in str(conversations):
            raise self.exc
        return []  # never reached in these tests


def test_vllm_dead_engine_leaves_the_chunk_open_and_bad_input_fails_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    backend = VllmBackend(GenerationOptions(backend="vllm", model="m", chunk_size=4))
    monkeypatch.setattr(backend, "_params", lambda r: None)
    dead = _DyingLLM(RuntimeError("EngineCore died unexpectedly"))
    results = backend._run_chunk(dead, _requests(4))
    assert dead.calls == 1  # not split: a dead engine is not retried request by request
    assert len(results) == 4 and all(r.unanswered and "engine failed" in (r.error or "") for r in results)
    bad = _DyingLLM(ValueError("prompt longer than max_model_len"), bad_key="item 0")
    results = backend._run_chunk(bad, _requests(1))
    assert len(results) == 1 and results[0].error and not results[0].unanswered  # rejected: quarantined
    assert "max_model_len" in results[0].error
