"""Helpers the command modules share: defaults read from models and signatures, comma-list options."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from sefe.errors import InputError


def arg_default(func: Callable[..., Any], name: str) -> Any:
    """The default of one keyword argument of a library function the command calls."""
    return inspect.signature(func).parameters[name].default


def default(model: type[BaseModel], name: str) -> Any:
    """The default of one field of a pydantic model (the one source of CLI defaults)."""
    return model.model_fields[name].get_default(call_default_factory=True)


def split_list(values: list[str] | None) -> list[str]:
    """`--x 10 --x 20` and `--x 10,20` both work (same for --tasks)."""
    return [v.strip() for raw in values or [] for v in raw.split(",") if v.strip()]


def parse_floats(values: list[str], option: str) -> list[float]:
    """Numbers of a comma-list option; a word that is no number is a user error naming the option."""
    out = []
    for v in values:
        try:
            out.append(float(v))
        except ValueError:
            raise InputError(f"{option}: {v!r} is not a number") from None
    return out
