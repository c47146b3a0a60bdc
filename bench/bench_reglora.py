"""Run `sefe bench reglora` and write its markdown table (for docs/BENCHMARKS.md, "RegLoRA penalty").

    python bench/bench_reglora.py                               # CPU, fp32, 7B shapes, densities 2/6/14
    python bench/bench_reglora.py --device cuda --dtype bfloat16  # on a GPU
Extra arguments go to the CLI unchanged. Writes bench/results/reglora-<device>-<dtype>.{json,md}.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path


def main() -> int:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=fmt)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--results", type=Path, default=Path(__file__).parent / "results")
    args, rest = parser.parse_known_args()
    args.results.mkdir(parents=True, exist_ok=True)
    stem = args.results / f"reglora-{args.device.replace(':', '')}-{args.dtype}"
    exe = shutil.which("sefe") or str(Path(sys.executable).with_name("sefe"))
    sefe = [exe] if Path(exe).exists() else [sys.executable, "-m", "sefe.cli"]  # not pip-installed
    cmd = [
        *sefe,
        "bench",
        "reglora",
        "--device",
        args.device,
        "--dtype",
        args.dtype,
        "--out",
        f"{stem}.json",
        "--markdown",
        f"{stem}.md",
        *rest,
    ]
    proc = subprocess.run(cmd, check=False)
    if proc.returncode == 0:
        print(Path(f"{stem}.md").read_text())
    return proc.returncode


if __name__ == "__main__":
    raise SystemExit(main())
