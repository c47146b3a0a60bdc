"""The continual loop of `sefe train`: per task k, the method's set-up, train, kept state, merge, eval.

Why this shape: stage k starts from the merged model of stage k-1 (the paper's sequential LoRA); what a
method changes (adapters, losses, records, keys, buffers) comes from its hooks (`sefe_train/methods/`), and
everything shared lives here. Each stage is resumable at three levels: finished stages are skipped
(`state.json`), finished artefacts inside the current stage are reused (atomic names in
`<k>_<Task>.partial/`), and training continues from the last Trainer checkpoint. Layout: docs/RUN_LAYOUT.md.

Multi-process (torchrun / accelerate launch): every rank trains; rank 0 alone writes adapter, keys, merged
model, evaluations and state, while the other ranks wait for `state.json` to mark the stage done (a file poll,
not a collective, so a long evaluation cannot hit a collective's timeout).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

from rich.console import Console

from sefe.atomic import atomic_dir, atomic_write_bytes, publish_dir
from sefe.errors import MissingFile
from sefe.evaluation.result_files import ACCURACY_FILE
from sefe.sefe_train import run_layout as L
from sefe.sefe_train.config import ConfigError, RunConfig, TaskConfig, dump_config
from sefe.sefe_train.distributed import check_deepspeed, free_memory, is_main_process
from sefe.sefe_train.methods.base import ContinualMethod, StageContext
from sefe.sefe_train.progress import JsonlLogCallback, RichProgressCallback
from sefe.sefe_train.safeguards import disk_full_as_error, resumable_checkpoint, run_folder_lock
from sefe.sefe_train.trainer import build_trainer

console = Console(stderr=True)

# peft calls a transformers method deprecated in v5 at every stage: noise that users cannot act on.
warnings.filterwarnings("ignore", r"`is_gradient_checkpointing` is deprecated", FutureWarning)

#: Parts of the config that define the experiment: changing them under an existing run folder is refused.
_IDENTITY_KEYS = ("method", "method_options", "model", "lora", "reglora", "train_file", "data_root")


# ---- the runner ----------------------------------------------------------------------------------


class ContinualRunner:
    """Runs (or resumes) every stage of `cfg` with `method` (default: `methods.resolve(cfg)`).

    `callbacks`: extra `TrainerCallback`s (tests, monitoring).
    """

    def __init__(
        self,
        cfg: RunConfig,
        callbacks: list[Any] | None = None,
        poll_seconds: float = 2.0,
        method: ContinualMethod | None = None,
    ) -> None:
        from sefe.sefe_train.methods import resolve

        self.cfg = cfg
        self.callbacks = list(callbacks or [])
        self.poll_seconds = poll_seconds
        self.method = method if method is not None else resolve(cfg)

    @property
    def run_dir(self) -> Path:
        return Path(self.cfg.output_dir)

    def run(self) -> L.RunState:
        check_deepspeed(self.cfg)
        self._preflight()  # before the lock: a run that cannot start leaves no folder behind
        with run_folder_lock(self.run_dir), disk_full_as_error(self.run_dir):  # sefe_train/safeguards.py
            return self._run()

    def _run(self) -> L.RunState:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # our own rich bars; keep loading/saving quiet
        run = self.run_dir
        state = self._prepare_run_folder()
        for k, task in enumerate(self.cfg.tasks, start=1):
            if state.is_done(k):
                console.print(f"[dim]stage {k} {task.name}: done, skipped[/dim]")
                continue
            final = L.stage_dir(run, k, task.name)
            if final.exists():  # renamed into place but killed before state.json: complete by construction
                if is_main_process():
                    state.mark_done(k, task.name)
                    L.save_state(run, state)
                continue
            console.rule(f"stage {k}/{len(self.cfg.tasks)}: {task.name} ({self.cfg.method})")
            metrics = self.run_stage(k, task)
            if is_main_process():  # the commit point: rename the complete stage folder, then state.json
                publish_dir(L.partial_dir(run, k, task.name), final)
                state.mark_done(k, task.name, metrics)
                L.save_state(run, state)  # written LAST
            else:
                state = self._wait_for_stage(k)
        return state

    def _preflight(self) -> None:
        """Fail before hours of training: train files, and a scorer and ground truth per evaluated task."""
        paths = [self.cfg.train_path(t) for t in self.cfg.tasks]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise MissingFile(f"train file(s) not found: {', '.join(missing)}")
        if self.cfg.eval.enabled:
            from sefe.evaluation.scorers import ScoringError, canonical_task, find_gt

            ev = self.cfg.eval
            for t in self.cfg.tasks:
                try:
                    canonical_task(t.name, self.cfg.resolved_data_root())
                    if self.cfg.gt_path(t) is None:
                        find_gt(self.cfg.resolved_data_root(), t.name, ev.mode, ev.allow_approximate)
                except ScoringError as exc:
                    raise ConfigError(f"task {t.name!r}: {exc} (or run with --no-eval)") from None

    # ---- run folder ------------------------------------------------------------------------------

    def _prepare_run_folder(self) -> L.RunState:
        run = self.run_dir
        names = [t.name for t in self.cfg.tasks]
        state = L.load_state(run)
        stored = run / L.CONFIG_FILE
        if state is not None:
            done_names = [s.task for s in state.done]
            for s in state.done:
                if s.index > len(names) or names[s.index - 1] != s.task:
                    raise ConfigError(
                        f"{run / L.STATE_FILE}: stage {s.index} was {s.task!r}, but the config now lists "
                        f"{names}; the task order of a run cannot change (use another --out). "
                        f"Done: {done_names}"
                    )
            if state.method != self.cfg.method:
                raise ConfigError(
                    f"{run / L.STATE_FILE}: this run folder holds a {state.method!r} run, "
                    f"not {self.cfg.method!r}"
                )
        if stored.exists() and state is not None and state.done:
            changed = _changed_identity(stored, self.cfg)
            if changed:
                raise ConfigError(
                    f"{stored}: the run folder was started with different {', '.join(changed)}; "
                    "resume with the same settings or choose another --out"
                )
        if state is None:
            state = L.RunState(method=self.cfg.method, tasks=names)
        state.tasks = names
        if is_main_process():
            run.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(stored, dump_config(self.cfg).encode())
            L.save_state(run, state)
        return state

    def _wait_for_stage(self, k: int) -> L.RunState:
        """Non-main ranks: wait until rank 0 has committed stage k."""
        while True:
            state = L.load_state(self.run_dir)
            if state is not None and state.is_done(k):
                return state
            time.sleep(self.poll_seconds)

    # ---- one stage -------------------------------------------------------------------------------

    def context(self, k: int, task: TaskConfig) -> StageContext:
        return StageContext(
            cfg=self.cfg, k=k, task=task, run_dir=self.run_dir, part=L.partial_dir(self.run_dir, k, task.name)
        )

    def run_stage(self, k: int, task: TaskConfig) -> dict[str, float]:
        """Build `<k>_<Task>.partial/` completely; the caller renames it. Returns the training metrics.

        Each step is skipped when its artefact exists (resume): trained artefact, kept state, merged model.
        """
        ctx = self.context(k, task)
        part = ctx.part
        if is_main_process():
            part.mkdir(parents=True, exist_ok=True)
        method = self.method
        trained = part / (method.trained_dir or L.MERGED_DIR)
        model = processor = merged = None
        metrics: dict[str, float] = {}
        if not trained.exists():
            model, processor, metrics = self.train_stage(ctx)
            if method.trained_dir is None and is_main_process():
                merged = self.merge(ctx, model, processor)
        if not is_main_process():
            return metrics
        metrics = self._stage_metrics(part, metrics)
        need_state = any(not (part / f).exists() for f in method.stage_files(ctx))
        need_merge = not (part / L.MERGED_DIR).exists()
        if need_state or need_merge:
            if model is None:  # resumed after training finished: rebuild from base + saved artefact
                model, processor = method.reload_trained(ctx)
            if need_state:
                method.after_task(ctx, model)
            if need_merge:
                merged = self.merge(ctx, model, processor)
        del model
        if self.cfg.eval.enabled:
            self.evaluate(ctx, (merged, processor) if merged is not None else None)
        self._clean_stage(part)
        return metrics

    def _stage_metrics(self, part: Path, metrics: dict[str, float]) -> dict[str, float]:
        """Write fresh training metrics, or read those of a training finished before a resume."""
        if metrics:
            atomic_write_bytes(part / "train_metrics.json", json.dumps(metrics, indent=2).encode())
        elif (part / "train_metrics.json").exists():
            metrics = json.loads((part / "train_metrics.json").read_text())
        return metrics

    @staticmethod
    def _clean_stage(part: Path) -> None:
        """Optimizer states are not needed any more; temp files of writes a kill interrupted go too."""
        shutil.rmtree(part / L.CHECKPOINTS_DIR, ignore_errors=True)
        for leftover in part.glob(".*"):
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)

    # ---- training: the set-up in named steps ---------------------------------------------------------

    def train_stage(self, ctx: StageContext) -> tuple[Any, Any, dict[str, float]]:
        """The method's model for stage k, trained with checkpoints under `<part>/checkpoints`."""
        model, processor = self.load_stage_model(ctx)
        dataset = self.stage_dataset(ctx, processor)
        ctx = dataclasses.replace(ctx, processor=processor, dataset=dataset)
        model = self.prepare_stage_model(ctx, model)
        trainer = self.stage_trainer(ctx, model, processor, dataset)
        metrics = self.fit(ctx, trainer)
        if is_main_process() and self.method.trained_dir is not None:
            with atomic_dir(ctx.part / self.method.trained_dir) as tmp:
                self.method.save_trained(ctx, model, tmp)
        del trainer  # optimizer states are not needed for keys, merge and evaluation
        free_memory()
        return model, processor, metrics

    def load_stage_model(self, ctx: StageContext) -> tuple[Any, Any]:
        """Step 1: the model stage k starts from, with the KV cache off when checkpointing activations."""
        model, processor = self.method.load_base(ctx)
        if self.cfg.train.gradient_checkpointing:  # the KV cache is useless in training and clashes with it
            for c in (model.config, getattr(model.config, "text_config", None)):
                if c is not None:
                    c.use_cache = False
        return model, processor

    def stage_dataset(self, ctx: StageContext, processor: Any) -> Any:
        """Step 2: the task's training records (any train_file, original or ASD), as the method mixes them."""
        from sefe.sefe_train.stage_model import train_dataset

        train_path = self.cfg.train_path(ctx.task)
        if not train_path.exists():
            raise MissingFile(f"stage {ctx.k} ({ctx.task.name}): train file not found: {train_path}")
        dataset = train_dataset(self.cfg, ctx.task, processor)  # the family's (LLaVA: LlavaDataset)
        records = self.method.train_records(ctx, dataset.records)
        if records is not dataset.records:
            dataset.set_records(records)
        return dataset

    def prepare_stage_model(self, ctx: StageContext, model: Any) -> Any:
        """Step 3: seed (reproducible adapter init per stage; resume loads the checkpoint), then the method's
        set-up (inject, mask, freeze)."""
        from transformers import set_seed

        set_seed(self.cfg.train.seed + ctx.k)
        return self.method.prepare_model(ctx, model)

    def stage_trainer(self, ctx: StageContext, model: Any, processor: Any, dataset: Any) -> Any:
        """Step 4: the Trainer with the method's loss terms and learning rates, progress and log callbacks."""
        from sefe.sefe_train.stage_model import train_collator

        trainer = build_trainer(
            self.cfg,
            model,
            processor,
            dataset,
            train_collator(self.cfg, processor),
            ctx.part / L.CHECKPOINTS_DIR,
            self.callbacks,
            loss_terms=self.method.loss_terms(ctx, model),
            learning_rate=self.method.learning_rate(ctx),
            train_projector=self.method.trains_projector(),
        )
        trainer.add_callback(JsonlLogCallback(ctx.part / L.TRAIN_LOG))
        return trainer

    def fit(self, ctx: StageContext, trainer: Any) -> dict[str, float]:
        """Step 5: train, from the newest complete checkpoint if a kill interrupted this stage."""
        last = resumable_checkpoint(ctx.part / L.CHECKPOINTS_DIR)
        if last:
            console.print(f"[yellow]resuming stage {ctx.k} from {last}[/yellow]")
        bar = RichProgressCallback(f"stage {ctx.k} {ctx.task.name}", console)
        trainer.add_callback(bar)
        try:
            result = trainer.train(resume_from_checkpoint=last)
        finally:
            bar.close()
        metrics = {k2: float(v) for k2, v in result.metrics.items() if isinstance(v, int | float)}
        metrics["world_size"] = float(trainer.args.world_size)
        metrics["global_step"] = float(trainer.state.global_step)
        return metrics

    # ---- after training ----------------------------------------------------------------------------

    def merge(self, ctx: StageContext, model: Any, processor: Any) -> Any:
        """The method's merged model (LoRA: base + (alpha/r)·B·A), saved as `merged/`: base of stage k+1."""
        from sefe.models.llava import torch_dtype
        from sefe.sefe_train.stage_model import save_model

        merged = self.method.merge(ctx, model)
        dtype = self.cfg.model.merged_dtype or self.cfg.model.dtype
        if dtype != "fp32" or self.cfg.model.merged_dtype is not None:  # store in the training dtype
            merged = merged.to(torch_dtype(dtype))
        save_model(self.cfg, merged, processor, ctx.part / L.MERGED_DIR)  # atomic: temp folder + rename
        if self.cfg.model.merged_dtype not in (None, self.cfg.model.dtype):
            merged = merged.to(torch_dtype(self.cfg.model.dtype))  # evaluated as reloaded: rounded, run dtype
        return merged

    def evaluate(self, ctx: StageContext, model: tuple[Any, Any] | None) -> None:
        """Tasks 1..k on stage k's merged model (the in-memory one when at hand, else read back)."""
        from sefe.sefe_train.evaluate_stage import evaluate_stage

        merged = ctx.part / L.MERGED_DIR
        if model is None:
            model = self.method.load_merged(ctx, merged)
        acc = evaluate_stage(
            self.cfg, ctx.k, merged, ctx.part / L.EVAL_DIR, self.run_dir / ACCURACY_FILE, model=model
        )
        console.print(f"after stage {ctx.k}: " + ", ".join(f"{t} {a:.2f}" for t, a in acc.items()))


def _changed_identity(stored: Path, cfg: RunConfig) -> list[str]:
    """Identity keys whose value differs between the stored config and `cfg` (new keys: their defaults)."""
    import yaml

    old = yaml.safe_load(stored.read_text(encoding="utf-8")) or {}
    with contextlib.suppress(ValueError):  # fill options added since the run started with their defaults
        old = RunConfig.model_validate(old).model_dump(mode="json")
    new = cfg.model_dump(mode="json")
    return [k for k in _IDENTITY_KEYS if old.get(k) != new.get(k)]
