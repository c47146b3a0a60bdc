"""The `vllm` backend's argument handling, in the main environment (the real engine runs in tests/vllm)."""

from __future__ import annotations

import importlib.util

import pytest

from sefe.asd_gen.backends.vllm_backend import VllmBackend, _strip_images, engine_args
from sefe.asd_gen.needs import GenerationOptions


def test_structured_output_defaults_and_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SEFE_VLLM_ARGS", raising=False)
    args = engine_args(GenerationOptions(backend="vllm", model="m"))
    assert args == {"structured_outputs_config": {"backend": "guidance", "disable_any_whitespace": True}}
    monkeypatch.setenv("SEFE_VLLM_ARGS", '{"gpu_memory_utilization": 0.3, "tensor_parallel_size": 2}')
    opts = GenerationOptions(backend="vllm", model="m", vllm_args={"tensor_parallel_size": 4})
    args = engine_args(opts)
    assert args["gpu_memory_utilization"] == 0.3  # from the environment
    assert args["tensor_parallel_size"] == 4  # options win over the environment
    assert args["structured_outputs_config"]["backend"] == "guidance"


def test_bad_environment_args_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEFE_VLLM_ARGS", "{not json")
    with pytest.raises(ValueError, match="SEFE_VLLM_ARGS is not valid JSON"):
        engine_args(GenerationOptions(backend="vllm", model="m"))
    monkeypatch.setenv("SEFE_VLLM_ARGS", "[1, 2]")
    with pytest.raises(ValueError, match="SEFE_VLLM_ARGS must be a JSON object"):
        engine_args(GenerationOptions(backend="vllm", model="m"))


def test_offline_data_parallel_points_to_the_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SEFE_VLLM_ARGS", raising=False)
    opts = GenerationOptions(backend="vllm", model="m", vllm_args={"data_parallel_size": 2})
    with pytest.raises(ValueError, match="--data-parallel-size 2"):
        VllmBackend(opts)


def test_model_is_required() -> None:
    with pytest.raises(ValueError, match="needs --model"):
        VllmBackend(GenerationOptions(backend="vllm"))


def test_images_are_stripped_for_text_only_models() -> None:
    msgs = [
        {"role": "system", "content": "sys"},
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}},
                {"type": "text", "text": "What colour?"},
            ],
        },
    ]
    assert _strip_images(msgs) == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "What colour?"},
    ]


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed here")
def test_missing_vllm_gives_the_install_hint() -> None:
    backend = VllmBackend(GenerationOptions(backend="vllm", model="m"))
    with pytest.raises(ImportError, match=r"pip install 'sefe\[vllm\]'"):
        backend._engine()
