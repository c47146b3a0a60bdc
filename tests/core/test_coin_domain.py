"""The CoIN domain exists once (`sefe.coin`) and imports run one way: the module graph and the literals of
every package module, read from their AST (imports inside functions count; nothing is imported to find them).

Layers, bottom up: ground floor (`atomic`, `jsonl_store`, `errors`, `redact`, `progress`) <- `coin/` <-
`models/` <- `evaluation/` (may use `asd_gen.backends` for the judge) <- `sefe_train/` <- `micro/`, CLI.
`asd_gen/` uses `coin/` and the ground floor, never `evaluation/`.
"""

from __future__ import annotations

import ast
import itertools
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

from sefe.coin import instructions
from sefe.coin.layout import ANNOTATIONS, EVAL_GT
from sefe.coin.tasks import COIN_TASK_NAMES

PACKAGE = Path(__file__).resolve().parents[2]
NOT_SHIPPED = ("tests", "bench", "scripts")  # folders of the repository that are not the package

# (importer, imported): module-name prefixes, matched on whole dotted components
FORBIDDEN = (
    ("sefe.models", "sefe.sefe_train"),
    ("sefe.models", "sefe.evaluation"),
    ("sefe.evaluation", "sefe.sefe_train"),
    ("sefe.sefe_train.methods", "sefe.sefe_train.runner"),  # a method never calls its host
    ("sefe.sefe_train.trainer", "sefe.sefe_train.methods"),  # the trainer runs loss terms, knows no method
    ("sefe.sefe_train.config", "sefe.sefe_train.methods"),  # resolve(cfg) checks a config, not vice versa
    ("sefe.asd_gen", "sefe.evaluation"),
)
GROUND_FLOOR = tuple(f"sefe.{m}" for m in ("atomic", "jsonl_store", "errors", "redact", "progress"))
# Floors, bottom up: a layer imports only from floors below its own (`asd_gen` and `models` share a floor
# and do not import each other). Top-level modules not named here (`sefe.lock`, ...) are not placed.
FLOORS: tuple[tuple[str, ...], ...] = (
    GROUND_FLOOR,
    ("sefe.coin",),
    ("sefe.data", "sefe.prompts"),
    ("sefe.asd_gen", "sefe.models"),
    ("sefe.evaluation",),
    ("sefe.sefe_train",),
    ("sefe.micro",),
    ("sefe.commands",),
    ("sefe.cli",),
)


def _modules() -> Iterator[Path]:
    """Every module of the package: the top-level ones and each package folder's, recursively."""
    yield from sorted(PACKAGE.glob("*.py"))
    for folder in sorted(p for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()):
        if folder.name not in NOT_SHIPPED:
            yield from sorted(folder.rglob("*.py"))


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(("sefe", *(parts[:-1] if parts[-1] == "__init__" else parts)))


@cache
def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _absolute(path: Path, node: ast.ImportFrom) -> str:
    """The module a `from` import reads from, a relative one made absolute."""
    if not node.level:
        return node.module or ""
    package = _module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    package = package[: len(package) - node.level + 1]
    return ".".join([*package, node.module] if node.module else package)


def _imports(path: Path) -> Iterator[tuple[int, str]]:
    """Every `import` and `from ... import` anywhere in the module, and every name a `from` import takes."""
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.ImportFrom):
            base = _absolute(path, node)
            yield node.lineno, base
            for alias in node.names:
                yield node.lineno, f"{base}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name


@cache
def _graph() -> dict[str, dict[str, tuple[str, int]]]:
    """Module -> {package module it imports: (file, line) of the first such import}.

    `from sefe.coin import layout` imports `sefe.coin.layout`; `from sefe.coin.tasks import get_task` imports
    `sefe.coin.tasks` (a name that is no module resolves to the module it is taken from). A string literal
    that is a package module's name is an edge too: registries load their modules by name
    (`importlib.import_module`, `models/family.py`, `asd_gen/backends/factory.py`), and a circle through one
    of them is a circle all the same.
    """
    paths = {_module_name(p): p for p in _modules()}
    graph: dict[str, dict[str, tuple[str, int]]] = {name: {} for name in paths}
    for name, path in paths.items():
        for line, value in _strings(path, with_keys=True):
            if value in paths and value != name:
                graph[name].setdefault(value, (_rel(path), line))
        for node in ast.walk(_tree(path)):
            if isinstance(node, ast.ImportFrom):
                base = _absolute(path, node)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in paths else base for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            for target in targets:
                if target in paths and target != name:
                    graph[name].setdefault(target, (_rel(path), node.lineno))
    return graph


