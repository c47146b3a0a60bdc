"""Output paths the user names, checked before any work: a folder to write into, or a file to write.

`sefe asd build --out FILE` used to start the build and fail with a traceback at the first mkdir. These
types put the check on the models (and, through them, on the CLI options): a folder path must not be a file
nor lie under one; a file path must not be a folder. The checks raise `InputError` (a ValueError, so pydantic
reports it as a validation error of the field).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, TypeVar

from pydantic import AfterValidator

from sefe.errors import InputError

P = TypeVar("P", str, Path)


def _file_above(path: Path) -> Path | None:
    """The nearest existing parent of `path` if it is a file (then nothing can be created below it)."""
    for parent in path.parents:
        if parent.exists():
            return None if parent.is_dir() else parent
    return None


def check_output_dir(path: Path) -> Path:
    if path.exists() and not path.is_dir():
        raise InputError(f"{path} is a file; expected a folder (existing or new)")
    blocker = _file_above(path)
    if blocker is not None:
        raise InputError(f"{path}: {blocker} is a file, not a folder")
    return path


def check_output_file(path: Path) -> Path:
    if path.is_dir():
        raise InputError(f"{path} is a folder; expected a file (existing or new)")
    blocker = _file_above(path)
    if blocker is not None:
        raise InputError(f"{path}: {blocker} is a file, not a folder")
    return path


def check_input_dir(path: P) -> P:
    if not Path(path).is_dir():
        raise InputError(f"{path}: no such folder")
    return path


#: A folder to read from: it must exist.
InputDir = Annotated[str, AfterValidator(check_input_dir)]
#: A folder to write into: existing or new, not a file, not under a file.
OutputDir = Annotated[Path, AfterValidator(check_output_dir)]
#: A file to write: existing or new, not a folder, not under a file.
OutputFile = Annotated[Path, AfterValidator(check_output_file)]
