"""CI smoke of `sefe micro run`: two tasks, one seed, LoRA and RegLoRA on original and ASD data, resumed."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from sefe.cli import app


@pytest.mark.slow  # four tiny continual runs of two stages each, plus a 10-step warm start (~1-2 min)
def test_micro_run_two_tasks_one_seed_and_resume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEFE_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "micro"
    args = [
        "micro", "run", "--out", str(out), "--methods", "lora,reglora", "--data", "original,asd",
        "--seeds", "1", "--tasks", "Colour,Count", "--train", "24", "--test", "6", "--warm-steps", "10",
        "--vision-steps", "10", "--epochs", "1", "--jobs", "2",
    ]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = orjson.loads((out / "report.json").read_bytes())
    assert {(r["method"], r["data"], r["seed"]) for r in report["runs"]} == {
        (m, d, 0) for m in ("lora", "reglora") for d in ("original", "asd")
    } | {("replay", "asd", 0)}  # the positive control runs by default
    for run in report["runs"]:
        for kind in ("accuracy", "format_errors", "knowledge", "latent"):
            m = run[kind]
            assert m["tasks"] == ["Colour", "Count"] and len(m["rows"]) == 2 and len(m["rows"][1]) == 2
            assert all(0 <= v <= 100 for row in m["rows"] for v in row if v is not None)
    assert set(report["groups"]) == {
        "lora/original",
        "lora/asd",
        "reglora/original",
        "reglora/asd",
        "replay/asd",
    }
    # the ceiling: each task's accuracy right after it was learned, beside the majority class and the best
    # constant answer of its stratified test (6 items: Colour 6 classes -> 1/6, Count 4 classes -> 2/6)
    base = report["ceiling"]["baselines"]
    assert base["Colour"]["majority"] == pytest.approx(16.67) and base["Count"]["majority"] == 33.33
    assert base["Count"]["best_constant"] == 33.33
    for run in report["runs"]:  # the share of the most frequent answer, per cell
        top = run["top_share"]["rows"]
        assert len(top) == 2 and all(100 / 6 - 0.01 <= v <= 100 for row in top for v in row)
        oop = run["out_of_pool"]["rows"]  # answers in none of the task's own answers
        assert len(oop) == 2 and all(0 <= v <= 100 for row in oop for v in row)
        assert set(run["from_pool"]["1,0"]) == {"Count"} and run["metrics"]["OOP_later"] == oop[1][0]
    assert all(len(row) == 2 for row in report["ceiling"]["learned"].values())
    # the primary endpoints, paired by seed: with one seed there is no interval, so nothing is established
    fe = next(e for e in report["endpoints"] if e["endpoint"]["metric"] == "FE_later")
    assert fe["seeds"] == [0] and fe["t"]["low"] is None and fe["verdict"] == "not established"
    assert all(f["verdict"] == "not established" for f in report["findings"])
    assert all(set(r["metrics"]) >= {"rho_K", "rho_L", "OOP_later"} for r in report["runs"])
    # the ceiling of each task trained alone, and the λ sweep on seed 0 (the main run is λ 2500)
    assert set(report["ceiling"]["alone"]) == {"Colour", "Count"}
    assert all(0 <= v["accuracy"] <= 100 for v in report["ceiling"]["alone"].values())
    assert [e["lam"] for e in report["lambda_sweep"]] == [0.0, 2500.0, 25000.0]
    md = (out / "report.md").read_text()
    assert "trained alone" in md and "λ sweep" in md
    assert "## Findings" in md and "## Ceiling" in md
    assert "Format errors (%)" in md and "Knowledge probe (%)" in md and "Most frequent answer" in md
    assert "Latent probe" in md and (out / "runs" / "lora_asd_seed0" / "latent" / "Count.json").is_file()
    assert "majority class" in md and "Out of pool" in md
    for png in ("accuracy.png", "format_errors.png", "knowledge.png", "metrics.png"):
        assert (out / png).stat().st_size > 1000
    assert (out / "asd" / "seed0" / "annotations" / "Count" / "train_x20.json").is_file()  # per seed
    # every run is a normal run folder: `sefe report` shows its format-error and knowledge matrices too
    run_dir = out / "runs" / "lora_original_seed0"
    assert (run_dir / "format_errors.json").is_file() and (run_dir / "knowledge.json").is_file()
    # and its pool cells, recorded after each stage, are the ones the Micro report shows
    recorded = orjson.loads((run_dir / "out_of_pool.json").read_bytes())["rows"]
    shown = next(r for r in report["runs"] if r["name"] == "lora_original_seed0")
    assert shown["out_of_pool"]["rows"] == recorded
    assert shown["from_pool"] == orjson.loads((run_dir / "from_pool.json").read_bytes())["cells"]
    # resume: the same command again skips every finished stage and rewrites the same numbers
    # the runs were trained two at a time (`--jobs 2`), each process logging to runs/<run>.log
    assert "stage 2/2" in (out / "runs" / "reglora_asd_seed0.log").read_text()
    again = CliRunner().invoke(app, [*args[:-1], "1"])  # resumed one at a time, in this process
    assert again.exit_code == 0, again.output
    assert "done, skipped" in again.output or "skipped" in again.output
    report2 = orjson.loads((out / "report.json").read_bytes())
    assert [r["accuracy"] for r in report2["runs"]] == [r["accuracy"] for r in report["runs"]]
    # a run cut short (its last stage not evaluated yet) is named as unfinished and kept out of every table
    from sefe.micro.options import MicroOptions
    from sefe.micro.report import write_report

    acc = orjson.loads((run_dir / "accuracy.json").read_bytes())
    (run_dir / "accuracy.json").write_bytes(orjson.dumps({**acc, "rows": acc["rows"][:1]}))
    write_report(MicroOptions.model_validate(orjson.loads((out / "micro.json").read_bytes())), tmp_path, {})
    cut = orjson.loads((out / "report.json").read_bytes())
    assert cut["unfinished"] == ["lora_original_seed0"] and "lora/original" not in cut["groups"]
    assert "lora_original_seed0" not in {r["name"] for r in cut["runs"]}
    assert "Not finished (left out of every table):** lora_original_seed0" in (out / "report.md").read_text()


def test_micro_run_rejects_bad_options_with_exit_code_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["micro", "run", "--out", str(tmp_path), "--data", "shuffled"])
    assert result.exit_code == 2
    assert "data" in result.output
