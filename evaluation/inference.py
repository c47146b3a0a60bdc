"""`sefe eval run`: batched greedy generation over CoIN test sets, one prediction JSONL per task.

Prompts are vicuna_v1 generation prompts built exactly as for training (`conversation.py`); ScienceQA gets
its letter instruction line appended as the release does (`scienceqa_instruction`), and its images are opened
without RGB conversion (`eval_images.py`). Each prediction's `prompt` is `<image>\n` + question for image
questions, as the release writes it. Generation stops at `max_new_tokens` (1024, the release's value: a
shorter cap cuts the long answers of forgotten tasks before their `The answer is X.`). Batches are
left-padded. A model of another family (`models/family.py`: the folder's `model_type`, or `family` for an
in-memory model) gets its own generation prompt (`ModelFamily.generation_inputs`) and its images unpadded
(RGB, the family's processor resizes them); the answers of box tasks (Grounding) are converted back into
CoIN's box convention (`answer_from_family`, per image size) before they are written, so scorers see CoIN's
spelling. `--engine vllm` serves a merged folder of any family (`vllm_engine.py`: the same prompt text and
images; for another family only its processor is loaded here, for the box conversion). Each finished batch
is appended and flushed, and a rerun skips question ids already in the file, so a killed evaluation loses at
most one batch. Lines stay in test-file order (CoIN's ImageNet scorer aligns by position).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from sefe.coin import layout
from sefe.coin.images import image_path
from sefe.coin.records import TestField, load_test
from sefe.errors import InputError, MissingFile
from sefe.jsonl_store import JsonlError, JsonlStore
from sefe.lock import folder_lock
from sefe.models.conversation import (
    ScienceQAInstruction,
    eval_question,
    generation_prompt,
    prediction_prompt,
)
from sefe.models.device import TorchDevice
from sefe.models.family import ModelFamily
from sefe.paths import OutputDir

Engine = Literal["hf", "vllm"]
#: what inference reads of a test record (besides `question_id` and the optional `image`)
INFERENCE_FIELDS: tuple[TestField, ...] = ("text",)
#: Model dtypes of `sefe eval run --dtype` (auto: bfloat16 on CUDA, else float32).
InferenceDType = Literal["auto", "float32", "bfloat16", "float16", "fp32", "bf16", "fp16"]
#: The release's generation cap (LLaVA's evaluation scripts); the paper config and `sefe eval run` use it.
DEFAULT_MAX_NEW_TOKENS = 1024


def predictions_path(out_dir: str | Path, task: str) -> Path:
    return Path(out_dir) / f"{task}.jsonl"


def _answer_id(model_id: str, task: str, index: int, question_id: Any) -> str:
    return hashlib.sha1(f"{model_id}\x00{task}\x00{index}\x00{question_id}".encode()).hexdigest()[:22]


def read_done(path: Path) -> Counter[str]:
    """Question ids already answered in `path` (counted, for test sets with repeated ids).

    The file is a `sefe.jsonl_store` store: a torn last line (killed mid-write) is ignored and cut by the
    next append; a broken line elsewhere is an error naming the line.
    """
    done: Counter[str] = Counter()
    for n, row in JsonlStore(path).rows():
        if "question_id" not in row:
            raise JsonlError(f"{path} line {n}: not a prediction line (no question_id); remove or fix it")
        done[str(row["question_id"])] += 1
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

    from sefe.models.tokenization import generation_inputs

    inputs = generation_inputs(processor, prompts, images)  # the release's ids around the image
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


def generate_family_batch(
    model: Any,
    family: ModelFamily,
    processor: Any,
    questions: list[str],
    images: list[Any | None],
    max_new_tokens: int,
) -> list[str]:
    """Greedy answers of a non-LLaVA family: its generation prompts, one image (or None) per question; the
    model's generation config says where to stop (Qwen: `<|im_end|>`)."""
    import torch

    inputs = family.generation_inputs(processor, questions, images)
    device = next(model.parameters()).device
    inputs = {k: v.to(device) for k, v in inputs.items()}
    if "pixel_values" in inputs:
        inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
    tok = processor.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    with torch.inference_mode():
        out = model.generate(
            **inputs,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            num_beams=1,
            use_cache=True,
            pad_token_id=pad,
        )
    new = out[:, inputs["input_ids"].shape[1] :]
    return [t.strip() for t in tok.batch_decode(new, skip_special_tokens=True)]


