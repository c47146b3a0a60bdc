"""Run config: the paper's defaults, YAML files shipped in configs/, command-line overrides, clear errors."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sefe.cli import app
from sefe.sefe_train.config import (
    LANGUAGE_MODEL_LINEARS,
    ConfigError,
    RunConfig,
    load_config,
    select_tasks,
)
from sefe.sefe_train.distributed import check_deepspeed

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"


def test_defaults_are_the_papers() -> None:
    cfg = RunConfig(tasks=["ScienceQA"])
    assert (cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout) == (128, 256, 0.05)
    t = cfg.train
    assert (t.lr, t.projector_lr, t.epochs, t.scheduler, t.warmup_ratio, t.weight_decay) == (
        2e-4,
        2e-5,
        1.0,
        "cosine",
        0.03,
        0.0,
    )
    assert (
        t.global_batch_size == 128 and cfg.model.dtype == "bf16" and cfg.model.attn_implementation == "sdpa"
    )
    assert (cfg.reglora.lam, cfg.reglora.top_percent, cfg.reglora.reg_delta) == (2500.0, 2.0, "ba")
    assert cfg.method == "reglora" and cfg.eval.enabled and cfg.eval.mode == "compat"


def test_target_regex_hits_language_model_linears_only() -> None:
    rx = re.compile(LANGUAGE_MODEL_LINEARS)
    for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
        assert rx.fullmatch(f"model.language_model.layers.3.self_attn.{proj}")
        assert not rx.fullmatch(f"model.vision_tower.vision_model.encoder.layers.3.self_attn.{proj}")
    for proj in ("gate_proj", "up_proj", "down_proj"):
        assert rx.fullmatch(f"model.language_model.layers.0.mlp.{proj}")
    assert not rx.fullmatch("model.multi_modal_projector.linear_1")
    assert not rx.fullmatch("lm_head")


def test_gradient_accumulation_gives_the_global_batch() -> None:
    cfg = RunConfig(tasks=["ScienceQA"])
    assert cfg.train.grad_accum(1) == 8 and cfg.train.grad_accum(8) == 1 and cfg.train.grad_accum(4) == 2
    with pytest.raises(ConfigError, match="global_batch_size=128"):
        cfg.train.grad_accum(3)


@pytest.mark.parametrize("name", ["coin-mini.yaml", "coin-mini-lora.yaml", "coin-llava7b.yaml"])
def test_shipped_configs_validate(name: str) -> None:
    cfg = load_config(CONFIGS / name)
    assert cfg.tasks and cfg.output_dir
    if name == "coin-llava7b.yaml":
        assert [t.name for t in cfg.tasks] == [
            "ScienceQA",
            "TextVQA",
            "ImageNet",
            "GQA",
            "VizWiz",
            "Grounding",
            "VQAv2",
            "OCRVQA",
        ]
        assert cfg.lora.r == 128 and cfg.train.global_batch_size == 128 and cfg.model.llm
        assert cfg.train_path(cfg.tasks[0]).as_posix().endswith("annotations/ScienceQA/train_x20.json")
    else:
        assert cfg.model.path == "tiny"
        # The bundled root: in the checkout, or in the strict editable link tree (`make install`) whose files
        # link to the checkout's, so compare what the files resolve to.
        rel = Path("annotations") / "ScienceQA" / "train.json"
        assert (cfg.resolved_data_root() / rel).resolve() == (REPO / "data" / "coin-mini" / rel).resolve()
        assert all(cfg.train_path(t).is_file() for t in cfg.tasks)
    assert (
        load_config(CONFIGS / "coin-mini-lora.yaml").method,
        load_config(CONFIGS / "coin-mini.yaml").method,
    ) == (
        "lora",
        "reglora",
    )


def test_overrides_reach_every_section(tmp_path: Path) -> None:
    cfg = load_config(
        CONFIGS / "coin-mini.yaml",
        [
            "train.lr=1e-4",
            "reglora.lam=10",
            "reglora.accumulate=concat",
            "lora.r=4",
            "model.dtype=bf16",
            "model.attn_implementation=eager",
            "eval.enabled=false",
            f"output_dir={tmp_path}",
            "train.gradient_checkpointing=true",
            "method=lora",
        ],
    )
    assert cfg.train.lr == 1e-4 and cfg.reglora.lam == 10 and cfg.reglora.accumulate == "concat"
    assert cfg.lora.r == 4 and cfg.model.dtype == "bf16" and cfg.model.attn_implementation == "eager"
    assert not cfg.eval.enabled and cfg.output_dir == str(tmp_path) and cfg.train.gradient_checkpointing
    assert cfg.method == "lora"
    sel = select_tasks(cfg, ["ImageNet", "ScienceQA", "GQA"])
    assert [t.name for t in sel.tasks] == ["ImageNet", "ScienceQA", "GQA"]


def test_bad_config_names_file_and_key(tmp_path: Path) -> None:
    bad = tmp_path / "run.yaml"
    bad.write_text("tasks: [ScienceQA]\ntrain:\n  lr: fast\n  lerning_rate: 1\n")
    with pytest.raises(ConfigError) as err:
        load_config(bad)
    msg = str(err.value)
    assert str(bad) in msg and "train.lr" in msg and "train.lerning_rate" in msg
    with pytest.raises(ConfigError, match=r"key\.sub=value"):
        load_config(None, ["no-equals-sign"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    dup = tmp_path / "dup.yaml"
    dup.write_text("tasks: [GQA, GQA]\n")
    with pytest.raises(ConfigError, match="tasks must be unique"):
        load_config(dup)
    with pytest.raises(ConfigError, match=r"model\.llm, model\.vision and model\.projector"):
        load_config(None, ["model.llm=/x"])


def test_zero3_refused_zero2_accepted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    z3 = tmp_path / "z3.json"
    z3.write_text(json.dumps({"zero_optimization": {"stage": 3}}))
    with pytest.raises(ConfigError, match="ZeRO-3 is not supported"):
        check_deepspeed(load_config(None, [f"train.deepspeed={z3}"]))
    zero2 = load_config(None, [f"train.deepspeed={CONFIGS / 'deepspeed' / 'zero2.json'}"])
    if importlib.util.find_spec("deepspeed") is None:
        with pytest.raises(ConfigError, match=r"pip install 'sefe\[deepspeed\]'"):
            check_deepspeed(zero2)
    else:
        check_deepspeed(zero2)
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "3")
    with pytest.raises(ConfigError, match="ZeRO-3"):
        check_deepspeed(load_config(None, []))


def test_cli_flags_and_print_config(tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(
        app,
        [
            "train",
            "--print-config",
            "--method",
            "reglora",
            "--out",
            str(tmp_path / "r"),
            "--tasks",
            "GQA,VizWiz",
            "--max-steps",
            "3",
            "--no-eval",
            "--reg-delta",
            "scaled",
            "--accumulate",
            "concat",
            "--set",
            "train.lr=3e-4",
            "--set",
            "lora.alpha=8",
        ],
    )
    assert res.exit_code == 0, res.output
    import yaml

    cfg = RunConfig.model_validate(yaml.safe_load(res.stdout))
    assert cfg.method == "reglora" and cfg.output_dir == str(tmp_path / "r")
    assert [t.name for t in cfg.tasks] == ["GQA", "VizWiz"] and cfg.train.max_steps == 3
    assert not cfg.eval.enabled and cfg.reglora.reg_delta == "scaled" and cfg.reglora.accumulate == "concat"
    assert cfg.train.lr == 3e-4 and cfg.lora.alpha == 8
    res = runner.invoke(app, ["train", "--set", "train.lr=abc", "--print-config"])
    assert res.exit_code == 2 and "train.lr" in res.output
    # RegLoRA's flags are options of that method: another method refuses them (they used to be dropped)
    res = runner.invoke(app, ["train", "--print-config", "--method", "lora", "--reg-delta", "scaled"])
    assert res.exit_code == 2 and "lora.reg_delta" in res.output


def test_missing_train_file_and_unscorable_task_fail_before_training(tmp_path: Path) -> None:
    from sefe.sefe_train.runner import ContinualRunner

    cfg = load_config(None, [f"output_dir={tmp_path / 'r'}", "train_file=annotations/{task}/train_x99.json"])
    with pytest.raises(FileNotFoundError, match=r"train_x99\.json"):
        ContinualRunner(cfg).run()
    root = tmp_path / "data"
    (root / "annotations" / "MyTask").mkdir(parents=True)
    (root / "annotations" / "MyTask" / "train.json").write_text("[]")
    cfg = load_config(None, [f"output_dir={tmp_path / 'r'}", f"data_root={root}"])
    cfg = select_tasks(cfg, ["MyTask"])
    with pytest.raises(ConfigError, match=r"MyTask.*--no-eval"):
        ContinualRunner(cfg).run()
    assert not (tmp_path / "r").exists()


def test_embedded_default_is_configs_coin_mini() -> None:
    """`sefe train` with no config runs what configs/coin-mini.yaml documents (only output_dir differs)."""
    shipped = load_config(CONFIGS / "coin-mini.yaml").model_dump()
    embedded = load_config(None).model_dump()
    shipped.pop("output_dir"), embedded.pop("output_dir")
    assert embedded == shipped
