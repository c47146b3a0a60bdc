"""What a continual method builds on: the run's model family, the model a stage starts from, a fresh LoRA
on it, and the task's training records as the family tokenises them.

Why apart from the runner: the runner calls the methods' hooks, and the default hooks need these building
blocks; with them here, `methods/` never imports the runner that calls it. The family (`models/family.py`)
is resolved from the config alone (`model.family`, else the configured folder's `model_type`), so stage k's
`merged/` is read with the family the run started with. LLaVA keeps its parity path (`load_llava`,
`LlavaDataset`, `DataCollator`) unchanged; other families go through the contract.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sefe.models.dataset import RecordsDataset
from sefe.models.family import ModelFamily, family_names
from sefe.sefe_train.config import DEFAULT_TINY, ConfigError, RunConfig, TaskConfig


def run_family(cfg: RunConfig) -> ModelFamily:
    """The run's model family: `model.family`, else the configured folder's `model_type`, else LLaVA."""
    from sefe.models.family import resolve_family

    m = cfg.model
    folder = m.path if m.path not in (None, DEFAULT_TINY) else None
    family = resolve_family(m.family, folder)
    stated = _folder_model_type(folder)
    if m.family and stated in family_names() and stated != family.name:
        raise ConfigError(
            f"model.family is {m.family!r}, but {folder}/config.json says model_type {stated!r}"
        )
    return family


def _folder_model_type(folder: str | None) -> str | None:
    """The `model_type` a folder's config.json states, None when there is none to read."""
    if folder is None:
        return None
    try:
        value = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None  # the loader reports a missing or broken folder itself
    return value if isinstance(value, str) else None


def is_llava(family: ModelFamily) -> bool:
    return family.name == "llava"


def model_source(cfg: RunConfig, base: Path | None) -> Any:
    """Stage 1 loads the configured source; stage k>1 loads the merged folder of stage k-1 (LLaVA)."""
    from sefe.models.llava import ModelSource

    m = cfg.model
    if base is not None:
        return ModelSource(hf=str(base))
    if m.path == DEFAULT_TINY:
        return ModelSource(tiny=True)
    if m.path is not None:
        return ModelSource(hf=m.path)
    return ModelSource(llm=m.llm, vision=m.vision, projector=m.projector)


def family_folder(cfg: RunConfig, family: ModelFamily, base: Path | None) -> Path:
    """The HF folder a non-LLaVA stage loads: `base`, the configured folder, or the family's tiny model."""
    m = cfg.model
    if base is not None:
        return base
    if m.path == DEFAULT_TINY:
        return family.tiny_dir()
    if m.path is None:
        raise ConfigError(f"model family {family.name!r} loads an HF folder: set model.path")
    return Path(m.path)


def load_base(cfg: RunConfig, base: Path | None) -> tuple[Any, Any]:
    """(model, processor) in the run's dtype: the configured model (`base` None) or a `merged/` folder."""
    from sefe.models.llava import load_llava, torch_dtype

    m = cfg.model
    family = run_family(cfg)
    if not is_llava(family):
        folder = family_folder(cfg, family, base)
        return family.load(folder, dtype=torch_dtype(m.dtype), attn_implementation=m.attn_implementation)
    source = model_source(cfg, base)
    return load_llava(source, dtype=torch_dtype(m.dtype), attn_implementation=m.attn_implementation)


def save_model(cfg: RunConfig, model: Any, processor: Any, folder: Path) -> Path:
    """A standard HF folder of the run's family, written atomically (LLaVA: `save_llava`)."""
    return run_family(cfg).save(model, processor, folder)


def projector_keys(cfg: RunConfig, model: Any) -> list[str]:
    """Name parts of the projector's modules (`multi_modal_projector`, Qwen's `merger`): PEFT
    `modules_to_save`, and how the trainer and the methods tell projector parameters apart."""
    return run_family(cfg).projector_modules(model)


def is_projector(name: str, keys: list[str]) -> bool:
    return any(key in name for key in keys)


def lora_config(cfg: RunConfig, model: Any = None) -> Any:
    """peft's LoraConfig of the `lora:` section (the projector trained fully beside it when configured)."""
    from peft import LoraConfig

    return LoraConfig(
        r=cfg.lora.r,
        lora_alpha=cfg.lora.alpha,
        lora_dropout=cfg.lora.dropout,
        target_modules=cfg.lora.target_regex,
        modules_to_save=projector_keys(cfg, model) if cfg.lora.train_projector else None,
        bias="none",
    )


def add_fresh_lora(cfg: RunConfig, model: Any) -> Any:
    """A new adapter for this task; trainable parameters are kept in fp32 for the optimizer."""
    import torch
    from peft import get_peft_model

    peft_model = get_peft_model(model, lora_config(cfg, model))
    for p in peft_model.parameters():
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()
    return peft_model


def train_dataset(cfg: RunConfig, task: TaskConfig, processor: Any) -> Any:
    """The task's train file as a torch Dataset of the run's family (LLaVA: the parity `LlavaDataset`;
    others: `FamilyDataset`, Grounding-style answers converted to the family's boxes)."""
    path, root, max_length = cfg.train_path(task), cfg.resolved_data_root(), cfg.train.max_length
    family = run_family(cfg)
    dataset: RecordsDataset
    if is_llava(family):
        from sefe.models.dataset import LlavaDataset

        dataset = LlavaDataset(path, root, processor, max_length)
    else:
        from sefe.models.family_dataset import FamilyDataset

        box_answers = box_task(task.name, root)
        # box_optional: ASD rewrites part of a box task's answers into other styles (a letter, yes/no, a
        # sentence), which have no box to convert
        dataset = FamilyDataset(
            path, root, family, processor, max_length, box_answers=box_answers, box_optional=True
        )
    if cfg.train.cache_examples:
        dataset.keep_encoded()
    return dataset


def box_task(name: str, root: Path) -> bool:
    """True for a task whose answers are boxes (its TaskSpec, the data root's `tasks.json` first); a task
    declared nowhere has text answers."""
    from sefe.coin.root_tasks import find_task
    from sefe.coin.tasks import TaskError

    try:
        return find_task(name, root).answer == "box"
    except TaskError:
        return False


def train_collator(cfg: RunConfig, processor: Any) -> Any:
    """The batch collator matching `train_dataset`."""
    family = run_family(cfg)
    if is_llava(family):
        from sefe.models.dataset import DataCollator

        return DataCollator(processor)
    from sefe.models.family_dataset import FamilyCollator

    return FamilyCollator(family, processor)
