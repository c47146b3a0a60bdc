"""One way to report user errors: a `SefeError` is one line and exit code 2; a bug keeps its traceback."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, get_args

import pytest
import typer
from pydantic import BaseModel, ValidationError
from typer.testing import CliRunner

from sefe.cli import app
from sefe.data import coin_mini_root
from sefe.errors import (
    InputError,
    MissingDependency,
    MissingFile,
    SefeError,
    UnavailableError,
    one_line,
    report_errors,
)

runner = CliRunner()


def _errors_of(result: Any) -> list[str]:
    return [line for line in result.output.splitlines() if line.startswith("error:")]


# ---- the classes ---------------------------------------------------------------------------------------
def test_user_error_classes_keep_their_builtin_bases() -> None:
    """Callers that caught ValueError / FileNotFoundError / ImportError before keep working."""
    from sefe.asd_gen.backends.embedded import EmbeddedModelMissing
    from sefe.asd_gen.backends.factory import BackendUnavailable
    from sefe.asd_gen.backends.local_backend import LocalModelError
    from sefe.asd_gen.build import BuildError
    from sefe.coin.records import RecordsError
    from sefe.coin.tasks import TaskError
    from sefe.evaluation.loading import ScoringError
    from sefe.evaluation.report import ReportError
    from sefe.sefe_train.config import ConfigError

    for cls in (RecordsError, TaskError, ConfigError, ScoringError, ReportError):
        assert issubclass(cls, InputError) and issubclass(cls, ValueError)
    for cls in (BuildError, BackendUnavailable, LocalModelError):
        assert issubclass(cls, UnavailableError) and issubclass(cls, RuntimeError)
    assert issubclass(EmbeddedModelMissing, MissingDependency) and issubclass(
        EmbeddedModelMissing, ImportError
    )
    assert issubclass(MissingFile, FileNotFoundError) and issubclass(MissingFile, SefeError)


def test_one_line_joins_lines_and_lists_pydantic_fields() -> None:
    assert (
        one_line(InputError("a.json: record 3\n  field image: missing"))
        == "a.json: record 3; field image: missing"
    )

    class M(BaseModel):
        n: int
        mode: str

    with pytest.raises(ValidationError) as info:
        M.model_validate({"n": "x"})
    line = one_line(info.value)
    assert "\n" not in line and line.startswith("n: ") and "mode: Field required" in line


def test_report_errors_exit_2_for_user_errors_and_keeps_tracebacks_for_bugs(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    @report_errors
    def user() -> None:
        raise MissingFile("runs/a/state.json: not found\nrerun `sefe train`")

    @report_errors
    def bug() -> None:
        raise KeyError("internal")

    with pytest.raises(SystemExit) as info:
        user()
    assert info.value.code == 2
    assert capsys.readouterr().err == "error: runs/a/state.json: not found; rerun `sefe train`\n"
    with pytest.raises(KeyError):
        bug()
    monkeypatch.setenv("SEFE_DEBUG", "1")  # the traceback on request, for bug reports
    with pytest.raises(MissingFile):
        user()


def test_every_cli_command_reports_user_errors() -> None:
    def walk(t: typer.Typer) -> list[Any]:
        out = list(t.registered_commands)
        for g in t.registered_groups:
            assert g.typer_instance is not None
            out += walk(g.typer_instance)
        return out

    commands = walk(app)
    assert len(commands) >= 9
    for info in commands:
        assert getattr(info.callback, "__wrapped__", None) is not None, info.name


# ---- the CLI: one line, exit code 2, no traceback ------------------------------------------------------
def _assert_one_error_line(result: Any, *needles: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    errors = _errors_of(result)
    assert len(errors) == 1, result.output
    for needle in needles:
        assert needle in errors[0], errors[0]


def test_cli_local_backend_missing_model_folder(tmp_path: Path) -> None:
    missing = tmp_path / "nonexistent"
    r = runner.invoke(
        app,
        [
            "asd",
            "build",
            "--tasks",
            "ScienceQA",
            "--out",
            str(tmp_path / "o"),
            "--backend",
            "local",
            "--model",
            str(missing),
        ],
        env={"COLUMNS": "300"},
    )
    _assert_one_error_line(r, str(missing), "config.json")


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_cli_vllm_backend_without_vllm_names_the_install_command(tmp_path: Path) -> None:
    r = runner.invoke(
        app,
        [
            "asd",
            "build",
            "--tasks",
            "ScienceQA",
            "--out",
            str(tmp_path / "o"),
            "--backend",
            "vllm",
            "--model",
            "some/model",
        ],
        env={"COLUMNS": "300"},
    )
    _assert_one_error_line(r, "pip install 'sefe[vllm]'")


def test_cli_bad_option_value_and_bad_config(tmp_path: Path) -> None:
    r = runner.invoke(
        app, ["asd", "build", "--x", "120", "--out", str(tmp_path / "o")], env={"COLUMNS": "300"}
    )
    _assert_one_error_line(r, "xs:", "percentage")
    r = runner.invoke(app, ["train", "--set", "train.lr=abc", "--print-config"], env={"COLUMNS": "300"})
    _assert_one_error_line(r, "train.lr")


def test_cli_eval_run_missing_model_folder(tmp_path: Path) -> None:
    r = runner.invoke(
        app,
        [
            "eval",
            "run",
            "--model",
            str(tmp_path / "nope"),
            "--data-root",
            str(coin_mini_root()),
            "--tasks",
            "ScienceQA",
            "--out",
            str(tmp_path / "p"),
            "--device",
            "cpu",
        ],
        env={"COLUMNS": "300"},
    )
    _assert_one_error_line(r, str(tmp_path / "nope"))


def test_cli_user_error_in_a_real_process(tmp_path: Path) -> None:
    """The installed entry point: stderr is exactly one line, exit code 2 (no rich traceback panel)."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "sefe.cli",
            "asd",
            "build",
            "--tasks",
            "ScienceQA",
            "--out",
            str(tmp_path / "o"),
            "--backend",
            "local",
            "--model",
            "/nonexistent/model",
        ],
        cwd=tmp_path,
        env={**os.environ, "COLUMNS": "300"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    lines = [
        line for line in proc.stderr.splitlines() if line.strip()
    ]  # rich progress may leave a blank line
    assert len(lines) == 1 and lines[0].startswith("error: --model '/nonexistent/model'"), proc.stderr


# ---- choices and defaults come from the models ---------------------------------------------------------
def _params(*path: str) -> dict[str, Any]:
    cmd: Any = typer.main.get_command(app)
    for name in path:
        cmd = cmd.commands[name]
    return {p.name: p for p in cmd.params}


def test_cli_choices_and_defaults_are_the_models() -> None:
    from sefe.asd_gen.needs import GenerationOptions
    from sefe.asd_gen.options import BuildOptions
    from sefe.sefe_train.reglora.config import RegLoRAConfig

    build = _params("asd", "build")
    gen = GenerationOptions()
    for cli_name, field in [
        ("concurrency", "concurrency"),
        ("max_retries", "max_retries"),
        ("max_tokens", "max_tokens"),
        ("temperature", "temperature"),
        ("request_timeout", "request_timeout_s"),
        ("chunk_size", "chunk_size"),
        ("backend", "backend"),
    ]:
        assert build[cli_name].default == getattr(gen, field), cli_name
    assert build["seed"].default == BuildOptions.model_fields["seed"].default
    assert build["distractors"].default == BuildOptions.model_fields["distractors"].default
    choices = [
        (["asd", "build", "--backend"], GenerationOptions.model_fields["backend"].annotation),
        (["asd", "build", "--distractors"], BuildOptions.model_fields["distractors"].annotation),
        (["train", "--reg-delta"], RegLoRAConfig.model_fields["reg_delta"].annotation),
        (["train", "--accumulate"], RegLoRAConfig.model_fields["accumulate"].annotation),
        (["bench", "reglora", "--impl"], RegLoRAConfig.model_fields["impl"].annotation),
    ]
    for args, literal in choices:
        r = runner.invoke(app, [*args, "not-a-choice"], env={"COLUMNS": "300"})
        assert r.exit_code == 2 and "Traceback" not in r.output, r.output
        assert all(f"'{c}'" in r.output for c in get_args(literal)), (args, r.output)


def test_a_user_error_from_a_dataloader_worker_is_still_one_line() -> None:
    """`dataloader_num_workers > 0`: torch re-raises the worker's error with its traceback in the message;
    the CLI's line is the original message (a bad image naming its record), not the traceback."""
    from torch.utils.data import DataLoader, Dataset

    from sefe.coin.images import ImageError
    from sefe.errors import one_line

    message = (
        "t.json, record 0, id 'r7', field 'image': x/bomb.png declares 30000x30000 pixels, over the budget"
    )

    class Bad(Dataset):  # type: ignore[type-arg]
        def __len__(self) -> int:
            return 1

        def __getitem__(self, i: int) -> None:
            raise ImageError(message)

    with pytest.raises(ImageError) as ei:
        next(iter(DataLoader(Bad(), num_workers=1)))
    assert "Original Traceback" in str(ei.value)  # what torch hands back
    assert one_line(ei.value) == message
