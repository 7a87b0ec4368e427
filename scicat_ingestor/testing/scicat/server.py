"""HTTP plumbing: keep-alive, ``TCP_NODELAY``, each response written with one ``sendall``, idle
connections closed, no per-request logging (the benchmark measures through it).

The server knows nothing of SciCat: it is given a :data:`Handle` (a parsed request in, a reply
or ``None`` for "drop it unanswered" out) and the :class:`Connections` it reports to."""

from __future__ import annotations

import contextlib
import http
import logging
import socket
import socketserver
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast
from urllib.parse import urlsplit

from scicat_ingestor.testing.scicat.messages import (
    CONTROL_PATH,
    Reply,
    _error,
    _internal_error,
    _Request,
)

logger = logging.getLogger("scicat_ingestor.testing.scicat")

MAX_BODY_BYTES = 16 * 1024 * 1024  # the real backend's body-parser limit ("16mb")

Handle = Callable[[_Request], Reply | None]
"""Answers one request; ``None`` drops it unanswered (the connection is closed)."""


class Connections:
    """The open connections of one stand-in, across the listeners it closes and opens again
    (an outage that refuses connections), so they can be cut and counted. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._none_open = threading.Condition(self._lock)
        self._open: set[socket.socket] = set()
        self.accepted = 0  # connections accepted so far
        self.idle_closed = 0  # requests answered by closing an idle connection

    def opened(self, conn: socket.socket) -> None:
        with self._lock:
            self.accepted += 1
            self._open.add(conn)

    def closed(self, conn: socket.socket) -> None:
        with self._none_open:
            self._open.discard(conn)
            self._none_open.notify_all()

    def closed_idle(self) -> None:
        with self._lock:
            self.idle_closed += 1

    def cut(self, wait: float = 2.0) -> None:
        """Shut down open connections so their handler threads end (clients see a reset/EOF)."""
        with self._lock:
            open_now = list(self._open)
        for conn in open_now:
            with contextlib.suppress(OSError):  # already closed by the peer
                conn.shutdown(socket.SHUT_RDWR)
        with self._none_open:
            self._none_open.wait_for(lambda: not self._open, timeout=wait)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        handle: Handle,
        connections: Connections,
        idle_timeout: float | None,
    ) -> None:
        self.answer = handle
        self.connections = connections
        self.idle_timeout = idle_timeout  # seconds a keep-alive connection may idle; None: ever
        super().__init__(address, _RequestHandler)

    def server_bind(self) -> None:
        """Bind without HTTPServer's reverse-DNS lookup (``getfqdn``), which can take seconds."""
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), self.server_address[1]

    def get_request(self) -> tuple[socket.socket, Any]:
        conn, address = super().get_request()
        # Without this, keep-alive clients stall ~40 ms per request (Nagle vs delayed ACK).
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn, address

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        conn = cast(socket.socket, request)
        self.connections.opened(conn)
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.connections.closed(conn)

    def handle_error(self, request: Any, client_address: Any) -> None:
        logger.debug("SciCat stand-in: connection from %s failed", client_address, exc_info=True)


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    _last_answer: float | None = None  # monotonic time this connection last answered

    def log_message(self, format: str, *args: Any) -> None:
        """No per-request logging: it costs time the benchmark would measure."""

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        refusal = None
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            refusal = Reply(411, _error(411, "the stand-in needs a Content-Length"))
        elif length > MAX_BODY_BYTES:
            # body-parser's PayloadTooLargeError is no HttpException: NestJS answers 500.
            refusal = Reply(500, _internal_error())
        if refusal is not None:  # the body stays unread: this connection cannot go on
            self.close_connection = True
            self._send(refusal)
            return
        body = self.rfile.read(length) if length else b""
        server = cast(_Server, self.server)
        idle = server.idle_timeout
        last = self._last_answer
        control = self.path.startswith(CONTROL_PATH + "/")  # test plumbing, not the backend
        if last is not None and idle is not None and not control and time.monotonic() - last > idle:
            # The server closed this idle connection as the request came in: the client sees it
            # closed before any answer (the race a real keep-alive timeout produces, made sure).
            server.connections.closed_idle()
            self.close_connection = True
            return
        parts = urlsplit(self.path)
        request = _Request(
            self.command,
            parts.path,
            parts.query,
            body,
            self.headers.get("Authorization"),
            self.headers.get("Content-Type") or "",
        )
        try:
            reply = server.answer(request)
        except Exception:
            logger.exception("SciCat stand-in failed on %s %s", self.command, parts.path)
            reply = Reply(500, {"statusCode": 500, "message": "Internal server error"})
        if reply is None:
            self.close_connection = True
            return
        self._send(reply)

    def _send(self, reply: Reply) -> None:
        """Status line, headers and body in one buffer, written with one ``sendall``."""
        body = reply.body
        phrase = http.HTTPStatus(reply.status).phrase
        head = [
            f"HTTP/1.1 {reply.status} {phrase}",
            "Content-Type: application/json; charset=utf-8",
            f"Content-Length: {len(body)}",
        ]
        idle = cast(_Server, self.server).idle_timeout
        if self.close_connection:
            head.append("Connection: close")
        elif idle is not None:
            head.append(f"Keep-Alive: timeout={idle:g}")
        self.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        self._last_answer = time.monotonic()
