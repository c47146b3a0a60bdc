"""Issue 17, points 11-14: one error contract for every command (the table of every option is in
test_cli_bounds.py; these are the cases the issue names, each of which failed before)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from sefe.cli import app
from sefe.data import coin_mini_root

runner = CliRunner()
DATA = coin_mini_root()


def _one_error_line(res: Any, *words: str, code: int = 2) -> str:
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert res.exit_code == code, res.output
    assert "Traceback" not in res.output and "errors.pydantic.dev" not in res.output, res.output
    assert len(lines) == 1 and lines[0].startswith("error: "), res.output
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def _invoke(*args: str) -> Any:
    return runner.invoke(app, list(args), env={"COLUMNS": "300"})


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---- 11: tracebacks that are now one line, exit 2 -----------------------------------------------------
def test_11_output_path_of_the_wrong_kind_in_a_real_process(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("x")
    proc = subprocess.run(
        [sys.executable, "-m", "sefe.cli", "asd", "build", "--out", "a-file", "--tasks", "ScienceQA"],
        cwd=tmp_path,
        env={**os.environ, "COLUMNS": "300"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2 and proc.stdout == "", proc.stdout + proc.stderr
    assert proc.stderr.splitlines() == [
        "error: Invalid value for '--out': a-file is a file; expected a folder (existing or new)"
    ]


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["eval", "run", "--model", "{dir}", "--data-root", str(DATA), "--out", "{file}"], ["--out"]),
        (["report", "{run}", "--out", "{file}"], ["--out"]),
        (["micro", "run", "--out", "{file}"], ["--out"]),
        (["micro", "build", "--out", "{file}/under"], ["--out", "is a file, not a folder"]),
        (["keys", "import", "{pth}", "--model", "{dir}", "-o", "{dir}"], ["--out", "is a folder"]),
        (["eval", "judge", "-t", "GQA", "-p", "{file}", "-a", "{file}", "--cache", "{dir}"], ["--cache"]),
        (["train", "--config", "{dir}"], ["is a folder, not a file"]),
    ],
)
def test_11_output_paths_of_the_wrong_kind(tmp_path: Path, args: list[str], words: list[str]) -> None:
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "a-dir").mkdir()
    run = tmp_path / "run"
    run.mkdir()
    (run / "accuracy.json").write_bytes(orjson.dumps({"tasks": ["GQA"], "rows": [[50.0]]}))
    names = {"file": "a-file", "dir": "a-dir", "run": "run", "pth": "a-file"}
    _one_error_line(
        _invoke(*(a.format(**{k: str(tmp_path / v) for k, v in names.items()}) for a in args)), *words
    )


def test_11_a_folder_named_like_the_asd_output_file(tmp_path: Path) -> None:
    blocker = tmp_path / "asd" / "annotations" / "ScienceQA" / "train_x20.json"
    blocker.mkdir(parents=True)
    args = ["asd", "build", "--out", str(tmp_path / "asd"), "--tasks", "ScienceQA", "--x", "20"]
    res = _invoke(*args, "--backend", "scene", "--distractors", "pool")
    line = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    assert line == [f"error: {blocker}: is a folder, not a file"], res.output


@pytest.mark.parametrize("flag", ["--max-retries", "--request-timeout"])
def test_11_options_no_longer_reach_the_client_unchecked(flag: str, tmp_path: Path) -> None:
    res = _invoke("asd", "build", "--out", str(tmp_path), "--backend", "openai", flag, "-1")
    _one_error_line(res, flag, "greater than")


def test_11_options_of_eval_run_are_checked_before_the_model_loads(tmp_path: Path) -> None:
    base = ["eval", "run", "--model", str(tmp_path), "--data-root", str(DATA), "--out", str(tmp_path / "p")]
    _one_error_line(_invoke(*base, "--max-new-tokens", "0"), "--max-new-tokens", "greater than or equal to 1")
    _one_error_line(_invoke(*base, "--device", "bogus"), "--device", "not a torch device")
    _one_error_line(_invoke("asd", "build", "--base-url", "http://[::1"), "--base-url", "not a URL")


@pytest.fixture(scope="module")
def corrupt_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sefe.models.tiny import tiny_llava_dir

    root = tmp_path_factory.mktemp("corrupt")
    src = tiny_llava_dir()
    bad_config = root / "bad-config"
    shutil.copytree(src, bad_config)
    (bad_config / "config.json").write_text("{not json")
    truncated = root / "truncated"
    shutil.copytree(src, truncated)
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    (root / "random.gguf").write_bytes(os.urandom(4096))
    return root


@pytest.mark.parametrize("name", ["bad-config", "truncated"])
def test_11_a_corrupt_model_folder_is_one_line(corrupt_models: Path, name: str, tmp_path: Path) -> None:
    model = corrupt_models / name
    args = ["eval", "run", "--model", str(model), "--data-root", str(DATA), "--tasks", "GQA", "--limit", "1"]
    _one_error_line(_invoke(*args, "--out", str(tmp_path), "--device", "cpu"), str(model))


def test_11_random_bytes_named_gguf_are_one_line(corrupt_models: Path, tmp_path: Path) -> None:
    gguf = corrupt_models / "random.gguf"
    args = [
        "asd",
        "build",
        "--out",
        str(tmp_path),
        "--tasks",
        "GQA",
        "--backend",
        "local",
        "--model",
        str(gguf),
    ]
    res = _invoke(*args)
    line = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    assert len(line) == 1 and str(gguf) in line[0] and "cannot read the model" in line[0], res.output


# ---- 12: option errors, not "cannot reach the server" (4) ----------------------------------------------
@pytest.mark.parametrize(
    ("flag", "value"), [("--request-timeout", "0"), ("--base-url", "notaurl"), ("--max-requests", "-1")]
)
def test_12_bad_server_options_exit_2_not_4(flag: str, value: str, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{_closed_port()}/v1"
    args = [
        "asd",
        "build",
        "--out",
        str(tmp_path),
        "--tasks",
        "GQA",
        "--backend",
        "openai",
        "--base-url",
        url,
    ]
    _one_error_line(_invoke(*args, flag, value), flag)


# ---- 13: nonsense that used to be accepted -------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["asd", "plan", "--concurrency", "0"], ["--concurrency", "greater than or equal to 1"]),
        (["asd", "plan", "--concurrency", "-3"], ["--concurrency"]),
        (["asd", "plan", "--max-tokens", "0"], ["--max-tokens", "greater than or equal to 1"]),
        (["asd", "plan", "--temperature", "-1"], ["--temperature", "greater than or equal to 0"]),
        (["asd", "plan", "--temperature", "nan"], ["--temperature", "finite"]),
        (["asd", "plan", "--price-in", "-1"], ["--price-in", "greater than or equal to 0"]),
        (["asd", "plan", "--price-in", "inf"], ["--price-in", "finite"]),
        (["asd", "plan", "--tasks", ","], ["--tasks: no names in ','"]),
        (["asd", "build", "--tasks", ",", "--tasks", " "], ["--tasks: no names"]),
        (["train", "--print-config", "--max-steps", "0"], ["--max-steps", "-1 (no cap) or at least 1"]),
        (["train", "--print-config", "--max-steps", "-3"], ["--max-steps"]),
        (["train", "--print-config", "--method", "lora", "--reg-delta", "scaled"], ["lora.reg_delta"]),
        (["train", "--print-config", "--set", "eval.max_samples=0"], ["config (embedded default): eval.max"]),
        (["micro", "build", "--out", "{tmp}", "--train", "-5"], ["--train", "greater than 0"]),
        (["micro", "run", "--out", "{tmp}", "--methods", ","], ["methods", "at least 1"]),
        (["micro", "run", "--out", "{tmp}", "--threads", "0"], ["--threads", "greater than or equal to 1"]),
        (["eval", "run", "-m", "{tmp}", "--data-root", "{tmp}", "-o", "{tmp}", "--limit", "-1"], ["--limit"]),
    ],
)
def test_13_nonsense_values_name_the_option_and_range(
    args: list[str], words: list[str], tmp_path: Path
) -> None:
    _one_error_line(_invoke(*(a.format(tmp=tmp_path) for a in args)), *words)


def test_13_keys_import_tasks_and_an_empty_key_file(tmp_path: Path) -> None:
    import torch

    cfg = tmp_path / "config.json"
    text = {"hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2}
    cfg.write_text(orjson.dumps(text).decode())
    good, empty = tmp_path / "t1_top2.pth", tmp_path / "empty_top2.pth"
    torch.save({"base_model.model.model.layers.0.self_attn.q_proj": torch.tensor([[0, 1]])}, good)
    torch.save({}, empty)
    base = ["keys", "import", "--model", str(cfg), "-o", str(tmp_path / "k.safetensors")]
    _one_error_line(_invoke(*base, str(good), "--tasks", "-2"), "tasks must be at least 1")
    _one_error_line(_invoke(*base, str(empty)), str(empty), "empty dict")


def test_13_eval_score_of_an_empty_prediction_file(tmp_path: Path) -> None:
    preds = tmp_path / "GQA.jsonl"
    preds.write_bytes(b"")
    res = _invoke(
        "eval", "score", "-t", "GQA", "-p", str(preds), "--data-root", str(DATA), "--allow-approximate"
    )
    _one_error_line(res, str(preds), "no predictions")


def test_13_report_of_an_empty_matrix(tmp_path: Path) -> None:
    (tmp_path / "accuracy.json").write_bytes(orjson.dumps({"tasks": ["GQA", "VizWiz"], "rows": []}))
    _one_error_line(_invoke("report", str(tmp_path)), "no evaluated cell")


# ---- 14: one line everywhere, exit 4 on stderr, Ctrl-C in train ----------------------------------------
def test_14_micro_run_and_report_validation_errors_are_one_line(tmp_path: Path) -> None:
    _one_error_line(_invoke("micro", "run", "--out", str(tmp_path), "--data", "original,bogus"), "data.1")
    (tmp_path / "accuracy.json").write_bytes(orjson.dumps({"tasks": ["GQA"], "rows": [[250.0]]}))
    _one_error_line(_invoke("report", str(tmp_path)), "not an accuracy matrix", "percentage")


def test_14_a_heading_line_and_its_fields_read_as_one_sentence() -> None:
    from sefe.errors import InputError, one_line

    msg = "invalid run config (a.yaml):\n  train.lr: not a number\n  eval.max_samples: at least 1"
    assert (
        one_line(InputError(msg))
        == "invalid run config (a.yaml): train.lr: not a number; eval.max_samples: at least 1"
    )


def test_14_exit_4_goes_to_stderr_in_a_real_process(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{_closed_port()}/v1"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "sefe.cli",
            "asd",
            "build",
            "--out",
            "o",
            "--tasks",
            "GQA",
            "--backend",
            "openai",
            "--base-url",
            url,
        ],
        cwd=tmp_path,
        env={**os.environ, "COLUMNS": "300", "OPENAI_API_KEY": "sk-test"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "cannot reach" not in proc.stdout and "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "cannot reach the model server" in errors[0] and "Is it running?" in errors[0]


def test_14_train_on_ctrl_c_prints_the_resume_hint(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from sefe.sefe_train.runner import ContinualRunner

    def interrupted(self: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(ContinualRunner, "run", interrupted)
    res = _invoke("train", "--out", str(tmp_path / "run"), "--max-steps", "1")
    assert res.exit_code == 130, res.output
    assert res.stderr.strip() == "interrupted; rerun the same command to resume", res.output
