"""`sefe eval run`: batched greedy generation over CoIN test sets, one prediction JSONL per task.

Prompts are vicuna_v1 generation prompts built exactly as for training (`conversation.py`); ScienceQA
carries its letter instruction line exactly once. Batches are left-padded. Each finished batch is appended
and flushed, and a rerun skips question ids already in the file, so a killed evaluation loses at most one
batch. Lines stay in test-file order (CoIN's ImageNet scorer aligns by position).
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import orjson

from sefe.sefe_train.conversation import eval_question, generation_prompt

Engine = Literal["hf", "vllm"]
COIN_ORDER = ("ScienceQA", "TextVQA", "ImageNet", "GQA", "VizWiz", "Grounding", "VQAv2", "OCRVQA")


def predictions_path(out_dir: str | Path, task: str) -> Path:
    return Path(out_dir) / f"{task}.jsonl"


def _answer_id(model_id: str, task: str, index: int, question_id: Any) -> str:
    return hashlib.sha1(f"{model_id}\x00{task}\x00{index}\x00{question_id}".encode()).hexdigest()[:22]


def read_done(path: Path) -> Counter[str]:
    """Question ids already answered in `path` (counted, for test sets with repeated ids).

    A torn last line (killed mid-write) is cut off; a broken line elsewhere is an error naming the line.
    """
    done: Counter[str] = Counter()
    if not path.exists():
        return done
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    good_end = 0
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            good_end += len(line) + 1
            continue
        try:
            obj = orjson.loads(line)
            qid = obj["question_id"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            if n == len(lines) or (n == len(lines) - 1 and not lines[-1].strip()):
                break  # a torn final line: drop it and regenerate that record
            raise ValueError(f"{path} line {n}: not a prediction line; remove or fix the file") from None
        done[str(qid)] += 1
        good_end += len(line) + 1
    if good_end < len(raw):
        with path.open("r+b") as fh:
            fh.truncate(min(good_end, len(raw)))
    return done


def _pending(records: Sequence[Any], done: Counter[str]) -> list[tuple[int, Any]]:
    seen: Counter[str] = Counter()
    todo = []
    for i, rec in enumerate(records):
        qid = str(rec.question_id)
        seen[qid] += 1
        if seen[qid] > done[qid]:
            todo.append((i, rec))
    return todo


def generate_batch(
    model: Any, processor: Any, prompts: list[str], images: list[Any], max_new_tokens: int
) -> list[str]:
    """Greedy continuations of `prompts` (left padding); `images` are those of the prompts with `<image>`."""
    import torch

    inputs = processor(
        text=prompts,
        images=images or None,
        padding=True,
        padding_side="left",
        return_tensors="pt",
    )
    device = next(model.parameters()).device
    inputs = {k: v.to(device) for k, v in inputs.items()}
    if "pixel_values" in inputs:
        inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
    tok = processor.tokenizer
    with torch.inference_mode():
        out = model.generate(
            **inputs,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            num_beams=1,
            use_cache=True,  # training may have switched the config's cache off (gradient checkpointing)
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
        )
    new = out[:, inputs["input_ids"].shape[1] :]
    return [t.strip() for t in tok.batch_decode(new, skip_special_tokens=True)]


GenerateFn = Callable[[list[str], list[Any]], list[str]]


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def run_inference(
    model: str | Path | tuple[Any, Any],
    data_root: str | Path,
    tasks: Sequence[str],
    out_dir: str | Path,
    batch_size: int = 8,
    max_new_tokens: int = 128,
    limit: int | None = None,
    model_id: str | None = None,
    dtype: str = "auto",
    device: str | None = None,
    engine: Engine = "hf",
    show_progress: bool = True,
) -> dict[str, Path]:
    """Write `<out_dir>/<Task>.jsonl` for each task from `<data_root>/annotations/<Task>/test.json`.

    `model` is a merged HF folder or an in-memory (model, processor) pair (the runner passes its own).
    Returns the prediction file of each task. Rerunning resumes: answered question ids are skipped.
    """
    from sefe.asd_gen.records import load_test

    data_root, out_dir = Path(data_root), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    todo: dict[str, tuple[Any, list[tuple[int, Any]]]] = {}
    for task in tasks:
        test_path = data_root / "annotations" / task / "test.json"
        if not test_path.is_file():
            raise FileNotFoundError(f"task {task}: test file not found: {test_path}")
        records = load_test(test_path)
        if limit is not None:
            records = records[:limit]
        todo[task] = (test_path, _pending(records, read_done(predictions_path(out_dir, task))))
    total = sum(len(p) for _, p in todo.values())
    paths = {task: predictions_path(out_dir, task) for task in tasks}
    if total == 0:
        return paths

    def restore() -> None:
        """Hand the runner's model back in the mode it came in (set below when it was training)."""

    if isinstance(model, tuple):
        if engine != "hf":
            raise ValueError("an in-memory model runs on the hf engine; give a folder for --engine vllm")
        llava, processor = model
        mid = model_id or "model"
    else:
        mid = model_id or Path(model).resolve().name
        llava = processor = None
        if engine == "vllm":
            from sefe.sefe_train.evaluation.vllm_engine import vllm_generate_fn

            generate: GenerateFn = vllm_generate_fn(str(model), max_new_tokens)
        else:
            from sefe.sefe_train.model import load_llava

            dev = device or _default_device()
            dt = dtype if dtype != "auto" else ("bfloat16" if dev.startswith("cuda") else "float32")
            llava, processor = load_llava(str(model), dtype=dt, device=dev)
    if llava is not None:
        if llava.training:
            restore = llava.train
        llava.eval()

        def generate(prompts: list[str], images: list[Any]) -> list[str]:
            return generate_batch(llava, processor, prompts, images, max_new_tokens)

    try:
        _write_predictions(todo, out_dir, data_root, mid, generate, batch_size, show_progress)
    finally:
        restore()
    return paths


