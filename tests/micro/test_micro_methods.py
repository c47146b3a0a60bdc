"""`sefe micro run --methods` takes every method `sefe train --method` knows and refuses others up front."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from sefe.micro.run import MicroOptions, run_config
from sefe.sefe_train.methods import method_names


def test_every_registered_method_makes_a_micro_run_config(tmp_path: Path) -> None:
    names = method_names()
    assert {"fft", "lora", "lota", "moelora", "olora", "reglora", "replay"} <= set(names)
    opts = MicroOptions(out=tmp_path, methods=names, data=["original", "asd"], seeds=1)
    assert [m for m, _ in opts.combos()] == names * 2
    for method, data in opts.combos():
        cfg = run_config(opts, method, data, 0, tmp_path / "data", tmp_path / "warm")
        assert cfg.method == method
        assert Path(cfg.output_dir).name == f"{method}_{data}_seed0"


def test_an_unknown_method_is_refused_before_any_work(tmp_path: Path) -> None:
    with pytest.raises((ValidationError, ValueError), match="nosuch"):
        MicroOptions(out=tmp_path, methods=["lora", "nosuch"])
    with pytest.raises((ValidationError, ValueError), match="nosuch"):
        MicroOptions(out=tmp_path, pairs=["nosuch/asd"])
