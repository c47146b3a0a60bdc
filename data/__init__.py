"""Bundled sample data (`coin-mini/`) and its generator (`python -m sefe.data.make_coin_mini`)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from sefe.coin.layout import annotations_dir
from sefe.errors import MissingFile


def coin_mini_root() -> Path:
    """The bundled synthetic CoIN data root, for CLI defaults; works from a checkout and an installed wheel.

    Raises FileNotFoundError (with the regenerate command) when the folder is missing, so a broken install is
    reported where it happens rather than as a confusing missing-annotation error later.
    """
    root = Path(str(resources.files("sefe.data") / "coin-mini"))
    if not annotations_dir(root).is_dir():
        raise MissingFile(
            f"bundled sample data not found at {root}; "
            "regenerate it with `python -m sefe.data.make_coin_mini`"
        )
    return root
