"""What keeps paid training work safe, kept out of the runner's loop: one process per run folder, resuming
only from a checkpoint that loads, and a full disk reported as one line instead of a raw writer error.

Why here: the runner calls each of these once; the rules (what "loads" means, what a full disk looks like
through safetensors, torch and plain writes) are this module's, so the loop stays about stages.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import struct
import zipfile
from collections.abc import Iterator
from pathlib import Path

from rich.console import Console

from sefe.errors import DiskFull, is_disk_full
from sefe.lock import folder_lock
from sefe.sefe_train import run_layout as L
from sefe.sefe_train.distributed import is_main_process

console = Console(stderr=True)

#: Prefix a checkpoint that does not load is renamed with (the Trainer's `checkpoint-*` glob skips it).
BROKEN_PREFIX = "broken-"


# ---- one process per run folder ----------------------------------------------------------------------


@contextlib.contextmanager
def run_folder_lock(run_dir: Path, command: str = "sefe train") -> Iterator[None]:
    """The run folder's lock (`sefe.lock`), taken by the main process only: the other ranks of a
    multi-process run share the folder with it by design."""
    if not is_main_process():
        yield
        return
    with folder_lock(run_dir, command):
        yield


# ---- checkpoints that load ----------------------------------------------------------------------------


def _check_safetensors(path: Path) -> None:
    """Header parses and the tensors it declares fit in the file exactly (a cut or overwritten file fails)."""
    size = path.stat().st_size
    with path.open("rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise ValueError("shorter than a safetensors header")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8:
            raise ValueError(f"header of {n} bytes in a file of {size}")
        header = json.loads(fh.read(n))
    end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
    if 8 + n + end != size:
        raise ValueError(f"tensors end at byte {8 + n + end}, the file has {size}")


#: `torch.save` files up to this size have every member's checksum verified (a full read); bigger ones (a
#: full fine-tuning's optimizer state) only their zip directory and member extents: a resume rereads no GBs.
CHECKSUM_LIMIT = 1 << 30


def _check_torch_file(path: Path) -> None:
    """`torch.save` files are zip archives: checked without unpickling (see `CHECKSUM_LIMIT`)."""
    if not zipfile.is_zipfile(path):
        raise ValueError("not a torch zip archive (cut short or overwritten)")
    size = path.stat().st_size
    with zipfile.ZipFile(path) as zf:
        if size <= CHECKSUM_LIMIT:
            bad = zf.testzip()
            if bad is not None:
                raise ValueError(f"member {bad} fails its checksum")
            return
        for info in zf.infolist():
            if info.header_offset + len(info.FileHeader()) + info.compress_size > size:
                raise ValueError(f"member {info.filename} runs past the end of the file")


def checkpoint_problem(path: Path) -> str | None:
    """Why the checkpoint folder `path` cannot be resumed from, or None when every file of it loads."""
    try:
        json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return f"trainer_state.json: {exc}"
    for f in sorted(path.rglob("*")):
        if not f.is_file():
            continue
        try:
            if f.suffix == ".safetensors":
                _check_safetensors(f)
            elif f.suffix in (".pt", ".pth", ".bin"):
                _check_torch_file(f)
            elif f.suffix == ".json":
                json.loads(f.read_bytes())
        except (OSError, ValueError, zipfile.BadZipFile, struct.error, KeyError, TypeError) as exc:
            return f"{f.relative_to(path)}: {exc}"
    return None


def resumable_checkpoint(ckpt_dir: Path) -> str | None:
    """The newest Trainer checkpoint whose every file loads. Each newer one that does not (a kill during its
    save, a corrupt file) is skipped with a line saying which and why, and renamed `broken-checkpoint-N` so
    neither this run nor the Trainer's rotation ever takes it for a checkpoint again."""
    if not ckpt_dir.is_dir():
        return None
    found = []
    for p in ckpt_dir.glob("checkpoint-*"):
        if p.is_dir() and p.name.removeprefix("checkpoint-").isdigit():
            found.append((int(p.name.removeprefix("checkpoint-")), p))
    for _, path in sorted(found, reverse=True):
        problem = checkpoint_problem(path)
        if problem is None:
            return str(path)
        if is_main_process():
            aside = path.with_name(BROKEN_PREFIX + path.name)
            shutil.rmtree(aside, ignore_errors=True)
            path.rename(aside)
            console.print(f"[yellow]skipping checkpoint {path}: {problem} (kept as {aside.name})[/yellow]")
    return None


# ---- a full disk ------------------------------------------------------------------------------------


#: torch's writer does not say why a write failed ("basic_ios::clear: iostream error", then "unexpected pos"
#: from its clean-up): such an error counts as a full disk when the run folder's file system is nearly full.
_STREAM_FAILURES = ("iostream error", "unexpected pos", "failed writing file")
NEARLY_FULL_BYTES = 64 * 2**20


def _free_bytes(folder: Path) -> int | None:
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        return shutil.disk_usage(probe).free
    except OSError:
        return None


def _free(folder: Path) -> str:
    free = _free_bytes(folder)
    return "unknown" if free is None else f"{free / 2**20:,.1f} MiB"


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        yield cur
        cur = cur.__cause__ or cur.__context__


def _ran_out_of_space(exc: BaseException, run_dir: Path) -> BaseException | None:
    """The error in `exc`'s chain that says the disk is full (or, for torch's mute stream errors, that a
    write failed while the run folder's file system had almost no space left), or None."""
    for e in _chain(exc):
        if is_disk_full(e):
            return e
    if any(word in str(e) for e in _chain(exc) for word in _STREAM_FAILURES):
        free = _free_bytes(run_dir)
        if free is not None and free < NEARLY_FULL_BYTES:
            return exc
    return None


@contextlib.contextmanager
def disk_full_as_error(run_dir: Path) -> Iterator[None]:
    """Turn a full disk while training into `DiskFull` naming the stage (the first one not done in
    `state.json`), the file when the writer names it, and the space left; finished stages and checkpoints
    stay, so rerunning after freeing space resumes."""
    try:
        yield
    except Exception as exc:
        full = _ran_out_of_space(exc, run_dir)
        if full is None:
            raise
        state = L.load_state(run_dir)
        done = {s.index for s in state.done} if state is not None else set()
        names = state.tasks if state is not None else []
        k = next((i for i in range(1, len(names) + 1) if i not in done), None)
        stage = f"stage {k} ({names[k - 1]})" if k is not None else "the run"
        folder = L.partial_dir(run_dir, k, names[k - 1]) if k is not None else run_dir
        filename = getattr(full, "filename", None)
        where = f"writing {filename}" if filename else f"writing under {folder}"
        raise DiskFull(
            f"{run_dir}: {stage}: no space left on the device while {where} ({_free(run_dir)} free)"
        ) from None
