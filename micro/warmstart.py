"""The Micro-CoIN warm start: a small model built from configs and pre-trained once on the world it will see.

Why: a randomly initialised model knows neither the pictures nor any answer style, so a continual run on it
shows nothing (the demo's loss stayed near 6.6). Two stages, as LLaVA-1.5 is built: first the vision tower
learns what the warm-start pictures show (`vision_pretrain`, the part CLIP plays), then, with the tower
frozen, the projector and language model train on `warmstart/train.json` (captions, and every answer style
on question forms the tasks do not use). Each task is then learnable in a few hundred LoRA steps, and a
style lost later was known.
The model is a small LLaVA by default; `family` picks another family's small model (its `SmallBuilder` in
`sefe.models.family`, one module per family): the same sizes, the same two stages.
The result is cached under `$SEFE_CACHE/micro-warmstart-<hash>` keyed by the model config (its digest
names its family), the training recipe and the corpus bytes; the build is seeded (same inputs, same
weights on one machine) and written to a temp folder then renamed, so a kill never leaves a half model.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field
from rich.console import Console

from sefe.micro.scenes import COLOURS, GRID, IMAGE_SIZE, SHAPES, WORDS
from sefe.micro.vision_pretrain import VisionPretrainOptions, pretrain_vision
from sefe.models.family import FAMILY
from sefe.models.family_types import SmallSizes
from sefe.models.small import small_builder
from sefe.models.tiny import default_cache_dir

WARM_FORMAT = 2

# the benchmark's own words, so the tokenizer has pieces for them (not letter by letter)
MICRO_CORPUS: tuple[str, ...] = (
    " ".join(COLOURS) + " " + " ".join(SHAPES) + " " + " ".join(w.lower() for w in WORDS),
    " ".join(WORDS) + " top bottom left right centre middle side object picture shapes written letters",
    "There are three shapes: a red circle at the top left, a blue star in the centre and a green square.",
    "Is the red circle on the left side? Is there a yellow star in the picture? Answer with Yes or No.",
    "How many shapes are in the image? one two three four Which of these is in the picture?",
    "Please provide the bounding box coordinate of the region this sentence describes: the blue square.",
    "Describe the image in detail. What colour is the object at the top? Answer, then explain briefly.",
    "[0.06, 0.40, 0.29, 0.62] [0.71, 0.04, 0.96, 0.27] drawn in",
)


def micro_sizes(seed: int = 0) -> SmallSizes:
    """The warm-start model's sizes, whatever its family: 48 px pictures, one image token per 16 px grid
    cell (9 image tokens), a 2-layer LM. Sized for 2 CPU cores: a step of 8 short records costs tens of
    milliseconds."""
    return SmallSizes(
        seed=seed,
        vocab_size=1024,
        hidden_size=128,
        intermediate_size=256,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        max_position_embeddings=512,
        vision_hidden_size=64,
        vision_intermediate_size=128,
        vision_layers=2,
        vision_heads=4,
        image_size=IMAGE_SIZE,
        cell_px=IMAGE_SIZE // GRID,
        extra_corpus=MICRO_CORPUS,
        split_digits=True,  # Locate's nine boxes: all the same length (merged pieces made 6-13 tokens)
    )


def micro_model_config(seed: int = 0, family: str = FAMILY.name) -> Any:
    """The family's config of the warm-start model (a pydantic model with `digest()`)."""
    return small_builder(family).config(micro_sizes(seed))


