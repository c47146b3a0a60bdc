"""ASD core test setup: make the record factory importable (pytest runs with --import-mode=importlib)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.asd_factory import write_root


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    return write_root(tmp_path / "data", {"ScienceQA": 24, "ImageNet": 24, "GQA": 20, "Grounding": 20})
