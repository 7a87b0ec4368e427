"""A real GELF receiver on a loopback socket, for tests and the demo (no Graylog needed).

It speaks the wire format Graylog accepts, so a passing test means Graylog would accept the same
bytes: UDP datagrams that are plain, zlib- or gzip-compressed JSON, or GELF chunks (magic ``1e 0f``,
8-byte message id, sequence number, count) that are reassembled first; TCP streams of NUL-terminated
JSON frames.
Anything it cannot decode is kept in ``errors`` instead of being dropped silently.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import socket
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

CHUNK_MAGIC = b"\x1e\x0f"
_CHUNK_HEADER = 12  # magic (2) + message id (8) + sequence (1) + count (1)
# GELF: a receiver drops a chunked message that is not complete within 5 seconds.
CHUNK_TIMEOUT = 5.0

GelfMessage = dict[str, Any]


def decode_payload(payload: bytes) -> GelfMessage:
    """One complete GELF payload (maybe compressed) → its JSON object; ValueError if not GELF."""
    if payload.startswith(b"\x1f\x8b"):
        payload = gzip.decompress(payload)
    elif payload[:1] == b"\x78":
        payload = zlib.decompress(payload)
    message = json.loads(payload.decode("utf-8"))
    if not isinstance(message, dict):
        raise ValueError(f"GELF payload is a {type(message).__name__}, not an object")
    missing = [key for key in ("version", "host", "short_message") if key not in message]
    if missing:
        raise ValueError(f"GELF message lacks {', '.join(missing)}")
    return message


@dataclass
class _Partial:
    count: int
    started: float
    parts: dict[int, bytes] = field(default_factory=dict)


class ChunkAssembler:
    """Reassembles chunked UDP datagrams; not thread-safe (one receiving thread owns it)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._partials: dict[bytes, _Partial] = {}
        self._clock = clock
        self.chunked_messages = 0

    def feed(self, datagram: bytes) -> bytes | None:
        """Return the complete payload this datagram finishes (or is), else None."""
        if not datagram.startswith(CHUNK_MAGIC):
            return datagram
        if len(datagram) < _CHUNK_HEADER:
            raise ValueError(f"GELF chunk of {len(datagram)} bytes is shorter than its header")
        self._expire()
        message_id = datagram[2:10]
        sequence, count = datagram[10], datagram[11]
        if count == 0 or sequence >= count:
            raise ValueError(f"GELF chunk {sequence} of {count} is out of range")
        partial = self._partials.setdefault(message_id, _Partial(count, self._clock()))
        partial.parts[sequence] = datagram[_CHUNK_HEADER:]
        if len(partial.parts) < partial.count:
            return None
        del self._partials[message_id]
        self.chunked_messages += 1
        return b"".join(partial.parts[i] for i in range(partial.count))

    def _expire(self) -> None:
        now = self._clock()
        for key in [k for k, p in self._partials.items() if now - p.started > CHUNK_TIMEOUT]:
            del self._partials[key]


class GelfReceiver:
    """Listens on 127.0.0.1 (UDP or TCP) and collects decoded GELF messages.

    Use as a context manager; ``port`` is the bound port to put in ``logging.graylog_port``.
    """

    def __init__(self, protocol: Literal["udp", "tcp"] = "udp", host: str = "127.0.0.1") -> None:
        self.protocol = protocol
        kind = socket.SOCK_DGRAM if protocol == "udp" else socket.SOCK_STREAM
        self._sock = socket.socket(socket.AF_INET, kind)
        self._sock.bind((host, 0))
        self._sock.settimeout(0.2)
        if protocol == "tcp":
            self._sock.listen()
        self.host = host
        self.port: int = self._sock.getsockname()[1]
        self._messages: list[GelfMessage] = []
        self.errors: list[str] = []
        self.compressed_messages = 0
        self._assembler = ChunkAssembler()
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def chunked_messages(self) -> int:
        return self._assembler.chunked_messages

    def start(self) -> GelfReceiver:
        target = self._serve_udp if self.protocol == "udp" else self._serve_tcp
        self._spawn(target)
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        self._sock.close()

    def __enter__(self) -> GelfReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def messages(self) -> list[GelfMessage]:
        with self._cond:
            return list(self._messages)

    def wait_for(
        self, predicate: Callable[[GelfMessage], bool], timeout: float = 10.0
    ) -> GelfMessage:
        """The first received message matching ``predicate``; TimeoutError naming what arrived."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for message in self._messages:
                    if predicate(message):
                        return message
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    shorts = [m.get("short_message", "")[:80] for m in self._messages]
                    raise TimeoutError(
                        f"no matching GELF message within {timeout} s; received {shorts}, "
                        f"errors {self.errors}"
                    )
                self._cond.wait(remaining)

    def _spawn(self, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name="gelf-receiver", daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept(self, payload: bytes) -> None:
        try:
            message = decode_payload(payload)
        except (ValueError, OSError, zlib.error, UnicodeDecodeError) as exc:
            with self._cond:
                self.errors.append(f"{type(exc).__name__}: {exc}")
            return
        with self._cond:
            if payload[:1] in (b"\x1f", b"\x78"):
                self.compressed_messages += 1
            self._messages.append(message)
            self._cond.notify_all()

    def _serve_udp(self) -> None:
        while not self._stop.is_set():
            try:
                datagram = self._sock.recv(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                payload = self._assembler.feed(datagram)
            except ValueError as exc:
                with self._cond:
                    self.errors.append(str(exc))
                continue
            if payload is not None:
                self._accept(payload)

    def _serve_tcp(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._spawn(self._read_frames, conn)

    def _read_frames(self, conn: socket.socket) -> None:
        conn.settimeout(0.2)
        buffer = b""
        with contextlib.closing(conn):
            while not self._stop.is_set():
                try:
                    data = conn.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if not data:
                    return
                buffer += data
                *frames, buffer = buffer.split(b"\x00")
                for frame in frames:
                    if frame:
                        self._accept(frame)
