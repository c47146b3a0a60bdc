"""The errors a user can fix: one base class, so the CLI reports every one of them the same way.

Why one base: a bad file, option, config or a missing optional package is the user's to fix, and deserves one
line that names what to fix (file, record, field, or the install command) and exit code 2, never a traceback.
Anything else escaping a command is a bug in sefe and keeps its traceback. Modules raise these classes (or
their own subclasses of them); the CLI catches `SefeError` once, in `report_errors`.

The subclasses also derive from the built-in exception they replace (`ValueError`, `ImportError`,
`RuntimeError`), so callers that caught the built-in keep working.
"""

from __future__ import annotations

import errno
import functools
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, TypeVar

#: Set to 1 to get the full traceback of a user error (for bug reports).
DEBUG_ENV = "SEFE_DEBUG"
#: The exit code of every user error (click uses 2 for usage errors too).
USER_ERROR_EXIT = 2
#: The exit code of a command that stopped with work left open (a server down, needs unanswered): rerun it.
OPEN_EXIT = 4
#: The exit code of a command that stopped because a file could not be written (disk full, quota): every
#: answer already paid for is on disk; free the space the message names and rerun to resume.
DISK_FULL_EXIT = 5
#: The exit code of a command stopped by Ctrl-C or SIGTERM (128 + SIGINT, as shells report it).
INTERRUPTED_EXIT = 130
#: What the CLI prints after an interrupt that carries no message of its own.
INTERRUPTED_HINT = "interrupted; rerun the same command to resume"


class SefeError(Exception):
    """An error caused by the user's input or environment; the message says what to fix."""

    #: The CLI's exit code for this kind of error.
    exit_code: ClassVar[int] = USER_ERROR_EXIT
    #: A sentence the CLI prints after the message (what to do next), if any.
    hint: ClassVar[str] = ""


class InputError(SefeError, ValueError):
    """A file, record, option or config value that cannot be used (the message names file, record, field)."""


class MissingFile(SefeError, FileNotFoundError):
    """A file or folder the user named (or that a named folder must hold) does not exist."""


class MissingDependency(SefeError, ImportError):
    """An optional package is not installed; the message carries the install command."""


class UnavailableError(SefeError, RuntimeError):
    """Something the command needs is not there or not usable (a model folder, a backend, an engine)."""


class Unreachable(UnavailableError):
    """A server the command talks to cannot be reached: the command is right, rerun it once it is up."""

    exit_code = OPEN_EXIT
    hint = "Is it running? Rerun this command once it is up."


class DiskFull(SefeError, OSError):
    """A file the command must write cannot be written (no space left, quota exceeded): the message names the
    folder, the stage or file, and the free space needed."""

    exit_code = DISK_FULL_EXIT
    hint = "Free the space and rerun the same command to resume."


_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
_FULL_WORDS = (
    "No space left on device",
    "Disk quota exceeded",
    "StorageFull",  # safetensors (Rust) carries the OS error in its message
    "FilesystemQuotaExceeded",
    "file write failed",  # torch's PytorchStreamWriter on a full disk
)


def is_disk_full(exc: BaseException) -> bool:
    """An out-of-space or over-quota error: an `OSError` with that errno, or a writer's error (safetensors,
    torch) whose message carries it."""
    if isinstance(exc, OSError) and exc.errno in _FULL_ERRNOS:
        return True
    return any(word in str(exc) for word in _FULL_WORDS)


@contextmanager
def reading(
    path: str | os.PathLike[str],
    what: str,
    errors: tuple[type[BaseException], ...] = (OSError, ValueError),
) -> Iterator[None]:
    """Around a library call that reads a file the user named (a model folder, a GGUF file): the library's
    own error for a corrupt or unreadable file becomes one `InputError` naming the file."""
    try:
        yield
    except SefeError:
        raise
    except errors as exc:
        raise InputError(f"{Path(path)}: cannot read the {what}: {one_line(exc)}") from exc


