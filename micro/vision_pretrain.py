"""Stage 1 of the Micro-CoIN warm start: the vision tower learns the scene truth of the warm-start pictures.

Why: a LLaVA learns on top of a vision tower that already sees (CLIP). Trained from scratch end to end, the
tiny model never starts to read its pictures: early on, the image features are noise to the language model,
so the gradient shrinks their variation to a constant and the answers settle on the language prior
(measured: chance accuracy after 800 steps even for "what colour is the only object?"). A few seconds of
supervised training on what every picture shows gives the tower features the language model can use from
its first steps, the role CLIP's pre-training plays for LLaVA-1.5.

The targets come from `scenes.json` (the truth the generator drew): per grid cell the object's colour, shape
and box within the cell (the tower's patches are the grid's cells), and per picture the number of shapes and
the written word (and per middle-row cell its letter) and the word's colour. The heads are thrown away
afterwards; only the tower is kept. Only the warm-start pictures are used, never a task's pictures. A
held-out tenth measures what the tower learned.

Family-neutral: the family's `SmallBuilder` (`sefe.models.family`) says which module is the tower and what its
per-cell features are (LLaVA: the CLIP patches LLaVA passes on; Qwen2.5-VL: the merger's outputs, so the
merger, Qwen's projector, trains here too); targets, heads and losses are the same for every family.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field
from rich.console import Console

from sefe.coin.images import open_image
from sefe.micro.scenes import COLOURS, GRID, IMAGE_SIZE, SHAPES, WORDS
from sefe.models.family import FAMILY
from sefe.models.small import SmallBuilder, small_builder

WORD_COLOURS: tuple[str, ...] = ("red", "green", "blue", "purple")
MAX_OBJECTS = 4
LETTERS: tuple[str, ...] = tuple(sorted({ch for w in WORDS for ch in w}))


class VisionPretrainOptions(BaseModel):
    """The tower's recipe (part of the warm-start cache key)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    steps: int = Field(1600, ge=0)
    batch_size: int = Field(32, gt=0)
    lr: float = Field(3e-3, gt=0)
    warmup: int = Field(50, ge=0)
    held_out: float = Field(0.1, ge=0, lt=1)


def scene_targets(scene: dict[str, Any]) -> dict[str, Any]:
    """Class indices (0 = nothing there) and in-cell box targets of one picture's scene."""
    cells = GRID * GRID
    colour, shape, mask = [0] * cells, [0] * cells, [0.0] * cells
    box = [[0.0] * 4 for _ in range(cells)]
    for o in scene["objects"]:
        r, c = o["cell"]
        j = r * GRID + c
        colour[j] = 1 + list(COLOURS).index(o["colour"])
        shape[j] = 1 + SHAPES.index(o["shape"])
        x1, y1, x2, y2 = o["box"]
        box[j] = [x1 * GRID - c, y1 * GRID - r, x2 * GRID - c, y2 * GRID - r]  # 0..1 inside the cell
        mask[j] = 1.0
    word = scene.get("word")
    word_colour = scene.get("word_colour")
    letter = [0] * cells
    for k, ch in enumerate((word or "")[:GRID]):  # the renderer puts letter k in column k of the middle row
        letter[GRID + k] = 1 + LETTERS.index(ch)
    return {
        "letter": letter,
        "colour": colour,
        "shape": shape,
        "box": box,
        "mask": mask,
        "count": len(scene["objects"]),
        "word": 0 if word is None else 1 + WORDS.index(word),
        "word_colour": 0 if word_colour is None else 1 + WORD_COLOURS.index(word_colour),
    }


def _tensors(
    data_root: Path, images: list[str], scenes: dict[str, Any], processor: Any, cells: SmallBuilder
) -> dict[str, Any]:
    import torch

    pics = [open_image(data_root, rel, f"{data_root / 'scenes.json'}, image {rel!r}") for rel in images]
    out: dict[str, Any] = {"vision": cells.vision_inputs(processor, pics)}
    rows = [scene_targets(scenes[rel]) for rel in images]
    for key in ("colour", "shape", "letter", "count", "word", "word_colour"):
        out[key] = torch.tensor([r[key] for r in rows])
    out["box"] = torch.tensor([r["box"] for r in rows])
    out["mask"] = torch.tensor([r["mask"] for r in rows])
    return out


