"""`sefe bench reglora` end to end on small shapes: real worker processes, real measurements."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from sefe.cli import app
from sefe.sefe_train.reglora.bench import Spec, _run_isolated, parse_shapes


@pytest.mark.slow  # ~25 s on 2 cores: timed worker processes at several shapes
def test_cli_prints_one_json_object_per_shape_and_density(tmp_path) -> None:
    out = tmp_path / "bench.json"
    res = CliRunner().invoke(
        app,
        [
            "bench",
            "reglora",
            "--reps",
            "2",
            "--densities",
            "5",
            "--shapes",
            "96x64",
            "--rank",
            "8",
            "--no-storage",
            "--out",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout[res.stdout.index("[") :])
    assert len(rows) == 1
    row = rows[0]
    assert row["shape"] == "96x64" and row["density"] == 5.0 and row["n_keys"] == 307
    for key in ("ours_s", "reference_s"):
        assert row[key] > 0
    for key in ("ours_peak_mb", "reference_peak_mb"):
        assert row[key] >= 0
    saved = json.loads(out.read_text())
    assert saved["rows"] == rows and saved["machine"]["device"] == "cpu"


def test_bad_shape_is_a_clear_error() -> None:
    res = CliRunner().invoke(app, ["bench", "reglora", "--shapes", "4096by4096"])
    assert res.exit_code != 0
    try:
        parse_shapes("4096by4096")
    except ValueError as err:
        assert "OUTxIN" in str(err)
    else:
        raise AssertionError("parse_shapes accepted a bad shape")


@pytest.mark.slow  # ~14 s on 2 cores: memory probes in isolated workers
def test_reference_peak_sees_the_dense_product_and_ours_does_not() -> None:
    """CPU measurement at a shape where B·A (16 MiB fp32) dwarfs the keys (2 %).

    Through the bench's own isolated worker: in this process glibc's dynamic mmap threshold depends on what
    earlier tests freed, so a reused 16 MiB buffer could hide from the RSS high-water mark.
    """
    common = dict(shape=(2048, 2048), density=2.0, rank=16, dtype="float32", device="cpu", reps=1)
    ref = _run_isolated(Spec(mode="mem_reference", **common))
    ours = _run_isolated(Spec(mode="mem_ours", impl="sampled", **common))
    assert ref["peak_mb"] >= 12  # at least most of one dense 2048x2048 fp32 buffer
    assert ours["peak_mb"] < ref["peak_mb"] / 2
