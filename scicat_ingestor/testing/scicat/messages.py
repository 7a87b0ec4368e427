"""The stand-in's request and reply types and the small helpers every part shares (paths, times,
error bodies)."""

from __future__ import annotations

import http
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

BASE_PATH = "/api/v3"
V4_BASE_PATH = "/api/v4"  # backend 5 only
CONTROL_PATH = "/_standin"

JSONDict = dict[str, Any]


def _now() -> str:
    return _iso(datetime.now(UTC))


def _iso(moment: datetime) -> str:
    """The backend (MongoDB dates) answers every timestamp as UTC with milliseconds and ``Z``."""
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def _utc(value: object) -> object:
    """Normalise a valid date string like the backend; naive times are the server's local time."""
    if not isinstance(value, str):
        return value
    return _iso(datetime.fromisoformat(value))


def _error(status: int, message: object) -> JSONDict:
    """The body NestJS' built-in HTTP exceptions produce."""
    return {"statusCode": status, "message": message, "error": http.HTTPStatus(status).phrase}


def _internal_error() -> str:
    """The body the backend answers an unmapped error with (a duplicate key, a mongoose
    validation, a too large body): a bare JSON string."""
    return "Internal server error"


def _normalise_api_path(path: str) -> str:
    """``/api/v3/datasets`` → ``datasets``, so fault rules may name paths either way."""
    if path.startswith(BASE_PATH):
        path = path[len(BASE_PATH) :]
    return path.lstrip("/")


class Reply:
    """A response. The payload is JSON-encoded at once, i.e. while the store's lock is held, so
    handlers can answer stored documents without copying them (``None`` is an empty body)."""

    __slots__ = ("body", "status")

    def __init__(self, status: int, payload: object = None) -> None:
        self.status = status
        self.body = b"" if payload is None else json.dumps(payload).encode()


@dataclass
class _Request:
    method: str
    path: str  # raw (still percent-encoded) path
    query: str  # raw query string
    body: bytes
    authorization: str | None
    content_type: str = ""
    params: dict[str, str] = field(default_factory=dict)
    user: str = ""

    def filter(self) -> str | None:
        values = parse_qs(self.query).get("filter")
        return values[0] if values else None
