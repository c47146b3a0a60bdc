"""Regenerate `coin-mini`, the small synthetic CoIN-layout data root bundled with sefe.

    python -m sefe.data.make_coin_mini [--out DIR] [--seed 0] [--clean]

The output is a pure function of the seed (stdlib + Pillow + orjson only, bitmap-font text, no metadata in
images), so rerunning it reproduces the committed folder byte for byte and a test can check that. Every
answer is true of its picture (colours, counts, words, boxes), so a model trained on it can really learn.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from pathlib import Path

from sefe.atomic import atomic_write_bytes
from sefe.coin import layout
from sefe.coin.tasks import COIN_TASK_NAMES
from sefe.data import (
    mini_coco,
    mini_gqa,
    mini_imagenet,
    mini_ocrvqa,
    mini_scienceqa,
    mini_textvqa,
    mini_vizwiz,
)
from sefe.data.mini_bundle import TaskData, dump_json

TASKS: tuple[str, ...] = COIN_TASK_NAMES
DEFAULT_SEED = 0
DEFAULT_OUT = Path(__file__).resolve().parent / "coin-mini"
# top-level entries this script owns inside a data root (what --clean may prune)
MANAGED = (layout.ANNOTATIONS, layout.EVAL_GT, *layout.IMAGE_FOLDERS, "README.md")


def build_tasks(seed: int = DEFAULT_SEED) -> tuple[dict[str, TaskData], dict[str, bytes]]:
    """All eight tasks in CoIN order, plus files shared between tasks (COCO images)."""
    grounding, vqav2, coco_files = mini_coco.build(seed)
    built = (
        mini_scienceqa.build(seed),
        mini_textvqa.build(seed),
        mini_imagenet.build(seed),
        mini_gqa.build(seed),
        mini_vizwiz.build(seed),
        grounding,
        vqav2,
        mini_ocrvqa.build(seed),
    )
    tasks = {t.name: t for t in built}  # each generator names its task
    assert tuple(tasks) == TASKS
    return tasks, coco_files


def build(seed: int = DEFAULT_SEED) -> dict[str, bytes]:
    """Every file of the data root: relative POSIX path -> bytes."""
    tasks, shared = build_tasks(seed)
    files: dict[str, bytes] = dict(shared)
    for name, task in tasks.items():
        for rel, data in task.files.items():
            if rel in files and files[rel] != data:
                raise RuntimeError(f"{name}: {rel} generated twice with different content")
            files[rel] = data
        files[layout.relative(layout.train_path(Path(), name))] = dump_json(task.train)
        files[layout.relative(layout.evaluation_file(Path(), name))] = dump_json(task.test)
    files["README.md"] = render_readme(tasks, seed, files).encode()
    return dict(sorted(files.items()))


def render_readme(tasks: dict[str, TaskData], seed: int, files: dict[str, bytes]) -> str:
    rows = []
    for name, t in tasks.items():
        turns = sum(len(r["conversations"]) // 2 for r in t.train)
        rows.append(f"| {name} | {len(t.train)} | {turns} | {len(t.test)} |")
    n_images = sum(1 for p in files if p.lower().endswith((".jpg", ".jpeg", ".png")))
    table = "\n".join(rows)
    return f"""# coin-mini: a synthetic CoIN-layout data root

**Synthetic.** Nothing here comes from the real CoIN, ScienceQA, TextVQA, ImageNet, GQA, VizWiz, COCO/RefCOCO,
VQAv2 or OCR-VQA data. Pictures are drawn shapes, signs and book covers; every answer is true of its picture
(colours, counts, sides, words, boxes), so a model can learn it and the scorers have real work to do.
Use it to try the `sefe` commands end to end on a laptop; never report numbers on it as CoIN results.

Regenerate (deterministic, seed {seed}; the tests check the committed copy is byte-identical):

```
python -m sefe.data.make_coin_mini            # rewrites this folder (inside the sefe package)
python -m sefe.data.make_coin_mini --out DIR  # elsewhere (--seed N: another sample, --clean: prune stale)
```

## Contents

