"""vLLM engine arguments from the command line (`--vllm-arg KEY=VALUE`) and from `$SEFE_VLLM_ARGS`.

Why one module: `sefe asd build --backend vllm` and `sefe eval run --engine vllm` both start an offline
`vllm.LLM`, and a real model needs the same settings in both (`tensor_parallel_size`, `max_model_len`,
`gpu_memory_utilization`). Precedence, lowest first: the caller's defaults, `$SEFE_VLLM_ARGS` (a JSON object:
handy in cluster job scripts), then `--vllm-arg`.
"""

from __future__ import annotations

import os
from typing import Any

import orjson

from sefe.errors import InputError

ENV_VAR = "SEFE_VLLM_ARGS"


def parse_key_values(items: list[str] | None, option: str = "--vllm-arg") -> dict[str, Any]:
    """`["tensor_parallel_size=2", "enforce_eager=true"]` -> {"tensor_parallel_size": 2, "enforce_eager":
    True} (values read as YAML scalars, so numbers and booleans arrive typed)."""
    import yaml

    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"{option}: expected KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise InputError(f"{option} {key.strip()}: cannot read the value {value!r}: {exc}") from None
    return out


def env_engine_args() -> dict[str, Any]:
    """The engine arguments in `$SEFE_VLLM_ARGS`, or {} when it is unset."""
    env = os.environ.get(ENV_VAR)
    if not env:
        return {}
    try:
        extra = orjson.loads(env)
    except orjson.JSONDecodeError as exc:
        raise InputError(f"{ENV_VAR} is not valid JSON: {exc}") from None
    if not isinstance(extra, dict):
        raise InputError(f"{ENV_VAR} must be a JSON object of vllm.LLM keyword arguments")
    return extra


def engine_args(defaults: dict[str, Any], given: dict[str, Any] | None = None) -> dict[str, Any]:
    """`defaults` < `$SEFE_VLLM_ARGS` < `given`."""
    return {**defaults, **env_engine_args(), **(given or {})}
