"""The engine with the `openai` backend against a real HTTP server on loopback, faults injected.

Every test asserts the exact number of requests the server received.
"""

from __future__ import annotations

import hashlib
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from PIL import Image
from rich.console import Console

from sefe.asd_gen import cache as cache_mod
from sefe.asd_gen import tokens
from sefe.asd_gen.engine import QUARANTINE_NAME, Engine
from sefe.asd_gen.needs import Need
from sefe.asd_gen.prompt_templates import PromptSet
from tests.helpers import child_env
from tests.helpers.chat_server import ChatServer
from tests.helpers.engine import need, openai_options


def prompt_hash(nd: Need) -> str:
    """What the server logs for a Need's request: sha256 of the rendered user text."""
    return hashlib.sha256(PromptSet().render(nd)[2].encode()).hexdigest()[:16]


def cache_rows(out: Path) -> list[dict]:
    p = out / cache_mod.CACHE_NAME
    return [orjson.loads(x) for x in p.read_bytes().splitlines() if x.strip()] if p.exists() else []


def test_answers_cache_and_rerun_sends_nothing(tmp_path: Path, server: ChatServer) -> None:
    needs = [
        need("a", "mcq"),
        need("b", "yn", 3),
        need("c", "brief"),
        need("d", "detail", 2),
        need("a", "mcq"),
    ]
    opts = openai_options(server, price_in_per_mtok=2.0, price_out_per_mtok=8.0)
    out = Engine(opts, tmp_path, show_progress=False).fulfil(needs, str(tmp_path / "o"))
    assert server.count() == 4  # the duplicate Need is asked once
    assert not out.failures and len(out.results) == 4
    assert [len(d) for d in out.results[needs[1].key].distractors or []] == [1, 1, 1]
    assert len(out.results[needs[3].key].explanations or []) == 2
    r = out.report
    assert r.model == "fake-chat-model" and r.requests_sent == 4 and r.cached == 0 and r.failed == 0
    assert r.tokens_in > 0 and r.tokens_out > 0
    assert r.cost_usd == pytest.approx(r.tokens_in * 2.0 / 1e6 + r.tokens_out * 8.0 / 1e6)
    assert len(r.prompt_hashes) == 4 and len(cache_rows(tmp_path / "o")) == 4
    hit = server.hits[0]
    assert {"messages", "model", "response_format", "temperature", "max_completion_tokens"} <= set(
        hit.body_keys
    )
    again = Engine(opts, tmp_path, show_progress=False).fulfil(needs, str(tmp_path / "o"))
    assert server.count() == 4 and again.report.requests_sent == 0 and again.report.cached == 4
    assert again.report.model == "fake-chat-model"  # from the cache: no server call just to name it
    assert again.results == out.results


