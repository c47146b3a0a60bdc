"""ASD is orthogonal to the method: every method trains on whatever `train_file` names (CoIN or CoIN-ASD)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from sefe.models.dataset import load_records
from sefe.sefe_train.config import load_config, select_tasks
from sefe.sefe_train.methods import method_names
from sefe.sefe_train.runner import ContinualRunner
from sefe.sefe_train.stage_model import load_base


@pytest.fixture(scope="module")
def asd_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data root whose only training files are `train_x20.json` (here: the first half of coin-mini's)."""
    src = load_config(None, []).resolved_data_root()
    root = tmp_path_factory.mktemp("asd-root")
    for task in ("ScienceQA", "TextVQA"):
        (root / "annotations" / task).mkdir(parents=True)
        records = orjson.loads((src / "annotations" / task / "train.json").read_bytes())
        (root / "annotations" / task / "train_x20.json").write_bytes(
            orjson.dumps(records[: len(records) // 2])
        )
        (root / "annotations" / task / "test.json").write_bytes(
            (src / "annotations" / task / "test.json").read_bytes()
        )
    for image_dir in src.iterdir():
        if image_dir.is_dir() and image_dir.name != "annotations":
            (root / image_dir.name).symlink_to(image_dir, target_is_directory=True)
    return root


@pytest.mark.parametrize("name", method_names())
def test_every_method_reads_the_configured_train_file(asd_root: Path, tmp_path: Path, name: str) -> None:
    cfg = select_tasks(
        load_config(
            None,
            [
                f"output_dir={tmp_path}",
                f"method={name}",
                f"data_root={asd_root}",
                "train_file=annotations/{task}/train_x20.json",
            ],
        ),
        ["ScienceQA", "TextVQA"],
    )
    runner = ContinualRunner(cfg)
    runner._preflight()  # finds the x20 files (and nothing else exists)
    _, processor = load_base(cfg, None)
    ctx = runner.context(1, cfg.tasks[0])
    dataset = runner.stage_dataset(ctx, processor)
    want = asd_root / "annotations" / "ScienceQA" / "train_x20.json"
    assert dataset.records_path == want and dataset.records == load_records(want)