#: (prompts, images) -> answers. LLaVA: vicuna prompts and the images of image prompts; another family:
#: the questions and one image or None per question.
GenerateFn = Callable[[list[str], list[Any]], list[str]]


class InferenceBounds(BaseModel):
    """The valid values of `run_inference`'s options (`sefe eval run` checks its options against them too)."""

    model_config = ConfigDict(extra="forbid")

    batch_size: int = Field(ge=1)
    max_new_tokens: int = Field(ge=1)
    limit: int | None = Field(ge=1)  # the first N test records of each task
    device: TorchDevice | None
    out_dir: OutputDir


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass(frozen=True)
class _Job:
    """One task's remaining work: its test file and the (index, record) pairs still unanswered."""

    task: str
    test_path: Path
    pending: list[tuple[int, Any]]


@dataclass(frozen=True)
class _Writer:
    """How prediction lines are built: the same for every task of one `run_inference` call."""

    data_root: Path
    model_id: str
    scienceqa_instruction: ScienceQAInstruction
    fill: tuple[int, ...] | None  # the processor's padding colour (ScienceQA images), None if unknown
    family: ModelFamily | None = None  # None: LLaVA's path (vicuna prompts, the release's images)
    processor: Any = None  # the family's, for converting box answers
    box_tasks: frozenset[str] = frozenset()  # tasks whose answers are boxes (converted back to CoIN's)


def run_inference(
    model: str | Path | tuple[Any, Any],
    data_root: str | Path,
    tasks: Sequence[str],
    out_dir: str | Path,
    batch_size: int = 8,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    limit: int | None = None,
    model_id: str | None = None,
    dtype: InferenceDType = "auto",
    device: str | None = None,
    engine: Engine = "hf",
    show_progress: bool = True,
    scienceqa_instruction: ScienceQAInstruction = "always",
    family: ModelFamily | None = None,
    vllm_args: dict[str, Any] | None = None,
) -> dict[str, Path]:
    """Write `<out_dir>/<Task>.jsonl` for each task from `<data_root>/annotations/<Task>/test.json`.

    `model` is a merged HF folder or an in-memory (model, processor) pair (the runner passes its own).
    `family`: the model's family; None: the folder's or the in-memory model's `model_type`.
    `vllm_args`: `vllm.LLM` keyword arguments for `engine="vllm"` (over `$SEFE_VLLM_ARGS`; `sefe.vllm_args`).
    Returns the prediction file of each task. Rerunning resumes: answered question ids are skipped.
    `out_dir` is locked (`sefe.lock`) while predictions are planned and written: a second process writing
    the same prediction files refuses.
    """
    data_root, out_dir = Path(data_root), Path(out_dir)
    InferenceBounds(
        batch_size=batch_size, max_new_tokens=max_new_tokens, limit=limit, device=device, out_dir=out_dir
    )
    if isinstance(model, tuple) and engine != "hf":
        raise InputError("an in-memory model runs on the hf engine; give a folder for --engine vllm")
    if vllm_args and engine != "vllm":
        raise InputError(
            f"--vllm-arg {', '.join(sorted(vllm_args))}: engine arguments apply to --engine vllm"
        )
    with folder_lock(out_dir, "sefe eval run"):
        jobs = _plan(data_root, tasks, out_dir, limit)
        paths = {task: predictions_path(out_dir, task) for task in tasks}
        if not any(job.pending for job in jobs):
            return paths
        mid = model_id or ("model" if isinstance(model, tuple) else Path(model).resolve().name)
        fam = _family_of(model, family)
        generate, processor, restore = _generator(
            model, engine, max_new_tokens, dtype, device, fam, vllm_args
        )
        if fam is None:
            writer = _Writer(data_root, mid, scienceqa_instruction, _padding_fill(processor))
        else:
            boxes = frozenset(t for t in tasks if _box_task(t, data_root))
            writer = _Writer(data_root, mid, scienceqa_instruction, None, fam, processor, boxes)
        try:
            _write_predictions(jobs, out_dir, writer, generate, batch_size, show_progress)
        finally:
            restore()
        return paths


