"""Ground truth in the release's layout: found without --gt, an error naming the file when it is missing.

The data root is laid out as the SEFE release lays it (`<root>/ScienceQA/problems.json` + `pid_splits.json`,
`<root>/TextVQA/TextVQA_0.5.1_val.json`, `<root>/GQA/testdev_balanced_questions.json`, no `eval_gt/`), built
from the official-format files of the bundled coin-mini.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from sefe.cli import app
from sefe.coin import layout
from sefe.data import coin_mini_root
from sefe.evaluation.scorers import score_predictions
from sefe.sefe_train.config import ConfigError, load_config

OFFICIAL = ("ScienceQA", "TextVQA", "GQA")


@pytest.fixture
def release_root(tmp_path: Path) -> Path:
    """coin-mini's annotations and official files, placed where the release's scripts read them."""
    mini, root = coin_mini_root(), tmp_path / "coin"
    for task in (*OFFICIAL, "VQAv2"):
        for name in ("train.json", "test.json"):
            dst = layout.task_dir(root, task) / name
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(layout.task_dir(mini, task) / name, dst)
        for rel in layout.OFFICIAL_GT.get(task, ()):
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(mini / layout.EVAL_GT / rel, root / rel)
    assert not (root / layout.EVAL_GT).exists()
    return root


def _predictions(root: Path, task: str, out: Path) -> Path:
    """The test.json answers as predictions, every third one spoiled (so no scorer gives 0 or 100 by luck)."""
    recs = orjson.loads(layout.evaluation_file(root, task).read_bytes())
    lines = [
        orjson.dumps({"question_id": r["question_id"], "text": "zebra" if n % 3 == 2 else r["answer"]})
        for n, r in enumerate(recs)
    ]
    out.write_bytes(b"\n".join(lines) + b"\n")
    return out


def _official_path(root: Path, task: str) -> Path:
    first = root / layout.OFFICIAL_GT[task][0]
    return first.parent if task == "ScienceQA" else first


def _score(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(app, ["eval", "score", *args], env={"COLUMNS": "300"})
    return res.exit_code, res.output


@pytest.mark.parametrize("task", OFFICIAL)
def test_score_without_gt_uses_the_release_layout(release_root: Path, tmp_path: Path, task: str) -> None:
    preds = _predictions(release_root, task, tmp_path / f"{task}.jsonl")
    ann = layout.evaluation_file(release_root, task)
    official = score_predictions(task, preds, ann, gt=_official_path(release_root, task))
    code, out = _score("--data-root", str(release_root), "--task", task, "-p", str(preds), "--json")
    assert code == 0, out
    got = orjson.loads(out)
    assert got["accuracy"] == official.accuracy and got["total"] == official.total
    assert got["approximate"] is False and str(_official_path(release_root, task)) in got["gt_source"]
    # -a alone (inside the root) finds the same files
    code, out = _score("--task", task, "-p", str(preds), "-a", str(ann), "--json")
    assert code == 0 and orjson.loads(out)["accuracy"] == official.accuracy


def test_official_textvqa_differs_from_the_approximation(release_root: Path, tmp_path: Path) -> None:
    """The number today's code gave (one answer copied ten times) is not the official one."""
    preds = _predictions(release_root, "TextVQA", tmp_path / "t.jsonl")
    approx = score_predictions("TextVQA", preds, layout.evaluation_file(release_root, "TextVQA"))
    code, out = _score("--data-root", str(release_root), "--task", "TextVQA", "-p", str(preds), "--json")
    assert code == 0 and approx.approximate
    assert orjson.loads(out)["accuracy"] < approx.accuracy


@pytest.mark.parametrize(
    ("task", "missing"),
    [
        ("TextVQA", "TextVQA/TextVQA_0.5.1_val.json"),
        ("ScienceQA", "ScienceQA/pid_splits.json"),
        ("GQA", "GQA/testdev_balanced_questions.json"),
    ],
)
def test_missing_official_file_fails_naming_it(
    release_root: Path, tmp_path: Path, task: str, missing: str
) -> None:
    preds = _predictions(release_root, task, tmp_path / "p.jsonl")
    (release_root / missing).unlink()
    code, out = _score("--data-root", str(release_root), "--task", task, "-p", str(preds))
    assert code == 2
    flat = " ".join(out.split())
    assert str(release_root / missing) in flat and "Traceback" not in out
    # explicitly allowed: scored from test.json, and the output says "approximate" next to the number
    code, out = _score("--data-root", str(release_root), "-t", task, "-p", str(preds), "--allow-approximate")
    assert code == 0 and "(approximate)" in out
    code, out = _score("--data-root", str(release_root), "-t", task, "-p", str(preds), "--mode", "fixed")
    assert code == 0, out


def test_tasks_without_official_files_need_none(release_root: Path, tmp_path: Path) -> None:
    preds = _predictions(release_root, "VQAv2", tmp_path / "v.jsonl")
    code, out = _score("--data-root", str(release_root), "--task", "VQAv2", "-p", str(preds), "--json")
    assert code == 0 and orjson.loads(out)["approximate"] is False


def test_score_needs_a_root_or_annotations(tmp_path: Path) -> None:
    code, out = _score("--task", "VQAv2", "-p", str(tmp_path / "p.jsonl"))
    assert code == 2 and "--data-root" in out


def test_train_fails_before_training_when_official_files_are_missing(release_root: Path) -> None:
    from sefe.sefe_train.runner import ContinualRunner

    (release_root / "GQA" / "testdev_balanced_questions.json").unlink()
    cfg = load_config(None, [f"data_root={release_root}", "tasks=[VQAv2, GQA]", "output_dir=/nonexistent"])
    with pytest.raises(ConfigError, match=str(release_root / "GQA" / "testdev_balanced_questions.json")):
        ContinualRunner(cfg)._preflight()
    ok = load_config(None, [f"data_root={release_root}", "tasks=[ScienceQA, TextVQA, VQAv2]"])
    ContinualRunner(ok)._preflight()  # found in the release layout
    allowed = load_config(
        None, [f"data_root={release_root}", "tasks=[VQAv2, GQA]", "eval.allow_approximate=true"]
    )
    ContinualRunner(allowed)._preflight()
