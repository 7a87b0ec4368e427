"""The HTTP transport under the SciCat client: per-thread sessions, retries, waits without the turn.

The daemon shares one client between its worker threads. ``requests`` does not promise that a
``Session`` is thread-safe (psf/requests#2766: cookie jar and adapter state are shared mutable
objects), so each thread gets its own sessions from a ``threading.local``. That needs no locking on
the hot path and every worker keeps its own keep-alive connection to SciCat.

Retries live on the urllib3 adapter (exponential backoff with jitter on connection errors, timeouts,
429 and 5xx). A request that SciCat may already have carried out before the answer was lost is only
retried where a repeat is harmless (policy ``idempotent``: GETs, the login, a dataset POST that
carries its own pid). Other POSTs (``unsafe``) are retried only when the request surely was not
processed: the connection failed, or SciCat answered 429/502/503/504. One exception: a request sent
on a keep-alive connection the server closed while it was idle (the real backend closes them after
5 s) fails before any answer, so it is repeated once at once on a fresh connection, POSTs included.

A worker holds its turn (``turns.TURNS``) for a whole ingest; these connections give it away while
they wait on the network: connecting (TCP, TLS), waiting for SciCat's answer, and sleeping between
urllib3's retries. Everything else (building the request, parsing the answer) runs in the turn.
"""

from __future__ import annotations

import http.client
import logging
import os
import re
import socket
import ssl
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3 import poolmanager
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import NameResolutionError
from urllib3.response import BaseHTTPResponse
from urllib3.util.retry import Retry
from urllib3.util.wait import wait_for_read

from scicat_ingestor.config.model import SciCatOptions
from scicat_ingestor.ops.metrics import SCICAT_REQUEST_SECONDS, SCICAT_REQUESTS
from scicat_ingestor.ops.turns import TURNS
from scicat_ingestor.scicat.errors import UNAVAILABLE_STATUSES, SciCatRejected, SciCatUnavailable

logger = logging.getLogger("scicat_ingestor.scicat")

# Answers that prove the request was not carried out, so even a non-idempotent POST may repeat.
NOT_PROCESSED_STATUSES = frozenset({429, 502, 503, 504})

# How a request may be retried (see the module docstring); one session per policy and thread.
Policy = Literal["idempotent", "unsafe", "none"]


@dataclass(frozen=True)
class Request:
    """One logical request: what to send and how it may be retried (``label``: the route
    template for metrics, e.g. ``datasets/{pid}``: a bounded set, never a pid)."""

    method: str
    url: str
    endpoint: str  # the URL relative to the API, without the query (named in errors)
    label: str
    policy: Policy
    params: Mapping[str, str] | None = None
    body: Mapping[str, Any] | None = None
    version: int = 3  # the API version of the route (permission reasons differ)
    pid: str = ""  # the dataset it is about, if any (named in permission reasons)


class Transport:
    """Sends one request (transport retries included); knows nothing of tokens or SciCat."""

    def __init__(self, options: SciCatOptions) -> None:
        self._options = options
        self._timeout = options.effective_timeout
        self._local = threading.local()
        # (scheme, host) → requests' environment settings; a race only computes one twice
        self._environments: dict[tuple[str, str], dict[str, Any]] = {}
        self._sessions: list[requests.Session] = []
        self._sessions_lock = threading.Lock()

    def send(self, request: Request, token: str) -> requests.Response:
        """Send once; a connection the server closed before answering is retried once at once."""
        headers = dict(self._options.additional_headers)
        if token:
            headers["Authorization"] = f"Bearer {token}"
        try:
            return self._send_once(request, headers)
        except requests.ConnectionError as err:
            if not _closed_before_answer(err):
                raise self._unavailable(request, err) from err
            logger.debug(
                "SciCat closed an idle connection: repeating %s %s",
                request.method,
                request.endpoint,
            )
        try:
            return self._send_once(request, headers)
        except requests.RequestException as err:
            raise self._unavailable(request, err) from err

    def close(self) -> None:
        """Close every thread's sessions (their pooled connections)."""
        with self._sessions_lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.close()
        self._local = threading.local()

    def _unavailable(self, request: Request, err: requests.RequestException) -> SciCatUnavailable:
        reason = transport_error_text(err, request.url, self._timeout)
        return SciCatUnavailable(request.method, request.endpoint, None, reason)

    def _send_once(self, request: Request, headers: Mapping[str, str]) -> requests.Response:
        """One request through this thread's session; ConnectionErrors are left to ``send``."""
        method, url = request.method, request.url
        started = time.perf_counter()
        status = "error"
        try:
            session = self._session(request.policy)
            response = session.send(
                _prepared(session, request, headers),
                timeout=self._timeout,
                allow_redirects=True,
                **self._environment(url),
            )
            status = str(response.status_code)
            return response
        except requests.exceptions.InvalidURL as err:
            raise SciCatRejected(method, request.endpoint, None, str(err)) from err
        except requests.ConnectionError:
            raise
        except requests.RequestException as err:
            raise self._unavailable(request, err) from err
        finally:
            elapsed = time.perf_counter() - started
            SCICAT_REQUEST_SECONDS.labels(request.label, status).observe(elapsed)
            SCICAT_REQUESTS.labels(request.method, request.label, status).inc()

    def _environment(self, url: str) -> dict[str, Any]:
        """``proxies`` and ``verify`` for ``url`` as requests takes them from the environment
        (``HTTP(S)_PROXY``, ``NO_PROXY``, ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE``), looked up
        once per host instead of per request (sessions have ``trust_env`` off): that look-up
        read the whole environment twice per request, a quarter of the client's CPU time.
        A ``~/.netrc`` is not consulted (it would replace the token's Authorization header)."""
        parts = urlsplit(url)
        key = (parts.scheme, parts.netloc)
        found: dict[str, Any] | None = self._environments.get(key)
        if found is None:
            verify: bool | str = self._options.verify
            if verify is True:
                verify = (
                    os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
                )
            proxies = requests.utils.get_environ_proxies(url)
            found = self._environments[key] = {"proxies": proxies, "verify": verify}
        return found

    def _session(self, policy: Policy) -> requests.Session:
        """This thread's session for ``policy`` (created on first use)."""
        sessions: dict[str, requests.Session] | None = getattr(self._local, "sessions", None)
        if sessions is None:
            sessions = self._local.sessions = {}
        session = sessions.get(policy)
        if session is None:
            session = requests.Session()
            session.trust_env = False  # the environment is read once, by ``_environment``
            adapter = Adapter(max_retries=self._retry(policy))
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            sessions[policy] = session
            with self._sessions_lock:
                self._sessions.append(session)
        return session

    def _retry(self, policy: Policy) -> PausingRetry:
        """The urllib3 retry policy; Retry-After is not obeyed so no worker sleeps for hours."""
        if policy == "none":
            return PausingRetry(total=0, redirect=False, raise_on_status=False)
        retries = self._options.max_retries
        return PausingRetry(
            total=retries,
            connect=retries,
            read=retries if policy == "idempotent" else 0,
            status=retries,
            other=0,
            redirect=False,
            allowed_methods=frozenset({"GET", "HEAD", "POST"}),
            status_forcelist=(
                UNAVAILABLE_STATUSES if policy == "idempotent" else NOT_PROCESSED_STATUSES
            ),
            backoff_factor=self._options.backoff_factor,
            backoff_jitter=self._options.backoff_factor,
            raise_on_status=False,
            respect_retry_after_header=False,
        )