def _under(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def _cycles(graph: dict[str, dict[str, tuple[str, int]]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def _circle(graph: dict[str, dict[str, tuple[str, int]]], component: list[str]) -> str:
    """One import circle through the component's first module, with the file:line of each arrow."""
    members = set(component)
    start = component[0]
    paths = {start: [start]}
    queue = [start]
    while queue:  # breadth first: the shortest way back to `start`
        node = queue.pop(0)
        for nxt in sorted(graph[node]):
            if nxt == start:
                way = [*paths[node], start]
                return (
                    " -> ".join(
                        f"{a} ({graph[a][b][0]}:{graph[a][b][1]})" for a, b in itertools.pairwise(way)
                    )
                    + f" -> {start}"
                )
            if nxt in members and nxt not in paths:
                paths[nxt] = [*paths[node], nxt]
                queue.append(nxt)
    return ", ".join(component)


def _strings(path: Path, with_keys: bool = False) -> Iterator[tuple[int, str]]:
    """String literals, docstrings excepted; dict keys only `with_keys`."""
    tree = _tree(path)
    docstrings = {
        id(n.body[0].value)
        for n in ast.walk(tree)
        if isinstance(n, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and n.body
        and isinstance(n.body[0], ast.Expr)
        and isinstance(n.body[0].value, ast.Constant)
    }
    keys = {id(k) for n in ast.walk(tree) if isinstance(n, ast.Dict) for k in n.keys if k is not None}
    skip = docstrings | (set() if with_keys else keys)
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
        "errors.py",
        "micro/run.py",
        "coin/root_tasks.py",
    } <= names
    assert not any(n.startswith(NOT_SHIPPED) for n in names)
    graph = _graph()
    assert "sefe.coin.layout" in graph["sefe.evaluation.scorers"]  # `from sefe.coin import layout`
    assert "sefe.evaluation.loading" in graph["sefe.evaluation.format_checks"]  # inside a function


def test_the_graph_sees_modules_loaded_by_name() -> None:
    """`importlib.import_module(_MODULES[name])`: each family module the registry names is an edge of
    `models/family.py`, so a family that imported `family.py` back would show as a circle."""
    from sefe.models import family

    graph = _graph()
    named = {m for m in family._MODULES.values() if m != "sefe.models.family"}
    assert named and named <= set(graph["sefe.models.family"])
    assert "sefe.asd_gen.backends.openai_backend" in graph["sefe.asd_gen.backends.factory"]
    looped = {
        **graph,
        "sefe.models.qwen2_5_vl": {**graph["sefe.models.qwen2_5_vl"], "sefe.models.family": ("q", 1)},
    }
    assert any({"sefe.models.family", "sefe.models.qwen2_5_vl"} <= set(c) for c in _cycles(looped))


@pytest.mark.parametrize(("importer", "imported"), FORBIDDEN, ids=[f"{a}->{b}" for a, b in FORBIDDEN])
def test_imports_run_one_way(importer: str, imported: str) -> None:
    bad = [
        f"{file}:{line}: {source} imports {target}"
        for source, edges in _graph().items()
        if _under(source, importer)
        for target, (file, line) in edges.items()
        if _under(target, imported)
    ]
    assert bad == []


def _layer(module: str) -> tuple[int, str] | None:
    """(floor, layer) of a module, or None for a module no floor names."""
    return next(((i, p) for i, floor in enumerate(FLOORS) for p in floor if _under(module, p)), None)


def test_every_package_folder_stands_on_a_floor() -> None:
    folders = {
        f"sefe.{p.name}"
        for p in PACKAGE.iterdir()
        if (p / "__init__.py").is_file() and p.name not in NOT_SHIPPED
    }
    assert {f for f in folders if _layer(f) is None} == set()  # a new folder is placed in FLOORS
    assert _layer("sefe.sefe_train.methods.lora") == (5, "sefe.sefe_train")
    assert _layer("sefe.lock") is None


def test_no_layer_imports_from_its_own_floor_or_above() -> None:
    """The one-way rule in general: an import between two layers goes down at least one floor."""
    bad = []
    for source, edges in _graph().items():
        for target, (file, line) in edges.items():
            src, dst = _layer(source), _layer(target)
            if src and dst and src[1] != dst[1] and dst[0] >= src[0]:
                bad.append(f"{file}:{line}: {source} imports {target}")
    assert bad == []


def test_evaluation_uses_asd_gen_only_for_its_backends() -> None:
    """The judge reuses ASD's chat backends; nothing else of ASD is evaluation's business."""
    bad = [
        f"{file}:{line}: {source} imports {target}"
        for source, edges in _graph().items()
        if _under(source, "sefe.evaluation")
        for target, (file, line) in edges.items()
        if _under(target, "sefe.asd_gen") and not _under(target, "sefe.asd_gen.backends")
    ]
    assert bad == []


def test_the_ground_floor_and_coin_import_nothing_above_them() -> None:
    """`coin/` builds on the ground floor only; the ground floor on nothing of the package."""
    ground = set(GROUND_FLOOR)
    bad = [
        f"{file}:{line}: {source} imports {target}"
        for source, edges in _graph().items()
        if source in ground or _under(source, "sefe.coin")
        for target, (file, line) in edges.items()
        if target not in ground and not (_under(source, "sefe.coin") and _under(target, "sefe.coin"))
    ]
    assert bad == []


def test_the_cycle_finder_finds_a_circle() -> None:
    graph = {
        "a": {"b": ("a.py", 1)},
        "b": {"c": ("b.py", 2)},
        "c": {"a": ("c.py", 3)},
        "d": {"a": ("d.py", 4)},
    }
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _circle(graph, ["a", "b", "c"]) == "a (a.py:1) -> b (b.py:2) -> c (c.py:3) -> a"


def test_no_import_circles() -> None:
    """No module reaches itself through imports (lazy ones included): a circle means two layers are one."""
    graph = _graph()
    circles = [_circle(graph, c) for c in _cycles(graph)]
    assert not circles, "\n".join(circles)


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


def _elements(node: ast.AST) -> list[ast.expr | None]:
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return list(node.elts)
    if isinstance(node, ast.Dict):
        return [*node.keys, *node.values]
    return []


def test_no_module_outside_coin_lists_the_coin_tasks() -> None:
    """The tasks and their facts are written once: no tuple, list, set or dict literal (keys or values) naming
    three or more CoIN tasks outside `coin/` (a table of the eight tasks' styles is such a copy)."""
    names = set(COIN_TASK_NAMES)
    bad = []
    for p in _modules():
        if _rel(p).startswith("coin/"):
            continue
        for node in ast.walk(_tree(p)):
            elements = _elements(node)
            if elements:
                found = {e.value for e in elements if isinstance(e, ast.Constant) and e.value in names}
                if len(found) >= 3:
                    bad.append(f"{_rel(p)}:{node.lineno}: {sorted(found)}")
    assert bad == []


SENTENCES = sorted(
    {v for k, v in vars(instructions).items() if k.isupper() and isinstance(v, str) and len(v) > 20}
    | set(instructions.INSTRUCTIONS.values())
    | set(instructions.GROUNDING_INSTRUCTIONS.values())
)
PART_MIN_CHARS = 10


def _sentence_part(value: str, sentences: list[str] = SENTENCES) -> str | None:
    """The sentence `value` is a part of (any case), when it is one of 10+ characters and two words or more:
    `"single word"` is, `"unanswerable"` (an answer) and `" question "` (a word) are not."""
    text = value.strip().lower()
    if len(text) < PART_MIN_CHARS or len(text.split()) < 2:
        return None
    return next((s for s in sentences if text in s.lower()), None)


def test_the_part_finder_tells_phrases_of_sentences_from_words() -> None:
    assert _sentence_part("single word") == instructions.SHORT_ANSWER
    assert _sentence_part("With Yes or No") is not None
    assert _sentence_part("unanswerable") is None  # a VizWiz answer, one word
    assert _sentence_part(" question ") is None
    assert _sentence_part("the box") is None  # under ten characters
    assert _sentence_part("a bounding box of the region") is None  # not part of any sentence


@pytest.mark.parametrize(
    "marker",
    [
        instructions.SHORT_ANSWER_MARKER,
        instructions.MCQ_MARKER,
        instructions.GROUNDING_MARKER,
        instructions.YES_NO_MARKER,
        *instructions.EXPLAINED_MARKERS,
    ],
)
def test_every_style_marker_is_part_of_an_instruction_sentence(marker: str) -> None:
    """A marker that no sentence contains recognises nothing (format checks would fall back silently)."""
    assert any(marker.lower() in s.lower() for s in SENTENCES)


def test_parts_of_instruction_sentences_live_only_in_coin() -> None:
    """Markers and half-sentences are written in `coin/` too (`instructions.py`), never copied elsewhere."""
    bad = [
        f"{_rel(p)}:{line}: {value!r} (part of {sentence!r})"
        for p in _modules()
        if not _rel(p).startswith("coin/")
        for line, value in _strings(p, with_keys=True)
        if (sentence := _sentence_part(value)) is not None
    ]
    assert bad == []


@pytest.mark.parametrize("sentence", SENTENCES)
def test_instruction_sentences_live_only_in_coin_instructions(sentence: str) -> None:
    bad = [
        f"{_rel(p)}:{line}"
        for p in _modules()
        if _rel(p) != "coin/instructions.py"
        for line, value in _strings(p, with_keys=True)
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
