"""The route table's entry type: which handler answers a method and path, and what the backend
answers without valid credentials."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import unquote

from scicat_ingestor.testing.scicat.messages import Reply, _Request

if TYPE_CHECKING:
    from scicat_ingestor.testing.scicat.backend import SciCatStandIn

Handler = Callable[["SciCatStandIn", _Request], Reply]


@dataclass(frozen=True)
class _Route:
    method: str
    segments: tuple[str, ...]  # under the API base (``/api/v3`` or ``/api/v4``)
    name: str  # the stats key, e.g. ``GET /datasets`` (v4: ``GET /v4/datasets``)
    handler: Handler
    public: bool = False
    anonymous: Handler | None = None  # the answer without valid credentials (None: 403)
    login: bool = False  # the login itself: an expired bearer token is not looked at

    def match(self, method: str, segments: list[str]) -> dict[str, str] | None:
        if method != self.method or len(segments) != len(self.segments):
            return None
        params: dict[str, str] = {}
        for pattern, actual in zip(self.segments, segments, strict=True):
            if pattern.startswith("{"):
                params[pattern[1:-1]] = unquote(actual)
            elif pattern != actual:
                return None
        return params
