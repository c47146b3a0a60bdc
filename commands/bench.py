"""`sefe bench reglora`: time the RegLoRA penalty on this machine.

The defaults come from `BenchOptions` (torch-free): the benchmark module imports torch, which `sefe --help`
must not wait for.
"""

from __future__ import annotations

from pathlib import Path

import typer

from sefe.commands.common import default, numbers_check, parse_floats, split_list, type_check
from sefe.models.device import TorchDevice
from sefe.paths import OutputFile
from sefe.sefe_train.reglora.config import BenchDType, BenchOptions, PenaltyImpl, RegLoRAConfig

_B = BenchOptions
app = typer.Typer(help="Micro-benchmarks on the current device.", no_args_is_help=True)


@app.command("reglora")
def bench_reglora(
    reps: int = typer.Option(
        default(_B, "reps"), min=1, help="Timed forward+backward steps per measurement (median)."
    ),
    densities: str = typer.Option(
        default(_B, "densities"),
        callback=numbers_check(RegLoRAConfig, "top_percent"),
        help="Key densities in percent, comma-separated.",
    ),
    device: str = typer.Option(
        default(_B, "device"), callback=type_check(TorchDevice), help="cpu or cuda (cuda:N)."
    ),
    dtype: BenchDType = typer.Option(default(_B, "dtype"), help="dtype of the LoRA parameters."),
    shapes: str = typer.Option(default(_B, "shapes"), help="OUTxIN weight shapes, comma list."),
    rank: int = typer.Option(default(_B, "rank"), min=1, help="LoRA rank."),
    impl: PenaltyImpl = typer.Option(default(_B, "impl"), help="Our implementation."),
    storage: bool = typer.Option(default(_B, "storage"), help="Also measure key storage after seven tasks."),
    threads: int | None = typer.Option(
        default(_B, "threads"), min=1, help="torch intra-op threads (default: torch's)."
    ),
    out: Path | None = typer.Option(
        None, callback=type_check(OutputFile), help="Also write rows + storage + machine as JSON here."
    ),
    markdown_out: Path | None = typer.Option(
        None, "--markdown", callback=type_check(OutputFile), help="Also write the markdown table here."
    ),
) -> None:
    """Time the RegLoRA penalty against the reference dense computation (B@A, then gather) at 7B shapes.

    Prints a JSON list, one object per (shape, density): shape, density, ours_s, reference_s (median
    forward+backward seconds), ours_peak_mb, reference_peak_mb, and the implementation `auto` chose.
    """
    import orjson

    from sefe.sefe_train.reglora.bench import markdown, parse_shapes, run_bench

    result = run_bench(
        parse_shapes(shapes),
        parse_floats(split_list([densities]), "--densities"),
        reps=reps,
        device=device,
        dtype=dtype,
        rank=rank,
        impl=impl,
        with_storage=storage,
        threads=threads,
    )
    if out is not None:
        out.write_bytes(orjson.dumps(result.model_dump(), option=orjson.OPT_INDENT_2))
    if markdown_out is not None:
        markdown_out.write_text(markdown(result))
    typer.echo(orjson.dumps([r.model_dump() for r in result.rows], option=orjson.OPT_INDENT_2).decode())
