"""Fixtures for RegLoRA tests: a real peft-wrapped tiny Llama built from a config (no downloads)."""

from __future__ import annotations

import pytest

from tests.helpers.reglora import make_peft_llama


@pytest.fixture
def peft_llama():
    return make_peft_llama()
