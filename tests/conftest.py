"""Every test starts from the same process-wide state: the registries that remain are put back after each.

What remains is the task registry (`sefe.coin.tasks`: YAML tasks loaded with `load_task_file`), the parsed
`tasks.json` cache of `sefe.coin.root_tasks`, and the continual-method registry when a test has imported it
(a test that registers a method must not change what the next test sees).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from sefe.coin import root_tasks

# (module, attribute) of the dict registries restored after each test when the module is loaded (the task
# registry always is: `root_tasks` imports it)
_REGISTRIES = (("sefe.coin.tasks", "_REGISTRY"), ("sefe.sefe_train.methods", "_REGISTRY"))


@pytest.fixture(autouse=True)
def _reset_registries() -> Iterator[None]:
    methods = sys.modules.get("sefe.sefe_train.methods")
    if methods is not None:  # the built-in methods register lazily: snapshot them, never an empty registry
        methods._discover()
    saved = {
        (mod, attr): dict(getattr(sys.modules[mod], attr))
        for mod, attr in _REGISTRIES
        if mod in sys.modules and isinstance(getattr(sys.modules[mod], attr, None), dict)
    }
    yield
    for (mod, attr), content in saved.items():
        registry = getattr(sys.modules[mod], attr)
        registry.clear()
        registry.update(content)
    root_tasks._read.cache_clear()
