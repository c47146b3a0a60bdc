"""`sefe asd build` when the cache cannot be written (ENOSPC injected under the real JSONL store, against the
real loopback server, which counts every answer it serves): sending stops at once, answers in flight are held
in memory and their write retried, and the build exits 5 with one line naming the folder and the space
needed. Freed in time, nothing paid for is lost: the rerun sends exactly what was never answered."""

from __future__ import annotations

import errno
import os
import shlex
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from sefe.asd_gen.build import BuildOptions, plan
from sefe.asd_gen.cache import CACHE_NAME
from sefe.asd_gen.needs import GenerationOptions
from sefe.cli import app
from sefe.errors import DISK_FULL_EXIT
from sefe.jsonl_store import JsonlStore
from tests.helpers.chat_server import ChatServer
from tests.helpers.engine import openai_build_args

DATA = Path(__file__).resolve().parents[3] / "data" / "coin-mini"
pytestmark = pytest.mark.skipif(not (DATA / "annotations").is_dir(), reason="data/coin-mini not generated")
ROWS_THAT_FIT = 10
CONCURRENCY = 4


class FullDisk:
    """The cache file's writes fail with ENOSPC after `fit` rows, until `free()` is called."""

    def __init__(self, fit: int) -> None:
        self.fit = fit
        self.full = True
        self.refused = 0

    def free(self) -> None:
        self.full = False


class _File:
    def __init__(self, fh: Any, disk: FullDisk) -> None:
        self._fh, self._disk = fh, disk

    def write(self, data: Any) -> int:
        if self._disk.full and self._disk.fit <= 0:
            self._disk.refused += 1
            raise OSError(errno.ENOSPC, "No space left on device")
        self._disk.fit -= bytes(data).count(b"\n")
        return int(self._fh.write(data))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fh, name)


@pytest.fixture
def disk(monkeypatch: pytest.MonkeyPatch) -> FullDisk:
    state = FullDisk(ROWS_THAT_FIT)
    real_open = JsonlStore._open

    def open_cache(self: JsonlStore) -> Any:
        fh = real_open(self)
        if self.path.name != CACHE_NAME or isinstance(fh, _File):
            return fh
        self._fh = _File(fh, state)
        return self._fh

    monkeypatch.setattr(JsonlStore, "_open", open_cache)
    return state


def _build(out: Path, url: str) -> tuple[int, str]:
    args = ["asd", "build", "--data-root", str(DATA), "--out", str(out), "--x", "20", "--backend", "openai"]
    res = CliRunner().invoke(app, [*args, "--base-url", url, "--concurrency", str(CONCURRENCY)])
    return res.exit_code, res.output


def _rows(out: Path) -> int:
    return sum(1 for _ in JsonlStore(out / CACHE_NAME).rows())


def _needed(out: Path, url: str) -> int:
    gen = GenerationOptions(backend="openai", base_url=url)
    return plan(BuildOptions(data_root=DATA, out=out, xs=[20], generation=gen)).estimate.requests


def test_a_full_disk_stops_sending_at_once_and_exits_5(
    tmp_path: Path, disk: FullDisk, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEFE_DISK_RETRY_S", "0.3")
    out = tmp_path / "asd"
    srv = ChatServer(latency_s=0.05).start()
    try:
        needed = _needed(out, srv.base_url)
        code, shown = _build(out, srv.base_url)
        answered = srv.count()
    finally:
        srv.stop()
    assert code == DISK_FULL_EXIT == 5, shown
    last = shown.strip().splitlines()[-1]
    assert last.startswith(f"error: {out}: no space left to write {CACHE_NAME}") and "Traceback" not in shown
    assert "more free space is needed there" in last and "could not be stored" in last
    assert _rows(out) == ROWS_THAT_FIT  # whole rows only: the failed write was cut off again
    # sending stopped at once: beyond the rows that fit, only what was already in flight was answered
    assert answered <= ROWS_THAT_FIT + CONCURRENCY + 1 < needed
    assert not list(out.rglob("train_x*.json"))


def test_space_freed_while_retrying_loses_no_paid_answer(
    tmp_path: Path, disk: FullDisk, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEFE_DISK_RETRY_S", "30")
    out = tmp_path / "asd"
    srv = ChatServer(latency_s=0.05).start()
    try:
        needed = _needed(out, srv.base_url)
        timer = threading.Timer(1.0, disk.free)  # someone frees space while the build retries
        timer.start()
        code, shown = _build(out, srv.base_url)
        timer.cancel()
        first = srv.count()
        assert code == DISK_FULL_EXIT, shown
        assert "every answer paid for is stored" in shown and disk.refused >= 1
        assert _rows(out) == first < needed  # each answer served is in the cache
        code, shown = _build(out, srv.base_url)  # rerun after freeing space
        assert code == 0, shown
        assert srv.count() == needed  # the rerun asked only what was never answered
    finally:
        srv.stop()


def _can_mount_tmpfs() -> bool:
    try:
        probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


@pytest.mark.skipif(not _can_mount_tmpfs(), reason="no user namespaces here to mount a private tmpfs")
def test_a_real_small_tmpfs_fills_up(tmp_path: Path) -> None:
    """The build's --out is a 24 KiB tmpfs (mounted in a private mount namespace): the real ENOSPC."""
    out, copy = tmp_path / "small", tmp_path / "cache_copy.jsonl"
    out.mkdir()
    srv = ChatServer(latency_s=0.05).start()
    try:
        needed = _needed(tmp_path / "probe", srv.base_url)
        build = [sys.executable, "-m", "sefe.cli", *openai_build_args(DATA, out, srv.base_url)]
        build += ["--x", "20", "--concurrency", str(CONCURRENCY)]
        script = (
            f"mount -t tmpfs -o size=24k tmpfs {shlex.quote(str(out))} || exit 97\n"
            f"{shlex.join(build)}\nrc=$?\n"
            f"cp {shlex.quote(str(out / CACHE_NAME))} {shlex.quote(str(copy))}\nexit $rc\n"
        )
        env = {**os.environ, "SEFE_DISK_RETRY_S": "0.5", "COLUMNS": "400"}
        done = subprocess.run(
            ["unshare", "-rm", "sh", "-c", script], capture_output=True, env=env, timeout=300
        )
        answered = srv.count()
    finally:
        srv.stop()
    shown = done.stdout.decode() + done.stderr.decode()
    assert done.returncode == DISK_FULL_EXIT, shown
    rows = _rows_of(copy)
    last = shown.strip().splitlines()[-1]
    assert last.startswith(f"error: {out}: no space left to write {CACHE_NAME}") and "Traceback" not in shown
    assert f"{answered - rows} of {answered} new answers paid for could not be stored" in last
    assert 0 < rows < answered <= rows + CONCURRENCY + 1 < needed  # sending stopped at once


def _rows_of(path: Path) -> int:
    return sum(1 for _ in JsonlStore(path).rows())
