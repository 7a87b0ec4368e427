"""The route table's entry type: which handler answers a method and path, and what the backend
answers without valid credentials; and :class:`StandIn`, the stand-in as the handlers outside
``backend`` (``v4``) see it, so they need not import ``backend`` (which imports them)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import unquote

from scicat_ingestor.testing.scicat.accounts import Account
from scicat_ingestor.testing.scicat.messages import JSONDict, Reply, _Request


class StandIn(Protocol):
    """The store a handler reads and writes (the stand-in itself, :class:`SciCatStandIn`)."""

    _lock: threading.Lock  # guards everything below
    _datasets: dict[str, JSONDict]
    _origdatablocks: list[JSONDict]
    _attachments: dict[str, JSONDict]
    _jobs: dict[str, JSONDict]

    def _account(self, user: str) -> Account: ...

    def _validated(self, request: _Request, dto_name: str) -> JSONDict | Reply: ...

    def _scan_datasets(
        self, request: _Request, view: Callable[[JSONDict], JSONDict] | None = None
    ) -> list[JSONDict]: ...

    def _store_dataset(
        self, request: _Request, dataset: JSONDict, view: Callable[[JSONDict], JSONDict]
    ) -> Reply: ...

    def _store_block(self, request: _Request, block: JSONDict, *, owner_only: bool) -> Reply: ...

    def _store_attachment(self, request: _Request, attachment: JSONDict, aid: str) -> JSONDict: ...


# The first argument is the stand-in: backend's unbound methods take the concrete class, v4's
# functions the StandIn protocol; no one type is a subtype of both, hence Any.
Handler = Callable[[Any, _Request], Reply]


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
