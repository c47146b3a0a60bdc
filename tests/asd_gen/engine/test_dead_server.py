"""`sefe asd build` against a model server that is down, dies in the middle, fails a share of requests, or
is interrupted: never a silent partial dataset, never long retries into a dead port, and a rerun of the same
command completes with outputs byte-identical to a run that never saw a fault.

The loopback server's answer depends only on the request, so identical outputs are a real check; every
answer it serves is counted, so "no answered request is sent again" is checked server-side.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from sefe.asd_gen.backends.base import BackendUnreachable
from sefe.asd_gen.backends.openai_backend import OpenAIBackend
from sefe.asd_gen.build import EXIT_INTERRUPTED, EXIT_OPEN
from sefe.asd_gen.cache import CACHE_NAME
from sefe.asd_gen.engine import Engine
from sefe.asd_gen.needs import GenerationOptions
from sefe.cli import app
from sefe.jsonl_store import JsonlStore
from tests.helpers.chat_server import ChatServer
from tests.helpers.engine import need, openai_build_args, openai_options

DATA = Path(__file__).resolve().parents[3] / "data" / "coin-mini"
pytestmark = pytest.mark.skipif(not (DATA / "annotations").is_dir(), reason="data/coin-mini not generated")
FAST = ["--max-retries", "1", "--request-timeout", "5"]  # SDK retries: one, so a dead server costs ~1 s


def _build(out: Path, url: str, *args: str) -> tuple[int, str]:
    res = CliRunner().invoke(app, [*openai_build_args(DATA, out, url), *args])
    return res.exit_code, " ".join(res.output.split())  # the console wraps at 80 columns


def _outputs(out: Path) -> dict[str, bytes]:
    return {p.parent.name: p.read_bytes() for p in sorted((out / "annotations").glob("*/train_x20.json"))}


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, bytes], Counter[str]]:
    """The outputs of a run that never saw a fault, and the answers it needed (per prompt)."""
    srv = ChatServer().start()
    try:
        out = tmp_path_factory.mktemp("ref") / "asd"
        code, shown = _build(out, srv.base_url)
        assert code == 0, shown
        return _outputs(out), Counter(srv.answers())
    finally:
        srv.stop()


def test_closed_port_fails_fast_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "asd"
    started = time.monotonic()
    code, shown = _build(out, f"http://127.0.0.1:{_closed_port()}/v1")
    elapsed = time.monotonic() - started  # reported, not asserted: timings are noisy here
    assert code == EXIT_OPEN, shown
    assert "cannot reach the model server" in shown and "Traceback" not in shown
    assert not list(out.rglob("train_x*.json")) and not list(out.rglob("asd_manifest_*.json"))
    assert not (out / CACHE_NAME).exists()
    print(f"closed port: exit {code} after {elapsed:.2f} s")


def test_a_model_the_server_does_not_serve_is_a_clear_error(tmp_path: Path, server: ChatServer) -> None:
    code, shown = _build(tmp_path / "asd", server.base_url, "--model", "no-such-model")
    assert code == 2 and "'no-such-model' is not served" in shown and "fake-chat-model" in shown
    assert server.count() == 0 and not list(tmp_path.rglob("train_x*.json"))


def test_engine_checks_before_the_first_request(tmp_path: Path) -> None:
    opts = GenerationOptions(backend="openai", base_url=f"http://127.0.0.1:{_closed_port()}/v1")
    with pytest.raises(BackendUnreachable, match="cannot reach"):
        Engine(opts, tmp_path, show_progress=False).fulfil([need("a")], str(tmp_path / "o"))


def test_circuit_breaker_stops_sending_to_a_dead_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once the breaker has opened, no request is sent: counted at the moment each request is sent.

    (How many requests are tried between the server's death and the breaker opening depends on how the four
    workers' failures interleave, so that number is reported, not bounded.)
    """
    sent_after_open: list[str] = []
    sent = 0
    real_one = OpenAIBackend._one

    async def counting_one(self: OpenAIBackend, client: Any, model: str, req: Any) -> Any:
        nonlocal sent
        sent += 1
        if self.stopping:
            sent_after_open.append(req.key)
        return await real_one(self, client, model, req)

    monkeypatch.setattr(OpenAIBackend, "_one", counting_one)
    srv = ChatServer(die_after=10).start()
    needs = [need(f"cb{i}") for i in range(80)]
    opts = openai_options(srv, concurrency=4, max_retries=0, max_consecutive_failures=4)
    res = Engine(opts, tmp_path, show_progress=False).fulfil(needs, str(tmp_path / "o"))
    assert len(res.results) == 10 and not res.failures and len(res.open) == 70  # never quarantined
    assert res.report.stopped and "4 requests in a row got no answer" in res.report.stopped
    assert sent_after_open == []
    reasons = Counter(f.error.split(":")[0] for f in res.open)
    assert reasons["not sent"] == 80 - sent > 0, (reasons, sent)  # the rest were never sent
    cached = [r for _, r in JsonlStore(tmp_path / "o" / CACHE_NAME).rows()]
    assert len(cached) == 10  # what was answered stays cached
    print(f"breaker: {sent - 10} requests tried after the server died, {80 - sent} never sent")


