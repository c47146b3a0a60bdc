"""The continual-method interface: one options model and one class with a few hooks per method.

Why hooks and not a training loop per method: the continual runner owns everything every method shares
(stages, resume, checkpoints, multi-process writes, merge saving, evaluation), and a method only says what
differs. The split follows peft's tuners (what changes in the model: `prepare_model`) and trl's trainers (one
small loss hook: `loss_terms`). The runner calls, for stage k (1-based):

1. `load_base(ctx)`                      the model stage k starts from (stage k-1's merged model by default)
2. `train_records(ctx, records)`         which records stage k trains on (replay mixes earlier tasks in)
3. `prepare_model(ctx, model)`           inject adapters, masks, freeze; returns the model the Trainer trains
4. `loss_terms(ctx, model)`              extra loss terms, each logged by name
5. `save_trained(ctx, model, folder)`    the trained artefact (`trained_dir`: `adapter/`, or the whole model)
6. `after_task(ctx, model)`              what is kept between tasks (keys, masks, buffers), into `stage_files`
7. `merge(ctx, model)`                   the model that is saved as `merged/`: base of stage k+1, evaluated
8. `load_merged(ctx, folder)`            read a `merged/` folder back (evaluation, stage k+1)

Resume works unchanged for every method because the runner only ever asks "does this file exist?": a stage
reuses `trained_dir` if it is there (otherwise training resumes from the last Trainer checkpoint), runs
`after_task` only if one of `stage_files` is missing, and merges only if `merged/` is missing. Every file a
method writes must therefore appear atomically (`sefe.atomic`) under a name listed in `stage_files`.

A method captures no device or dtype at set-up: the hooks run while the model is still on the CPU, and the
Trainer (or DeepSpeed) moves and casts it afterwards. Tensors a hook keeps (earlier tasks' A matrices, masks)
are moved to the parameter they meet when they are used, at step time. `tests/sefe_train/methods/
test_device_moves.py` holds every registered method to this: after each hook the model moves to bf16 and to
the `meta` device, and a training step's loss terms and hooks must still run.

Method modules import only light modules at import time (pydantic, this file): the registry imports them all
to list them in `sefe train --help`. So `LossTerm` (in `sefe_train/trainer.py`, beside the trainer that adds
the terms) is imported inside `loss_terms`. The building blocks a method may use are `sefe_train/stage_model`
(the stage's base model, a fresh LoRA), `sefe_train/trainer` (`build_trainer`, `LossTerm`) and
`sefe_train/distributed` (rank, memory); never the runner, which calls the hooks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Self, TypeVar

from pydantic import BaseModel, ConfigDict

from sefe.errors import MissingFile
from sefe.models.train_sample import TrainSample
from sefe.sefe_train import run_layout as L

if TYPE_CHECKING:
    from sefe.sefe_train.config import RunConfig, TaskConfig
    from sefe.sefe_train.trainer import LossTerm

#: One training record as the stage's dataset holds it: `.id`, `.image` (path or None), `.turns` [(q, a)].
Record = TrainSample


class MethodOptions(BaseModel):
    """Base of every method's options (`method_options.<name>.<key>` in the run config).

    Each field's description states its default's source (paper, reference code, or our choice).
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


#: A method's options model: `ContinualMethod[OptionsT].options` is an `OptionsT`.
OptionsT = TypeVar("OptionsT", bound=BaseModel)


@dataclass(frozen=True)
class StageContext:
    """Where stage k stands: the run, the task, and the folders of this stage and of the earlier ones."""

    cfg: RunConfig
    k: int  # 1-based stage number
    task: TaskConfig
    run_dir: Path
    part: Path  # the stage folder being built: <run>/<k>_<Task>.partial/
    #: While training stage k (from `prepare_model` on): the processor and the stage's training dataset (the
    #: records `train_records` chose), e.g. for a calibration run. None in the hooks after training.
    processor: Any = None
    dataset: Any = None

    @property
    def earlier_tasks(self) -> list[TaskConfig]:
        """Tasks 1..k-1, in training order."""
        return list(self.cfg.tasks[: self.k - 1])

    def stage_folder(self, j: int) -> Path:
        """The finished folder of an earlier stage j (1-based, j < k)."""
        if not 1 <= j < self.k:
            raise ValueError(f"stage {j} is not an earlier stage of stage {self.k}")
        return L.stage_dir(self.run_dir, j, self.cfg.tasks[j - 1].name)

    @property
    def prev(self) -> Path | None:
        """The finished folder of stage k-1, or None for the first stage."""
        return self.stage_folder(self.k - 1) if self.k > 1 else None

    @property
    def prev_merged(self) -> Path | None:
        return self.prev / L.MERGED_DIR if self.prev is not None else None


