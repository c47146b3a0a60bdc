"""Two `sefe asd build` processes on one output folder, against the real loopback server: the second refuses
at once naming the first one's pid, so every request is paid for once (counted server-side); a build whose
process was killed leaves a lock the next build takes over."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sefe.asd_gen.build import BuildOptions, plan
from sefe.asd_gen.cache import CACHE_NAME
from sefe.asd_gen.needs import GenerationOptions
from sefe.cli import app
from sefe.jsonl_store import JsonlStore
from sefe.lock import LOCK_NAME
from tests.helpers.chat_server import ChatServer
from tests.helpers.engine import openai_build_args

DATA = Path(__file__).resolve().parents[3] / "data" / "coin-mini"
pytestmark = pytest.mark.skipif(not (DATA / "annotations").is_dir(), reason="data/coin-mini not generated")
X = ["--x", "20"]


def _child(out: Path, url: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "sefe.cli", *openai_build_args(DATA, out, url), *X, "--concurrency", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def _cache_rows(out: Path) -> int:
    p = out / CACHE_NAME
    return sum(1 for _ in JsonlStore(p).rows()) if p.exists() else 0


def _wait_for_rows(child: subprocess.Popen[bytes], out: Path, n: int) -> None:
    deadline = time.monotonic() + 120
    while _cache_rows(out) < n:
        assert child.poll() is None, child.communicate()[0].decode()
        assert time.monotonic() < deadline
        time.sleep(0.02)


def _needed(out: Path, url: str) -> int:
    gen = GenerationOptions(backend="openai", base_url=url)
    return plan(BuildOptions(data_root=DATA, out=out, xs=[20], generation=gen)).estimate.requests


def test_two_builds_on_one_folder_pay_once(tmp_path: Path) -> None:
    out = tmp_path / "asd"
    srv = ChatServer(latency_s=0.05).start()
    try:
        needed = _needed(out, srv.base_url)
        first = _child(out, srv.base_url)
        _wait_for_rows(first, out, 1)  # the first build is sending
        srv.latency_s = 2.0  # ... and stays busy (2 requests per 2 s) until the second one has started
        second = _child(out, srv.base_url)
        shown = " ".join(second.communicate(timeout=120)[0].decode().split())
        srv.latency_s = 0.0
        assert second.returncode == 2, shown
        assert f"is in use by another sefe process (pid {first.pid}, sefe asd build" in shown
        assert "Traceback" not in shown
        assert first.wait(timeout=300) == 0, first.communicate()[0].decode()
        assert srv.count() == needed > 0  # not twice
        assert (out / "annotations" / "GQA" / "train_x20.json").is_file()
    finally:
        srv.stop()


def test_a_killed_builds_lock_is_taken_over(tmp_path: Path) -> None:
    out = tmp_path / "asd"
    srv = ChatServer(latency_s=0.05).start()
    try:
        needed = _needed(out, srv.base_url)
        child = _child(out, srv.base_url)
        _wait_for_rows(child, out, 2)
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        assert f"pid {child.pid}," in (out / LOCK_NAME).read_text()  # left behind, naming the dead holder
        args = ["asd", "build", "--data-root", str(DATA), "--out", str(out), "--backend", "openai"]
        res = CliRunner().invoke(app, [*args, "--base-url", srv.base_url, *X])
        assert res.exit_code == 0, res.output
        assert (out / "annotations" / "GQA" / "train_x20.json").is_file()
        assert srv.answers() and sum(srv.answers().values()) >= needed
    finally:
        srv.stop()
