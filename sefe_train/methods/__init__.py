"""Continual methods as plugins: a registry of `ContinualMethod` classes, one module per method.

Every module of this package (other than `base`) is imported on first use and registers its class with
`@register`; installed packages can add methods through the entry-point group `sefe.methods` (each entry
point names a module that registers, or a `ContinualMethod` subclass). docs/METHODS.md: how to add one.
"""

from __future__ import annotations

import importlib
import pkgutil
from importlib.metadata import entry_points
from typing import TypeVar

from sefe.errors import InputError
from sefe.sefe_train.methods.base import (
    ContinualMethod,
    LoRAMethod,
    MethodOptions,
    Record,
    StageContext,
)

__all__ = [
    "ContinualMethod",
    "LoRAMethod",
    "MethodOptions",
    "Record",
    "StageContext",
    "get_method",
    "list_methods",
    "method_names",
    "register",
]

ENTRY_POINT_GROUP = "sefe.methods"
M = TypeVar("M", bound=type[ContinualMethod])

_REGISTRY: dict[str, type[ContinualMethod]] = {}
_discovered = False


class UnknownMethodError(InputError):
    """`--method NAME` names no installed method; the message lists the installed ones."""


def register(cls: M) -> M:
    """Class decorator: make `cls` available as `--method cls.name`."""
    if not cls.name or not cls.name.isidentifier():
        raise ValueError(f"{cls.__qualname__}: `name` must be a Python identifier, got {cls.name!r}")
    old = _REGISTRY.get(cls.name)
    if old is not None and old.__qualname__ != cls.__qualname__:
        raise ValueError(f"method {cls.name!r} is registered twice: {old.__module__} and {cls.__module__}")
    _REGISTRY[cls.name] = cls
    return cls


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    _discovered = True
    for info in pkgutil.iter_modules(__path__):
        if info.name != "base" and not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        obj = ep.load()
        if isinstance(obj, type) and issubclass(obj, ContinualMethod):
            register(obj)


def method_names() -> list[str]:
    """Installed method names, sorted."""
    _discover()
    return sorted(_REGISTRY)


def list_methods() -> list[type[ContinualMethod]]:
    """Installed method classes, sorted by name."""
    _discover()
    return [_REGISTRY[n] for n in sorted(_REGISTRY)]


def get_method(name: str) -> type[ContinualMethod]:
    """The method class registered as `name`."""
    _discover()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownMethodError(
            f"unknown method {name!r}; installed: {', '.join(sorted(_REGISTRY))}"
        ) from None