def test_faults_retries_and_quarantine(tmp_path: Path, server: ChatServer) -> None:
    faults = {
        "429": ("[[fault:429:1]]", 2),
        "500": ("[[fault:500:2]]", 3),
        "timeout": ("[[fault:timeout:1]]", 2),
        "drop": ("[[fault:drop:1]]", 2),
        "malformed": ("[[fault:malformed:1]]", 2),
        "truncated": ("[[fault:truncated:1]]", 2),
        "invalid": ("[[fault:invalid:1]]", 2),
        "always_invalid": ("[[fault:invalid:99]]", 3),
        "always_500": ("[[fault:500:99]]", 3),
        "ok": ("", 1),
    }
    needs = {name: need(name, "mcq", tag=tag) for name, (tag, _) in faults.items()}
    opts = openai_options(server, concurrency=16, max_retries=2, request_timeout_s=1.0)
    out = Engine(opts, tmp_path, show_progress=False).fulfil(list(needs.values()), str(tmp_path / "o"))
    per_prompt = server.per_prompt()
    for name, (_, expected) in faults.items():
        assert per_prompt[prompt_hash(needs[name])] == expected, name
    assert server.count() == sum(e for _, e in faults.values())
    # the 429 retry waited for retry-after (1 s)
    t429 = [h.t for h in server.hits if h.prompt == prompt_hash(needs["429"])]
    assert t429[1] - t429[0] >= 0.9
    failed = {f.record_id: f for f in out.failures}
    assert set(failed) == {"always_invalid"}  # invalid output after its tries: quarantined
    assert [(f.record_id, f.error[:8]) for f in out.open] == [
        ("always_500", "HTTP 500")
    ]  # not answered: open
    assert set(out.results) == {needs[n].key for n in faults if n not in ("always_invalid", "always_500")}
    assert "duplicate" in failed["always_invalid"].error and failed["always_invalid"].attempts == 3
    assert failed["always_invalid"].raw_output and "candidate" in failed["always_invalid"].raw_output
    q = [orjson.loads(x) for x in (tmp_path / "o" / QUARANTINE_NAME).read_bytes().splitlines()]
    assert [r["record_id"] for r in q] == ["always_invalid"] and q[0]["error"]
    # engine sends: 10 first tries + retries of malformed, truncated, invalid (1 each), always_invalid (2)
    assert out.report.requests_sent == 15 and out.report.failed == 1 and out.report.open == 1
    # a rerun asks the quarantined and the open Need again, and the quarantine is rewritten
    before = server.count()
    Engine(opts, tmp_path, show_progress=False).fulfil(list(needs.values()), str(tmp_path / "o"))
    assert server.count() - before == 3 + 3  # each gets its full tries again
    q2 = [orjson.loads(x) for x in (tmp_path / "o" / QUARANTINE_NAME).read_bytes().splitlines()]
    assert [r["record_id"] for r in q2] == ["always_invalid"]


def test_exception_after_n_results_then_rerun(tmp_path: Path, server: ChatServer, monkeypatch) -> None:
    needs = [need(f"r{i}", "yn") for i in range(10)]
    real_put = cache_mod.ResultCache.put
    calls = {"n": 0}

    def failing_put(self, key, result, **meta):  # type: ignore[no-untyped-def]
        if calls["n"] == 5:
            raise RuntimeError("injected crash")
        calls["n"] += 1
        real_put(self, key, result, **meta)

    monkeypatch.setattr(cache_mod.ResultCache, "put", failing_put)
    opts = openai_options(server, concurrency=1)
    with pytest.raises(RuntimeError, match="injected crash"):
        Engine(opts, tmp_path, show_progress=False).fulfil(needs, str(tmp_path / "o"))
    assert server.count() == 6 and len(cache_rows(tmp_path / "o")) == 5
    monkeypatch.setattr(cache_mod.ResultCache, "put", real_put)
    out = Engine(opts, tmp_path, show_progress=False).fulfil(needs, str(tmp_path / "o"))
    assert len(out.results) == 10 and out.report.cached == 5 and out.report.requests_sent == 5
    assert server.count() == 11  # only the 6th (in flight at the crash) is asked twice
    counts = server.per_prompt()
    assert [counts[prompt_hash(n)] for n in needs] == [1, 1, 1, 1, 1, 2, 1, 1, 1, 1]


CHILD = """
from tests.helpers.engine import need
from sefe.asd_gen.engine import Engine
from sefe.asd_gen.needs import GenerationOptions
opts = GenerationOptions(backend="openai", base_url={url!r}, concurrency=4)
Engine(opts, {root!r}, show_progress=False).fulfil([need(f"k{{i}}", "mcq") for i in range({n})], {out!r})
"""


