"""Plays the Batch API provider (or `vllm run_batch`): answers each input line through the loopback server."""

from __future__ import annotations

import random
import urllib.request
from pathlib import Path

import orjson


def answer_batch_files(inputs: list[Path], base_url: str, out_file: Path, seed: int = 0) -> int:
    """Send every request body to `base_url` and write Batch-API output lines in shuffled order."""
    rows = []
    for path in inputs:
        for line in path.read_bytes().splitlines():
            req = orjson.loads(line)
            assert req["method"] == "POST" and req["url"] == "/v1/chat/completions"
            http = urllib.request.Request(
                base_url + "/chat/completions",
                data=orjson.dumps(req["body"]),
                headers={"content-type": "application/json"},
            )
            with urllib.request.urlopen(http) as resp:
                body = orjson.loads(resp.read())
            rows.append(
                {
                    "id": f"batch_req_{len(rows)}",
                    "custom_id": req["custom_id"],
                    "response": {"status_code": 200, "request_id": f"req_{len(rows)}", "body": body},
                    "error": None,
                }
            )
    random.Random(seed).shuffle(rows)  # providers do not keep line order: matching must use custom_id
    out_file.parent.mkdir(parents=True, exist_ok=True)
    out_file.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    return len(rows)
