"""Every option of every command, given a bad value, is one line on stderr and exit code 2, before any work.

The table below lists, per command and option, values that must be refused and a word the error line must
name (the option, the field or the file). The enumeration test walks the Typer app: an option that is
neither in the table nor in `NO_BAD_VALUE` fails it, so a new option cannot arrive without its bound.
The long-running library calls (`run_micro`, `build_micro`, `run_bench`, the demos, the continual runner)
are replaced by a tripwire: a bad value must be refused before any of them starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import typer
from typer.testing import CliRunner

from sefe.cli import app
from sefe.data import coin_mini_root

runner = CliRunner()
DATA = coin_mini_root()


@dataclass(frozen=True)
class Paths:
    """Files and folders the cases name (made once per module)."""

    root: Path

    @property
    def missing(self) -> Path:
        return self.root / "no-such-thing"

    @property
    def a_file(self) -> Path:
        return self.root / "a-file"

    @property
    def a_dir(self) -> Path:
        return self.root / "a-dir"

    @property
    def empty_preds(self) -> Path:
        return self.root / "empty.jsonl"

    @property
    def preds(self) -> Path:
        return self.root / "ScienceQA.jsonl"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def empty_run(self) -> Path:
        return self.root / "empty-run"

    @property
    def model_cfg(self) -> Path:
        return self.root / "model" / "config.json"

    @property
    def empty_pth(self) -> Path:
        return self.root / "empty_top2.pth"

    @property
    def pth(self) -> Path:
        return self.root / "task1_top2.pth"

    @property
    def corrupt_keys(self) -> Path:
        return self.root / "keys.safetensors"


@pytest.fixture(scope="module")
def paths(tmp_path_factory: pytest.TempPathFactory) -> Paths:
    import torch

    p = Paths(tmp_path_factory.mktemp("bounds"))
    p.a_file.write_text("x")
    p.a_dir.mkdir()
    p.empty_preds.write_bytes(b"")
    p.preds.write_bytes(orjson.dumps({"question_id": "q", "text": "A"}) + b"\n")
    for run, rows in ((p.run, [[50.0]]), (p.empty_run, [])):
        run.mkdir()
        (run / "accuracy.json").write_bytes(orjson.dumps({"tasks": ["GQA"], "mode": "compat", "rows": rows}))
    p.model_cfg.parent.mkdir()
    text = {"hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2}
    p.model_cfg.write_text(orjson.dumps(text).decode())
    torch.save({}, p.empty_pth)
    pairs = torch.tensor([[0, 1]], dtype=torch.int64)
    torch.save({"base_model.model.model.layers.0.self_attn.q_proj": pairs}, p.pth)
    p.corrupt_keys.write_bytes(b"not a safetensors file")
    return p


#: what each command needs besides the option under test (valid, so the error is the bad option's)
def base_args(cmd: str, p: Paths) -> list[str]:
    out = str(p.root / "out")
    return {
        "asd build": ["--out", out, "--backend", "openai", "--base-url", "http://127.0.0.1:9/v1"],
        "asd plan": ["--out", out],
        "train": ["--out", out, "--max-steps", "1"],
        "eval run": ["--model", str(p.a_dir), "--data-root", str(DATA), "--out", out, "--tasks", "ScienceQA"],
        "eval score": ["--task", "ScienceQA", "--predictions", str(p.preds), "--data-root", str(DATA)],
        "eval judge": [
            "--task",
            "ScienceQA",
            "--predictions",
            str(p.preds),
            "--annotations",
            str(DATA / "annotations" / "ScienceQA" / "test.json"),
            "--base-url",
            "http://127.0.0.1:9/v1",
        ],
        "report": [str(p.run), "--out", out],
        "bench reglora": [],
        "micro build": ["--out", out],
        "micro run": ["--out", out],
        "demo": ["--out", out],
        "keys import": [str(p.pth), "--model", str(p.model_cfg), "--out", str(p.root / "k.safetensors")],
        "keys export": [str(p.corrupt_keys), "--out", str(p.root / "k.pth")],
    }[cmd]


Case = tuple[list[str], str]  # (arguments, a word the error line must contain)


def _asd(p: Paths) -> dict[str, list[Case]]:
    return {
        "data_root": [(["--data-root", str(p.missing)], str(p.missing))],
        "out": [(["--out", str(p.a_file)], "--out")],
        "tasks": [(["--tasks", ","], "--tasks"), (["--tasks", "NoSuchTask"], "NoSuchTask")],
        "task_file": [(["--task-file", str(p.missing)], str(p.missing))],
        "x": [(["--x", "abc"], "--x"), (["--x", "120"], "xs"), (["--x", "-5"], "xs")],
        "distractors": [(["--distractors", "bogus"], "--distractors")],
        "backend": [(["--backend", "bogus"], "--backend")],
        "base_url": [
            (["--base-url", "notaurl"], "--base-url"),
            (["--base-url", "http://[::1"], "--base-url"),
        ],
        "concurrency": [
            (["--concurrency", "0"], "--concurrency"),
            (["--concurrency", "-3"], "--concurrency"),
        ],
        "prompts": [(["--prompts", str(p.missing)], str(p.missing))],
        "max_requests": [(["--max-requests", "-1"], "--max-requests")],
        "price_in": [(["--price-in", v], "--price-in") for v in ("-1", "inf", "nan")],
        "price_out": [(["--price-out", v], "--price-out") for v in ("-1", "inf")],
        "batch_input": [(["--backend", "batch", "--batch-input", str(p.missing)], str(p.missing))],
        "max_retries": [(["--max-retries", "-1"], "--max-retries")],
        "max_tokens": [(["--max-tokens", "0"], "--max-tokens")],
        "temperature": [(["--temperature", v], "--temperature") for v in ("-1", "nan", "inf")],
        "request_timeout": [(["--request-timeout", v], "--request-timeout") for v in ("0", "-1")],
        "chunk_size": [(["--chunk-size", "0"], "--chunk-size")],
        "vllm_arg": [(["--vllm-arg", "no-equals-sign"], "--vllm-arg")],
    }


def table(p: Paths) -> dict[tuple[str, str], list[Case]]:
    rows: dict[tuple[str, str], list[Case]] = {}
    for cmd in ("asd build", "asd plan"):
        rows.update({(cmd, k): v for k, v in _asd(p).items()})
    rows.update(
        {
            ("train", "config"): [
                (["--config", str(p.missing)], str(p.missing)),
                (["-c", str(p.a_dir)], "a-dir"),
            ],
            ("train", "set_"): [(["--set", "no-equals"], "no-equals"), (["--set", "bogus.key=1"], "bogus")],
            ("train", "method"): [(["--method", "bogus"], "bogus")],
            ("train", "option"): [(["-o", "no-equals"], "--option"), (["-o", "bogus=1"], "bogus")],
            ("train", "out"): [(["--out", str(p.a_file)], "--out")],
            ("train", "tasks"): [(["--tasks", ","], "--tasks"), (["--tasks", "NoSuchTask"], "NoSuchTask")],
            ("train", "data_root"): [(["--data-root", str(p.missing)], str(p.missing))],
            ("train", "max_steps"): [(["--max-steps", v], "--max-steps") for v in ("0", "-3")],
            ("train", "reg_delta"): [
                (["--reg-delta", "bogus"], "--reg-delta"),
                (["--method", "lora", "--reg-delta", "scaled"], "reg_delta"),
            ],
            ("train", "accumulate"): [
                (["--accumulate", "bogus"], "--accumulate"),
                (["--method", "lora", "--accumulate", "union"], "accumulate"),
            ],
            ("eval run", "model"): [(["--model", str(p.missing)], str(p.missing))],
            ("eval run", "data_root"): [(["--data-root", str(p.missing)], str(p.missing))],
            ("eval run", "tasks"): [(["--tasks", ","], "--tasks"), (["--tasks", "NoSuchTask"], "NoSuchTask")],
            ("eval run", "out"): [(["--out", str(p.a_file)], "--out")],
            ("eval run", "batch_size"): [(["--batch-size", "0"], "--batch-size")],
            ("eval run", "max_new_tokens"): [(["--max-new-tokens", "0"], "--max-new-tokens")],
            ("eval run", "limit"): [(["--limit", v], "--limit") for v in ("-1", "0")],
            ("eval run", "dtype"): [(["--dtype", "bogus"], "--dtype")],
            ("eval run", "device"): [(["--device", "bogus"], "--device")],
            ("eval run", "engine"): [(["--engine", "bogus"], "--engine")],
            ("eval run", "scienceqa_instruction"): [(["--scienceqa-instruction", "bogus"], "--scienceqa")],
            ("eval run", "vllm_arg"): [(["--engine", "vllm", "--vllm-arg", "no-equals-sign"], "--vllm-arg")],
            ("eval score", "task"): [(["--task", "NoSuchTask"], "NoSuchTask")],
            ("eval score", "predictions"): [
                (["--predictions", str(p.missing)], str(p.missing)),
                (["--predictions", str(p.empty_preds)], str(p.empty_preds)),
            ],
            ("eval score", "data_root"): [(["--data-root", str(p.missing)], str(p.missing))],
            ("eval score", "annotations"): [(["--annotations", str(p.missing)], str(p.missing))],
            ("eval score", "gt"): [(["--gt", str(p.missing)], str(p.missing))],
            ("eval score", "mode"): [(["--mode", "bogus"], "--mode")],
            ("eval score", "variant"): [(["--variant", "bogus"], "bogus")],
            ("eval judge", "task"): [(["--task", "NoSuchTask"], "NoSuchTask")],
            ("eval judge", "predictions"): [
                (["--predictions", str(p.missing)], str(p.missing)),
                (["--predictions", str(p.empty_preds)], str(p.empty_preds)),
            ],
            ("eval judge", "annotations"): [(["--annotations", str(p.missing)], str(p.missing))],
            ("eval judge", "backend"): [(["--backend", "bogus"], "--backend")],
            ("eval judge", "base_url"): [(["--base-url", "notaurl"], "--base-url")],
            ("eval judge", "concurrency"): [(["--concurrency", "0"], "--concurrency")],
            ("eval judge", "cache"): [(["--cache", str(p.a_dir)], "--cache")],
            ("report", "runs"): [([str(p.missing)], str(p.missing)), ([str(p.empty_run)], "empty")],
            ("report", "out"): [(["--out", str(p.a_file)], "--out")],
            ("bench reglora", "reps"): [(["--reps", "0"], "--reps")],
            ("bench reglora", "densities"): [
                (["--densities", v], "--densities") for v in ("abc", "200", "0")
            ],
            ("bench reglora", "device"): [(["--device", "bogus"], "--device")],
            ("bench reglora", "dtype"): [(["--dtype", "bogus"], "--dtype")],
            ("bench reglora", "shapes"): [(["--shapes", "4096by4096"], "--shapes")],
            ("bench reglora", "rank"): [(["--rank", "0"], "--rank")],
            ("bench reglora", "impl"): [(["--impl", "bogus"], "--impl")],
            ("bench reglora", "threads"): [(["--threads", "0"], "--threads")],
            ("bench reglora", "out"): [(["--out", str(p.a_dir)], "--out")],
            ("bench reglora", "markdown_out"): [(["--markdown", str(p.a_dir)], "--markdown")],
            ("micro build", "out"): [(["--out", str(p.a_file)], "--out")],
            ("micro build", "seed"): [(["--seed", "-1"], "--seed")],
            ("micro build", "n_train"): [(["--train", "-5"], "--train")],
            ("micro build", "n_test"): [(["--test", "0"], "--test")],
            ("micro build", "n_warm"): [(["--warm", "0"], "--warm")],
            ("micro run", "out"): [(["--out", str(p.a_file)], "--out")],
            ("micro run", "methods"): [(["--methods", ","], "methods"), (["--methods", "bogus"], "bogus")],
            ("micro run", "data"): [(["--data", ","], "data"), (["--data", "bogus"], "data")],
            ("micro run", "seeds"): [(["--seeds", "0"], "--seeds")],
            ("micro run", "lam_sweep"): [(["--lam-sweep", v], "lam_sweep") for v in ("abc", "-1", "inf")],
            ("micro run", "controls"): [
                (["--controls", "bogus"], "control"),
                (["--controls", "nosuch/asd"], "nosuch"),
            ],
            ("micro run", "tasks"): [(["--tasks", ","], "tasks"), (["--tasks", "NoSuchTask"], "NoSuchTask")],
            ("micro run", "epochs"): [(["--epochs", "0"], "--epochs")],
            ("micro run", "n_train"): [(["--train", "-5"], "--train")],
            ("micro run", "n_test"): [(["--test", "0"], "--test")],
            ("micro run", "warm_steps"): [(["--warm-steps", "0"], "--warm-steps")],
            ("micro run", "vision_steps"): [(["--vision-steps", "-1"], "--vision-steps")],
            ("micro run", "threads"): [(["--threads", "0"], "--threads")],
            ("micro run", "jobs"): [(["--jobs", "0"], "--jobs")],
            ("micro run", "family"): [
                (["--family", "internvl"], "internvl"),
                (["--family", "bogus"], "bogus"),
            ],
            ("demo", "out"): [(["--out", str(p.a_file)], "--out")],
            ("demo", "x"): [(["--x", v], "--x") for v in ("120", "-1")],
            ("demo", "backend"): [(["--backend", "bogus"], "--backend")],
            ("demo", "max_steps"): [(["--max-steps", "0"], "--max-steps")],
            ("demo", "on"): [(["--on", "bogus"], "--on")],
            ("keys import", "files"): [
                ([str(p.missing)], str(p.missing)),
                ([str(p.empty_pth)], str(p.empty_pth)),
            ],
            ("keys import", "model"): [(["--model", str(p.missing)], str(p.missing))],
            ("keys import", "out"): [(["--out", str(p.a_dir)], "--out")],
            ("keys import", "accumulate"): [(["--accumulate", "bogus"], "--accumulate")],
            ("keys import", "tasks"): [(["--tasks", "-2"], "tasks")],
            ("keys export", "keys"): [
                ([str(p.missing)], str(p.missing)),
                ([str(p.corrupt_keys)], str(p.corrupt_keys)),
            ],
            ("keys export", "out"): [(["--out", str(p.a_dir)], "--out")],
        }
    )
    return rows


#: options that take any value (flags, free names, any seed): nothing to refuse
NO_BAD_VALUE = {
    **{(cmd, name): "flag" for cmd in ("asd build", "asd plan") for name in ("strict", "allow_partial")},
    ("asd build", "dry_run"): "flag",
    **{(cmd, "seed"): "any integer seeds the hashes" for cmd in ("asd build", "asd plan")},
    **{(cmd, "model"): "a served model name" for cmd in ("asd build", "asd plan", "eval judge")},
    ("train", "no_eval"): "flag",
    ("train", "print_config"): "flag",
    ("eval run", "model_id"): "a label written into each prediction",
    ("eval score", "allow_approximate"): "flag",
    ("eval score", "as_json"): "flag",
    ("eval judge", "as_json"): "flag",
    ("report", "no_plots"): "flag",
    ("micro run", "alone"): "flag",
    ("bench reglora", "storage"): "flag",
}


def _commands(group: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, cmd in getattr(group, "commands", {}).items():
        path = f"{prefix} {name}".strip()
        if hasattr(cmd, "commands"):
            out.update(_commands(cmd, path))
        else:
            out[path] = cmd
    return out


def _options() -> set[tuple[str, str]]:
    return {
        (path, p.name)
        for path, cmd in _commands(typer.main.get_command(app)).items()
        for p in cmd.params
        if p.name != "help"
    }


def test_every_option_is_in_the_table_or_has_no_bad_value(paths: Paths) -> None:
    listed = set(table(paths))
    assert not listed & set(NO_BAD_VALUE), "an option cannot be both bounded and free"
    unlisted = _options() - listed - set(NO_BAD_VALUE)
    assert not unlisted, f"options without a bad-value case (add them to the table): {sorted(unlisted)}"
    stale = (listed | set(NO_BAD_VALUE)) - _options()
    assert not stale, f"cases for options that no longer exist: {sorted(stale)}"


@pytest.fixture
def tripwires(monkeypatch: pytest.MonkeyPatch) -> None:
    """The work a refused option must never reach."""

    def reached(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a bad option reached the work")

    import sefe.micro.demo
    import sefe.micro.generate
    import sefe.micro.run
    import sefe.sefe_train.reglora.bench
    import sefe.sefe_train.runner
    from sefe.commands import demo

    monkeypatch.setattr(sefe.micro.run, "run_micro", reached)
    monkeypatch.setattr(sefe.micro.generate, "build_micro", reached)
    monkeypatch.setattr(sefe.micro.demo, "run_micro_demo", reached)
    monkeypatch.setattr(demo, "run_demo", reached)
    monkeypatch.setattr(sefe.sefe_train.reglora.bench, "run_bench", reached)
    monkeypatch.setattr(sefe.sefe_train.runner.ContinualRunner, "run_stage", reached)


def _cases() -> list[Any]:
    probe = Paths(Path("/probe"))
    return [
        pytest.param(cmd, name, i, id=f"{cmd} {name} {i}")
        for (cmd, name), cases in table(probe).items()
        for i in range(len(cases))
    ]


@pytest.mark.parametrize(("cmd", "name", "i"), _cases())
def test_bad_value_is_one_line_exit_2(cmd: str, name: str, i: int, paths: Paths, tripwires: None) -> None:
    args, word = table(paths)[(cmd, name)][i]
    res = runner.invoke(app, [*cmd.split(), *base_args(cmd, paths), *args], env={"COLUMNS": "300"})
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output and len(lines) == 1, res.output
    assert lines[0].startswith("error: ") and word.lower() in lines[0].lower(), lines[0]


def test_defaults_are_read_from_the_library() -> None:
    """The defaults once written in the commands come from their model or a named constant (one source)."""
    from sefe.evaluation.judge import DEFAULT_JUDGE_BACKEND
    from sefe.micro.options import DEMO_DATA, DEMO_OUT
    from sefe.sefe_train.reglora.config import BenchOptions, RegLoRAConfig

    cmds = _commands(typer.main.get_command(app))
    given = {(path, p.name): p.default for path, cmd in cmds.items() for p in cmd.params}
    bench = {name: given["bench reglora", name] for name in BenchOptions.model_fields}
    assert bench == BenchOptions().model_dump()
    assert given["keys import", "accumulate"] == RegLoRAConfig().accumulate
    assert given["eval judge", "backend"] == DEFAULT_JUDGE_BACKEND
    assert (given["demo", "out"], given["demo", "on"]) == (DEMO_OUT, DEMO_DATA)
