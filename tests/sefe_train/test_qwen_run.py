"""Qwen2.5-VL through `sefe train`, `sefe eval run` and `sefe report`: the tiny Qwen (real vocabulary, CPU,
no downloads) on coin-mini, three tasks with RegLoRA and evaluation after each stage.

What it pins: the run resolves the family from `model.family`; LoRA sits on the language model's linears
only and the projector (`merger`) trains at its own rate; RegLoRA's keys cover the tiny model's 2 x 7 LoRA
modules; merged folders are Qwen2.5-VL folders; Grounding trains on Qwen's pixel boxes and its answers are
scored in CoIN's convention; `sefe eval run` on a merged folder writes the predictions the in-training
evaluation wrote; the knowledge probe ranks ScienceQA's option letters through the Qwen template
(knowledge.json filled where a task has candidates).
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from sefe.cli import app
from sefe.models import vocab
from sefe.sefe_train.methods import method_names
from sefe.sefe_train.runner import ContinualRunner
from tests.helpers.methods import MethodRecorder
from tests.helpers.qwen import require_qwen_vocab
from tests.helpers.train import COIN_MINI, make_config

VOCAB_DIR = vocab.vocab_dir()  # resolved at import, as the other Qwen tests do
QWEN = ["model.family=qwen2_5_vl", "train.max_length=1024"]
TASKS = ["ScienceQA", "TextVQA", "Grounding"]
SETTINGS = [*QWEN, "train.max_steps=2", "eval.max_new_tokens=6"]


@pytest.fixture(scope="module")
def qwen_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, MethodRecorder]:
    require_qwen_vocab(VOCAB_DIR)
    run = tmp_path_factory.mktemp("qwen") / "reglora"
    rec = MethodRecorder()
    ContinualRunner(make_config(run, "reglora", SETTINGS, tasks=TASKS), callbacks=[rec]).run()
    return run, rec


def test_three_tasks_train_and_evaluate(qwen_run: tuple[Path, MethodRecorder]) -> None:
    from sefe.sefe_train.reglora.keys import KeyStore

    run, rec = qwen_run
    state = orjson.loads((run / "state.json").read_bytes())
    assert [s["task"] for s in state["done"]] == TASKS
    acc = orjson.loads((run / "accuracy.json").read_bytes())
    assert acc["tasks"] == TASKS and [len(r) for r in acc["rows"]] == [1, 2, 3]
    assert all(v is not None and 0 <= v <= 100 for r in acc["rows"] for v in r)
    for k, task in enumerate(TASKS, start=1):
        config = orjson.loads((run / f"{k}_{task}" / "merged" / "config.json").read_bytes())
        assert config["model_type"] == "qwen2_5_vl"
        assert sorted(p.stem for p in (run / f"{k}_{task}" / "eval").glob("*.jsonl")) == sorted(TASKS[:k])
    assert len(rec.begins) == 3
    for begin in rec.begins:
        trained = begin["trained"]
        lora = {n for n in trained if ".lora_" in n}
        assert lora and all(".language_model." in n for n in lora)
        projector = trained - lora
        assert projector and all(".visual.merger.modules_to_save." in n for n in projector)
        assert begin["group_lrs"] == [5e-3, 1e-3]  # LoRA at train.lr, the merger at train.projector_lr
    keys = KeyStore.load(run / "3_Grounding" / "keys.safetensors")
    assert len(keys.module_names) == 2 * 7  # two layers x seven linears
    knowledge = orjson.loads((run / "knowledge.json").read_bytes())
    assert knowledge["tasks"] == TASKS and len(knowledge["rows"]) == 3
    assert all(r[0] is not None and 0 <= r[0] <= 100 for r in knowledge["rows"])  # ScienceQA: letters
    assert all(v is None for r in knowledge["rows"] for v in r[1:])  # TextVQA, Grounding: no candidates
    probe = orjson.loads((run / "3_Grounding" / "eval" / "probe.json").read_bytes())
    assert list(probe) == ["ScienceQA"] and probe["ScienceQA"]["total"] > 0


def test_report_reads_the_qwen_run(qwen_run: tuple[Path, MethodRecorder], tmp_path: Path) -> None:
    run, _ = qwen_run
    result = CliRunner().invoke(app, ["report", str(run), "--out", str(tmp_path), "--no-plots"])
    assert result.exit_code == 0, result.output
    text = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert all(task in text for task in TASKS)


@pytest.mark.parametrize("folder", ["3_Grounding/merged", "3_Grounding"])  # the stage folder: by its method
def test_eval_run_on_a_merged_folder_gives_the_training_predictions(
    qwen_run: tuple[Path, MethodRecorder], tmp_path: Path, folder: str
) -> None:
    run, _ = qwen_run
    args = ["eval", "run", "--model", str(run / folder), "--data-root", str(COIN_MINI)]
    args += ["--out", str(tmp_path), "--tasks", ",".join(TASKS), "--limit", "2", "--batch-size", "2"]
    args += ["--max-new-tokens", "6", "--model-id", "reglora-3", "--dtype", "float32", "--device", "cpu"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    for task in TASKS:
        ours = (tmp_path / f"{task}.jsonl").read_bytes()
        assert ours and ours == (run / "3_Grounding" / "eval" / f"{task}.jsonl").read_bytes(), task


def test_grounding_boxes_trained_in_qwen_pixels_and_scored_in_coin_fractions(
    qwen_run: tuple[Path, MethodRecorder],
) -> None:
    """The dataset converts Grounding targets (and only them); evaluation converts a Qwen box back."""
    from PIL import Image

    from sefe.evaluation.inference import _answers_in_coin_boxes, _Job, _Writer
    from sefe.sefe_train.stage_model import load_base, run_family, train_dataset

    run, _ = qwen_run
    cfg = make_config(run, "reglora", SETTINGS, tasks=TASKS)
    family = run_family(cfg)
    _, processor = load_base(cfg, None)
    assert family.name == "qwen2_5_vl"
    assert train_dataset(cfg, cfg.tasks[2], processor).box_answers
    assert not train_dataset(cfg, cfg.tasks[0], processor).box_answers
    image = Image.new("RGB", (640, 480))
    qwen_box = family.target_to_family("[0.25, 0.375, 0.75, 0.625]", image.size, processor)
    assert qwen_box != "[0.25, 0.375, 0.75, 0.625]"
    writer = _Writer(COIN_MINI, "m", "always", None, family, processor, frozenset({"Grounding"}))
    back = _answers_in_coin_boxes(_Job("Grounding", Path("t"), []), [image, None], [qwen_box, "x"], writer)
    assert back == ["[0.25, 0.38, 0.75, 0.62]", "x"]
    other = _answers_in_coin_boxes(_Job("TextVQA", Path("t"), []), [image], [qwen_box], writer)
    assert other == [qwen_box]  # a box-like text of another task is the model's answer, kept


@pytest.mark.slow
@pytest.mark.parametrize("name", method_names())  # every method of `sefe train --help`
def test_every_method_runs_two_stages_on_qwen(name: str, tmp_path: Path) -> None:
    require_qwen_vocab(VOCAB_DIR)
    extra = ["eval.max_samples=1", "eval.max_new_tokens=2"]
    rec = MethodRecorder()
    run = tmp_path / name
    ContinualRunner(make_config(run, name, [*SETTINGS, *extra]), callbacks=[rec]).run()
    state = orjson.loads((run / "state.json").read_bytes())
    assert [s["task"] for s in state["done"]] == ["ScienceQA", "TextVQA"]
    acc = orjson.loads((run / "accuracy.json").read_bytes())
    assert [len(r) for r in acc["rows"]] == [1, 2]
    for begin in rec.begins:
        assert any(".visual.merger." in n for n in begin["trained"]), name  # the projector trains
        assert not any(".visual.blocks." in n for n in begin["trained"]), name  # the vision tower does not


def test_a_family_the_folder_contradicts_is_a_config_error(tmp_path: Path) -> None:
    from sefe.sefe_train.config import ConfigError, load_config
    from sefe.sefe_train.stage_model import run_family

    (tmp_path / "config.json").write_text('{"model_type": "llava"}', encoding="utf-8")
    base = ["tasks=[ScienceQA]", f"model.path={tmp_path}"]
    assert run_family(load_config(None, base)).name == "llava"  # from the folder
    with pytest.raises(ConfigError, match="model_type 'llava'"):
        run_family(load_config(None, [*base, "model.family=qwen2_5_vl"]))
    with pytest.raises(ConfigError, match="unknown model family 'qwen9'"):
        load_config(None, [*base, "model.family=qwen9"])
    with pytest.raises(ConfigError, match="assemble a LLaVA model only"):
        load_config(None, ["model.llm=a", "model.vision=b", "model.projector=c", "model.family=qwen2_5_vl"])


@pytest.mark.slow
@pytest.mark.parametrize("family", ["qwen3_vl", "internvl"])
def test_the_other_families_train_and_evaluate_through_the_same_wiring(family: str, tmp_path: Path) -> None:
    """Qwen3-VL (deep-stack mergers in the projector) and InternVL (tiles, `multi_modal_projector`) through
    the runner: nothing in it names a family."""
    require_qwen_vocab(VOCAB_DIR)
    run = tmp_path / family
    settings = [*SETTINGS, f"model.family={family}", "train.max_length=4096", "eval.max_samples=2"]
    rec = MethodRecorder()
    ContinualRunner(make_config(run, "reglora", settings, ["ScienceQA", "Grounding"]), callbacks=[rec]).run()
    acc = orjson.loads((run / "accuracy.json").read_bytes())
    assert [len(r) for r in acc["rows"]] == [1, 2]
    assert orjson.loads((run / "2_Grounding" / "merged" / "config.json").read_bytes())["model_type"] == family
    for begin in rec.begins:
        lora = {n for n in begin["trained"] if ".lora_" in n}
        assert lora and all(".language_model." in n for n in lora)
        projector = begin["trained"] - lora
        assert projector and all(".modules_to_save." in n for n in projector)
        assert len(begin["group_lrs"]) == 2
