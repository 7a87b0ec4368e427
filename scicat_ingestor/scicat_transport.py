"""The HTTP transport under the SciCat client: requests' adapter, its waits without the turn.

A worker holds its turn (``turns.TURNS``) for a whole ingest; these connections give it away
while they wait on the network: connecting (TCP, TLS), waiting for SciCat's answer, and sleeping
between urllib3's retries. Everything else (building the request, parsing the answer) runs in
the turn, as any other Python does. Threads without a turn (the health checker, the HTTP-only
bench) are unaffected.
"""

from __future__ import annotations

from typing import Any

from requests.adapters import HTTPAdapter
from urllib3 import poolmanager
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.response import BaseHTTPResponse
from urllib3.util.retry import Retry
from urllib3.util.wait import wait_for_read

from scicat_ingestor.turns import TURNS


class _WaitsWithoutTurn:
    """Mixed into urllib3's connections: the blocking parts run with the turn given away."""

    sock: Any
    timeout: Any

    def connect(self) -> None:
        with TURNS.paused():
            super().connect()  # type: ignore[misc]

    def getresponse(self) -> Any:
        """Wait until the answer starts to arrive, then parse it in the turn.

        The wait keeps urllib3's read timeout: a silent server raises the same ``TimeoutError``
        the socket would have. Data TLS has already decrypted (``pending``) needs no wait.
        """
        sock = self.sock
        pending = getattr(sock, "pending", None)
        if TURNS.held() and sock is not None and not (pending is not None and pending()):
            timeout = self.timeout if isinstance(self.timeout, int | float) else None
            with TURNS.paused():
                ready = wait_for_read(sock, timeout=timeout)
            if not ready:
                raise TimeoutError("timed out")
        return super().getresponse()  # type: ignore[misc]


class _Connection(_WaitsWithoutTurn, HTTPConnection):
    pass


class _TLSConnection(_WaitsWithoutTurn, HTTPSConnection):
    pass


class _Pool(HTTPConnectionPool):
    ConnectionCls = _Connection


class _TLSPool(HTTPSConnectionPool):
    ConnectionCls = _TLSConnection


_POOLS = {"http": _Pool, "https": _TLSPool}


def _with_our_pools(manager: Any) -> Any:
    """Our pools in a pool or proxy manager that uses urllib3's own (not SOCKS)."""
    if manager.pool_classes_by_scheme is poolmanager.pool_classes_by_scheme:
        manager.pool_classes_by_scheme = _POOLS
    return manager


class Adapter(HTTPAdapter):
    """requests' adapter with the connections above, direct and through a proxy."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        _with_our_pools(self.poolmanager)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        return _with_our_pools(super().proxy_manager_for(proxy, **proxy_kwargs))


class PausingRetry(Retry):
    """urllib3's retry policy, its back-off slept with the turn given away."""

    def sleep(self, response: BaseHTTPResponse | None = None) -> None:
        with TURNS.paused():
            super().sleep(response)
