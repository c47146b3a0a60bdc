"""`sefe demo`: what each half hands to the pipeline (the runs themselves are `make demo`, minutes long)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import sefe.micro.demo
from sefe.cli import app
from sefe.commands import demo as demo_cmd
from sefe.micro.options import MicroOptions

runner = CliRunner()


def test_default_demo_is_lora_against_sefe_on_micro_coin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[MicroOptions] = []

    def run_micro(opts: MicroOptions, console: Any = None) -> Path:
        seen.append(opts)
        return opts.out / "report.md"

    monkeypatch.setattr(sefe.micro.demo, "run_micro", run_micro)
    res = runner.invoke(app, ["demo", "--out", str(tmp_path / "d"), "--x", "30"])
    assert res.exit_code == 0, res.output
    (opts,) = seen
    assert opts.combos() == [("lora", "original"), ("reglora", "asd")]
    assert (opts.seeds, opts.x, opts.epochs, opts.n_train, opts.n_test) == (1, 30.0, 4.0, 400, 200)
    assert opts.tasks == ["Colour", "Count", "Side"]  # one answer style each, each learnable in 200 steps
    assert opts.alone and opts.lam_sweep == []  # the ceiling table, no λ sweep
    assert [s.name for s in opts.specs()][:3] == [f"alone_{t}_seed0" for t in opts.tasks]
    assert opts.out == (tmp_path / "d").resolve() / "micro"
    assert res.stdout.strip() == f"done: open {opts.out / 'report.md'}"


def test_coin_mini_demo_gets_the_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def run_demo(out: Path, **kwargs: Any) -> Path:
        seen.update(out=out, **kwargs)
        return out / "report"

    monkeypatch.setattr(demo_cmd, "run_demo", run_demo)
    args = ["demo", "--on", "coin-mini", "--out", str(tmp_path), "--backend", "scene", "--max-steps", "2"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert seen == {"out": tmp_path, "x": 20.0, "backend": "scene", "max_steps": 2}
    assert res.stdout.strip() == f"done: open {tmp_path / 'report' / 'report.md'}"


def test_the_coin_mini_demo_config_ships_with_the_package() -> None:
    assert demo_cmd._demo_config().is_file()
