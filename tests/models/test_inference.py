"""`run_inference` / `sefe eval run`: valid CoIN prediction files, left-padded batches, resume."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from sefe.coin.instructions import MCQ_LETTER as SCIENCEQA_INSTRUCTION
from sefe.evaluation import inference
from sefe.evaluation.inference import default_tasks, read_done, run_inference

FIELDS = {"question_id", "prompt", "text", "answer_id", "model_id", "metadata"}


def _lines(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


@pytest.fixture
def counting(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the prompts that really reach model.generate."""
    calls: list[int] = []
    real = inference.generate_batch

    def wrapped(model, processor, prompts, images, max_new_tokens):
        calls.append(len(prompts))
        return real(model, processor, prompts, images, max_new_tokens)

    monkeypatch.setattr(inference, "generate_batch", wrapped)
    return calls


def test_prediction_files_and_resume(tiny, data_root: Path, tmp_path: Path, counting: list[int]) -> None:
    out = tmp_path / "pred"
    paths = run_inference(
        tiny,
        data_root,
        ["ScienceQA", "ImageNet"],
        out,
        batch_size=2,
        max_new_tokens=4,
        model_id="tiny",
        show_progress=False,
    )
    assert sum(counting) == 8 and max(counting) == 2
    tests = {t: orjson.loads((data_root / "annotations" / t / "test.json").read_bytes()) for t in paths}
    for task, path in paths.items():
        lines = _lines(path)
        assert [ln["question_id"] for ln in lines] == [r["question_id"] for r in tests[task]]  # test order
        for ln in lines:
            assert set(ln) == FIELDS and ln["model_id"] == "tiny" and ln["metadata"] == {}
            assert isinstance(ln["text"], str) and ln["text"] == ln["text"].strip()
        assert len({ln["answer_id"] for ln in lines}) == len(lines)
    sqa = _lines(paths["ScienceQA"])
    # the release appends the letter line unconditionally (records 0 and 2 already end with it)
    assert [ln["prompt"].count(SCIENCEQA_INSTRUCTION) for ln in sqa] == [2, 1, 2]
    assert sqa[1]["prompt"] == f"<image>\nWhich colour is shown?\nA. blue\nB. red\n{SCIENCEQA_INSTRUCTION}"
    before = {t: p.read_bytes() for t, p in paths.items()}
    counting.clear()
    run_inference(
        tiny, data_root, ["ScienceQA", "ImageNet"], out, batch_size=2, model_id="tiny", show_progress=False
    )
    assert counting == []  # everything answered: nothing generated again
    assert {t: p.read_bytes() for t, p in paths.items()} == before


def test_resume_after_torn_write(tiny, data_root: Path, tmp_path: Path, counting: list[int]) -> None:
    out = tmp_path / "pred"
    full = run_inference(
        tiny, data_root, ["ImageNet"], out, batch_size=5, max_new_tokens=4, show_progress=False
    )
    reference = full["ImageNet"].read_bytes()
    lines = reference.splitlines(keepends=True)
    full["ImageNet"].write_bytes(b"".join(lines[:2]) + lines[2][:17])  # killed in the middle of line 3
    assert read_done(full["ImageNet"])["ILSVRC2012_val_00000001.JPEG"] == 1
    counting.clear()
    run_inference(tiny, data_root, ["ImageNet"], out, batch_size=5, max_new_tokens=4, show_progress=False)
    assert counting == [3]
    assert full["ImageNet"].read_bytes() == reference  # same lines, same order (positional ImageNet scorer)


def test_left_padding_matches_unbatched(tiny, data_root: Path, tmp_path: Path) -> None:
    one = run_inference(
        tiny, data_root, ["ScienceQA"], tmp_path / "b1", batch_size=1, max_new_tokens=6, show_progress=False
    )
    three = run_inference(
        tiny, data_root, ["ScienceQA"], tmp_path / "b3", batch_size=3, max_new_tokens=6, show_progress=False
    )
    assert [ln["text"] for ln in _lines(one["ScienceQA"])] == [
        ln["text"] for ln in _lines(three["ScienceQA"])
    ]


def test_cli_eval_run(tiny_dir: Path, data_root: Path, tmp_path: Path) -> None:
    from sefe.cli import app

    assert default_tasks(data_root) == ["ScienceQA", "ImageNet"]  # CoIN order, only tasks with test.json
    out = tmp_path / "cli"
    args = [
        "eval",
        "run",
        "--model",
        str(tiny_dir),
        "--data-root",
        str(data_root),
        "--tasks",
        "ImageNet",
        "--out",
        str(out),
        "--limit",
        "3",
        "--batch-size",
        "2",
        "--max-new-tokens",
        "3",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    lines = _lines(out / "ImageNet.jsonl")
    assert len(lines) == 3 and lines[0]["model_id"] == tiny_dir.name
    bad = CliRunner().invoke(app, [*args[:6], "--tasks", "VizWiz", "--out", str(out)])
    assert bad.exit_code == 2 and "VizWiz" in bad.output and "test.json" in bad.output


def test_runner_model_mode_is_restored(tiny, data_root: Path, tmp_path: Path) -> None:
    model, _ = tiny
    model.train()
    try:
        run_inference(tiny, data_root, ["ImageNet"], tmp_path, limit=1, max_new_tokens=2, show_progress=False)
        assert model.training
    finally:
        model.eval()
    with pytest.raises(ValueError, match="hf engine"):
        run_inference(tiny, data_root, ["ImageNet"], tmp_path / "v", engine="vllm", show_progress=False)


def test_vllm_engine_install_hint(tiny_dir: Path, data_root: Path, tmp_path: Path) -> None:
    import importlib.util

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed: the hint is not shown")
    with pytest.raises(ImportError, match=r"pip install 'sefe\[vllm\]'"):
        run_inference(tiny_dir, data_root, ["ImageNet"], tmp_path, engine="vllm", show_progress=False)
