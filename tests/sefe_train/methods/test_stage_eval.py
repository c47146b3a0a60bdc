"""`sefe eval run` on a MoELoRA stage: `merged/` is not the whole model (the experts live beside it), so it is
refused with a one-line error naming the command that evaluates the stage; the stage folder itself loads
through the method, experts included, and scores what the runner scored after training."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner, Result

from sefe.cli import app
from sefe.sefe_train.runner import ContinualRunner
from tests.helpers.train import make_config

pytestmark = pytest.mark.slow

SETTINGS = ["train.max_steps=2", "method_options.moelora.experts=4"]


@pytest.fixture(scope="module")
def moelora_stage(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    run = tmp_path_factory.mktemp("stage-eval") / "moelora"
    cfg = make_config(run, "moelora", SETTINGS, tasks=["ScienceQA"])
    ContinualRunner(cfg).run()
    return run / "1_ScienceQA", cfg.resolved_data_root()


def _texts(path: Path) -> list[str]:
    return [orjson.loads(line)["text"] for line in path.read_bytes().splitlines()]


def _eval(model: Path, root: Path, out: Path) -> Result:
    args = ["eval", "run", "-m", str(model), "--data-root", str(root), "--tasks", "ScienceQA", "-o", str(out)]
    return CliRunner().invoke(app, [*args, "--limit", "2", "--max-new-tokens", "3", "--batch-size", "2"])


def test_eval_refuses_a_moelora_merged_folder_naming_the_stage_command(
    moelora_stage: tuple[Path, Path], tmp_path: Path
) -> None:
    stage, root = moelora_stage
    config = orjson.loads((stage / "merged" / "config.json").read_bytes())
    assert config["sefe_incomplete"]["file"] == "moelora.safetensors"
    result = _eval(stage / "merged", root, tmp_path / "p")
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "not the whole model" in lines[0]
    assert f"sefe eval run --model {stage.resolve()}" in lines[0]
    assert not (tmp_path / "p" / "ScienceQA.jsonl").exists()


def test_eval_of_the_stage_folder_loads_the_experts_and_matches_the_runner(
    moelora_stage: tuple[Path, Path], tmp_path: Path
) -> None:
    from sefe.sefe_train.methods import _moe_layer as M
    from sefe.sefe_train.stage_folder import load_stage

    stage, root = moelora_stage
    model, _ = load_stage(stage, "cpu")
    assert len(dict(M.layers(model))) == 14
    assert not hasattr(model.config, "sefe_incomplete")  # with its experts it is the whole model again
    result = _eval(stage, root, tmp_path / "p")
    assert result.exit_code == 0, result.output
    got = _texts(tmp_path / "p" / "ScienceQA.jsonl")
    assert got and got == _texts(stage / "eval" / "ScienceQA.jsonl")[: len(got)]


def test_a_stage_folder_runs_on_the_hf_engine_only(moelora_stage: tuple[Path, Path], tmp_path: Path) -> None:
    stage, root = moelora_stage
    args = [
        "eval",
        "run",
        "-m",
        str(stage),
        "--data-root",
        str(root),
        "-o",
        str(tmp_path),
        "--engine",
        "vllm",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "hf engine only" in result.output