def _write_predictions(
    todo: dict[str, tuple[Any, list[tuple[int, Any]]]],
    out_dir: Path,
    data_root: Path,
    mid: str,
    generate: GenerateFn,
    batch_size: int,
    show_progress: bool,
) -> None:
    """Generate batch after batch, appending and flushing each so a kill loses at most one batch."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from sefe.sefe_train.data import load_image

    total = sum(len(p) for _, p in todo.values())
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()]
    with Progress(*columns, disable=not show_progress, transient=False) as progress:
        bar = progress.add_task("eval", total=total)
        for task, (test_path, pending) in todo.items():
            progress.update(bar, description=f"eval {task}")
            with predictions_path(out_dir, task).open("ab") as fh:
                for start in range(0, len(pending), batch_size):
                    chunk = pending[start : start + batch_size]
                    prompts, images, questions = [], [], []
                    for i, rec in chunk:
                        question = eval_question(rec.text, task)
                        questions.append(question)
                        prompts.append(generation_prompt(question, rec.image is not None))
                        if rec.image is not None:
                            where = f"{test_path}, record {i}, id {rec.question_id!r}, field 'image'"
                            images.append(load_image(data_root / rec.image, where))
                    texts = generate(prompts, images)
                    lines = b"".join(
                        orjson.dumps(
                            {
                                "question_id": rec.question_id,
                                "prompt": q,
                                "text": text,
                                "answer_id": _answer_id(mid, task, i, rec.question_id),
                                "model_id": mid,
                                "metadata": {},
                            }
                        )
                        + b"\n"
                        for (i, rec), q, text in zip(chunk, questions, texts, strict=True)
                    )
                    fh.write(lines)
                    fh.flush()
                    os.fsync(fh.fileno())
                    progress.advance(bar, len(chunk))


def default_tasks(data_root: str | Path) -> list[str]:
    """Tasks with a test file under the data root: the CoIN eight in training order, then any others."""
    ann = Path(data_root) / "annotations"
    present = sorted(p.parent.name for p in ann.glob("*/test.json"))
    order = [t for t in COIN_ORDER if t in present]
    return order + [t for t in present if t not in order]
