"""The `sefe` command line: parse, call, print. Logic lives in asd_gen/ and sefe_train/.

Heavy imports (torch, transformers) happen inside commands so `sefe --help` stays fast.
Each section below is owned by one area; keep commands thin.
"""

from __future__ import annotations

import typer

app = typer.Typer(
    name="sefe",
    help="SEFE toolkit: Answer Style Diversification (ASD) and RegLoRA for multimodal continual instruction tuning.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
asd_app = typer.Typer(help="Answer Style Diversification: build train_x{X}.json files.", no_args_is_help=True)
eval_app = typer.Typer(help="CoIN inference and scoring.", no_args_is_help=True)
bench_app = typer.Typer(help="Micro-benchmarks on the current device.", no_args_is_help=True)
app.add_typer(asd_app, name="asd")
app.add_typer(eval_app, name="eval")
app.add_typer(bench_app, name="bench")


# ---- asd (owner: ASD core) -------------------------------------------------------------------------------
# ---- end asd ---------------------------------------------------------------------------------------------


# ---- train (owner: trainer) ------------------------------------------------------------------------------
# ---- end train -------------------------------------------------------------------------------------------


# ---- eval run (owner: inference) -------------------------------------------------------------------------
# ---- end eval run ----------------------------------------------------------------------------------------


# ---- eval score + report (owner: scoring/report) ---------------------------------------------------------
# ---- end eval score + report -----------------------------------------------------------------------------


# ---- bench (owner: RegLoRA core) -------------------------------------------------------------------------
# ---- end bench -------------------------------------------------------------------------------------------


if __name__ == "__main__":
    app()
