"""`sefe keys import | export`: RegLoRA key files to and from the release's `*_topP.pth` format."""

from __future__ import annotations

from pathlib import Path

import typer

from sefe.commands.common import default, type_check
from sefe.paths import OutputFile
from sefe.sefe_train.reglora.config import Accumulate, RegLoRAConfig

app = typer.Typer(
    help="RegLoRA key files: convert the release's *_topP.pth to and from keys.safetensors.",
    no_args_is_help=True,
)


@app.command("import")
def keys_import_cmd(
    files: list[Path] = typer.Argument(..., help="Release *_topP.pth files; their pairs are concatenated."),
    model: Path = typer.Option(..., "--model", help="Model folder (or config.json) the keys belong to."),
    out: Path = typer.Option(
        ..., "--out", "-o", callback=type_check(OutputFile), help="keys.safetensors to write."
    ),
    accumulate: Accumulate = typer.Option(
        default(RegLoRAConfig, "accumulate"), "--accumulate", help="concat: the release's lists."
    ),
    tasks: int | None = typer.Option(None, "--tasks", help="Tasks the keys cover (default: files given)."),
) -> None:
    """Import the release's key files, e.g. to continue a run begun with the release code."""
    from sefe.errors import MissingFile
    from sefe.sefe_train.reglora.release_keys import import_release_keys, linear_shapes

    for f in files:
        if not f.is_file():
            raise MissingFile(f"{f}: no such file")
    store = import_release_keys(files, linear_shapes(model), accumulate, tasks)
    store.save(out)
    n = sum(
        int(c.sum()) if (c := store.counts(m)) is not None else len(store.indices(m))
        for m in store.module_names
    )
    typer.echo(f"{out}: {len(store)} modules, {int(n)} key pairs ({accumulate})")


@app.command("export")
def keys_export_cmd(
    keys: Path = typer.Argument(..., help="A sefe keys.safetensors file (a run stage's key elements)."),
    out: Path = typer.Option(
        ..., "--out", "-o", callback=type_check(OutputFile), help="Release-format *_topP.pth to write."
    ),
) -> None:
    """Export sefe's key elements in the release's format (int64 (row, col) pairs per peft module name)."""
    from sefe.sefe_train.reglora.keys import KeyStore
    from sefe.sefe_train.reglora.release_keys import export_release_keys

    store = KeyStore.load(keys)
    export_release_keys(store, out)
    typer.echo(f"{out}: {len(store)} modules")
