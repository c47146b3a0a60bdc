"""`sefe asd build` on data/coin-mini through the openai and batch backends, against the loopback server."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from sefe.asd_gen.build import BuildOptions, plan
from sefe.asd_gen.needs import GenerationOptions
from sefe.cli import app
from tests.helpers.chat_server import ChatServer
from tests.helpers.provider import answer_batch_files

DATA = Path(__file__).resolve().parents[3] / "data" / "coin-mini"


def _build(out: Path, *args: str) -> str:
    res = CliRunner().invoke(app, ["asd", "build", "--data-root", str(DATA), "--out", str(out), *args])
    assert res.exit_code in (0, 3), res.output
    return res.output


def _requests_needed(out: Path, base_url: str, xs: list[float]) -> int:
    gen = GenerationOptions(backend="openai", base_url=base_url)
    return plan(BuildOptions(data_root=DATA, out=out, xs=xs, generation=gen)).estimate.requests


def _complete(out: Path, x: int) -> dict:
    manifest = orjson.loads((out / "annotations" / f"asd_manifest_x{x}.json").read_bytes())
    for task, t in manifest["tasks"].items():
        rows = orjson.loads((out / "annotations" / task / f"train_x{x}.json").read_bytes())
        src = orjson.loads((DATA / "annotations" / task / "train.json").read_bytes())
        assert len(rows) == len(src) == t["records"], task
        assert t["kept_original"] == {}, (task, t["kept_original"])  # every selected record was converted
        assert sum(t["converted"].values()) == t["selected"] > 0, task
    assert manifest["quarantined"] == []
    return manifest


@pytest.mark.slow
def test_openai_build_is_complete_resumable_and_nested_across_x(tmp_path: Path, server: ChatServer) -> None:
    out = tmp_path / "asd"
    need20 = _requests_needed(out, server.base_url, [20])
    assert need20 > 0
    _build(out, "--x", "20", "--backend", "openai", "--base-url", server.base_url)
    assert server.count() == need20
    m = _complete(out, 20)
    assert m["generation"]["requests_sent"] == need20 and m["model"] == "fake-chat-model"
    text = (out / "annotations" / "GQA" / "train_x20.json").read_text()
    assert "candidate " in text or "visual evidence" in text  # model-written content reached the file
    _build(out, "--x", "20", "--backend", "openai", "--base-url", server.base_url)
    assert server.count() == need20  # rerun: zero requests
    extra = _requests_needed(out, server.base_url, [20, 40])
    _build(out, "--x", "20", "--x", "40", "--backend", "openai", "--base-url", server.base_url)
    assert server.count() == need20 + extra  # X=40 reuses every X=20 answer
    _complete(out, 40)


@pytest.mark.slow
def test_batch_build_round_trip(tmp_path: Path, server: ChatServer) -> None:
    out = tmp_path / "asd"
    args = ["--x", "20", "--backend", "batch", "--model", "gpt-4o-mini"]
    shown = _build(out, *args)
    files = sorted((out / "batch").glob("input_*.jsonl"))
    assert files and "rerun" in shown and not (out / "annotations" / "GQA" / "train_x20.json").exists()
    answer_batch_files(files, server.base_url, out / "batch" / "output" / "out.jsonl")
    _build(out, *args)
    m = _complete(out, 20)
    assert m["backend"] == "batch" and m["generation"]["pending_batch_files"] == []