| task | train records | train QA turns | test records |
|---|---|---|---|
{table}

{n_images} images, 64 to 96 pixels a side (Grounding and VQAv2 share COCO images, many non-square).

## Layout

```
annotations/<Task>/train.json     LLaVA conversation records (id, optional image, human/gpt turns)
annotations/<Task>/test.json      flat test records (question_id, image, text, answer or answer_bbox + size)
ScienceQA/images/<split>/<pid>/image.png
TextVQA/train_images/<image_id>.jpg
ImageNet/train/<wnid>/<wnid>_<n>.JPEG   ImageNet/val/ILSVRC2012_val_<8 digits>.JPEG
GQA/images/<imageId>.jpg
VizWiz/train/VizWiz_train_<8 digits>.jpg   VizWiz/val/VizWiz_val_<8 digits>.jpg
COCO/train2014/COCO_train2014_<12 digits>.jpg   COCO/val2014/COCO_val2014_<12 digits>.jpg
OCRVQA/images/<asin>.jpg
eval_gt/ScienceQA/problems.json, pid_splits.json        official ScienceQA format
eval_gt/TextVQA/TextVQA_0.5.1_val.json                  official TextVQA format (ten answers per question)
eval_gt/GQA/testdev_balanced_questions.json             official GQA format
```

Image paths in records are relative to this folder. There are no `train_x*.json` files: `sefe asd build`
makes them.

- Questions end with CoIN's instruction line: `Answer the question using a single word or phrase.`, or for
  ScienceQA `Answer with the option's letter from the given choices directly.` after one `A. ...` line per
  option and an optional `Context: ...` line before the question.
- TextVQA questions carry a `Reference OCR token: ...` line; VizWiz asks to answer `Unanswerable` when the
  picture does not allow an answer (some items are unanswerable).
- Grounding questions are one line (`Please provide the bounding box coordinate of the region this sentence
  describes: <phrase>.`); answers are `[x1, y1, x2, y2]` with two decimals, normalised to the image padded to
  a square; test records carry `answer_bbox` and `size` `[w, h]`.
- GQA, VQAv2 and OCRVQA train records hold several QA turns; some ScienceQA items are text-only (no `image`).
- Ids are strings in most tasks and integers in Grounding, TextVQA test and VQAv2 test, as in the real files.
- ScienceQA, TextVQA and GQA test ids are the keys of the official-format files under `eval_gt/`.
"""


def existing_files(root: Path) -> Iterable[str]:
    """Files under the managed entries of `root`, as relative POSIX paths."""
    for top in MANAGED:
        p = root / top
        if p.is_file():
            yield top
        elif p.is_dir():
            for f in sorted(p.rglob("*")):
                if f.is_file():
                    yield f.relative_to(root).as_posix()


def write(files: dict[str, bytes], out: Path, clean: bool = False) -> tuple[int, list[str]]:
    """Write changed files atomically; return (files written, stale files found/removed)."""
    written = 0
    for rel, data in files.items():
        path = out / rel
        if path.is_file() and path.read_bytes() == data:
            continue
        atomic_write_bytes(path, data)
        written += 1
    stale = [rel for rel in existing_files(out) if rel not in files]
    if clean:
        for rel in stale:
            (out / rel).unlink()
    return written, stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sefe.data.make_coin_mini", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"data root to write (default: {DEFAULT_OUT})"
    )
    parser.add_argument(
        "--seed", type=int, default=DEFAULT_SEED, help="content seed (the committed copy uses 0)"
    )
    parser.add_argument(
        "--clean", action="store_true", help="delete files in managed folders that are not generated"
    )
    args = parser.parse_args(argv)
    files = build(args.seed)
    written, stale = write(files, args.out, clean=args.clean)
    size = sum(len(b) for b in files.values())
    print(f"coin-mini: {len(files)} files, {size / 1e6:.2f} MB in {args.out} ({written} written)")
    if stale:
        verb = "removed" if args.clean else "not generated (rerun with --clean to remove)"
        print(f"{len(stale)} stale file(s) {verb}, e.g. {stale[0]}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
