"""Loopback HTTP servers for tests: a backend or proxy that misbehaves on purpose, served per
test, and a clean proxy environment."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


class EchoHandler(BaseHTTPRequestHandler):
    """A misbehaving backend/proxy that quotes the request's credentials in its error."""

    def do_GET(self) -> None:
        self._echo()

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self._echo(self.rfile.read(length).decode())

    def _echo(self, body: str = "") -> None:
        text = f"bad request; you sent {self.headers.get('Authorization')} {body} " + "x" * 490
        self._reply(400, {"statusCode": 400, "message": text})

    def _reply(self, status: int, answer: dict[str, Any]) -> None:
        payload = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[int]:
    """A loopback HTTP server with ``handler`` for one test: yields its port."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


class ProxyHandler(EchoHandler):
    """An HTTP proxy stand-in: records the absolute request target, answers a JSON object."""

    seen: list[str] = []

    def do_GET(self) -> None:
        self.seen.append(self.path)
        self._reply(200, {"via": "proxy"})


def clear_proxy_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
