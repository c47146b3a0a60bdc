"""The `vllm` backend with the real offline engine: chunked `LLM.chat`, every chunk's results handed over
before the next chunk starts, structured outputs always valid JSON, and `sefe asd build --backend vllm`."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("vllm", reason="vllm is not installed here: run `make test-vllm`")

import jsonschema

from sefe.asd_gen.backends.base import ChatResult
from sefe.asd_gen.needs import GenerationOptions
from tests.helpers.backends import MCQ_TWO_QUESTIONS, YN_ONE, request
from tests.helpers.vllm_helpers import COIN_MINI, sefe_exe

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(900)]


def test_chunks_are_flushed_before_the_next_chunk(tiny_model: Path, vllm_env: dict[str, str]) -> None:
    from sefe.asd_gen.backends.vllm_backend import VllmBackend

    backend = VllmBackend(GenerationOptions(backend="vllm", model=str(tiny_model), chunk_size=2))
    events: list[tuple[str, Any]] = []
    llm = backend._engine()
    real_chat = llm.chat

    def spy_chat(conversations: list[Any], **kw: Any) -> Any:
        events.append(("chat", len(conversations)))
        return real_chat(conversations, **kw)

    llm.chat = spy_chat
    schemas = {f"k{i}": (MCQ_TWO_QUESTIONS if i % 2 else YN_ONE) for i in range(5)}
    text = "What colour is the bus?"
    reqs = [request(k, text, s, max_tokens=160) for k, s in schemas.items()]
    # an image part: the text-only model must get the question without it
    reqs[0] = request("k0", text, YN_ONE, max_tokens=160, image_url="data:image/png;base64,AA")
    results: list[ChatResult] = []

    def on_result(r: ChatResult) -> None:
        events.append(("result", r.key))
        results.append(r)

    try:
        backend.run(reqs, on_result)
    finally:
        backend.close()
    kinds = [e[0] if e[0] == "result" else f"chat{e[1]}" for e in events]
    assert kinds == ["chat2", "result", "result", "chat2", "result", "result", "chat1", "result"]
    assert sorted(r.key for r in results) == sorted(schemas)
    for r in results:
        assert r.error is None, r.error
        assert r.finish_reason == "stop", r.text
        jsonschema.validate(json.loads(r.text or ""), schemas[r.key])
        assert r.tokens_in > 0 and r.tokens_out > 0


def _build(out: Path, model: Path, env: dict[str, str]) -> dict[str, Any]:
    cmd = [
        sefe_exe(), "asd", "build", "--x", "20", "--backend", "vllm", "--model", str(model),
        "--data-root", str(COIN_MINI), "--tasks", "ScienceQA,TextVQA", "--out", str(out),
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((out / "annotations" / "asd_manifest_x20.json").read_text())


def test_asd_build_with_offline_vllm(tiny_model: Path, vllm_env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "asd"
    first = _build(out, tiny_model, vllm_env)
    assert first["backend"] == "vllm" and first["model"] == str(tiny_model)
    assert first["generation"]["requests_sent"] > 0
    for task in ("ScienceQA", "TextVQA"):
        source = json.loads((COIN_MINI / "annotations" / task / "train.json").read_text())
        built = json.loads((out / "annotations" / task / "train_x20.json").read_text())
        assert len(built) == len(source)
        assert [r["id"] for r in built] == [r["id"] for r in source]
        assert sum(first["tasks"][task]["converted"].values()) > 0
    answered = sum(1 for line in (out / "asd_cache.jsonl").read_text().splitlines() if line.strip())
    assert answered > 0
    tasks = ("ScienceQA", "TextVQA")
    before = {t: json.loads((out / "annotations" / t / "train_x20.json").read_text()) for t in tasks}

    second = _build(out, tiny_model, vllm_env)  # rerun: everything answered comes from the cache
    assert second["generation"]["cached"] >= answered
    # only what was quarantined is asked again (and may now succeed): every other record is unchanged
    retried = {q["record_id"] for q in first["quarantined"]}
    for t, records in before.items():
        after = json.loads((out / "annotations" / t / "train_x20.json").read_text())
        for old, new in zip(records, after, strict=True):
            if old["id"] not in retried:
                assert new == old