def _plan(data_root: Path, tasks: Sequence[str], out_dir: Path, limit: int | None) -> list[_Job]:
    """Read every task's test file (errors before any model is loaded) and what is left to answer."""
    jobs = []
    for task in tasks:
        test_path = layout.evaluation_file(data_root, task)
        if not test_path.is_file():
            raise MissingFile(f"task {task}: test file not found: {test_path}")
        records = load_test(test_path, require=INFERENCE_FIELDS)
        if limit is not None:
            records = records[:limit]
        for i, rec in enumerate(records):  # untrusted paths fail here, before a model is loaded
            if rec.image is not None:
                image_path(
                    data_root, rec.image, f"{test_path}, record {i}, id {rec.question_id!r}, field 'image'"
                )
        jobs.append(_Job(task, test_path, _pending(records, read_done(predictions_path(out_dir, task)))))
    return jobs


def _family_of(model: str | Path | tuple[Any, Any], family: ModelFamily | None) -> ModelFamily | None:
    """The model's family when it is not LLaVA (whose path stays the release's), else None: `family`, else a
    folder's `model_type`, else an in-memory model's `config.model_type` (a run's stage folder, loaded by its
    method)."""
    from sefe.models.family import family_names, get_family, resolve_family

    if family is None and not isinstance(model, tuple):
        family = resolve_family(None, model)
    if family is None and isinstance(model, tuple):
        model_type = getattr(getattr(model[0], "config", None), "model_type", None)
        family = get_family(model_type) if model_type in family_names() else None
    return None if family is None or family.name == "llava" else family


def _box_task(task: str, data_root: Path) -> bool:
    from sefe.coin.root_tasks import find_task
    from sefe.coin.tasks import TaskError

    try:
        return find_task(task, data_root).answer == "box"
    except TaskError:
        return False


def _generator(
    model: str | Path | tuple[Any, Any],
    engine: Engine,
    max_new_tokens: int,
    dtype: str,
    device: str | None,
    family: ModelFamily | None = None,
    vllm_args: dict[str, Any] | None = None,
) -> tuple[GenerateFn, Any, Callable[[], None]]:
    """(generate function, processor or None, restore): loads a folder, or borrows the runner's model.

    `restore` hands an in-memory model back in the mode it came in (the runner's may be training).
    """
    if not isinstance(model, tuple):
        _refuse_incomplete(Path(model))
    if engine == "vllm" and not isinstance(model, tuple):
        from sefe.evaluation.vllm_engine import family_generate_fn, vllm_generate_fn
        from sefe.vllm_args import engine_args

        args = engine_args({}, vllm_args)
        if family is None:
            return vllm_generate_fn(str(model), max_new_tokens, **args), None, lambda: None
        generate_fn, processor = family_generate_fn(str(model), max_new_tokens, family, **args)
        return generate_fn, processor, lambda: None
    if isinstance(model, tuple):
        llava, processor = model
    else:
        from sefe.models.llava import load_llava

        dev = device or _default_device()
        dt = dtype if dtype != "auto" else ("bfloat16" if dev.startswith("cuda") else "float32")
        if family is None:
            llava, processor = load_llava(str(model), dtype=dt, device=dev)
        else:
            llava, processor = family.load(model, dtype=dt)
            llava = llava.to(dev)
    restore: Callable[[], None] = llava.train if llava.training else (lambda: None)
    llava.eval()

    def generate(prompts: list[str], images: list[Any]) -> list[str]:
        if family is not None:
            return generate_family_batch(llava, family, processor, prompts, images, max_new_tokens)
        return generate_batch(llava, processor, prompts, images, max_new_tokens)

    return generate, processor, restore


def _refuse_incomplete(folder: Path) -> None:
    """A saved folder whose `config.json` says it is not the whole model (`sefe_incomplete`, e.g. a MoELoRA
    stage's `merged/`: the experts live beside it) would be scored without its missing part: refuse it."""
    try:
        config = json.loads((folder / "config.json").read_bytes())
    except (OSError, ValueError):
        return  # the loader reports a missing or broken config itself
    # the key sefe_train/stage_folder.py's INCOMPLETE_KEY names (evaluation does not import sefe_train)
    info = config.get("sefe_incomplete") if isinstance(config, dict) else None
    if isinstance(info, dict):
        stage = folder.resolve().parent
        raise InputError(
            f"{folder}: not the whole model: {info.get('missing', 'part of it')} of this "
            f"{info.get('method', '?')} stage are in {stage / str(info.get('file', '?'))}; evaluate the "
            f"stage folder instead: sefe eval run --model {stage} ..."
        )


