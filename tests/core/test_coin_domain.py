"""The CoIN domain exists once (`sefe.coin`): import boundaries and no copies of its facts, by AST scan."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from sefe.coin import instructions
from sefe.coin.layout import ANNOTATIONS, EVAL_GT
from sefe.coin.tasks import COIN_TASK_NAMES

PACKAGE = Path(__file__).resolve().parents[2]
# the shipped package folders (tests/ and bench/ are not part of it)
SOURCE_DIRS = (
    "asd_gen",
    "coin",
    "models",
    "evaluation",
    "sefe_train",
    "micro",
    "commands",
    "data",
    "prompts",
)
TOP_MODULES = ("cli.py", "atomic.py", "__init__.py")


def _modules() -> Iterator[Path]:
    for name in SOURCE_DIRS:
        yield from sorted((PACKAGE / name).rglob("*.py"))
    for name in TOP_MODULES:
        if (PACKAGE / name).is_file():
            yield PACKAGE / name


def _imports(path: Path) -> Iterator[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            yield node.lineno, node.module
            for alias in node.names:
                yield node.lineno, f"{node.module}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name


def _strings(path: Path) -> Iterator[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    docstrings = {
        id(n.body[0].value)
        for n in ast.walk(tree)
        if isinstance(n, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and n.body
        and isinstance(n.body[0], ast.Expr)
        and isinstance(n.body[0].value, ast.Constant)
    }
    keys = {id(k) for n in ast.walk(tree) if isinstance(n, ast.Dict) for k in n.keys if k is not None}
    skip = docstrings | keys  # a dict key is a field name of some format (GQA's "annotations"), not a path
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            yield node.lineno, node.value


def _rel(path: Path) -> str:
    return path.relative_to(PACKAGE).as_posix()


def test_the_scan_sees_the_package() -> None:
    names = {_rel(p) for p in _modules()}
    assert {
        "coin/records.py",
        "evaluation/scorers.py",
        "asd_gen/build.py",
        "cli.py",
        "commands/asd.py",
    } <= names


def test_sefe_train_uses_asd_gen_only_for_its_backends() -> None:
    """Training and evaluation get records, tasks and instructions from `sefe.coin`, never from ASD."""
    bad = [
        f"{_rel(p)}:{line}: {mod}"
        for p in _modules()
        if _rel(p).startswith("sefe_train/")
        for line, mod in _imports(p)
        if mod.startswith("sefe.asd_gen") and not mod.startswith("sefe.asd_gen.backends")
    ]
    assert bad == []


def test_coin_depends_on_nothing_above_it() -> None:
    bad = [
        f"{_rel(p)}:{line}: {mod}"
        for p in _modules()
        if _rel(p).startswith("coin/")
        for line, mod in _imports(p)
        if mod.startswith(("sefe.asd_gen", "sefe.sefe_train", "sefe.cli", "sefe.commands", "sefe.data"))
    ]
    assert bad == []


def test_no_module_outside_coin_lists_the_coin_tasks() -> None:
    """The training order is written once: no tuple/list literal naming three or more CoIN tasks elsewhere."""
    names = set(COIN_TASK_NAMES)
    bad = []
    for p in _modules():
        if _rel(p).startswith("coin/"):
            continue
        tree = ast.parse(p.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Tuple | ast.List | ast.Set):
                found = {e.value for e in node.elts if isinstance(e, ast.Constant) and e.value in names}
                if len(found) >= 3:
                    bad.append(f"{_rel(p)}:{node.lineno}: {sorted(found)}")
    assert bad == []


@pytest.mark.parametrize(
    "sentence",
    sorted(
        {v for k, v in vars(instructions).items() if k.isupper() and isinstance(v, str) and len(v) > 20}
        | set(instructions.INSTRUCTIONS.values())
        | set(instructions.GROUNDING_INSTRUCTIONS.values())
    ),
)
def test_instruction_sentences_live_only_in_coin_instructions(sentence: str) -> None:
    bad = [
        f"{_rel(p)}:{line}"
        for p in _modules()
        if _rel(p) != "coin/instructions.py"
        for line, value in _strings(p)
        if value == sentence
    ]
    assert bad == []


@pytest.mark.parametrize("name", [ANNOTATIONS, EVAL_GT])
def test_data_root_folder_names_live_only_in_coin_layout(name: str) -> None:
    """Paths inside a data root are built by `sefe.coin.layout` (string literals, docstrings excepted)."""
    bad = [
        f"{_rel(p)}:{line}: {value!r}"
        for p in _modules()
        if _rel(p) != "coin/layout.py"
        for line, value in _strings(p)
        if value == name or value.startswith((f"{name}/", f"/{name}/"))
    ]
    assert bad == []
