"""`sefe report` and `sefe eval score` end to end: files written, PNGs valid, secrets kept out."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from PIL import Image
from typer.testing import CliRunner

from sefe.cli import app
from sefe.evaluation.metrics import AccuracyMatrix
from tests.helpers.scoring import short_records

TASKS = ["ScienceQA", "TextVQA", "ImageNet"]


def _run(root: Path, name: str, rows: list[list[float]], method: str) -> Path:
    run = root / name
    m = AccuracyMatrix(tasks=TASKS)
    for k, row in enumerate(rows):
        for i, v in enumerate(row):
            m.set(
                k,
                i,
                v,
                details={
                    "correct": v / 10,
                    "total": 10,
                    "missing": 0,
                    "gt_source": "test.json",
                    "notes": ["fallback to test.json answers"] if i == 0 else [],
                },
            )
    m.save(run / "accuracy.json")
    (run / "config.yaml").write_text(
        f"method: {method}\nmodel:\n  tiny: true\nasd:\n  api_key: sk-secret-123\n  base_url: http://x\n"
        "eval:\n  max_new_tokens: 128\n"
    )
    return run


@pytest.fixture
def two_runs(tmp_path: Path) -> tuple[Path, Path]:
    lora = _run(tmp_path, "lora", [[80.0], [30.0, 70.0], [20.0, 35.0, 90.0]], "lora")
    reglora = _run(tmp_path, "reglora", [[80.0], [65.0, 68.0], [60.0, 62.0, 85.0]], "reglora")
    return lora, reglora


def _check_png(path: Path) -> None:
    assert path.stat().st_size > 5_000
    with Image.open(path) as img:
        img.verify()
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size[0] > 300 and img.size[1] > 200


def test_report_side_by_side(two_runs: tuple[Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "rep"
    result = CliRunner().invoke(app, ["report", str(two_runs[0]), str(two_runs[1]), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "reglora (compat): MFT 77.67" in result.output
    md = (out / "report.md").read_text()
    data = orjson.loads((out / "report.json").read_bytes())
    assert "| MFN | 48.33 | 69.00 |" in md  # (20+35+90)/3 and (60+62+85)/3
    assert "| BWT | -47.50 | -13.00 |" in md
    assert "| method | `lora` | `reglora` |" in md  # what tells the runs apart, from their configs
    assert "**compat**" in md and "fallback to test.json answers" in md
    assert [r["label"] for r in data["runs"]] == ["lora", "reglora"]
    assert data["runs"][1]["metrics"]["BWT_all"] == pytest.approx(-26 / 3)
    assert data["runs"][0]["config"]["method"] == "lora"
    assert "transformers" in data["versions"]
    for text in (md, (out / "report.json").read_text()):
        assert "sk-secret-123" not in text
    assert data["runs"][0]["config"]["asd"]["api_key"] == "***"
    assert data["runs"][0]["config"]["eval"]["max_new_tokens"] == 128  # redacted by key, not by substring
    assert "max_new_tokens: 128" in md
    pngs = ["compare.png", "heatmap_lora.png", "stages_lora.png", "heatmap_reglora.png", "stages_reglora.png"]
    for name in pngs:
        _check_png(out / name)
        assert f"({name})" in md


def test_report_single_run_defaults_to_run_folder_and_partial(tmp_path: Path) -> None:
    run = _run(tmp_path, "partial", [[55.0], [40.0]], "reglora")
    result = CliRunner().invoke(app, ["report", str(run), "--no-plots"])
    assert result.exit_code == 0, result.output
    md = (run / "report.md").read_text()
    assert "Partial run: 1 of 3 stages complete." in md


def test_report_errors_on_missing_matrix(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 2 and "no accuracy.json" in result.output


def test_eval_score_cli(
    tmp_path: Path, write_json: Callable[[str, Any], Path], write_preds: Callable[..., Path]
) -> None:
    ann = write_json("t.json", short_records([(1, "yes"), (2, "no"), (3, "no")]))
    preds = write_preds([(1, "Yes"), (2, "yes")])
    runner = CliRunner()
    res = runner.invoke(app, ["eval", "score", "--task", "VQAv2", "-p", str(preds), "-a", str(ann), "--json"])
    assert res.exit_code == 0, res.output
    obj = orjson.loads(res.stdout)
    assert {k: obj[k] for k in ("task", "mode", "accuracy", "correct", "total", "missing")} == {
        "task": "VQAv2",
        "mode": "compat",
        "accuracy": 50.0,
        "correct": 1,
        "total": 2,
        "missing": 1,
    }
    res = runner.invoke(
        app, ["eval", "score", "--task", "VQAv2", "-p", str(preds), "-a", str(ann), "--mode", "fixed"]
    )
    assert res.exit_code == 0 and "VQAv2 (fixed)" in res.output and "33.33" in res.output
    preds.write_text("not json\n")
    res = runner.invoke(app, ["eval", "score", "--task", "VQAv2", "-p", str(preds), "-a", str(ann)])
    assert res.exit_code == 2 and "line 1: broken JSON" in res.output


def test_report_redacts_credentials_under_keys_not_named_secret(tmp_path: Path) -> None:
    run = _run(tmp_path, "lora", [[80.0]], "lora")
    (run / "config.yaml").write_text(
        "method: lora\ntrain:\n  report_to: sk-live-4f1c9e0bd00d\n"
        "judge:\n  base_url: https://host/v1?token=qq-77-secret&page=2\n"
    )
    out = tmp_path / "rep"
    result = CliRunner().invoke(app, ["report", str(run), "--out", str(out)])
    assert result.exit_code == 0, result.output
    for text in (result.output, (out / "report.md").read_text(), (out / "report.json").read_text()):
        assert "4f1c9e0bd00d" not in text and "qq-77-secret" not in text
    config = orjson.loads((out / "report.json").read_bytes())["runs"][0]["config"]
    assert config["train"]["report_to"] == "***"
    assert config["judge"]["base_url"] == "https://host/v1?token=***&page=2"
