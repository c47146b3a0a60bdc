"""The run config of `sefe train`: one pydantic model, loaded from YAML, every field overridable from the CLI.

Why one validated object: a continual run spans hours and several stages; a typo in a key must fail before
the first step, and the exact config is stored beside the results (`<run>/config.yaml`) so a rerun resumes
the same experiment. Defaults are the paper's (spec: sefe-method.md, Part 2).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from sefe.coin import layout
from sefe.coin.tasks import COIN_TASK_NAMES
from sefe.data import coin_mini_root
from sefe.errors import InputError
from sefe.models.family import LANGUAGE_MODEL_LINEARS, family_names
from sefe.sefe_train.reglora.config import RegLoRAConfig

# LANGUAGE_MODEL_LINEARS (the default lora.target_regex) is defined once, with the families.
#: The embedded default data set, bundled with the package.
DEFAULT_TINY = "tiny"


#: Scoring modes: the published scorers with their quirks, or fixed ones (spec: coin-scoring.md).
ScoringMode = Literal["compat", "fixed"]


class ConfigError(InputError):
    """A run config that cannot be used; the message names the file and the offending key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(_Strict):
    """Where the base model comes from: an HF folder, the three paper parts (LLaVA), or the tiny model; and
    its family (docs/MODELS.md)."""

    path: str | None = DEFAULT_TINY  # HF model folder, or "tiny" for the family's tiny test model
    # model family (models/family.py); None: the folder's config.json `model_type`, else llava
    family: str | None = None
    llm: str | None = None  # Vicuna / Llama folder (paper setup, with `vision` and `projector`)
    vision: str | None = None  # CLIP vision folder
    projector: str | None = None  # LLaVA pretrain `mm_projector.bin`
    dtype: Literal["bf16", "fp16", "fp32"] = "bf16"
    # dtype of each stage's saved merged model; None = `dtype`. The release saves fp16 and reloads in bf16
    merged_dtype: Literal["bf16", "fp16", "fp32"] | None = None
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = "sdpa"

    @field_validator("family")
    @classmethod
    def _known_family(cls, value: str | None) -> str | None:
        if value is not None and value not in family_names():
            raise ValueError(f"unknown model family {value!r} (known: {', '.join(family_names())})")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> ModelConfig:
        parts = [self.llm, self.vision, self.projector]
        if any(p is not None for p in parts):
            if not all(p is not None for p in parts):
                raise ValueError("model.llm, model.vision and model.projector must be given together")
            if self.family not in (None, "llava"):
                raise ValueError("model.llm + model.vision + model.projector assemble a LLaVA model only")
            self.__dict__["path"] = None  # the three parts win over the default "tiny"
        elif self.path is None:
            raise ValueError(
                "give model.path (HF LLaVA folder or 'tiny') or model.llm + model.vision + model.projector"
            )
        return self


class TaskConfig(_Strict):
    """One stage of the continual run. Paths are relative to `data_root` unless absolute."""

    name: str
    train: str | None = None  # default: RunConfig.train_file with {task} filled in
    # official ground truth (ScienceQA folder, TextVQA / GQA file); default: found in the data root
    # (sefe.coin.layout: where the release reads it, then eval_gt/)
    gt: str | None = None


class LoraOptions(_Strict):
    r: int = Field(128, gt=0)
    alpha: float = Field(256, gt=0)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_regex: str = LANGUAGE_MODEL_LINEARS
    train_projector: bool = True  # the multimodal projector is trained fully, at `train.projector_lr`


def _check_max_steps(steps: int) -> int:
    if steps == 0 or steps < -1:
        raise ValueError(f"must be -1 (no cap) or at least 1, got {steps}")
    return steps


#: A cap on the steps of every stage: -1 (none) or at least 1.
MaxSteps = Annotated[int, AfterValidator(_check_max_steps)]


