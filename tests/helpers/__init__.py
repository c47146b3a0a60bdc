"""Test helpers, all in this package and imported one way: `from tests.helpers.<module> import ...`.

pytest puts the repository root on `sys.path` (`pythonpath = ["."]` in pyproject.toml), so this works under
`pytest`, `python -m pytest` and `--import-mode=importlib` alike. conftest.py files hold fixtures only; no
test imports a conftest, a sibling module or edits `sys.path`. A child Python started by a test gets the same
view through `child_env()`.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def child_env(**extra: str) -> dict[str, str]:
    """This environment for a child Python, with the repository root on PYTHONPATH (for `tests.helpers`)."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, **extra}
