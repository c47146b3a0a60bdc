"""`replay`: each earlier task's buffer is an exact, seeded share of its records, mixed into later tasks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from transformers import TrainerCallback

from sefe.models.dataset import load_records
from sefe.sefe_train import run_layout as L
from sefe.sefe_train.config import load_config, select_tasks
from sefe.sefe_train.methods.base import StageContext
from sefe.sefe_train.methods.replay import BUFFER_FILE, Replay, buffer_size, draw_buffer


@pytest.mark.parametrize(
    ("n", "share", "want"),
    [(100, 0.05, 5), (30, 0.05, 2), (10, 0.05, 1), (7, 0.5, 4), (9, 0.0, 0), (3, 1.0, 3)],
)
def test_buffer_size_is_the_rounded_share(n: int, share: float, want: int) -> None:
    assert buffer_size(n, share, 1) == want
    assert len(draw_buffer(n, share, 1, 42, "T")) == want


def test_buffers_are_seeded_per_task() -> None:
    a = draw_buffer(1000, 0.03, 1, 42, "GQA")
    assert a == draw_buffer(1000, 0.03, 1, 42, "GQA") == sorted(set(a)) and len(a) == 30
    assert a != draw_buffer(1000, 0.03, 1, 43, "GQA")
    assert a != draw_buffer(1000, 0.03, 1, 42, "VQAv2")
    assert set(a) <= set(range(1000))


def _ctx(cfg, k: int) -> StageContext:
    task = cfg.tasks[k - 1]
    part = L.partial_dir(Path(cfg.output_dir), k, task.name)
    part.mkdir(parents=True, exist_ok=True)
    return StageContext(cfg=cfg, k=k, task=task, run_dir=Path(cfg.output_dir), part=part)


def _finish(ctx: StageContext) -> None:
    ctx.part.rename(L.stage_dir(ctx.run_dir, ctx.k, ctx.task.name))


def test_later_stages_train_on_own_records_plus_exact_buffers(tmp_path: Path) -> None:
    cfg = select_tasks(
        load_config(None, [f"output_dir={tmp_path}", "method=replay", "method_options.replay.share=0.25"]),
        ["ScienceQA", "TextVQA", "ImageNet"],
    )
    method = Replay.from_config(cfg)
    own = {t.name: load_records(cfg.train_path(t)) for t in cfg.tasks}

    c1 = _ctx(cfg, 1)
    assert method.train_records(c1, own["ScienceQA"]) == own["ScienceQA"]  # nothing to replay yet
    method.after_task(c1, model=None)
    _finish(c1)
    c2 = _ctx(cfg, 2)
    mixed2 = method.train_records(c2, own["TextVQA"])
    n_sqa = len(own["ScienceQA"])
    buf1 = draw_buffer(n_sqa, 0.25, 1, cfg.train.seed, "ScienceQA")
    assert len(buf1) == int(0.25 * n_sqa + 0.5)
    assert mixed2 == own["TextVQA"] + [own["ScienceQA"][i] for i in buf1]
    method.after_task(c2, model=None)
    _finish(c2)

    c3 = _ctx(cfg, 3)
    mixed3 = method.train_records(c3, own["ImageNet"])
    buf2 = draw_buffer(len(own["TextVQA"]), 0.25, 1, cfg.train.seed, "TextVQA")
    assert mixed3 == own["ImageNet"] + [own["ScienceQA"][i] for i in buf1] + [own["TextVQA"][i] for i in buf2]
    doc = orjson.loads((L.stage_dir(tmp_path, 2, "TextVQA") / BUFFER_FILE).read_bytes())
    assert list(doc["buffers"]) == ["ScienceQA", "TextVQA"]  # task 1's buffer is kept, not redrawn
    assert doc["buffers"]["ScienceQA"]["indices"] == buf1
    assert doc["buffers"]["ScienceQA"]["ids"] == [own["ScienceQA"][i][0] for i in buf1]


def test_changed_earlier_train_file_is_an_error(tmp_path: Path) -> None:
    data = tmp_path / "data"
    src = load_config(None, []).resolved_data_root()
    (data / "annotations" / "ScienceQA").mkdir(parents=True)
    (data / "annotations" / "TextVQA").mkdir(parents=True)
    for t in ("ScienceQA", "TextVQA"):
        raw = (src / "annotations" / t / "train.json").read_bytes()
        (data / "annotations" / t / "train.json").write_bytes(raw)
    cfg = select_tasks(
        load_config(None, [f"output_dir={tmp_path / 'run'}", f"data_root={data}", "method=replay"]),
        ["ScienceQA", "TextVQA"],
    )
    method = Replay.from_config(cfg)
    c1 = _ctx(cfg, 1)
    method.after_task(c1, model=None)
    _finish(c1)
    sqa = data / "annotations" / "ScienceQA" / "train.json"
    sqa.write_bytes(orjson.dumps(orjson.loads(sqa.read_bytes())[:-1]))
    with pytest.raises(ValueError, match="training file changed"):
        method.train_records(_ctx(cfg, 2), [])


def test_buffer_file_names_the_train_file_relative_to_the_data_root(tmp_path: Path) -> None:
    cfg = select_tasks(load_config(None, [f"output_dir={tmp_path}", "method=replay"]), ["ScienceQA"])
    c1 = _ctx(cfg, 1)
    Replay.from_config(cfg).after_task(c1, model=None)
    doc = orjson.loads((c1.part / BUFFER_FILE).read_bytes())
    assert doc["buffers"]["ScienceQA"]["train_file"] == "annotations/ScienceQA/train.json"


class _TrainedRecords(TrainerCallback):
    """The record ids of the dataset each stage's Trainer iterates (what it really trains on)."""

    def __init__(self) -> None:
        self.ids: list[list[Any]] = []

    def on_train_begin(self, args, state, control, train_dataloader=None, **kwargs):
        self.ids.append([rec[0] for rec in train_dataloader.dataset.records])


@pytest.mark.slow
def test_the_trainer_trains_on_own_records_plus_the_buffers_through_the_runner(tmp_path: Path) -> None:
    from sefe.sefe_train.runner import ContinualRunner
    from tests.helpers.train import make_config

    tasks = ["ScienceQA", "TextVQA", "ImageNet"]
    settings = ["method_options.replay.share=0.25", "train.max_steps=1", "eval.enabled=false"]
    cfg = make_config(tmp_path / "run", "replay", settings, tasks=tasks)
    seen = _TrainedRecords()
    ContinualRunner(cfg, callbacks=[seen]).run()
    own = {t.name: [r[0] for r in load_records(cfg.train_path(t))] for t in cfg.tasks}
    buf = {t: draw_buffer(len(own[t]), 0.25, 1, cfg.train.seed, t) for t in tasks}
    replayed = {t: [own[t][i] for i in buf[t]] for t in tasks}
    assert all(replayed[t] for t in tasks[:2])
    assert seen.ids == [
        own["ScienceQA"],
        own["TextVQA"] + replayed["ScienceQA"],
        own["ImageNet"] + replayed["ScienceQA"] + replayed["TextVQA"],
    ]
    doc = orjson.loads((tmp_path / "run" / "3_ImageNet" / BUFFER_FILE).read_bytes())
    assert {t: b["ids"] for t, b in doc["buffers"].items()} == replayed