def _padding_fill(processor: Any) -> tuple[int, ...] | None:
    from sefe.evaluation.eval_images import fill_colour

    mean = getattr(getattr(processor, "image_processor", None), "image_mean", None)
    return fill_colour(mean) if mean is not None else None


def _batch_inputs(
    job: _Job, chunk: list[tuple[int, Any]], writer: _Writer
) -> tuple[list[str], list[Any], list[str]]:
    """(generation prompts, images, `prompt` fields) of one batch. LLaVA: vicuna prompts and the images of
    the image questions; another family: the questions and one RGB image (unpadded) or None per question."""
    from sefe.coin.images import open_image
    from sefe.evaluation.eval_images import open_eval_image

    prompts, images, shown = [], [], []
    for i, rec in chunk:
        has_image = rec.image is not None
        question = eval_question(rec.text or "", job.task, writer.scienceqa_instruction)  # required at load
        shown.append(prediction_prompt(question, has_image))
        where = f"{job.test_path}, record {i}, id {rec.question_id!r}, field 'image'"
        if writer.family is not None:
            prompts.append(question)
            images.append(open_image(writer.data_root, rec.image, where) if has_image else None)
            continue
        prompts.append(generation_prompt(question, has_image))
        if has_image:
            images.append(open_eval_image(writer.data_root, rec.image, where, job.task, writer.fill))
    return prompts, images, shown


def _answers_in_coin_boxes(job: _Job, images: list[Any], texts: list[str], writer: _Writer) -> list[str]:
    """A non-LLaVA family's answers to a box task, their boxes converted back to CoIN's convention."""
    if writer.family is None or job.task not in writer.box_tasks:
        return texts
    family = writer.family
    return [
        text if image is None else family.answer_from_family(text, image.size, writer.processor)
        for image, text in zip(images, texts, strict=True)
    ]


def _prediction_rows(
    job: _Job, chunk: list[tuple[int, Any]], shown: list[str], texts: list[str], writer: _Writer
) -> list[dict[str, Any]]:
    """The rows of one batch in the CoIN prediction format (fields as the release writes them)."""
    return [
        {
            "question_id": rec.question_id,
            "prompt": prompt,
            "text": text,
            "answer_id": _answer_id(writer.model_id, job.task, i, rec.question_id),
            "model_id": writer.model_id,
            "metadata": {},
        }
        for (i, rec), prompt, text in zip(chunk, shown, texts, strict=True)
    ]


def _write_predictions(
    jobs: list[_Job],
    out_dir: Path,
    writer: _Writer,
    generate: GenerateFn,
    batch_size: int,
    show_progress: bool,
) -> None:
    """Generate batch after batch, appending and flushing each so a kill loses at most one batch."""
    from sefe.progress import step_bar

    total = sum(len(job.pending) for job in jobs)
    with step_bar(transient=False, disable=not show_progress) as progress:
        bar = progress.add_task("eval", total=total)
        for job in jobs:
            progress.update(bar, description=f"eval {job.task}")
            with JsonlStore(predictions_path(out_dir, job.task)) as store:
                for start in range(0, len(job.pending), batch_size):
                    chunk = job.pending[start : start + batch_size]
                    prompts, images, shown = _batch_inputs(job, chunk, writer)
                    texts = _answers_in_coin_boxes(job, images, generate(prompts, images), writer)
                    # appended, flushed and fsynced: a kill after this loses nothing written
                    store.append_many(_prediction_rows(job, chunk, shown, texts, writer), sync=True)
                    progress.advance(bar, len(chunk))


def default_tasks(data_root: str | Path) -> list[str]:
    """Tasks with a test file under the data root: the CoIN eight in training order, then any others."""
    return layout.tasks_with(Path(data_root), layout.TEST_FILE)
