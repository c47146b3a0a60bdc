"""A real chat-completions server on loopback that grades like a judge: 10 when the model answer equals the
reference (case-insensitive), 4 when one contains the other, else 0; `[[garbage]]` in an answer gets text
that is not a rating; answers listed in `fail_500` get HTTP 500 (a server that does not answer them). Every
request is counted so tests can prove a rerun asks nothing twice."""

from __future__ import annotations

import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson

MODEL = "loopback-judge"


class JudgeServer:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.fail_500: set[str] = set()
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, obj: Any) -> None:
                data = orjson.dumps(obj)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._send({"object": "list", "data": [{"id": MODEL, "object": "model"}]})

            def do_POST(self) -> None:
                body = orjson.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with outer._lock:
                    outer.requests.append(body)
                user = next(m["content"] for m in body["messages"] if m["role"] == "user")
                gt = re.search(r"^Reference answer: (.*)$", user, re.M).group(1).strip().lower()
                ans = re.search(r"^Model answer: (.*)$", user, re.M).group(1).strip().lower()
                if ans in outer.fail_500:
                    data = orjson.dumps({"error": {"message": "internal error"}})
                    self.send_response(500)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                score = 10 if ans == gt else 4 if (ans and (ans in gt or gt in ans)) else 0
                text = "I refuse" if "[[garbage]]" in ans else orjson.dumps({"score": score}).decode()
                self._send(
                    {
                        "id": "x",
                        "object": "chat.completion",
                        "model": MODEL,
                        "choices": [
                            {
                                "index": 0,
                                "finish_reason": "stop",
                                "message": {"role": "assistant", "content": text},
                            }
                        ],
                        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
                    }
                )

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> JudgeServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
