"""The CoIN data root: where annotations and official ground truth live (as run_layout.py is for runs).

    <root>/annotations/<Task>/train.json          CoIN's train set
    <root>/annotations/<Task>/train_x{X}.json     the ASD version with X percent converted
    <root>/annotations/<Task>/test.json           the evaluation set
    <root>/annotations/asd_manifest_x{X}.json     what `sefe asd build` did for that X
    <root>/ScienceQA/problems.json + pid_splits.json, <root>/TextVQA/TextVQA_0.5.1_val.json,
    <root>/GQA/testdev_balanced_questions.json    official ground truth, where the release's scripts read it
    <root>/eval_gt/<same relative paths>          the same files for the bundled data (data/coin-mini)
    <root>/tasks.json                             tasks the root declares beyond CoIN's (Micro-CoIN)

Image paths inside records are relative to the root (see `sefe.coin.images`). Nothing else in sefe spells
these names: callers ask this module.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from sefe.coin.tasks import in_coin_order
from sefe.errors import MissingFile

ANNOTATIONS = "annotations"
EVAL_GT = "eval_gt"
TRAIN_FILE = "train.json"
TRAIN_ORI_FILE = "train_ori.json"
TEST_FILE = "test.json"
TASKS_FILE = "tasks.json"
#: the run config's default `train_file`, relative to the data root
TRAIN_PATTERN = f"{ANNOTATIONS}/{{task}}/{TRAIN_FILE}"

#: The image folders of the CoIN datasets at the top of a data root (Grounding and VQAv2 use COCO's).
IMAGE_FOLDERS: tuple[str, ...] = ("ScienceQA", "TextVQA", "ImageNet", "GQA", "VizWiz", "COCO", "OCRVQA")

#: The official ground-truth files each scorer reads, relative to the data root, as the release lays them out.
#: The first file of a task names the location (ScienceQA's scorer is given the folder).
OFFICIAL_GT: dict[str, tuple[str, ...]] = {
    "ScienceQA": ("ScienceQA/problems.json", "ScienceQA/pid_splits.json"),
    "TextVQA": ("TextVQA/TextVQA_0.5.1_val.json",),
    "GQA": ("GQA/testdev_balanced_questions.json",),
}


def format_x(x: float) -> str:
    """`20.0` -> `20`, `12.5` -> `12.5` (as in `train_x20.json`)."""
    return str(int(x)) if float(x).is_integer() else str(x)


def tasks_file(root: Path) -> Path:
    """`<root>/tasks.json`: the root's own task declarations (read by `sefe.coin.root_tasks`)."""
    return Path(root) / TASKS_FILE


def annotations_dir(root: Path) -> Path:
    return Path(root) / ANNOTATIONS


def task_dir(root: Path, task: str) -> Path:
    return annotations_dir(root) / task


def train_path(root: Path, task: str) -> Path:
    return task_dir(root, task) / TRAIN_FILE


def asd_train_path(root: Path, task: str, x: float) -> Path:
    return task_dir(root, task) / f"train_x{format_x(x)}.json"


def asd_manifest_path(root: Path, x: float) -> Path:
    return annotations_dir(root) / f"asd_manifest_x{format_x(x)}.json"


def evaluation_file(root: Path, task: str) -> Path:
    """`annotations/<Task>/test.json` (named so pytest does not take it for a test)."""
    return task_dir(root, task) / TEST_FILE


def tasks_with(root: Path, filename: str) -> list[str]:
    """Tasks with `annotations/<Task>/<filename>`: CoIN tasks in training order, then the others."""
    return in_coin_order(p.parent.name for p in annotations_dir(root).glob(f"*/{filename}") if p.is_file())


def root_of_annotations(path: Path | None) -> Path | None:
    """The data root of an `<root>/annotations/<Task>/<file>` path, or None for a file elsewhere."""
    if path is None:
        return None
    p = Path(path).resolve()
    return p.parents[2] if len(p.parents) > 2 and p.parents[1].name == ANNOTATIONS else None


# ---- official ground truth ------------------------------------------------------------------------------


@dataclass(frozen=True)
class GroundTruth:
    """Where a task's official ground truth was found: `path` is what the scorer takes."""

    task: str
    path: Path  # ScienceQA: the folder holding problems.json + pid_splits.json; else the file
    source: str  # "release layout" or "eval_gt"


class GroundTruthNotFound(MissingFile):
    """No complete set of a task's official files under the root; `missing` lists every path looked for."""

    def __init__(self, task: str, missing: list[Path]) -> None:
        self.task = task
        self.missing = missing
        looked = ", ".join(str(p) for p in missing)
        super().__init__(f"official {task} ground truth not found: missing {looked}")


def bundled_gt_files(task: str) -> tuple[str, ...]:
    """The task's official files as the bundled data holds them: `eval_gt/<release path>` (POSIX)."""
    return tuple(f"{EVAL_GT}/{rel}" for rel in OFFICIAL_GT[task])


def relative(path: Path) -> str:
    """A layout path built on `Path()` as the POSIX string the generator and manifests use."""
    return Path(path).as_posix()


def needs_official_gt(task: str) -> bool:
    """Whether the task's published scorer reads official files besides test.json."""
    return task in OFFICIAL_GT


def _locations(root: Path) -> Iterable[tuple[Path, str]]:
    yield Path(root), "release layout"
    yield Path(root) / EVAL_GT, EVAL_GT


def find_official_gt(root: Path, task: str) -> GroundTruth | None:
    """The task's official files: where the release reads them, then `eval_gt/` (bundled data).

    None for tasks scored from test.json alone. Raises `GroundTruthNotFound` naming every path looked for
    when no location holds all of the task's files.
    """
    rels = OFFICIAL_GT.get(task)
    if rels is None:
        return None
    missing: list[Path] = []
    for base, source in _locations(root):
        files = [base / rel for rel in rels]
        absent = [f for f in files if not f.is_file()]
        if not absent:
            path = files[0].parent if task == "ScienceQA" else files[0]
            return GroundTruth(task=task, path=path, source=source)
        missing += absent
    raise GroundTruthNotFound(task, missing)
