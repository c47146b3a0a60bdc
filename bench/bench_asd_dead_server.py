"""What a dead model server costs `sefe asd build`: seconds from the server's death to the engine giving up.

Scenarios, side by side in one run, against the loopback test server (`tests/helpers/chat_server.py`):
- closed port: nothing listens; the check before the first request (`GET /v1/models`) fails;
- dies mid-run, circuit breaker on (the default: 8 unanswered results in a row);
- dies mid-run, breaker off (`max_consecutive_failures=0`): every remaining request runs its SDK retries,
  as `sefe asd build` did before the breaker existed.
The engine runs with the default `max_retries` (4: the SDK's backoff grows to several seconds per request)
and `--concurrency 64`. "after death" is measured from the server's last answer to `fulfil` returning.
Results go to the "Dead model server" section of docs/BENCHMARKS.md with `--write`.

    .venv/bin/python bench/bench_asd_dead_server.py --needs 600 --die-after 100 --write
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import socket
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "helpers"))
from bench_asd_throughput import _needs  # noqa: E402 (after the path set-up; the throughput bench's needs)

SECTION = "## Dead model server (`bench/bench_asd_dead_server.py`)"


def closed_port() -> dict[str, float | str]:
    from sefe.asd_gen.backends.base import BackendUnreachable
    from sefe.asd_gen.engine import Engine
    from sefe.asd_gen.needs import GenerationOptions

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    opts = GenerationOptions(backend="openai", base_url=f"http://127.0.0.1:{port}/v1", concurrency=64)
    t0 = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory() as out:
            Engine(opts, ROOT, show_progress=False).fulfil(_needs(50, "closed"), out)
    except BackendUnreachable:
        pass
    else:
        raise AssertionError("a closed port was not detected")
    return {"scenario": "closed port", "seconds": time.perf_counter() - t0}


def dies(n: int, die_after: int, breaker: int) -> dict[str, float | str]:
    from chat_server import ChatServer

    from sefe.asd_gen.engine import Engine
    from sefe.asd_gen.needs import GenerationOptions

    srv = ChatServer(latency_s=0.05, die_after=die_after).start()
    opts = GenerationOptions(
        backend="openai", base_url=srv.base_url, concurrency=64, max_consecutive_failures=breaker
    )
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        res = Engine(opts, ROOT, show_progress=False).fulfil(_needs(n, f"d{breaker}-{time.time_ns()}"), out)
        end = time.monotonic()
        wall = time.perf_counter() - t0
    last_answer = max(h.t for h in srv.hits if h.fault is None)
    tried = sum(1 for f in res.open if not f.error.startswith("not sent"))
    srv.stop()
    return {
        "scenario": f"dies after {die_after} answers, breaker {'off' if breaker == 0 else breaker}",
        "seconds": wall,
        "after_death": end - last_answer,
        "answered": len(res.results),
        "open": len(res.open),
        "tried_after_death": tried,
    }


def table(rows: list[dict[str, float | str]], n: int) -> str:
    out = [
        f"{n} needs (one request each), concurrency 64, SDK max_retries 4; loopback server, 0.05 s latency.",
        "",
        "| scenario | wall s | s after death | answered (cached) | open | requests tried after death |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if "after_death" in r:
            out.append(
                f"| {r['scenario']} | {r['seconds']:.1f} | {r['after_death']:.1f} | {r['answered']} | "
                f"{r['open']} | {r['tried_after_death']} |"
            )
        else:
            out.append(f"| {r['scenario']} | {r['seconds']:.2f} | - | 0 | all | 0 |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--needs", type=int, default=600)
    ap.add_argument("--die-after", type=int, default=100)
    ap.add_argument("--write", action="store_true", help="update docs/BENCHMARKS.md")
    args = ap.parse_args()
    rows = [closed_port(), dies(args.needs, args.die_after, 8), dies(args.needs, args.die_after, 0)]
    load = os.getloadavg()[0]
    text = table(rows, args.needs) + (
        f"\n\nMachine: {platform.machine()}, {os.cpu_count()} CPUs, load average {load:.1f} (shared)."
    )
    print(text)
    if args.write:
        doc = ROOT / "docs" / "BENCHMARKS.md"
        body = doc.read_text()
        block = f"{SECTION}\n\n{text}\n"
        if SECTION in body:
            body = re.sub(re.escape(SECTION) + r"\n.*?(?=\n## |\Z)", block, body, flags=re.S)
        else:
            body = body.rstrip("\n") + "\n\n" + block
        doc.write_text(body)


if __name__ == "__main__":
    main()