class WarmStartOptions(BaseModel):
    """The pre-training recipe (part of the cache key)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    vision: VisionPretrainOptions = Field(default_factory=VisionPretrainOptions)
    steps: int = Field(1000, gt=0)  # stage 2: projector + language model, tower frozen
    # the first steps see only one-object pictures and short answers: the language model first learns to
    # read the picture at all, then to find the object a question names (without it, short answers stayed
    # on the language prior: same loss with the pictures shuffled)
    simple_steps: int = Field(100, ge=0)
    batch_size: int = Field(16, gt=0)
    lr: float = Field(1e-3, gt=0)
    warmup: int = Field(60, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    seed: int = 0
    threads: int | None = None  # torch threads (None: torch's default)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def warmstart_key(model: Any, opts: WarmStartOptions, corpus: Path) -> str:
    """12 hex digits of the recipe (the config digest of a non-LLaVA family names that family)."""
    recipe = {
        "format": WARM_FORMAT,
        "model": model.digest(),
        "opts": opts.model_dump(exclude={"threads"}),
        "corpus": _sha256(corpus),
    }
    return hashlib.sha256(orjson.dumps(recipe, option=orjson.OPT_SORT_KEYS)).hexdigest()[:12]


def warmstart_dir(
    data_root: Path,
    model: Any | None = None,
    opts: WarmStartOptions | None = None,
    cache_dir: Path | None = None,
    console: Console | None = None,
    family: str = FAMILY.name,
) -> Path:
    """The pre-trained model folder of `family` for this data root's corpus, built on first use; `model` is
    that family's config (default `micro_model_config`)."""
    model = model or micro_model_config(family=family)
    opts = opts or WarmStartOptions()
    corpus = Path(data_root) / "warmstart" / "train.json"
    if not corpus.is_file():
        raise FileNotFoundError(
            f"{corpus}: no warm-start corpus (build the benchmark with `sefe micro build`)"
        )
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = root / f"micro-warmstart-{warmstart_key(model, opts, corpus)}"
    if (target / "config.json").is_file() and (target / "warmstart.json").is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".micro-warmstart-", dir=root))
    try:
        info = pretrain(Path(data_root), corpus, model, opts, tmp, console or Console(stderr=True), family)
        (tmp / "warmstart.json").write_bytes(orjson.dumps(info, option=orjson.OPT_INDENT_2))
        try:
            os.replace(tmp, target)
        except OSError:
            if not (target / "warmstart.json").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def pretrain(
    data_root: Path,
    corpus: Path,
    model_cfg: Any,
    opts: WarmStartOptions,
    out: Path,
    console: Console,
    family: str = FAMILY.name,
) -> dict[str, object]:
    """Stage 1 (the tower on scene truth), then stage 2 (projector + LM on the corpus through the family's
    dataset and collator, AdamW, warm-up then cosine); saves model + processor in `out`."""
    import torch
    from torch.utils.data import DataLoader

    from sefe.progress import step_bar

    if opts.threads:
        torch.set_num_threads(opts.threads)
    torch.manual_seed(opts.seed)
    small = small_builder(family)
    model, processor = small.build(model_cfg)
    vision = pretrain_vision(model, processor, data_root, opts.vision, opts.seed, console, family)
    for module in small.frozen(model):
        module.requires_grad_(False)
    dataset, collator = small.corpus(corpus, data_root, processor, model_cfg.max_position_embeddings)
    loader = DataLoader(
        dataset,
        batch_size=opts.batch_size,
        sampler=_curriculum(dataset, data_root, opts),
        collate_fn=collator,
    )
    trainable = [p for p in model.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(trainable, lr=opts.lr, weight_decay=opts.weight_decay)

    def lr_at(step: int) -> float:
        if step < opts.warmup:
            return (step + 1) / opts.warmup
        progress = (step - opts.warmup) / max(1, opts.steps - opts.warmup)
        return 0.5 * (1 + math.cos(math.pi * progress))

    sched = torch.optim.lr_scheduler.LambdaLR(optim, lr_at)
    model.train()
    losses: list[float] = []
    start = time.perf_counter()
    with step_bar(console) as progress:
        bar = progress.add_task("warm start", total=opts.steps)
        for step, batch in enumerate(loader):
            loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            optim.step()
            sched.step()
            optim.zero_grad(set_to_none=True)
            losses.append(loss.item())
            if step % 20 == 0:
                recent = sum(losses[-20:]) / len(losses[-20:])
                progress.update(bar, description=f"warm start (loss {recent:.3f})")
            progress.advance(bar)
    model.eval()
    for module in small.frozen(model):
        module.requires_grad_(True)  # saved weights carry no flag; keep the object plain
    model.save_pretrained(out)
    processor.save_pretrained(out)
    tail = losses[-50:]
    return {
        "family": family,
        "model": model_cfg.model_dump(mode="json"),
        "options": opts.model_dump(mode="json"),
        "corpus": str(corpus),
        "corpus_sha256": _sha256(corpus),
        "parameters": sum(p.numel() for p in model.parameters()),
        "vision": vision,
        "first_loss": losses[0],
        "final_loss": sum(tail) / len(tail),
        "seconds": round(time.perf_counter() - start, 1),
    }


def _curriculum(dataset: Any, data_root: Path, opts: WarmStartOptions) -> list[int]:
    """Record indices, one batch after another: `simple_steps` batches of one-object pictures with short
    answers (no caption, no explanation), then uniform draws with replacement from the whole corpus."""
    import torch

    scenes = orjson.loads((Path(data_root) / "scenes.json").read_bytes())

    def simple(rec: tuple[Any, str | None, list[tuple[str, str]]]) -> bool:
        _, image, turns = rec
        if image is None or len(scenes.get(image, {}).get("objects", [])) != 1:
            return False
        return all(len(a.split()) <= 2 for _, a in turns)

    gen = torch.Generator().manual_seed(opts.seed)
    easy = [i for i, rec in enumerate(dataset.records) if simple(rec)]
    n_easy = opts.simple_steps * opts.batch_size if easy else 0
    n_all = opts.steps * opts.batch_size - n_easy
    order = [easy[int(j)] for j in torch.randint(len(easy) or 1, (n_easy,), generator=gen)] if easy else []
    order += torch.randint(len(dataset), (max(0, n_all),), generator=gen).tolist()
    return order
