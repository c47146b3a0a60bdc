"""A finished stage of a run (`<run>/<k>_<Task>/`) loaded as its method loads it, for `sefe eval run`.

Why: `merged/` is the whole model only for the methods that merge. MoELoRA's routed experts cannot be merged
and live beside it (`moelora.safetensors`), so its `merged/` says so in its `config.json`
(`sefe_incomplete`) and `sefe eval run` refuses it; the stage folder itself loads through the run's method
(`load_merged`), exactly as the runner evaluates the stage after training.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sefe.errors import InputError
from sefe.sefe_train import run_layout as L

#: Key of a `merged/config.json` that is not the whole model: {"method", "missing", "file"}.
INCOMPLETE_KEY = "sefe_incomplete"


def is_stage_folder(path: Path) -> bool:
    """True for `<run>/<k>_<Task>`: it holds `merged/` and its run folder holds the run's `config.yaml`."""
    return (path / L.MERGED_DIR).is_dir() and (path.parent / L.CONFIG_FILE).is_file()


def load_stage(folder: Path, device: str | None = None) -> tuple[Any, Any]:
    """(model, processor) of a finished stage in the run's dtype, on `device` (default: cuda if available)."""
    import torch

    from sefe.sefe_train.config import load_config
    from sefe.sefe_train.methods import resolve
    from sefe.sefe_train.methods.base import StageContext

    run = folder.parent
    cfg = load_config(run / L.CONFIG_FILE)
    index, _, task = folder.name.partition("_")
    names = [t.name for t in cfg.tasks]
    if not index.isdigit() or not 1 <= int(index) <= len(names) or names[int(index) - 1] != task:
        raise InputError(f"{folder}: not a stage of the run in {run} (its stages: {names}, as <k>_<Task>)")
    k = int(index)
    ctx = StageContext(cfg=cfg, k=k, task=cfg.tasks[k - 1], run_dir=run, part=folder)
    model, processor = resolve(cfg).load_merged(ctx, folder / L.MERGED_DIR)
    return model.to(device or ("cuda" if torch.cuda.is_available() else "cpu")), processor
