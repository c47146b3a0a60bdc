"""A resumed `sefe asd build` records both what this invocation paid and the cumulative total from the cache
(the real loopback server dies mid-build, then a new one serves the rerun; both count what they answer)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from sefe.asd_gen.cache import CACHE_NAME
from sefe.cli import app
from sefe.jsonl_store import JsonlStore
from tests.helpers.chat_server import ChatServer

DATA = Path(__file__).resolve().parents[3] / "data" / "coin-mini"
pytestmark = pytest.mark.skipif(not (DATA / "annotations").is_dir(), reason="data/coin-mini not generated")
PRICES = ["--price-in", "2", "--price-out", "8"]


def _build(out: Path, url: str) -> int:
    args = ["asd", "build", "--data-root", str(DATA), "--out", str(out), "--x", "20", "--backend", "openai"]
    fast = ["--max-retries", "1", "--request-timeout", "5", "--concurrency", "1"]
    return CliRunner().invoke(app, [*args, "--base-url", url, *fast, *PRICES]).exit_code


def test_manifest_after_a_resume_counts_this_invocation_and_the_total(tmp_path: Path) -> None:
    out = tmp_path / "asd"
    dying = ChatServer(die_after=12).start()
    try:
        assert _build(out, dying.base_url) == 4  # the server died: needs left open
        first = sum(dying.answers().values())
    finally:
        dying.stop()
    srv = ChatServer().start()
    try:
        assert _build(out, srv.base_url) == 0
        second = srv.count()
    finally:
        srv.stop()
    rows = [row for _, row in JsonlStore(out / CACHE_NAME).rows()]
    assert first == 12 and len(rows) == first + second
    gen = orjson.loads((out / "annotations" / "asd_manifest_x20.json").read_bytes())["generation"]
    assert gen["requests_sent"] == second and gen["cached"] == first  # this invocation
    total = gen["cumulative"]
    assert total["answers"] == first + second  # every paid answer, both invocations
    assert total["tokens_in"] == sum(r["tokens_in"] for r in rows) > gen["tokens_in"] > 0
    assert total["tokens_out"] == sum(r["tokens_out"] for r in rows) > gen["tokens_out"] > 0
    want = (total["tokens_in"] * 2 + total["tokens_out"] * 8) / 1e6
    assert total["cost_usd"] == pytest.approx(want) and total["cost_usd"] > gen["cost_usd"]
