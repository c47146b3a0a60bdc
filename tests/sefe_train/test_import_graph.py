"""`sefe_train/` imports one way: the runner calls the methods, the methods never call back (AST scan).

Every import counts, also one inside a function or under `TYPE_CHECKING`: a circle through a lazy import is
still a contract the reader cannot see from one side.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2]
ROOT = PACKAGE / "sefe_train"


def _module_of(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return "sefe." + ".".join(parts)


def _exists(module: str) -> bool:
    rel = Path(*module.split(".")[1:])
    return (PACKAGE / rel).with_suffix(".py").is_file() or (PACKAGE / rel / "__init__.py").is_file()


def _targets(path: Path) -> set[str]:
    """The `sefe.sefe_train` modules `path` imports (`from pkg import sub` names the submodule)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                names.append(sub if _exists(sub) else node.module)
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        out |= {n for n in names if n.startswith("sefe.sefe_train") and n != "sefe.sefe_train"}
    return out


def _graph() -> dict[str, set[str]]:
    return {_module_of(p): _targets(p) for p in sorted(ROOT.rglob("*.py"))}


def test_the_scan_sees_the_modules() -> None:
    graph = _graph()
    assert {"sefe.sefe_train.runner", "sefe.sefe_train.methods", "sefe.sefe_train.methods.lota"} <= set(graph)
    assert "sefe.sefe_train.methods.base" in graph["sefe.sefe_train.methods"]
    assert "sefe.sefe_train.stage_model" in graph["sefe.sefe_train.methods.base"]  # a lazy import counts


def test_no_import_circle_inside_sefe_train() -> None:
    graph = _graph()
    circles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                circles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])
    assert circles == []


def test_methods_trainer_and_config_do_not_import_their_callers() -> None:
    graph = _graph()
    bad = [
        f"{mod} -> {dep}"
        for mod, deps in graph.items()
        for dep in deps
        if (mod.startswith("sefe.sefe_train.methods") and dep == "sefe.sefe_train.runner")
        or (
            mod in ("sefe.sefe_train.trainer", "sefe.sefe_train.config")
            and dep.startswith("sefe.sefe_train.methods")
        )
    ]
    assert bad == []
