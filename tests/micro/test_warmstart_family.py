"""`sefe micro run --family`: LLaVA's warm start keeps its cache key; a small Qwen2.5-VL warm start builds
through the same two stages and a continual run on it completes with every matrix of the report."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from rich.console import Console
from typer.testing import CliRunner

from sefe.cli import app
from sefe.micro.options import MicroOptions
from sefe.micro.vision_pretrain import VisionPretrainOptions
from sefe.micro.warmstart import WarmStartOptions, micro_model_config, warmstart_dir, warmstart_key

# recorded before families existed (`micro_model_config().digest()` and the key of a `[]` corpus)
LLAVA_DIGEST = "b8cb830ad834"
LLAVA_KEY = "e25f79cc2ad2"


def test_the_llava_warm_start_key_is_the_one_recorded_before_families(tmp_path: Path) -> None:
    corpus = tmp_path / "train.json"
    corpus.write_bytes(b"[]")
    assert MicroOptions(out=tmp_path / "o").family == "llava"
    llava = micro_model_config()
    assert llava.digest() == LLAVA_DIGEST
    assert warmstart_key(llava, WarmStartOptions(), corpus) == LLAVA_KEY
    qwen = micro_model_config(family="qwen2_5_vl")
    assert qwen.digest() != LLAVA_DIGEST and warmstart_key(qwen, WarmStartOptions(), corpus) != LLAVA_KEY
    assert qwen.model_dump(include={"hidden_size", "num_layers", "vision_layers"}) == llava.model_dump(
        include={"hidden_size", "num_layers", "vision_layers"}
    )


def test_a_qwen_warm_start_builds_in_a_few_steps_per_stage(tmp_path: Path) -> None:
    from PIL import Image

    from sefe.micro.generate import build_micro
    from sefe.models.family import family_for_folder

    root = build_micro(tmp_path / "data", seed=0, n_train=4, n_test=2, n_warm=60)
    opts = WarmStartOptions(steps=4, simple_steps=2, batch_size=4, vision=VisionPretrainOptions(steps=3))
    warm = warmstart_dir(
        root, opts=opts, cache_dir=tmp_path / "cache", console=Console(quiet=True), family="qwen2_5_vl"
    )
    key = warmstart_key(micro_model_config(family="qwen2_5_vl"), opts, root / "warmstart" / "train.json")
    assert warm.name == f"micro-warmstart-{key}"
    info = orjson.loads((warm / "warmstart.json").read_bytes())
    assert (
        info["family"] == "qwen2_5_vl" and info["vision"]["steps"] == 3 and info["vision"]["pictures"] == 60
    )
    assert set(info["vision"]["held_out"]) >= {"colour_per_object", "count"}
    family = family_for_folder(warm)  # a standard Qwen2.5-VL folder: the runner finds the family in it
    assert family.name == "qwen2_5_vl"
    model, processor = family.load(warm)
    assert all(p.requires_grad for p in model.parameters())
    enc = family.encode(processor, [("<image>\nWhat colour?", "red")], Image.new("RGB", (48, 48)), 512)
    assert enc.input_ids.count(processor.image_token_id) == 9
    assert warmstart_dir(root, opts=opts, cache_dir=tmp_path / "cache", family="qwen2_5_vl") == warm  # cached


@pytest.mark.slow  # a 10+10-step warm start and two continual runs of two stages (~30-60 s)
def test_micro_run_on_the_qwen_warm_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEFE_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "micro"
    args = [
        "micro", "run", "--family", "qwen2_5_vl", "--out", str(out), "--methods", "lora",
        "--data", "original,asd", "--seeds", "1", "--tasks", "Colour,Locate", "--train", "24", "--test", "6",
        "--warm-steps", "10", "--vision-steps", "10", "--epochs", "1", "--controls", "", "--lam-sweep", "",
        "--no-alone", "--threads", "1",
    ]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = orjson.loads((out / "report.json").read_bytes())
    assert {(r["method"], r["data"]) for r in report["runs"]} == {("lora", "original"), ("lora", "asd")}
    for run in report["runs"]:
        for kind in ("accuracy", "format_errors", "knowledge", "latent"):
            assert [len(row) for row in run[kind]["rows"]] == [1, 2], kind
    config = orjson.loads(
        (out / "runs" / "lora_asd_seed0" / "2_Locate" / "merged" / "config.json").read_bytes()
    )
    assert config["model_type"] == "qwen2_5_vl"
    assert orjson.loads((out / "micro.json").read_bytes())["family"] == "qwen2_5_vl"
    assert "Warm start (qwen2_5_vl family)" in (out / "report.md").read_text()


def test_a_family_without_a_small_model_is_refused_with_exit_code_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["micro", "run", "--out", str(tmp_path), "--family", "internvl"])
    assert result.exit_code == 2
    assert "no small warm-start model for family 'internvl'" in result.output
    assert not (tmp_path / "micro.json").exists()
