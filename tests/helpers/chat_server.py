"""A real chat-completions HTTP server on loopback, for tests and the throughput benchmark.

It answers `POST /v1/chat/completions` with JSON that satisfies the request's `response_format` schema (so the
engine's validation passes) and `GET /v1/models`. Faults are injected per prompt by a marker in the user text:
`[[fault:KIND:N]]` makes the first N requests carrying that prompt fail with KIND:
  429        HTTP 429 with `retry-after` (seconds, `RETRY_AFTER_S`)
  500        HTTP 500
  timeout    sleeps `TIMEOUT_SLEEP_S` before answering (past the client's timeout)
  drop       closes the connection without a response
  malformed  200 with text that is not JSON
  truncated  200 with half the JSON and finish_reason "length"
  invalid    200 with valid JSON whose distractors repeat the correct answer / explanation too short
Server-wide faults, for the runs that must survive a failing server:
  fail_mod / fail_times  requests whose prompt hash is 0 modulo `fail_mod` get HTTP 500 on their first
                         `fail_times` tries (a share of requests fails, the SDK's retries get through)
  die_after              after this many answered requests the server goes down: the listening socket closes
                         (connection refused) and kept-alive connections are dropped; a new `ChatServer` on
                         the same port brings it back
The answer to a request depends only on the request (its body's hash seeds the generated text), so a run
that saw faults and a run that did not produce byte-identical outputs.
Every request is logged (prompt hash, time, fault served, status) so tests can assert exact request counts.
Run as a script (`python chat_server.py --latency 0.1`), an asyncio variant without faults serves in its own
process and prints its port (the throughput benchmark uses it).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson

FAULT = re.compile(r"\[\[fault:(\w+):(\d+)\]\]")
RETRY_AFTER_S = 1
TIMEOUT_SLEEP_S = 3.0
MODEL = "fake-chat-model"
WORDS = [
    "the",
    "image",
    "shows",
    "clear",
    "visual",
    "evidence",
    "that",
    "supports",
    "this",
    "answer",
    "over",
    "every",
    "other",
    "candidate",
]


@dataclass
class Hit:
    prompt: str  # sha256 of the user text (first 16 hex)
    fault: str | None
    t: float
    images: list[str] = field(default_factory=list)  # data-URL prefixes of images sent
    body_keys: list[str] = field(default_factory=list)  # top-level request fields, to check the protocol
    answered: bool = True  # False: dropped because the server was down


def _user_text(body: dict[str, Any]) -> str:
    for m in body.get("messages", []):
        if m.get("role") == "user":
            c = m.get("content")
            if isinstance(c, str):
                return c
            return "\n".join(p.get("text", "") for p in c if p.get("type") == "text")
    return ""


def _images(body: dict[str, Any]) -> list[str]:
    out = []
    for m in body.get("messages", []):
        if isinstance(m.get("content"), list):
            out += [p["image_url"]["url"][:40] for p in m["content"] if p.get("type") == "image_url"]
    return out


def _explanation(n: int) -> str:
    return " ".join(WORDS[(i + n) % len(WORDS)] for i in range(25))


class Generator:
    """A valid instance of a strict JSON schema, with distinct strings (never an answer from the prompt).

    With a `seed` (the request's hash) the instance depends only on the request."""

    def __init__(self, seed: int = 0) -> None:
        self.counter = seed

    def make(self, schema: dict[str, Any], name: str = "", index: int = 0) -> Any:
        t = schema.get("type")
        if t == "object":
            return {k: self.make(v, k, index) for k, v in schema["properties"].items()}
        if t == "array":
            return [self.make(schema["items"], name, i) for i in range(schema.get("minItems", 1))]
        if t == "integer":
            return index + 1
        self.counter += 1
        if name in ("explanation", "description"):
            return _explanation(self.counter)
        return f"candidate {self.counter}"


class ChatServer:
    """Threaded HTTP/1.1 server (keep-alive) with a request log; `start()` runs it in a daemon thread."""

    def __init__(
        self,
        latency_s: float = 0.0,
        port: int = 0,
        *,
        fail_mod: int = 0,
        fail_times: int = 1,
        die_after: int | None = None,
        keep_bodies: bool = False,
    ) -> None:
        self.latency_s = latency_s
        self.keep_bodies = keep_bodies
        self.bodies: list[bytes] = []  # every raw request body, when keep_bodies (what reached the server)
        self.fail_mod = fail_mod
        self.fail_times = fail_times
        self.die_after = die_after
        self.down = False
        self.answered = 0  # requests answered with a model response (not dropped, not a fault)
        self.hits: list[Hit] = []
        self.served: dict[str, int] = {}
        self.auth_headers: set[str] = set()
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                # headers and body go out in two writes: without this, Nagle + delayed ACK add ~40 ms
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                if self.path.rstrip("/").endswith("/models"):
                    self._send(200, {"object": "list", "data": [{"id": MODEL, "object": "model"}]})
                else:
                    self._send(404, {"error": {"message": "not found"}})

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", 0))
                raw = self.rfile.read(length)
                if server.keep_bodies:
                    with server._lock:
                        server.bodies.append(raw)
                body = orjson.loads(raw)
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    self._send(404, {"error": {"message": "not found"}})
                    return
                server.auth_headers.add(self.headers.get("authorization", ""))
                server.handle(self, body)

            def _send(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
                data = orjson.dumps(obj)
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 256

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # clients that time out or are killed leave broken pipes: expected here

        self.httpd = Server(("127.0.0.1", port), Handler)
        self.port = self.httpd.server_address[1]
        self._thread: threading.Thread | None = None
        self._stop_lock = threading.Lock()
        self._stopped = False

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def handle(self, h: Any, body: dict[str, Any]) -> None:
        text = _user_text(body)
        prompt = hashlib.sha256(text.encode()).hexdigest()[:16]
        fault = None
        with self._lock:
            if self.down:
                self.hits.append(Hit(prompt, "down", time.monotonic(), answered=False))
                fault = "down"
            else:
                n = self.served.get(prompt, 0)
                self.served[prompt] = n + 1
                m = FAULT.search(text)
                if m and n < int(m.group(2)):
                    fault = m.group(1)
                elif self.fail_mod and int(prompt, 16) % self.fail_mod == 0 and n < self.fail_times:
                    fault = "500"
                self.hits.append(Hit(prompt, fault, time.monotonic(), _images(body), sorted(body)))
                if fault is None:
                    self.answered += 1
                    if self.die_after is not None and self.answered >= self.die_after:
                        self.go_down()
        if fault == "down":
            h.close_connection = True
            h.connection.shutdown(socket.SHUT_RDWR)
            return
        seed = int(hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()[:8], 16)
        content_obj = Generator(seed).make(body["response_format"]["json_schema"]["schema"])
        if self.latency_s:
            time.sleep(self.latency_s)
        if fault == "429":
            h._send(429, {"error": {"message": "rate limited"}}, {"retry-after": str(RETRY_AFTER_S)})
            return
        if fault == "500":
            h._send(500, {"error": {"message": "internal error"}})
            return
        if fault == "drop":
            h.close_connection = True
            h.connection.shutdown(socket.SHUT_RDWR)
            return
        if fault == "timeout":
            time.sleep(TIMEOUT_SLEEP_S)
        content = orjson.dumps(content_obj).decode()
        finish = "stop"
        if fault == "malformed":
            content = "Sure! Here is the JSON: {items: [oops"
        elif fault == "truncated":
            content, finish = content[: len(content) // 2], "length"
        elif fault == "invalid":
            content = orjson.dumps(_invalid(content_obj)).decode()
        h._send(200, completion(body, text, content, finish, f"{prompt}-{seed}"))

    def go_down(self) -> None:
        """Stop listening (new connections are refused) and drop every later request on open connections."""
        self.down = True
        threading.Thread(target=self.stop, daemon=True).start()

    def answers(self) -> dict[str, int]:
        """Prompt hash -> model answers served (faults and drops excluded)."""
        out: dict[str, int] = {}
        with self._lock:
            for x in self.hits:
                if x.fault is None:
                    out[x.prompt] = out.get(x.prompt, 0) + 1
        return out

    def count(self, fault: str | None = "any") -> int:
        with self._lock:
            return len(self.hits) if fault == "any" else sum(1 for x in self.hits if x.fault == fault)

    def per_prompt(self) -> dict[str, int]:
        with self._lock:
            return dict(self.served)

    def start(self) -> ChatServer:
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._stop_lock:
            if self._stopped:
                return
            self._stopped = True
        self.httpd.shutdown()
        self.httpd.server_close()


def completion(body: dict[str, Any], text: str, content: str, finish: str, rid: str) -> dict[str, Any]:
    """A chat.completion response body (usage counts are rough: 4 characters a token)."""
    usage = {"prompt_tokens": len(text) // 4 + 10, "completion_tokens": len(content) // 4 + 1}
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    message = {"role": "assistant", "content": content}
    return {
        "id": f"chatcmpl-{rid}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", MODEL),
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": usage,
    }


async def serve_async(latency_s: float, port: int = 0) -> None:
    """The benchmark server: asyncio, keep-alive, no faults, no threads. A thread per connection (as in
    ChatServer) costs the server more CPU than the client under test at 64 connections on 2 cores."""
    gen = Generator()
    counter = 0
    models = orjson.dumps({"object": "list", "data": [{"id": MODEL, "object": "model"}]})

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal counter
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
                method = head[0].split(" ", 1)[0]
                length = 0
                for line in head[1:]:
                    name, _, value = line.partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value)
                raw = await reader.readexactly(length) if length else b""
                if method == "GET":
                    data = models
                else:
                    body = orjson.loads(raw)
                    content = orjson.dumps(
                        gen.make(body["response_format"]["json_schema"]["schema"])
                    ).decode()
                    counter += 1
                    await asyncio.sleep(latency_s)
                    data = orjson.dumps(completion(body, _user_text(body), content, "stop", str(counter)))
                head_out = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
                writer.write(head_out % len(data) + data)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


def _invalid(obj: Any) -> Any:
    """Break the answer in a way only semantic validation catches: repeated distractors, one-word text."""
    if isinstance(obj, dict):
        return {k: _invalid(v) for k, v in obj.items()}
    if isinstance(obj, list):
        if obj and all(isinstance(x, str) for x in obj):
            return [obj[0]] * len(obj)
        return [_invalid(x) for x in obj]
    if isinstance(obj, str) and len(obj.split()) > 5:
        return "short"
    return obj


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--latency", type=float, default=0.0)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument(
        "--threaded", action="store_true", help="the test server (with faults) instead of asyncio"
    )
    args = ap.parse_args()
    if args.threaded:
        srv = ChatServer(latency_s=args.latency, port=args.port)
        print(srv.port, flush=True)
        srv.httpd.serve_forever()
    else:
        asyncio.run(serve_async(args.latency, args.port))


if __name__ == "__main__":
    main()
