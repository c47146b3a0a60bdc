"""Test helpers live in one place (`tests/helpers/`) and are imported one way, checked by AST scan."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def _files() -> list[Path]:
    return sorted(p for p in TESTS.rglob("*.py") if "__pycache__" not in p.parts)


def _rel(p: Path) -> str:
    return p.relative_to(TESTS).as_posix()


def test_helper_modules_live_in_tests_helpers() -> None:
    stray = [
        _rel(p)
        for p in _files()
        if not (p.name.startswith("test_") or p.name in ("conftest.py", "__init__.py"))
        and p.parent.name != "helpers"
    ]
    assert stray == []


def test_one_import_style() -> None:
    """No sys.path edits, no relative imports, no imports of a conftest or of a sibling file."""
    local = {p.stem for p in _files()} - {"__init__"}
    bad = []
    for p in _files():
        tree = ast.parse(p.read_text(encoding="utf-8"), filename=str(p))
        for node in ast.walk(tree):
            where = f"{_rel(p)}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.ImportFrom):
                mod = node.module or ""
                if node.level:
                    bad.append(f"{where}: relative import")
                elif "conftest" in mod.split("."):
                    bad.append(f"{where}: imports a conftest ({mod})")
                elif mod.split(".")[0] in local:
                    bad.append(f"{where}: imports sibling module {mod} (use tests.helpers)")
                elif mod.startswith("tests.") and not mod.startswith("tests.helpers"):
                    bad.append(f"{where}: imports {mod} (only tests.helpers is importable)")
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] in local or "conftest" in alias.name.split("."):
                        bad.append(f"{where}: import {alias.name}")
            elif (
                isinstance(node, ast.Attribute)
                and node.attr == "path"
                and isinstance(node.value, ast.Name)
                and node.value.id == "sys"
            ):
                bad.append(f"{where}: touches sys.path")
    assert bad == []
