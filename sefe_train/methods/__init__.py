"""Continual methods as plugins: a registry of `ContinualMethod` classes, one module per method.

Every module of this package (other than `base`) is imported on first use and registers its class with
`@register`; installed packages can add methods through the entry-point group `sefe.methods` (each entry
point names a module that registers, or a `ContinualMethod` subclass). docs/METHODS.md: how to add one.

`resolve(cfg)` is the one place a run's method name and options are checked: the runner, `sefe train` and
Micro-CoIN call it once and hand the method object on (the run config cannot check them: the methods import
it).
"""

from __future__ import annotations

import importlib
import pkgutil
from importlib.metadata import entry_points
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from sefe.sefe_train.config import ConfigError, RunConfig
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
    "resolve",
]

ENTRY_POINT_GROUP = "sefe.methods"
M = TypeVar("M", bound=type[ContinualMethod])

_REGISTRY: dict[str, type[ContinualMethod]] = {}
_discovered = False


class UnknownMethodError(ConfigError):
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


def _checked_options(cls: type[BaseModel], section: dict[str, Any], key: str) -> BaseModel:
    try:
        return cls.model_validate(section)
    except ValidationError as exc:
        raise ConfigError(
            "; ".join(f"{key}.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        ) from None


def resolve(cfg: RunConfig) -> ContinualMethod:
    """The run's method, built once from `cfg`: its name checked against the registry, and every
    `method_options.<name>` section against its method's options model (a typo in an unused method's
    section fails too). A bad name or option is a one-line `ConfigError` naming the key."""
    for name, section in cfg.method_options.items():
        try:
            cls = get_method(name)
        except UnknownMethodError as exc:
            raise UnknownMethodError(f"method_options.{name}: {exc}") from None
        _checked_options(cls.options_cls, section, f"method_options.{name}")
    try:
        method_cls = get_method(cfg.method)
    except UnknownMethodError as exc:
        raise UnknownMethodError(f"method: {exc}") from None
    return method_cls.from_config(cfg)
