"""Fixtures for the local backend tests.

The embedded backend is loaded once per session (the dequantised model is cached on disk under the user's
cache folder, as in real use: the first run ever converts the GGUF, ~20 s; later runs load in a few seconds).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from sefe.asd_gen.needs import GenerationOptions


@pytest.fixture(scope="session")
def embedded_backend() -> Iterator[Any]:
    from sefe.asd_gen.backends.local_backend import LocalBackend

    # one torch thread: the CI box has 2 shared cores, where torch's thread pool stalls batched matmuls
    backend = LocalBackend(GenerationOptions(backend="local"), batch_size=4, threads=1)
    yield backend
    backend.close()