class TrainOptions(_Strict):
    """Trainer settings. Defaults are the paper's hyper-parameters; the recipe switches (`max_grad_norm`,
    `tf32`, `group_by_modality_length`, `loss_averaging`) default to transformers' behaviour and take the
    release's values in configs/coin-llava7b.yaml (docs/PARITY.md)."""

    lr: float = Field(2e-4, gt=0)
    projector_lr: float = Field(2e-5, ge=0)
    epochs: float = Field(1.0, gt=0)
    max_steps: MaxSteps = -1  # > 0 caps every stage (smoke tests, debugging); -1: no cap
    scheduler: str = "cosine"
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    global_batch_size: int = Field(128, gt=0)
    per_device_batch_size: int = Field(16, gt=0)
    max_length: int = Field(2048, gt=0)
    # keep every encoded train item in memory after its first epoch: for small data (Micro-CoIN), where
    # encoding an item costs as much as the step; CoIN's images would not fit (models/dataset.py)
    cache_examples: bool = False
    gradient_checkpointing: bool = True
    group_by_length: bool = True
    # LLaVA's sampler: image and text-only records in separate batches, each grouped by length (release: on)
    group_by_modality_length: bool = False
    # Gradient-norm clipping; 0 = none (the release's DeepSpeed file has no `gradient_clipping`: none)
    max_grad_norm: float = Field(1.0, ge=0)
    # TF32 matmuls on Ampere+ GPUs (release: on); None leaves torch's setting; ignored without CUDA
    tf32: bool | None = None
    # "global_tokens": transformers 5 (CE summed over the global batch / its label-token count);
    # "micro_batch": the release's transformers 4.37 (each device micro-batch's token mean, then averaged)
    loss_averaging: Literal["global_tokens", "micro_batch"] = "global_tokens"
    save_steps: int = Field(200, gt=0)  # Trainer checkpoint interval: how much work a kill can cost
    save_total_limit: int = Field(1, gt=0)
    logging_steps: int = Field(10, gt=0)
    seed: int = 42
    dataloader_num_workers: int = Field(0, ge=0)
    deepspeed: str | None = None  # DeepSpeed JSON (ZeRO-2); ZeRO-3 is refused
    report_to: str = "none"

    def grad_accum(self, world_size: int) -> int:
        """Gradient accumulation so that per-device batch x accumulation x processes = global batch."""
        per_step = self.per_device_batch_size * world_size
        if self.global_batch_size % per_step:
            raise ConfigError(
                f"train.global_batch_size={self.global_batch_size} is not a multiple of "
                f"train.per_device_batch_size={self.per_device_batch_size} x {world_size} process(es)"
            )
        return self.global_batch_size // per_step


class EvalOptions(_Strict):
    enabled: bool = True  # evaluate tasks 1..k after stage k
    mode: ScoringMode = "compat"
    # score a task whose official ground truth is not in the data root from test.json (marked approximate)
    allow_approximate: bool = False
    batch_size: int = Field(16, gt=0)
    max_new_tokens: int = Field(1024, gt=0)  # the release's cap; shorter cuts long answers (PARITY.md)
    # ScienceQA's letter line: "always" appended (the release), "once" (de-duplicated if the text has it)
    scienceqa_instruction: Literal["always", "once"] = "always"
    # cap per task (smoke runs); None: the whole test set. The bound is run_inference's `limit`: a config
    # that sets 0 fails when it is loaded, not after the first stage trained
    max_samples: int | None = Field(None, ge=1)
    format_checks: bool = True  # format-error matrix beside the accuracy matrix (format_errors.json)
    probe: bool = True  # knowledge-probe matrix (knowledge.json) for tasks with candidate answers
    probe_reduction: Literal["sum", "mean"] = "sum"  # candidate score: summed or mean token log-prob
    probe_max_samples: int | None = Field(None, ge=1)  # cap probe questions per task (None: as evaluated)


class RunConfig(_Strict):
    """A whole continual run: model, tasks in order, method, hyper-parameters, output folder."""

    output_dir: str = "runs/coin-mini"
    data_root: str = "coin-mini"  # "coin-mini": the bundled data/coin-mini
    train_file: str = layout.TRAIN_PATTERN
    tasks: list[TaskConfig] = Field(min_length=1)
    # A registered continual method (sefe_train/methods/, docs/METHODS.md). A str, not a Literal: methods are
    # plugins; `sefe_train.methods.resolve` checks the name against the registry (this module cannot: the
    # methods import it).
    method: str = "reglora"
    # Per-method options, validated by the method's options model in `resolve`: method_options.<name>.<key>
    method_options: dict[str, dict[str, Any]] = Field(default_factory=dict)
    model: ModelConfig = ModelConfig()
    lora: LoraOptions = LoraOptions()  # the fresh LoRA of the LoRA-based methods
    reglora: RegLoRAConfig = RegLoRAConfig()  # = method_options.reglora (historical spelling, kept)
    train: TrainOptions = TrainOptions()
    eval: EvalOptions = EvalOptions()

    @field_validator("tasks", mode="before")
    @classmethod
    def _names_to_tasks(cls, value: Any) -> Any:
        """Allow `tasks: [ScienceQA, TextVQA]` as shorthand for `[{name: ScienceQA}, ...]`."""
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, list):
            return [{"name": v} if isinstance(v, str) else v for v in value]
        return value

    @model_validator(mode="before")
    @classmethod
    def _reglora_section(cls, data: Any) -> Any:
        """`method_options.reglora` and the `reglora:` section are one thing: keep it in one place."""
        if isinstance(data, dict) and isinstance(data.get("method_options"), dict):
            opts = dict(data["method_options"])
            extra = opts.pop("reglora", None)
            if extra is not None:
                if not isinstance(extra, dict):
                    raise ValueError("method_options.reglora must be a mapping of RegLoRA options")
                data = {**data, "method_options": opts, "reglora": {**(data.get("reglora") or {}), **extra}}
        return data

    @model_validator(mode="after")
    def _unique_tasks(self) -> RunConfig:
        names = [t.name for t in self.tasks]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"tasks must be unique, repeated: {dup}")
        return self

    # ---- resolved paths --------------------------------------------------------------------------

    def resolved_data_root(self) -> Path:
        if self.data_root == "coin-mini":
            return coin_mini_root()
        return Path(self.data_root).expanduser()

    def _under_root(self, rel: str) -> Path:
        p = Path(rel).expanduser()
        return p if p.is_absolute() else self.resolved_data_root() / p

    def train_path(self, task: TaskConfig) -> Path:
        return self._under_root(task.train or self.train_file.format(task=task.name))

    def test_path(self, task: TaskConfig) -> Path:
        """CoIN layout, fixed: evaluation reads `<data_root>/annotations/<Task>/test.json`."""
        return layout.evaluation_file(self.resolved_data_root(), task.name)

    def gt_path(self, task: TaskConfig) -> Path | None:
        return self._under_root(task.gt) if task.gt else None