def one_line(exc: BaseException) -> str:
    """The error's message on one line: `pydantic.ValidationError`s list each field as `loc: msg`."""
    path_state = _path_state(exc)
    if path_state is not None:
        return path_state
    errors = getattr(exc, "errors", None)
    if callable(errors) and type(exc).__name__ == "ValidationError":
        try:
            parts = [
                f"{'.'.join(str(p) for p in e.get('loc', ())) or 'value'}: "
                f"{str(e.get('msg', '')).removeprefix('Value error, ')}"
                for e in errors()
            ]
        except Exception:  # pragma: no cover - a foreign exception with an errors() method
            parts = []
        if parts:
            return "; ".join(parts)
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    original = _worker_original(lines, type(exc).__name__)
    if original is not None:
        return original
    # "invalid run config (x):" + "  field: msg" reads as one sentence; other lines are separate facts
    joined = "".join(
        line if i == 0 else (" " if lines[i - 1].endswith(":") else "; ") + line
        for i, line in enumerate(lines)
    )
    return joined or type(exc).__name__


#: OSErrors that describe the state of a path the user named (an output path that is a file where a folder
#: is needed, or the reverse; no permission): the user's to fix, reported as one line naming the path.
_PATH_STATES = {
    errno.EEXIST: "exists and is not a folder",
    errno.ENOTDIR: "is not a folder (or a file stands where one of its parent folders should be)",
    errno.EISDIR: "is a folder, not a file",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "is on a read-only file system",
    errno.ENAMETOOLONG: "name too long",
}


def _path_state(exc: BaseException) -> str | None:
    """`<path>: <what is wrong>` for an OSError about a path's state, else None."""
    if not isinstance(exc, OSError) or exc.filename is None or exc.errno not in _PATH_STATES:
        return None
    # a rename onto a folder names the temporary file first and the target (the user's path) second
    path = exc.filename2 if exc.filename2 is not None and exc.errno == errno.EISDIR else exc.filename
    return f"{os.fsdecode(path)}: {_PATH_STATES[exc.errno]}"


def _worker_original(lines: list[str], name: str) -> str | None:
    """The original message of an error re-raised from a DataLoader worker: torch wraps it as `Caught X in
    DataLoader worker process N.` + the worker's traceback, whose last line is `module.X: message`."""
    if not (lines and lines[0].startswith(f"Caught {name} in ") and len(lines) > 2):
        return None
    head, sep, message = lines[-1].partition(": ")
    return message if sep and head.rsplit(".", 1)[-1] == name else None


def is_user_error(exc: BaseException) -> bool:
    """A `SefeError`, a pydantic validation error (options and files are validated at the boundary), or an
    OSError about the state of a named path."""
    if isinstance(exc, SefeError) or _path_state(exc) is not None:
        return True
    try:
        from pydantic import ValidationError
    except ImportError:  # pragma: no cover - pydantic is a dependency
        return False
    return isinstance(exc, ValidationError)


F = TypeVar("F", bound=Callable[..., Any])


def report_errors(func: F) -> F:
    """Wrap a CLI command: a user error prints `error: <one line>` to stderr and exits with its code (2, or
    4 for `Unreachable`); Ctrl-C prints how to resume and exits with 130. Commands catch nothing themselves.

    `SEFE_DEBUG=1` re-raises a user error instead, for a traceback.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except KeyboardInterrupt as exc:  # graceful stops carry their own message (what was kept)
            print(str(exc) or INTERRUPTED_HINT, file=sys.stderr, flush=True)
            raise SystemExit(INTERRUPTED_EXIT) from None
        except Exception as exc:
            if not is_user_error(exc) or os.environ.get(DEBUG_ENV, "") not in ("", "0"):
                raise
            hint = getattr(exc, "hint", "")
            msg = one_line(exc) + (f". {hint}" if hint else "")
            print(f"error: {msg}", file=sys.stderr, flush=True)
            raise SystemExit(getattr(exc, "exit_code", USER_ERROR_EXIT)) from None

    return wrapper  # type: ignore[return-value]