def pretrain_vision(
    model: Any,
    processor: Any,
    data_root: Path,
    opts: VisionPretrainOptions,
    seed: int,
    console: Console,
    family: str = FAMILY.name,
) -> dict[str, Any]:
    """Train `model`'s vision tower in place on the warm-start pictures; returns held-out accuracies.
    `family` names the model's family (its `SmallBuilder` says what the tower is and what its cells are)."""
    import torch
    import torch.nn.functional as F

    from sefe.progress import step_bar

    cells_of = small_builder(family)
    tower = cells_of.tower(model)
    _check_grid(model, processor, cells_of)
    scenes = orjson.loads((Path(data_root) / "scenes.json").read_bytes())
    images = sorted(k for k in scenes if k.startswith("images/warmstart/"))
    if not images:
        raise ValueError(f"{data_root / 'scenes.json'}: no warm-start pictures")
    data = _tensors(Path(data_root), images, scenes, processor, cells_of)
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(images), generator=gen)
    n_test = int(len(images) * opts.held_out)
    test_ix, train_ix = order[:n_test], order[n_test:]

    hidden = cells_of.cell_width(model)
    heads = torch.nn.ModuleDict(
        {
            "colour": torch.nn.Linear(hidden, 1 + len(COLOURS)),
            "shape": torch.nn.Linear(hidden, 1 + len(SHAPES)),
            "letter": torch.nn.Linear(hidden, 1 + len(LETTERS)),
            "box": torch.nn.Linear(hidden, 4),
            "count": torch.nn.Linear(hidden, 1 + MAX_OBJECTS),
            "word": torch.nn.Linear(hidden, 1 + len(WORDS)),
            "word_colour": torch.nn.Linear(hidden, 1 + len(WORD_COLOURS)),
        }
    )
    params = list(tower.parameters()) + list(heads.parameters())
    optim = torch.optim.AdamW(params, lr=opts.lr, weight_decay=0.0)

    def lr_at(step: int) -> float:
        warm = min(1.0, (step + 1) / opts.warmup) if opts.warmup else 1.0
        return warm * 0.5 * (1 + math.cos(math.pi * step / max(1, opts.steps)))

    sched = torch.optim.lr_scheduler.LambdaLR(optim, lr_at)

    def features(ix: Any) -> tuple[Any, Any]:
        cells = cells_of.cell_features(model, {k: v[ix] for k, v in data["vision"].items()})
        return cells, cells.mean(1)

    def loss_of(ix: Any) -> Any:
        cells, pooled = features(ix)
        loss = F.cross_entropy(heads["colour"](cells).flatten(0, 1), data["colour"][ix].flatten())
        for key in ("shape", "letter"):
            loss = loss + F.cross_entropy(heads[key](cells).flatten(0, 1), data[key][ix].flatten())
        mask = data["mask"][ix]
        err = ((heads["box"](cells) - data["box"][ix]) ** 2).sum(-1)
        loss = loss + 10 * (err * mask).sum() / mask.sum().clamp(min=1)
        for key in ("count", "word", "word_colour"):
            loss = loss + F.cross_entropy(heads[key](pooled), data[key][ix])
        return loss

    tower.train()
    start = time.perf_counter()
    with step_bar(console) as progress:
        bar = progress.add_task("vision tower", total=opts.steps)
        for step in range(opts.steps):
            ix = train_ix[torch.randint(len(train_ix), (opts.batch_size,), generator=gen)]
            loss = loss_of(ix)
            loss.backward()
            optim.step()
            sched.step()
            optim.zero_grad(set_to_none=True)
            if step % 50 == 0:
                progress.update(bar, description=f"vision tower (loss {loss.item():.3f})")
            progress.advance(bar)
    tower.eval()
    return {
        "steps": opts.steps,
        "pictures": len(images),
        "seconds": round(time.perf_counter() - start, 1),
        "held_out": _held_out(features, heads, data, test_ix) if n_test else {},
    }


def _held_out(features: Any, heads: Any, data: dict[str, Any], ix: Any) -> dict[str, float]:
    """Accuracy on held-out warm-start pictures: per object (colour, shape, box error), per picture (rest)."""
    import torch

    with torch.no_grad():
        cells, pooled = features(ix)
        obj = data["mask"][ix].bool()
        out: dict[str, float] = {}
        for key in ("colour", "shape"):
            pred = heads[key](cells).argmax(-1)
            out[f"{key}_per_object"] = (pred[obj] == data[key][ix][obj]).float().mean().item()
        err = (heads["box"](cells) - data["box"][ix]).abs().mean(-1)[obj] / GRID
        out["box_error_per_object"] = err.mean().item()  # mean |error| as a fraction of the picture side
        out["count"] = (heads["count"](pooled).argmax(-1) == data["count"][ix]).float().mean().item()
        words = data["word"][ix] > 0
        if words.any():
            pred = heads["word"](pooled).argmax(-1)
            out["word_per_word_picture"] = (pred[words] == data["word"][ix][words]).float().mean().item()
    return {k: round(v, 4) for k, v in out.items()}


def _check_grid(model: Any, processor: Any, cells_of: SmallBuilder) -> None:
    """One image feature per grid cell, or the per-cell targets mean nothing: checked on a blank picture."""
    import torch
    from PIL import Image

    blank = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE))
    with torch.no_grad():
        n = cells_of.cell_features(model, cells_of.vision_inputs(processor, [blank])).shape[1]
    if n != GRID * GRID:
        raise ValueError(
            f"vision pre-training needs one patch per grid cell: a {IMAGE_SIZE} px picture gives {n} image"
            f" features, not {GRID}x{GRID}"
        )