# ---- loading and overrides -----------------------------------------------------------------------


def default_config_dict() -> dict[str, Any]:
    """The embedded default: tiny LLaVA on the bundled coin-mini, first three tasks, RegLoRA, fast."""
    return {
        "output_dir": "runs/coin-mini",
        "data_root": "coin-mini",
        "train_file": layout.TRAIN_PATTERN,
        "tasks": list(COIN_TASK_NAMES[:3]),
        "method": "reglora",
        "model": {"path": DEFAULT_TINY, "dtype": "fp32"},
        "lora": {"r": 8, "alpha": 16},
        "reglora": {"lam": 2500.0},
        "train": {
            "lr": 3e-3,
            "projector_lr": 1e-3,
            "epochs": 3,
            "global_batch_size": 8,
            "per_device_batch_size": 4,
            "max_length": 256,
            "gradient_checkpointing": False,
            "save_steps": 20,
            "logging_steps": 5,
        },
        "eval": {"batch_size": 8, "max_new_tokens": 24},
    }


def parse_set(item: str) -> tuple[list[str], Any]:
    """`train.lr=1e-4` -> (["train", "lr"], 1e-4). Values are parsed as YAML so numbers/bools/lists work."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set expects key.sub=value, got {item!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {item!r}: value is not valid YAML: {exc}") from exc
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `--set` overrides to a raw config dict (before validation, so errors name the key)."""
    for item in overrides:
        path, value = parse_set(item)
        node: Any = data
        for i, part in enumerate(path[:-1]):
            if part == "tasks" and i == 0:
                raise ConfigError(f"--set {item!r}: use --tasks or the YAML file to change the task list")
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[path[-1]] = value
    return data


def _format_validation(exc: ValidationError, source: str) -> str:
    lines = [f"invalid run config ({source}):"]
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "<root>"
        lines.append(f"  {loc}: {err['msg']}")
    return "\n".join(lines)


def load_config(path: Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Load YAML (or the embedded default when `path` is None), apply `--set` overrides, validate."""
    if path is None:
        data, source = default_config_dict(), "embedded default"
    else:
        source = str(path)
        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except FileNotFoundError as exc:
            raise ConfigError(f"run config not found: {path}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of keys")
    data = apply_overrides(data, overrides or [])
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation(exc, source)) from None


def select_tasks(cfg: RunConfig, names: list[str]) -> RunConfig:
    """`--tasks A,B`: keep configured entries of those names (in the given order), add the rest by pattern."""
    known = {t.name: t for t in cfg.tasks}
    tasks = [known.get(n, TaskConfig(name=n)) for n in names]
    return cfg.model_copy(
        update={"tasks": RunConfig.model_validate({**cfg.model_dump(), "tasks": tasks}).tasks}
    )


def dump_config(cfg: RunConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def method_option_overrides(method: str, items: list[str]) -> list[str]:
    """`-o KEY=VALUE` of `sefe train` as `method_options.<method>.KEY=VALUE` (for reglora: `reglora.KEY`)."""
    out = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--option expects KEY=VALUE, got {item!r}")
        out.append(f"method_options.{method}.{key.strip()}={value}")
    return out


def cli_overrides(
    *,
    method: str | None = None,
    out: Path | str | None = None,
    data_root: Path | str | None = None,
    max_steps: int | None = None,
    no_eval: bool = False,
) -> list[str]:
    """The common `sefe train` flags as `--set` items (so both paths share one validation)."""
    pairs: list[tuple[str, Any]] = [
        ("method", method),
        ("output_dir", out),
        ("data_root", data_root),
        ("train.max_steps", max_steps),
        ("eval.enabled", False if no_eval else None),
    ]
    return [
        f"{k}={yaml.safe_dump(str(v) if isinstance(v, Path) else v).strip().removesuffix('...').strip()}"
        for k, v in pairs
        if v is not None
    ]
