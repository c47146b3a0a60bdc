"""Fixtures for the coin-mini tests: the committed data root, one fresh build, and JSON/image readers."""

from __future__ import annotations

from pathlib import Path

import pytest

from sefe.data import coin_mini_root
from sefe.data.make_coin_mini import build

ROOT = coin_mini_root()


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def built() -> dict[str, bytes]:
    """A fresh in-memory build with the default seed (what the committed folder must equal)."""
    return build()
