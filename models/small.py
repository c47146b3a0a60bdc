"""Small models built from configs, per family: what Micro-CoIN's warm start needs beside `ModelFamily`.

Apart from `family.py` because a builder uses its family's data path (`FamilyDataset` imports `family.py`),
and the registry here names the builder modules: in `family.py` that would close an import circle. Adding one
is a module exposing `SMALL` and a line in `_SMALL_MODULES` (docs/MODELS.md).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from sefe.errors import InputError
from sefe.models.family_types import SmallSizes


@runtime_checkable
class SmallBuilder(Protocol):
    """What Micro-CoIN's warm start needs from a family beside `ModelFamily`: a small model of given sizes,
    its image features per grid cell (stage 1 trains the tower on them) and its training corpus (stage 2)."""

    name: str  # the family's registry name

    def config(self, sizes: SmallSizes) -> Any:
        """The family's config for these sizes (a pydantic model with `digest()`, the cache key)."""
        ...

    def build(self, config: Any) -> tuple[Any, Any]:
        """(model, processor) from that config, seeded."""
        ...

    def vision_inputs(self, processor: Any, images: list[Any]) -> dict[str, Any]:
        """The pictures' model inputs, each tensor's first dimension one per picture (indexable)."""
        ...

    def cell_features(self, model: Any, inputs: dict[str, Any]) -> Any:
        """(pictures, image tokens, `cell_width`) features of a slice of `vision_inputs`."""
        ...

    def cell_width(self, model: Any) -> int: ...

    def tower(self, model: Any) -> Any:
        """The module whose parameters stage 1 trains."""
        ...

    def frozen(self, model: Any) -> list[Any]:
        """The modules stage 2 freezes (the tower without the family's projector)."""
        ...

    def corpus(self, records: Path, data_root: Path, processor: Any, max_length: int) -> tuple[Any, Any]:
        """(dataset, collator) of a CoIN train file, as this family trains on it."""
        ...


#: family name -> the module that defines `SMALL`, for the families Micro-CoIN can warm-start.
_SMALL_MODULES = {"llava": "sefe.models.small_llava", "qwen2_5_vl": "sefe.models.small_qwen"}


def small_family_names() -> list[str]:
    return sorted(_SMALL_MODULES)


def small_builder(name: str, where: str | None = None) -> SmallBuilder:
    """The small-model builder of family `name`; a family without one is a user error naming those with."""
    module = _SMALL_MODULES.get(name)
    if module is None:
        having = ", ".join(small_family_names())
        msg = f"no small warm-start model for family {name!r} (families with one: {having})"
        raise InputError(f"{where}: {msg}" if where else msg)
    builder = importlib.import_module(module).SMALL
    if not isinstance(builder, SmallBuilder):
        raise TypeError(f"{module}.SMALL does not implement SmallBuilder")
    return builder
