"""How long `load_train` / `save_train` take on a GQA-sized file (the spec: 200+ MB must load in seconds).

Writes a synthetic LLaVA train file of multi-turn records (default ~220 MB) to a temp folder, then times
orjson parsing + the single TypeAdapter validation, and the atomic save. Run:
    .venv/bin/python bench/bench_records_load.py [--mb 220]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import orjson

from sefe.coin.records import load_train, save_train

SHORT = "Answer the question using a single word or phrase."


def synthetic(target_mb: float) -> list[dict[str, object]]:
    """GQA-like records: one image, 5-15 QA turns each, until the JSON is about target_mb."""
    rows: list[dict[str, object]] = []
    size = 0
    i = 0
    while size < target_mb * 1e6:
        turns = []
        for t in range(5 + i % 11):
            image = "<image>\n" if t == 0 else ""
            q = f"{image}Is the {t}th object on the left of the red car {i}?\n{SHORT}"
            turns += [{"from": "human", "value": q}, {"from": "gpt", "value": "yes" if (i + t) % 2 else "no"}]
        row = {"id": f"{i:09d}", "image": f"GQA/images/{i}.jpg", "conversations": turns}
        size += len(orjson.dumps(row)) + 1
        rows.append(row)
        i += 1
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=float, default=220.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "train.json"
        rows = synthetic(args.mb)
        src.write_bytes(orjson.dumps(rows))
        n_turns = sum(len(r["conversations"]) for r in rows)  # type: ignore[arg-type]
        del rows
        mb = src.stat().st_size / 1e6
        t0, c0 = time.perf_counter(), time.process_time()
        recs = load_train(src)
        t1, c1 = time.perf_counter(), time.process_time()
        save_train(Path(d) / "out.json", recs)
        t2, c2 = time.perf_counter(), time.process_time()
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPU(s), Python {platform.python_version()}")
    print(f"file: {mb:.0f} MB, {len(recs):,} records, {n_turns:,} turns")
    print(f"load_train: {t1 - t0:.2f} s wall, {c1 - c0:.2f} s CPU")
    print(f"save_train: {t2 - t1:.2f} s wall, {c2 - c1:.2f} s CPU")
    print(f"load average: {os.getloadavg()[0]:.1f} (other load stretches wall time, not CPU time)")


if __name__ == "__main__":
    main()
