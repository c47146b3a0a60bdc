"""End-to-end ASD generation throughput against a loopback chat-completions server with fixed latency.

What it measures: `Engine.fulfil` with the `openai` backend (prompt rendering, fingerprints, HTTP through the
OpenAI SDK, lenient parsing, validation, cache appends) at several concurrency levels. The server runs in its
own process and sleeps a fixed time per request, so the ideal rate is concurrency / latency; the ratio to that
rate shows how much the client side costs. Client CPU per request is `time.process_time()` of this process
(the server's CPU is not in it). Results go to the "ASD generation throughput" section of docs/BENCHMARKS.md
with `--write`.

    .venv/bin/python bench/bench_asd_throughput.py --latency 0.2 --write
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SERVER = ROOT / "tests" / "helpers" / "chat_server.py"
SECTION = "## ASD generation throughput (`bench/bench_asd_throughput.py`)"


def _needs(n: int, tag: str) -> list:
    from sefe.asd_gen.needs import Need, QAItem

    return [
        Need(
            task="GQA",
            record_id=f"{tag}-{i}",
            kind="mcq",
            items=[QAItem(question=f"What colour is object {i} of run {tag}?", answer="red")],
        )
        for i in range(n)
    ]


def run_level(base_url: str, concurrency: int, n: int, latency: float) -> dict[str, float]:
    from sefe.asd_gen.engine import Engine
    from sefe.asd_gen.needs import GenerationOptions

    opts = GenerationOptions(
        backend="openai", base_url=base_url, model="fake-chat-model", concurrency=concurrency
    )
    with tempfile.TemporaryDirectory() as out:  # fixed cost of one run: engine, client, loop, 1 request
        cpu0 = time.process_time()
        Engine(opts, ROOT, show_progress=False).fulfil(_needs(1, f"fixed-{time.time_ns()}"), out)
        fixed = time.process_time() - cpu0
    engine = Engine(opts, ROOT, show_progress=False)
    needs = _needs(n, f"c{concurrency}-{time.time_ns()}")
    with tempfile.TemporaryDirectory() as out:
        cpu0, t0 = time.process_time(), time.perf_counter()
        outcome = engine.fulfil(needs, out)
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    if len(outcome.results) != n:
        raise SystemExit(f"only {len(outcome.results)}/{n} answered: {outcome.failures[:2]}")
    rate = n / wall
    ideal = concurrency / latency
    return {
        "c": concurrency,
        "n": n,
        "wall": wall,
        "rate": rate,
        "ideal": ideal,
        "ratio": rate / ideal,
        "cpu_ms": 1000 * cpu / n,
        "marginal_ms": 1000 * max(cpu - fixed, 0.0) / max(n - 1, 1),
    }


def engine_only_cpu_ms(n: int = 2000) -> float:
    """Our own CPU per request without HTTP: the same Needs through an in-process backend that answers at
    once (rendering, fingerprints, parsing, validation, cache appends); the rest of the client CPU above is
    the OpenAI SDK, httpx and asyncio."""
    from sefe.asd_gen.backends.base import Backend, ChatRequest, ChatResult, ResultCallback
    from sefe.asd_gen.engine import Engine
    from sefe.asd_gen.needs import GenerationOptions

    class Instant(Backend):
        name = "instant"

        @property
        def model_name(self) -> str:
            return "instant"

        def run(self, requests: list[ChatRequest], on_result: ResultCallback) -> None:  # type: ignore[override]
            for r in requests:
                text = '{"items": [{"distractors": ["blue", "green", "yellow"]}]}'
                on_result(ChatResult(key=r.key, text=text, finish_reason="stop", tokens_in=50, tokens_out=12))

    opts = GenerationOptions(backend="openai", model="instant")
    engine = Engine(opts, ROOT, show_progress=False, backend=Instant())
    needs = _needs(n, f"engine-{time.time_ns()}")
    with tempfile.TemporaryDirectory() as out:
        cpu0 = time.process_time()
        engine.fulfil(needs, out)
        return 1000 * (time.process_time() - cpu0) / n


def table(rows: list[dict[str, float]], latency: float, engine_ms: float) -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU(s), Python {platform.python_version()}, "
        f"load average {load:.1f} during the run; server latency {latency * 1000:.0f} ms per request, "
        f"server in its own process; date {time.strftime('%Y-%m-%d')}.",
        "",
        "| concurrency | requests | wall s | req/s | ideal req/s | ratio | CPU ms/req | marginal ms/req |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['c']} | {r['n']} | {r['wall']:.2f} | {r['rate']:.1f} | {r['ideal']:.1f} | "
            f"{r['ratio']:.3f} | {r['cpu_ms']:.3f} | {r['marginal_ms']:.3f} |"
        )
    lines.append("")
    lines.append(
        f"Engine alone (no HTTP: in-process backend, 2000 requests): {engine_ms:.3f} ms CPU per request; "
        "the rest of the client CPU is the OpenAI SDK, httpx and asyncio."
    )
    lines.append("")
    top = max(rows, key=lambda r: r["c"])
    ok_ratio, ok_cpu = top["ratio"] >= 0.9, top["marginal_ms"] < 1.0
    lines.append(
        f"Targets: ratio >= 0.9 at concurrency 64 ({'met' if ok_ratio else 'NOT met'} here: "
        f"{top['ratio']:.2f} at {top['c']}); client CPU < 1 ms per request ({'met' if ok_cpu else 'NOT met'} "
        f"here: {top['marginal_ms']:.2f} ms marginal). CPU ms/req is the client CPU of the run divided by "
        "its requests, so it includes each run's fixed cost (engine, SDK client, TLS context, event loop), "
        "which dominates at concurrency 1 with 16 requests; marginal = (CPU of the run - CPU of a 1-request "
        "run) / (requests - 1). A CPU-bound client gets only its share of the machine: see the load average."
    )
    return "\n".join(lines)


def write_section(text: str) -> None:
    path = ROOT / "docs" / "BENCHMARKS.md"
    doc = path.read_text()
    start = doc.index(SECTION) + len(SECTION)
    nxt = re.search(r"^## ", doc[start:], flags=re.M)
    end = start + nxt.start() if nxt else len(doc)
    path.write_text(doc[:start] + "\n\n" + text + "\n\n" + doc[end:].lstrip("\n"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--latency", type=float, default=0.2, help="server seconds per request")
    ap.add_argument("--levels", type=int, nargs="+", default=[1, 8, 32, 64])
    # 30 rounds: with 8, connection set-up and warm-up were a quarter of the run at concurrency 64.
    ap.add_argument(
        "--rounds", type=int, default=30, help="requests per level = rounds x concurrency (min 16)"
    )
    ap.add_argument("--write", action="store_true", help="write the table into docs/BENCHMARKS.md")
    args = ap.parse_args()
    import openai  # noqa: F401  (import cost is not per-request work)

    server = subprocess.Popen(
        [sys.executable, str(SERVER), "--latency", str(args.latency)], stdout=subprocess.PIPE, text=True
    )
    try:
        port = int(server.stdout.readline())  # type: ignore[union-attr]
        base = f"http://127.0.0.1:{port}/v1"
        run_level(base, 4, 8, args.latency)  # warm-up: SDK client, prompt compilation
        rows = [run_level(base, c, max(16, args.rounds * c), args.latency) for c in args.levels]
    finally:
        server.terminate()
        server.wait()
    text = table(rows, args.latency, engine_only_cpu_ms())
    print(text)
    if args.write:
        write_section(text)


if __name__ == "__main__":
    main()