@pytest.mark.slow
def test_sigkill_mid_build_then_rerun_never_repeats_finished_work(tmp_path: Path) -> None:
    srv = ChatServer(latency_s=0.05).start()
    try:
        n, out = 40, tmp_path / "o"
        code = CHILD.format(url=srv.base_url, root=str(tmp_path), n=n, out=str(out))
        child = subprocess.Popen([sys.executable, "-c", code], env=child_env())
        deadline = time.monotonic() + 60
        while len(cache_rows(out)) < 8:
            assert child.poll() is None, "child finished before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.02)
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        time.sleep(0.3)  # let in-flight handlers finish so the server log is final
        done_at_kill = {r["record_id"] for r in cache_rows(out)}
        sent_at_kill = srv.count()
        assert 8 <= len(done_at_kill) < n
        needs = [need(f"k{i}", "mcq") for i in range(n)]
        res = Engine(openai_options(srv), tmp_path, show_progress=False).fulfil(needs, str(out))
        assert len(res.results) == n and not res.failures
        counts = srv.per_prompt()
        for nd in needs:
            if nd.record_id in done_at_kill:
                assert counts[prompt_hash(nd)] == 1, nd.record_id
        lost = sent_at_kill - len(done_at_kill)  # answered by the server, killed before being stored
        assert 0 <= lost <= 4
        assert srv.count() == n + lost
        assert res.report.requests_sent == n - len(done_at_kill)
        Engine(openai_options(srv), tmp_path, show_progress=False).fulfil(needs, str(out))
        assert srv.count() == n + lost
    finally:
        srv.stop()


def test_max_requests_caps_spend_without_quarantine(tmp_path: Path, server: ChatServer) -> None:
    needs = [need(f"m{i}", "yn") for i in range(5)]
    out = Engine(openai_options(server, max_requests=3, concurrency=1), tmp_path, show_progress=False).fulfil(
        needs, str(tmp_path / "o")
    )
    assert server.count() == 3 and len(out.results) == 3
    assert [f.error for f in out.open] == ["not sent: --max-requests 3 reached"] * 2 and not out.failures
    assert not (tmp_path / "o" / QUARANTINE_NAME).exists()
    Engine(openai_options(server), tmp_path, show_progress=False).fulfil(needs, str(tmp_path / "o"))
    assert server.count() == 5


def test_images_go_as_data_urls_and_missing_images_fail_cleanly(tmp_path: Path, server: ChatServer) -> None:
    (tmp_path / "GQA").mkdir()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(tmp_path / "GQA" / "a.png")
    ok = Need(task="GQA", record_id="img", kind="yn", image="GQA/a.png", items=need("x").items)
    missing = Need(task="GQA", record_id="gone", kind="yn", image="GQA/none.png", items=need("y").items)
    out = Engine(openai_options(server), tmp_path, show_progress=False).fulfil(
        [ok, missing], str(tmp_path / "o")
    )
    assert server.count() == 1 and server.hits[0].images[0].startswith("data:image/png;base64,")
    assert ok.key in out.results
    assert [f.record_id for f in out.failures] == ["gone"] and "not found" in out.failures[0].error


def test_key_is_sent_but_never_stored_or_printed(tmp_path: Path, server: ChatServer, monkeypatch) -> None:
    secret = "sk-test-SECRET-1234567890"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=200)
    out = Engine(openai_options(server), tmp_path, console=console).fulfil([need("s")], str(tmp_path / "o"))
    assert server.auth_headers == {f"Bearer {secret}"}
    shown = buf.getvalue()
    assert "req/s" in shown and "tok in" in shown and "1/1" in shown  # the rich progress line
    for text in [
        shown,
        out.model_dump_json(),
        *(p.read_text() for p in (tmp_path / "o").rglob("*") if p.is_file()),
    ]:
        assert secret not in text


def test_estimate_counts_cached_and_tokens(tmp_path: Path, server: ChatServer) -> None:
    needs = [need("e1", "mcq", 2), need("e2", "detail")]
    eng = Engine(openai_options(server), tmp_path, show_progress=False)
    est = eng.estimate(needs, str(tmp_path / "o"))
    assert est.requests == 2 and est.cached == 0 and est.tokens_in > 50
    assert est.tokens_out == tokens.tokens_out(needs[0]) + tokens.tokens_out(needs[1]) == 8 + 70 + 8 + 95
    eng.fulfil(needs[:1], str(tmp_path / "o"))
    est = eng.estimate(needs, str(tmp_path / "o"))
    assert (est.requests, est.cached) == (1, 1) and server.count() == 1