@pytest.mark.slow
def test_server_dies_mid_run_and_comes_back(
    tmp_path: Path, reference: tuple[dict[str, bytes], Counter[str]]
) -> None:
    ref, ref_answers = reference
    needed = sum(ref_answers.values())
    out = tmp_path / "asd"
    dying = ChatServer(die_after=needed // 2).start()
    code, shown = _build(out, dying.base_url, "--concurrency", "4", *FAST)
    assert code == EXIT_OPEN, shown
    assert "needs open" in shown and "Rerunning the same command resumes" in shown
    manifest = orjson.loads((out / "annotations" / "asd_manifest_x20.json").read_bytes())
    assert manifest["status"] == "incomplete"
    written = _outputs(out)
    for task, t in manifest["tasks"].items():
        assert (task in written) == (not t["open"]), task  # no file for a task with open needs
        if task in written:
            assert written[task] == ref[task]
    assert 0 < len(written) < len(ref)
    back = ChatServer(port=dying.port).start()
    try:
        code, shown = _build(out, back.base_url, "--concurrency", "4", *FAST)
        assert code == 0, shown
        assert _outputs(out) == ref  # byte-identical to the run that never saw a fault
        answers = Counter(dying.answers()) + Counter(back.answers())
        assert answers == ref_answers  # every answer served once, as in the run without a fault
        m = orjson.loads((out / "annotations" / "asd_manifest_x20.json").read_bytes())
        assert m["status"] == "complete" and all(t["status"] == "complete" for t in m["tasks"].values())
    finally:
        back.stop()


@pytest.mark.slow
def test_server_failing_a_share_with_500_completes_identically(
    tmp_path: Path, reference: tuple[dict[str, bytes], Counter[str]]
) -> None:
    ref, ref_answers = reference
    srv = ChatServer(fail_mod=3, fail_times=1).start()
    try:
        code, shown = _build(tmp_path / "asd", srv.base_url, "--max-retries", "2")
        assert code == 0, shown
        assert srv.count("500") > 0 and Counter(srv.answers()) == ref_answers
        assert _outputs(tmp_path / "asd") == ref
    finally:
        srv.stop()


CHILD = [sys.executable, "-m", "sefe.cli", "asd", "build", "--data-root", str(DATA), "--backend", "openai"]


def _cache_rows(out: Path) -> int:
    p = out / CACHE_NAME
    return sum(1 for _ in JsonlStore(p).rows()) if p.exists() else 0


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_mid_run_exits_130_and_resumes(
    tmp_path: Path, reference: tuple[dict[str, bytes], Counter[str]], sig: signal.Signals
) -> None:
    ref, ref_answers = reference
    needed = sum(ref_answers.values())
    out = tmp_path / "asd"
    slow = ChatServer(latency_s=0.1).start()
    try:
        args = ["--out", str(out), "--base-url", slow.base_url, "--concurrency", "2"]
        child = subprocess.Popen([*CHILD, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while _cache_rows(out) < 4:
            assert child.poll() is None, child.communicate()[0].decode()
            assert time.monotonic() < deadline
            time.sleep(0.02)
        os.kill(child.pid, sig)
        shown = " ".join(child.communicate(timeout=120)[0].decode().split())
        assert child.returncode == EXIT_INTERRUPTED, shown
        assert "rerun the same command to resume" in shown and "Traceback" not in shown
        assert not list(out.rglob("train_x*.json")) and not list(out.rglob("asd_manifest_*.json"))
        at_stop = _cache_rows(out)
        assert 4 <= at_stop < needed
        assert sum(slow.answers().values()) == at_stop  # every in-flight answer landed in the cache
    finally:
        slow.stop()
    srv = ChatServer().start()
    try:
        code, shown = _build(out, srv.base_url)
        assert code == 0, shown
        assert _outputs(out) == ref and srv.count() == needed - at_stop  # nothing answered is asked again
    finally:
        srv.stop()


@pytest.mark.slow
def test_second_ctrl_c_exits_at_once_and_keeps_the_cache(
    tmp_path: Path, reference: tuple[dict[str, bytes], Counter[str]]
) -> None:
    ref, ref_answers = reference
    needed = sum(ref_answers.values())
    out = tmp_path / "asd"
    slow = ChatServer(latency_s=0.3).start()
    try:
        args = [
            "--out",
            str(out),
            "--base-url",
            slow.base_url,
            "--concurrency",
            "1",
            "--request-timeout",
            "60",
        ]
        child = subprocess.Popen([*CHILD, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while _cache_rows(out) < 2:
            assert child.poll() is None, child.communicate()[0].decode()
            assert time.monotonic() < deadline
            time.sleep(0.02)
        slow.latency_s = 30.0  # the request in flight now would hold a graceful stop for 30 s
        time.sleep(0.5)
        os.kill(child.pid, signal.SIGINT)
        time.sleep(0.2)
        os.kill(child.pid, signal.SIGINT)
        shown = " ".join(child.communicate(timeout=25)[0].decode().split())  # before the in-flight answer
        assert child.returncode == EXIT_INTERRUPTED, shown
        assert not list(out.rglob("train_x*.json"))
        kept = _cache_rows(out)  # whole rows only; none lost
        assert kept >= 2
    finally:
        slow.latency_s = 0.0
        slow.stop()
    srv = ChatServer().start()
    try:
        code, shown = _build(out, srv.base_url)
        assert code == 0, shown
        assert _outputs(out) == ref and srv.count() == needed - kept
    finally:
        srv.stop()
