"""The LLM judge through the real openai backend against a grading server on loopback; resume from cache."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sefe.evaluation.judge import parse_rating, question_without_instruction, run_judge
from tests.helpers.judge_server import MODEL, JudgeServer
from tests.helpers.scoring import short_records

pytest.importorskip("openai")


def test_question_without_instruction_and_parse() -> None:
    text = "<image>\nWhat is it?\nAnswer the question using a single word or phrase."
    assert question_without_instruction(text) == "What is it?"
    assert question_without_instruction("Just one line") == "Just one line"
    assert parse_rating('{"score": 7}') == 7
    assert parse_rating("score: 9") == 9
    assert parse_rating('{"score": 11}') is None
    assert parse_rating("I refuse") is None


def test_judge_scores_and_resumes(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    write_json: Callable[[str, Any], Path],
    write_preds: Callable[..., Path],
) -> None:
    from sefe.asd_gen.backends.factory import make_backend
    from sefe.asd_gen.needs import GenerationOptions

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    ann = write_json(
        "t.json", short_records([(1, "Red"), (2, "golden retriever"), (3, "cat"), (4, "x"), (5, "y")])
    )
    preds = write_preds([(1, "red"), (2, "retriever"), (3, "dog"), (4, "[[garbage]]")])
    cache = tmp_path / "judge_cache.jsonl"
    with JudgeServer() as server:
        backend = make_backend(GenerationOptions(backend="openai", base_url=server.base_url, max_retries=0))
        res = run_judge("VQAv2", preds, ann, backend, cache)
        # ratings 10 + 4 + 0 over 3 judged answers; the garbage reply is a listed failure, item 5 is missing
        assert (res.rating_sum, res.judged, res.failed, res.missing) == (14, 3, 1, 1)
        assert res.score == pytest.approx(100 * 14 / 30)
        assert res.judge_model == MODEL and res.failures[0]["question_id"] == "4"
        # requests run concurrently: find the one for question 1
        first = next(r for r in server.requests if r["messages"][1]["content"].endswith("Model answer: red"))
        assert first["temperature"] == 0.7 and first["max_completion_tokens"] == 20
        user = first["messages"][1]["content"]
        assert "Answer the question" not in user and "Reference answer: Red" in user
        assert len(server.requests) == 4
        again = run_judge("VQAv2", preds, ann, backend, cache)  # only the failed one is asked again
        assert len(server.requests) == 5 and again.score == res.score


def test_judge_cli(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    write_json: Callable[[str, Any], Path],
    write_preds: Callable[..., Path],
) -> None:
    import orjson
    from typer.testing import CliRunner

    from sefe.cli import app

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    ann = write_json("t.json", short_records([(1, "Red"), (2, "cat")]))
    preds = write_preds([(1, "red"), (2, "a cat")])
    with JudgeServer() as server:
        args = [
            "eval",
            "judge",
            "-t",
            "VQAv2",
            "-p",
            str(preds),
            "-a",
            str(ann),
            "--base-url",
            server.base_url,
        ]
        res = CliRunner().invoke(app, [*args, "--json"])
    assert res.exit_code == 0, res.output
    obj = orjson.loads(res.stdout)
    assert (obj["score"], obj["judged"]) == (70.0, 2)  # (10 + 4) / 20
    assert (tmp_path / "preds.jsonl.judge.jsonl").is_file()
    bad = CliRunner().invoke(
        app,
        ["eval", "judge", "-t", "VQAv2", "-p", str(preds), "-a", str(ann), "--backend", "nope"],
        env={"COLUMNS": "200"},
    )
    # a choice the CLI does not offer: click's usage error (exit 2) names the option and the choices
    assert bad.exit_code == 2 and "--backend" in bad.output and "'openai'" in bad.output


def test_judge_never_scores_while_ratings_are_open_and_resumes(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    write_json: Callable[[str, Any], Path],
    write_preds: Callable[..., Path],
) -> None:
    import orjson
    from typer.testing import CliRunner

    from sefe.cli import app

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    ann = write_json("t.json", short_records([(1, "Red"), (2, "cat"), (3, "dog")]))
    preds = write_preds([(1, "red"), (2, "a cat"), (3, "dog")])
    with JudgeServer() as server:
        server.fail_500 = {"a cat"}  # the server never answers this one (5xx after the SDK's retries)
        args = [
            "eval",
            "judge",
            "-t",
            "VQAv2",
            "-p",
            str(preds),
            "-a",
            str(ann),
            "--base-url",
            server.base_url,
        ]
        res = CliRunner().invoke(app, [*args, "--json"])
        assert res.exit_code == 4, res.output
        assert "1 ratings open (1 HTTP 500)" in res.stderr and "rerun the same command" in res.stderr
        obj = orjson.loads(res.stdout)
        assert obj["score"] is None and (obj["open"], obj["judged"], obj["failed"]) == (
            1,
            2,
            0,
        )  # no score yet
        asked = len(server.requests)
        server.fail_500 = set()
        res = CliRunner().invoke(app, [*args, "--json"])
        assert res.exit_code == 0, res.output
        obj = orjson.loads(res.stdout)
        assert obj["score"] == pytest.approx(100 * (10 + 4 + 10) / 30) and obj["open"] == 0
        assert len(server.requests) == asked + 1  # only the open one is asked again


def test_judge_against_a_closed_port_fails_fast(
    tmp_path: Path, write_json: Callable[[str, Any], Path], write_preds: Callable[..., Path]
) -> None:
    import socket

    from typer.testing import CliRunner

    from sefe.cli import app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ann = write_json("t.json", short_records([(1, "Red")]))
    preds = write_preds([(1, "red")])
    url = f"http://127.0.0.1:{port}/v1"
    res = CliRunner().invoke(
        app,
        ["eval", "judge", "-t", "VQAv2", "-p", str(preds), "-a", str(ann), "--base-url", url, "--model", "m"],
    )
    assert res.exit_code == 4 and "cannot reach the model server" in res.output
    assert (
        not (tmp_path / "preds.jsonl.judge.jsonl").exists()
        or not (tmp_path / "preds.jsonl.judge.jsonl").read_bytes()
    )