class ContinualMethod(Generic[OptionsT]):
    """Base class of a continual method. Subclass as `ContinualMethod[MyOptions]`, set the class attributes
    (`options_cls = MyOptions`), override the hooks you need; `self.options` is then a `MyOptions`.

    The defaults describe a method that trains the model as `prepare_model` leaves it, keeps nothing between
    tasks, and saves the trained model itself as the merged model.
    """

    #: Registry name (`sefe train --method NAME`, `method_options.NAME`).
    name: ClassVar[str] = ""
    #: One line for `sefe train --help` and docs/METHODS.md.
    summary: ClassVar[str] = ""
    #: The paper (authors, year, venue or arXiv id).
    paper: ClassVar[str] = ""
    #: What carries over from task to task, in words.
    kept_between_tasks: ClassVar[str] = ""
    #: The options model (`method_options.<name>`); a `MethodOptions` subclass (RegLoRA keeps its own model).
    options_cls: ClassVar[type[BaseModel]] = MethodOptions
    #: The stage's trained artefact, reused on resume. None: the trained model is saved as `merged/` at once.
    trained_dir: ClassVar[str | None] = None

    def __init__(self, cfg: RunConfig, options: OptionsT) -> None:
        self.cfg = cfg
        self.options: OptionsT = options

    @classmethod
    def read_options(cls, cfg: RunConfig) -> BaseModel:
        """This method's options in `cfg`: the section `method_options.<name>` (defaults where absent)."""
        return cls.options_cls.model_validate(cfg.method_options.get(cls.name, {}))

    @classmethod
    def from_config(cls, cfg: RunConfig) -> Self:
        """The method with its options read from `cfg` (`methods.resolve` checks name and options first)."""
        return cls(cfg, cls.read_options(cfg))  # type: ignore[arg-type]  # options_cls is OptionsT's model

    # ---- 1-4: setting up stage k -------------------------------------------------------------------

    def load_base(self, ctx: StageContext) -> tuple[Any, Any]:
        """(model, processor) stage k starts from: the configured model, then stage k-1's merged one."""
        if ctx.prev_merged is None:
            from sefe.sefe_train.stage_model import load_base

            return load_base(self.cfg, None)
        return self.load_merged(ctx, ctx.prev_merged)

    def train_records(self, ctx: StageContext, records: list[Record]) -> list[Record]:
        """The records stage k trains on; by default the task's own training file as loaded."""
        return records

    def prepare_model(self, ctx: StageContext, model: Any) -> Any:
        """Set the model up for stage k (inject, mask, freeze) and return what the Trainer trains."""
        raise NotImplementedError(f"method {self.name!r} must implement prepare_model")

    def loss_terms(self, ctx: StageContext, model: Any) -> list[LossTerm]:
        """Extra loss terms of stage k (none by default)."""
        return []

    def learning_rate(self, ctx: StageContext) -> float:
        """Learning rate of the trained parameters other than the projector (`train.lr` by default)."""
        return self.cfg.train.lr

    def trains_projector(self) -> bool:
        """True: the projector's parameters form their own optimizer group at `train.projector_lr`."""
        return self.cfg.lora.train_projector

    # ---- 5-8: after training -----------------------------------------------------------------------

    def save_trained(self, ctx: StageContext, model: Any, folder: Path) -> None:
        """Write the trained artefact into `folder` (a temp folder renamed to `trained_dir` afterwards)."""
        raise NotImplementedError(f"method {self.name!r} sets trained_dir but does not save it")

    def reload_trained(self, ctx: StageContext) -> tuple[Any, Any]:
        """Rebuild the trained model from `trained_dir` after a resume (training itself was finished)."""
        raise NotImplementedError(f"method {self.name!r} sets trained_dir but cannot reload it")

    def stage_files(self, ctx: StageContext) -> list[str]:
        """Names (inside the stage folder) that `after_task` writes; all present = `after_task` is done."""
        return []

    def after_task(self, ctx: StageContext, model: Any) -> None:
        """Record what is kept between tasks into `ctx.part`: each file atomically, named in `stage_files`."""

    def merge(self, ctx: StageContext, model: Any) -> Any:
        """The plain LLaVA model saved as `merged/` (default: the trained model itself)."""
        return model

    def load_merged(self, ctx: StageContext, folder: Path) -> tuple[Any, Any]:
        """(model, processor) from a `merged/` folder, in the run's dtype."""
        from sefe.sefe_train.stage_model import load_base

        return load_base(self.cfg, folder)

    # ---- helpers -------------------------------------------------------------------------------------

    def earlier_stage_file(self, ctx: StageContext, name: str) -> Path | None:
        """`name` in stage k-1's folder (what earlier tasks left), or None on stage 1; missing is an error."""
        if ctx.prev is None:
            return None
        path = ctx.prev / name
        if not path.exists():
            raise MissingFile(
                f"{path}: stage {ctx.k - 1} of this {self.name} run left no {name}; cannot continue"
            )
        return path


class LoRAMethod(ContinualMethod[OptionsT]):
    """A fresh LoRA per task on the language model's linears (section `lora:`), merged after the task.

    The projector is trained fully beside it (`modules_to_save`, `lora.train_projector`). Subclasses add
    keys, losses or records; the adapter is saved as a standard peft folder (`adapter/`).
    """

    trained_dir: ClassVar[str | None] = L.ADAPTER_DIR

    def prepare_model(self, ctx: StageContext, model: Any) -> Any:
        from sefe.sefe_train.stage_model import add_fresh_lora

        return add_fresh_lora(self.cfg, model)

    def save_trained(self, ctx: StageContext, model: Any, folder: Path) -> None:
        model.save_pretrained(str(folder))

    def reload_trained(self, ctx: StageContext) -> tuple[Any, Any]:
        from peft import PeftModel

        model, processor = self.load_base(ctx)
        return PeftModel.from_pretrained(model, str(ctx.part / L.ADAPTER_DIR)), processor

    def merge(self, ctx: StageContext, model: Any) -> Any:
        """Fold ΔW = (alpha/r)·B·A into the base weights."""
        return model.merge_and_unload()
