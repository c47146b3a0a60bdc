"""Backend names map to their modules lazily; unknown or missing backends fail with a clear hint."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from sefe.asd_gen.backends import factory
from sefe.asd_gen.backends.batch_backend import BatchBackend
from sefe.asd_gen.backends.openai_backend import OpenAIBackend
from sefe.asd_gen.needs import GenerationOptions


def test_names_map_to_backend_classes(tmp_path: Path) -> None:
    assert isinstance(
        factory.make_backend(GenerationOptions(backend="openai", base_url="http://x/v1")), OpenAIBackend
    )
    b = factory.make_backend(GenerationOptions(backend="batch", model="m"), out_dir=tmp_path)
    assert isinstance(b, BatchBackend) and b.dir == tmp_path / "batch"
    for name, cls in (("local", "LocalBackend"), ("vllm", "VllmBackend")):
        module, attr, _ = factory.BACKENDS[name]
        assert attr == cls and hasattr(importlib.import_module(module), cls)


def test_unknown_and_missing_backends_explain_themselves(monkeypatch: pytest.MonkeyPatch) -> None:
    opts = GenerationOptions.model_construct(backend="nope")
    with pytest.raises(factory.BackendUnavailable, match="unknown backend 'nope'"):
        factory.make_backend(opts)
    monkeypatch.setitem(factory.BACKENDS, "vllm", ("sefe.asd_gen.backends.not_there", "X", "vllm"))
    with pytest.raises(factory.BackendUnavailable, match=r"pip install 'sefe\[vllm\]'"):
        factory.make_backend(GenerationOptions(backend="vllm", model="m"))


def test_openai_backend_needs_a_key_for_the_public_api(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    backend = OpenAIBackend(GenerationOptions(backend="openai", model="gpt-4o-mini"))
    with pytest.raises(RuntimeError, match="OPENAI_API_KEY"):
        backend.run([_req()], lambda r: None)


def _req():
    from sefe.asd_gen.backends.base import ChatRequest

    return ChatRequest(key="k", messages=[{"role": "user", "content": "hi"}], json_schema={}, schema_name="s")
