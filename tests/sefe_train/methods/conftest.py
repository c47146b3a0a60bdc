"""Fixtures for the continual-method tests: the tiny LLaVA on data/coin-mini through the real runner.

The tiny-model cache and the fast settings are the trainer tests' (`tests.helpers.train`).
"""

from __future__ import annotations

from tests.helpers.train import private_cache

__all__ = ["private_cache"]  # the autouse tiny-model cache, registered for this folder