def _prepared(
    session: requests.Session, request: Request, headers: Mapping[str, str]
) -> requests.PreparedRequest:
    """``request`` prepared as ``Session.request`` would, without its per-call merging.

    ``Session.request`` merges the session's settings (headers, params, auth, hooks, two fresh
    cookie jars) into every request: ≈ 90 µs of the ≈ 470 µs CPU one request costs (bench,
    loopback), though our sessions carry nothing but their default headers and, at most, cookies
    a proxy set. Those two are passed on here; everything else ``Request.prepare`` does (URL
    quoting, params, JSON body) is unchanged.
    """
    merged = requests.structures.CaseInsensitiveDict(session.headers)
    merged.update(headers)
    return requests.Request(
        request.method,
        request.url,
        headers=merged,
        params=request.params,
        json=request.body,
        cookies=session.cookies if len(session.cookies) else None,
    ).prepare()


def _causes(err: BaseException) -> list[BaseException]:
    """``err`` and every exception linked to it (args, ``reason``, cause, context), once each."""
    todo: list[BaseException] = [err]
    seen: dict[int, BaseException] = {}
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen[id(current)] = current
        linked = [*current.args, getattr(current, "reason", None)]
        linked += [current.__cause__, current.__context__]
        todo.extend(e for e in linked if isinstance(e, BaseException))
    return list(seen.values())


def _closed_before_answer(err: BaseException) -> bool:
    """Whether the server closed the connection before answering (``RemoteDisconnected`` or a
    reset on a reused keep-alive connection): the request was not processed, so it may repeat."""
    closed = http.client.RemoteDisconnected | ConnectionResetError
    return any(isinstance(e, closed) for e in _causes(err))


def transport_error_text(err: requests.RequestException, url: str, timeout: float) -> str:
    """A short reason for a failure without an HTTP answer (DNS, refused, timeout, TLS) naming
    the host, in words an operator acts on rather than urllib3's pool and connection objects."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    where = f"{host}:{parts.port or (443 if parts.scheme == 'https' else 80)}"
    text = " ".join(str(err).split())
    causes = _causes(err)
    if any(isinstance(e, NameResolutionError | socket.gaierror) for e in causes):
        return f"cannot resolve host {host} (DNS)"
    if any(isinstance(e, ConnectionRefusedError) for e in causes) or "Connection refused" in text:
        return f"connection refused by {where} (nothing listens there)"
    if isinstance(err, requests.ConnectTimeout):
        return f"timed out: no connection to {where} within {timeout:g} s (scicat.timeout)"
    if isinstance(err, requests.Timeout) or "timed out" in text:
        return f"timed out: {where} gave no answer within {timeout:g} s (scicat.timeout)"
    for cause in causes:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return (
                f"TLS certificate of {where} not trusted: {_ssl_reason(cause)} (a private CA: "
                "REQUESTS_CA_BUNDLE=its file)"
            )
    for cause in causes:
        if isinstance(cause, ssl.SSLError):
            hint = " (is it plain http?)" if cause.reason == "WRONG_VERSION_NUMBER" else ""
            return f"TLS handshake with {where} failed: {_ssl_reason(cause)}{hint}"
    return text[:300]


def _ssl_reason(err: ssl.SSLError) -> str:
    """OpenSSL's words without the ``[SSL: CODE]`` prefix and the ``(_ssl.c:NNN)`` suffix."""
    verify = getattr(err, "verify_message", None)
    if verify:
        return str(verify).rstrip(".")
    text = str(err.args[1]) if len(err.args) > 1 else str(err)
    text = re.sub(r"^\[[^]]*\]\s*", "", text)
    text = re.sub(r"\s*\(_ssl\.c:\d+\)$", "", text)
    return text or str(err.reason or "").lower().replace("_", " ")


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
