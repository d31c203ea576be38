"""Ollama's HTTP surface, shared by the llama.cpp server (`evals.server`) and the test emulator.

Both speak the same wire format to the real `ollama` client: JSON bodies,
`{"error": ...}` with Ollama's status codes, NDJSON streams of one object a line
with no blank lines (the client parses every line), an error inside a started
stream as one more line. What differs is only what answers a request, so each
subclass of `OllamaHttp` implements `route()`.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class OllamaError(Exception):
    """An error Ollama answers with `{"error": message}` and this status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def now() -> str:
    """A timestamp as Ollama writes `created_at` (RFC 3339 with microseconds)."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def parse_body(raw: bytes) -> dict[str, Any]:
    """A request body as Ollama reads it, with its 400s."""
    if not raw:
        raise OllamaError(400, "missing request body")
    try:
        body = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise OllamaError(400, str(exc)) from None
    if not isinstance(body, dict):
        raise OllamaError(400, "json: cannot unmarshal into Go value of type api.ChatRequest")
    return body


class Exchange(BaseHTTPRequestHandler):
    """One request and its answer."""

    protocol_version = "HTTP/1.1"
    app: OllamaHttp
    streaming = False

    def log_message(self, fmt: str, *args: Any) -> None:
        if self.app.log:
            super().log_message(fmt, *args)

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            self.app.route(self, method, self.path.split("?", 1)[0], raw)
        except OllamaError as exc:
            if self.streaming:  # the status is already 200: Ollama sends the error as one more line
                self.line({"error": exc.message})
            else:
                self.send_json({"error": exc.message}, exc.status)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout)
            pass

    def send_body(self, body: bytes, content_type: str, status: int = 200) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_json(self, payload: Any, status: int = 200) -> None:
        self.send_body(json.dumps(payload).encode(), "application/json; charset=utf-8", status)

    def send_text(self, text: str, status: int = 200) -> None:
        self.send_body(text.encode(), "text/plain; charset=utf-8", status)

    def start_stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        self.streaming = True

    def line(self, payload: dict[str, Any]) -> None:
        self.wfile.write(json.dumps(payload).encode() + b"\n")
        self.wfile.flush()


class OllamaHttp:
    """A threaded HTTP server on loopback whose requests go to `route()`."""

    name = "ollama"

    def __init__(self, host: str = "127.0.0.1", port: int = 0, log: bool = False) -> None:
        self.log = log
        handler = type(f"{type(self).__name__}Exchange", (Exchange,), {"app": self, "server_version": self.name})
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    def route(self, exchange: Exchange, method: str, path: str, raw: bytes) -> None:
        raise NotImplementedError

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> Any:
        self._thread = threading.Thread(target=self._server.serve_forever, name=self.name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening: a client now gets a refused connection, as with Ollama not running."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread = None
        self._server.server_close()

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
