"""Backend name -> instance. Modules are imported only when chosen, so optional dependencies stay optional."""

from __future__ import annotations

import importlib
from pathlib import Path

from sefe.asd_gen.backends.base import Backend
from sefe.asd_gen.needs import GenerationOptions
from sefe.errors import UnavailableError

# name -> (module, class, pip extra for the install hint)
BACKENDS: dict[str, tuple[str, str, str | None]] = {
    "openai": ("sefe.asd_gen.backends.openai_backend", "OpenAIBackend", "openai"),
    "batch": ("sefe.asd_gen.backends.batch_backend", "BatchBackend", None),
    "local": ("sefe.asd_gen.backends.local_backend", "LocalBackend", None),
    "vllm": ("sefe.asd_gen.backends.vllm_backend", "VllmBackend", "vllm"),
    "scene": ("sefe.asd_gen.backends.scene_backend", "SceneBackend", None),  # generated data roots only
}


class BackendUnavailable(UnavailableError):
    """The backend's module or its optional dependency is missing (message carries the install hint)."""


def make_backend(options: GenerationOptions, out_dir: str | Path | None = None) -> Backend:
    """Build the backend named by `options.backend`; `out_dir` is where the batch backend keeps its files."""
    try:
        module_name, cls_name, extra = BACKENDS[options.backend]
    except KeyError:
        raise BackendUnavailable(
            f"unknown backend {options.backend!r}; choose one of {sorted(BACKENDS)}"
        ) from None
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        hint = f": pip install 'sefe[{extra}]'" if extra else ""
        raise BackendUnavailable(f"backend {options.backend!r} is not available ({e}){hint}") from e
    cls = getattr(module, cls_name)
    if options.backend == "batch":
        return cls(options, out_dir=out_dir)
    return cls(options)
