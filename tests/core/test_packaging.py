"""The wheel ships every module and data file of the package folders, and the development install (strict
editable mode, as `make install` does it) imports exactly what the wheel ships: no `sefe.tests`, no
`sefe.bench`.

The expected file list is derived from the tree (git's list of tracked and new files, or a walk without git),
so modules and data added later are checked without editing this test. Both builds run offline with the
venv's setuptools (`--no-build-isolation`) on a copy of the tree, so the checkout gets no build/ or egg-info.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
#: Top-level folders that are not part of the package (the repository root *is* the package `sefe`).
NOT_SHIPPED = {"tests", "bench", "scripts", "docs", ".ci", ".github"}
#: Package-data folders at the root that hold no `__init__.py`.
DATA_FOLDERS = {"configs"}
_SKIP_PARTS = {
    ".git",
    "__pycache__",
    "build",
    "dist",
    "out",
    "runs",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
}


def source_files(root: Path = REPO) -> list[str]:
    """Tracked and new (not ignored) files, relative to the root; a walk when git is not there."""
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "ls-files", "-co", "--exclude-standard"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
        return sorted(f for f in out if (root / f).is_file())
    except (OSError, subprocess.CalledProcessError):
        found = []
        for p in root.rglob("*"):
            rel = p.relative_to(root)
            skip = any(part in _SKIP_PARTS or part.startswith(".venv") for part in rel.parts)
            if p.is_file() and not skip and not rel.name.endswith((".pyc", ".egg-info")):
                found.append(rel.as_posix())
        return sorted(found)


def expected_in_wheel(files: list[str], root: Path = REPO) -> set[str]:
    """`sefe/<path>` for each root module and each file under a package folder or a package-data folder."""
    out = set()
    for f in files:
        parts = f.split("/")
        if len(parts) == 1:
            if f.endswith(".py"):
                out.add(f"sefe/{f}")
            continue
        top = parts[0]
        if top in NOT_SHIPPED:
            continue
        if top in DATA_FOLDERS or (root / top / "__init__.py").is_file():
            out.add(f"sefe/{f}")
    return out


@pytest.fixture(scope="module")
def tree_copy(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """The source tree as git sees it, copied (builds write build/ and *.egg-info into their source)."""
    files = source_files()
    dest = tmp_path_factory.mktemp("src") / "checkout"
    for f in files:
        (dest / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / f, dest / f)
    return dest, files


def _pip_wheel(src: Path, out: Path) -> Path:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(out),
            str(src),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )
    (wheel,) = out.glob("sefe-*.whl")
    return wheel


def test_expected_list_follows_the_tree() -> None:
    """The rule itself: modules, prompts, configs, the sample data and json tables count; tests do not."""
    exp = expected_in_wheel(source_files())
    for must in (
        "sefe/cli.py",
        "sefe/errors.py",
        "sefe/asd_gen/build.py",
        "sefe/prompts/default/system.j2",
        "sefe/configs/coin-llava7b.yaml",
        "sefe/data/coin-mini/README.md",
        "sefe/evaluation/vqa_answer_normalization.json",
    ):
        assert must in exp, must
    assert any(e.startswith("sefe/data/coin-mini/annotations/") for e in exp)
    assert not any(e.startswith(("sefe/tests/", "sefe/bench/", "sefe/docs/")) for e in exp)


@pytest.mark.slow  # builds a wheel from a copy of the tree (~10 s on 2 cores)
def test_wheel_ships_every_module_and_data_file(tree_copy: tuple[Path, list[str]], tmp_path: Path) -> None:
    src, files = tree_copy
    wheel = _pip_wheel(src, tmp_path / "wheel")
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = sorted(expected_in_wheel(files, src) - names)
    assert not missing, (
        f"not in the wheel (add the sub-package or data glob to pyproject.toml): {missing[:20]}"
    )
    shipped = {n for n in names if n.startswith("sefe/")}
    assert not [n for n in shipped if n.startswith(("sefe/tests/", "sefe/bench/", "sefe/scripts/"))]
    assert "sefe-0.1.0.dist-info/entry_points.txt" in names


def test_make_install_uses_strict_editable_mode() -> None:
    """The lenient editable finder maps `sefe` to the whole root, which makes `sefe.tests` importable."""
    makefile = (REPO / "Makefile").read_text()
    installs = [line for line in makefile.splitlines() if "pip install" in line and " -e " in line]
    assert installs and all("editable_mode=strict" in line for line in installs), installs


@pytest.mark.slow  # an editable build of a copy of the tree plus a fresh interpreter (~10 s on 2 cores)
def test_strict_editable_install_imports_exactly_the_wheel(
    tree_copy: tuple[Path, list[str]], tmp_path: Path
) -> None:
    src, files = tree_copy
    out = tmp_path / "editable"
    code = (
        "import sys; from setuptools import build_meta as b; "
        f"print(b.build_editable({str(out)!r}, config_settings={{'editable_mode': 'strict'}}))"
    )
    subprocess.run([sys.executable, "-c", code], cwd=src, check=True, capture_output=True, timeout=600)
    (wheel,) = out.glob("sefe-*.editable-*.whl")
    site_dir = tmp_path / "site"
    with zipfile.ZipFile(wheel) as z:
        (pth,) = [n for n in z.namelist() if n.endswith(".pth")]
        z.extract(pth, site_dir)
    link_tree = Path((site_dir / pth).read_text().strip())
    linked = {p.relative_to(link_tree).as_posix() for p in link_tree.rglob("*") if p.is_file()}
    assert linked == expected_in_wheel(files, src)
    # A fresh interpreter that sees the third-party packages but not this session's sefe: only the .pth.
    probe = (
        "import importlib, site, sys\n"
        f"sys.path.append({sysconfig.get_paths()['purelib']!r})\n"
        f"site.addsitedir({str(site_dir)!r})\n"
        "import sefe.cli, sefe.errors, sefe.asd_gen.build\n"
        f"assert sefe.__file__.startswith({str(link_tree)!r}), sefe.__file__\n"
        "for name in ('sefe.tests', 'sefe.bench', 'sefe.scripts', 'sefe.docs'):\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except ModuleNotFoundError:\n"
        "        continue\n"
        "    raise SystemExit(f'{name} is importable')\n"
        "print('ok')\n"
    )
    res = subprocess.run(
        [sys.executable, "-S", "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=300, env={}
    )
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr[-2000:]
