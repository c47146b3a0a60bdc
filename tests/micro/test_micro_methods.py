"""`sefe micro run --methods` takes every method `sefe train --method` knows and refuses others up front."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from sefe.micro.options import MicroOptions
from sefe.micro.run import run_config
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


def test_default_arms_add_the_replay_control_and_pairs_replace_them(tmp_path: Path) -> None:
    opts = MicroOptions(out=tmp_path)
    assert opts.combos() == [
        ("lora", "original"), ("reglora", "original"), ("lora", "asd"), ("reglora", "asd"), ("replay", "asd"),
    ]  # fmt: skip
    assert opts.seeds == 5
    assert MicroOptions(out=tmp_path, controls=[]).combos()[-1] == ("reglora", "asd")
    assert MicroOptions(out=tmp_path, pairs=["lora/original"]).combos() == [("lora", "original")]


def test_each_seed_has_its_own_data_and_asd_but_one_warm_start_corpus(tmp_path: Path) -> None:
    import orjson
    from rich.console import Console

    from sefe.micro.options import asd_root, data_root
    from sefe.micro.run import ensure_benchmark

    opts = MicroOptions(out=tmp_path, seeds=2, n_train=4, n_test=6, n_warm=3, tasks=["Colour"])
    quiet = Console(quiet=True)
    roots = [ensure_benchmark(opts, quiet, s) for s in (0, 1)]
    assert roots == [data_root(opts, 0), data_root(opts, 1)] and roots[0] != roots[1]
    tests = [(r / "annotations" / "Colour" / "test.json").read_bytes() for r in roots]
    assert tests[0] != tests[1]  # other pictures and questions
    warm = [(r / "warmstart" / "train.json").read_bytes() for r in roots]
    assert warm[0] == warm[1]  # the same warm-start corpus: one cached warm start for both
    assert orjson.loads((roots[1] / "tasks.json").read_bytes())["seed"] == 1
    cfg = run_config(opts, "lora", "asd", 1, roots[1], tmp_path / "warm")
    assert str(asd_root(opts, 1).resolve()) in cfg.train_file
    assert cfg.train.projector_lr == pytest.approx(opts.lr / 10)  # a tenth of the LoRA rate
    one = MicroOptions(out=tmp_path / "v1", vary_data=False, seeds=3)
    assert data_root(one, 2) == data_root(one, 0) == tmp_path / "v1" / "data"


def test_specs_add_the_alone_ceilings_and_the_lambda_sweep_on_seed_0(tmp_path: Path) -> None:
    opts = MicroOptions(out=tmp_path, seeds=2, tasks=["Colour", "Shape"], lam=2500.0)
    names = [s.name for s in opts.specs()]
    assert names[:2] == ["alone_Colour_seed0", "alone_Shape_seed0"]  # first: a run cut short still has them
    assert names[2:12] == [opts.run_name(m, d, s) for s in (0, 1) for m, d in opts.combos()]
    assert names[12:] == ["reglora-lam0_asd_seed0", "reglora-lam25000_asd_seed0"]
    alone = opts.specs()[0]
    assert alone.tasks == ["Colour"] and (alone.method, alone.data, alone.seed) == ("lora", "original", 0)
    sweep = opts.specs()[-1]
    cfg = run_config(opts, sweep.method, sweep.data, 0, tmp_path / "data", tmp_path / "warm", sweep)
    assert Path(cfg.output_dir).name == "reglora-lam25000_asd_seed0"
    assert MicroOptions(out=tmp_path, alone=False, lam_sweep=[]).specs()[-1].name == "replay_asd_seed4"
