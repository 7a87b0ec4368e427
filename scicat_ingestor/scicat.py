"""SciCat REST (v3) client: sessions, timeouts, retries, token or login, typed errors.

The daemon shares one client between its worker threads. ``requests`` does not promise that a
``Session`` is thread-safe (psf/requests#2766: cookie jar and adapter state are shared mutable
objects), so each thread gets its own sessions from a ``threading.local``. That needs no locking on
the hot path and every worker keeps its own keep-alive connection to SciCat; only the login token is
shared, under a lock.

Retries live on the urllib3 adapter (exponential backoff with jitter on connection errors, timeouts,
429 and 5xx). A request that SciCat may already have carried out before the answer was lost is only
retried where a repeat is harmless: GETs, the login, and a dataset POST that carries its own pid (a
repeat answers 409, which the pipeline reads as "exists"). Other POSTs (an origdatablock, a dataset
whose pid SciCat assigns) are retried only when the request surely was not processed: the connection
failed, or SciCat answered 429/502/503/504.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal
from urllib.parse import quote, urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from scicat_ingestor.config import ConfigError, SciCatOptions
from scicat_ingestor.ops.metrics import SCICAT_REQUEST_SECONDS
from scicat_ingestor.redact import Redactor

logger = logging.getLogger("scicat_ingestor.scicat")

# Answers that mean "SciCat cannot serve this now": retried, then reported as unavailable.
_UNAVAILABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
# Answers that prove the request was not carried out, so even a non-idempotent POST may repeat.
_NOT_PROCESSED_STATUSES = frozenset({429, 502, 503, 504})
_ENDPOINT_NAMES = ("datasets", "proposals", "origdatablocks", "instruments", "samples")

# How a request may be retried (see the module docstring); one session per policy and thread.
Policy = Literal["idempotent", "unsafe", "none"]


class SciCatError(Exception):
    """A SciCat request failed; ``str()`` is one line naming the method, endpoint and answer."""

    def __init__(self, method: str, endpoint: str, status: int | None, message: str) -> None:
        self.method = method
        self.endpoint = endpoint
        self.status = status
        self.message = message
        answer = str(status) if status is not None else "no answer"
        super().__init__(f"SciCat {method} {endpoint} → {answer}: {message}")


class SciCatUnavailable(SciCatError):  # noqa: N818 - name agreed with the other modules
    """SciCat unreachable, too slow or failing (5xx/429) even after retries: try later."""


class SciCatRejected(SciCatError):  # noqa: N818 - name agreed with the other modules
    """SciCat refused the request (4xx): repeating the same request cannot succeed."""


class SciCatConflict(SciCatRejected):
    """409: the object (a dataset with this pid) already exists."""


def _error_text(response: requests.Response, redact: Callable[[str], str]) -> str:
    """SciCat's own error text (NestJS ``message`` / ``error``) on one line, else the raw body.

    ``redact`` runs before the text is cut, so no part of a secret survives the cut.
    """
    try:
        body = response.json()
    except ValueError:
        body = None
    text = _message_text(body.get("message") or body.get("error")) if isinstance(body, dict) else ""
    text = " ".join(redact(text or response.text).split())[:500]
    return text or response.reason or "(empty answer)"


def _message_text(message: Any) -> str:
    """Flatten NestJS validation messages: a list of texts, or of class-validator errors
    (``{"property", "constraints", "children"}``, sometimes JSON-encoded in a string)."""
    if isinstance(message, str) and message.startswith("[{"):
        try:
            message = json.loads(message)
        except ValueError:
            return str(message)
    if isinstance(message, list):
        return "; ".join(filter(None, (_message_text(m) for m in message)))
    if isinstance(message, dict) and ("constraints" in message or "children" in message):
        texts = [str(t) for t in (message.get("constraints") or {}).values()]
        texts += [_message_text(c) for c in message.get("children") or []]
        return "; ".join(filter(None, texts))
    return "" if message is None else str(message)


class SciCatClient:
    """Talks to one SciCat backend; safe to share between threads."""

    def __init__(self, options: SciCatOptions) -> None:
        if not _is_absolute(options.host):
            raise ConfigError(f"scicat.host: must be an http(s):// URL, found {options.host!r}")
        self._options = options
        self._base = options.host.rstrip("/") + "/"
        self._timeout = options.effective_timeout
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._sessions_lock = threading.Lock()
        self._token_lock = threading.Lock()
        self._token = options.token.value
        self._can_login = not options.token and bool(options.username)
        self._password = options.password.value

    # ----------------------------------------------------------------------------------------
    # Public API
    # ----------------------------------------------------------------------------------------

    def get_json(self, url: str) -> Any:
        """GET a schema ``SC`` variable's URL: relative to the host (endpoint names mapped)."""
        full = self._resolve(url)
        return self._call("GET", full, self._label_for(full), "idempotent")

    def get_dataset(self, pid: str) -> dict[str, Any] | None:
        """The dataset with this pid, or None when SciCat answers 404."""
        url = self._endpoint_url("datasets") + "/" + quote(pid, safe="")
        try:
            found = self._call("GET", url, "datasets/{pid}", "idempotent")
        except SciCatRejected as err:
            if err.status == 404:
                return None
            raise
        return self._object(found, "GET", url)

    def find_datasets(self, where: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Datasets matching a loopback ``where`` filter (an empty list when none)."""
        url = self._endpoint_url("datasets")
        params = {"filter": json.dumps({"where": dict(where)})}
        found = self._call("GET", url, "datasets", "idempotent", params=params)
        return self._array(found, "GET", url)

    def create_dataset(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """POST a dataset; raises ``SciCatConflict`` when its pid already exists."""
        url = self._endpoint_url("datasets")
        policy: Policy = "idempotent" if payload.get("pid") else "unsafe"
        created = self._call("POST", url, "datasets", policy, body=payload)
        return self._object(created, "POST", url)

    def create_origdatablock(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """POST an origdatablock (``CreateOrigDatablockDto``, with ``datasetId``)."""
        url = self._endpoint_url("origdatablocks")
        created = self._call("POST", url, "origdatablocks", "unsafe", body=payload)
        return self._object(created, "POST", url)

    def origdatablocks_of(self, pid: str) -> list[dict[str, Any]]:
        """The origdatablocks of one dataset (``GET datasets/{pid}/origdatablocks``)."""
        url = self._endpoint_url("datasets") + "/" + quote(pid, safe="") + "/origdatablocks"
        found = self._call("GET", url, "datasets/{pid}/origdatablocks", "idempotent")
        return self._array(found, "GET", url)

    # ---- attachments (dataset thumbnails) ------------------------------------------------

    def attachments_of(self, pid: str) -> list[dict[str, Any]]:
        """The attachments of one dataset (``GET datasets/{pid}/attachments``)."""
        url = self._attachments_url(pid)
        found = self._call("GET", url, "datasets/{pid}/attachments", "idempotent")
        return self._array(found, "GET", url)

    def create_attachment(self, pid: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        """POST a ``CreateAttachmentV3Dto``; raises ``SciCatConflict`` when its id exists.

        Retried only when SciCat surely did nothing: the real backend may not honour the id.
        """
        url = self._attachments_url(pid)
        created = self._call("POST", url, "datasets/{pid}/attachments", "unsafe", body=payload)
        return self._object(created, "POST", url)

    def _attachments_url(self, pid: str) -> str:
        return self._endpoint_url("datasets") + "/" + quote(pid, safe="") + "/attachments"

    # ---------------------------------------------------------------------------------------

    def healthy(self) -> bool:
        """True when SciCat's health endpoint answers 2xx (no credentials, no retries)."""
        endpoint = self._options.health_endpoint
        url = endpoint if _is_absolute(endpoint) else self._base + endpoint.lstrip("/")
        try:
            self._call("GET", url, "health", "none", auth=False)
        except SciCatError as err:
            logger.warning("SciCat health check failed: %s", err)
            return False
        return True

    def close(self) -> None:
        """Close every thread's sessions (their pooled connections)."""
        with self._sessions_lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.close()
        self._local = threading.local()

    # ----------------------------------------------------------------------------------------
    # URLs
    # ----------------------------------------------------------------------------------------

    def _endpoint_url(self, name: str) -> str:
        """URL of a configured API endpoint; a leading '/' does not drop the API prefix."""
        endpoint: str = getattr(self._options.api_endpoints, name)
        if _is_absolute(endpoint):
            return endpoint.rstrip("/")
        return self._base + endpoint.strip("/")

    def _resolve(self, url: str) -> str:
        """Absolute URL for ``get_json``; refuses hosts other than SciCat's (credentials!)."""
        if _is_absolute(url):
            if not (url + "/").startswith(self._base):
                raise SciCatRejected(
                    "GET", url, None, f"refusing to send credentials outside {self._base}"
                )
            return url
        relative = url.lstrip("/")
        cut = min((i for i in (relative.find("/"), relative.find("?")) if i >= 0), default=None)
        head, rest = (relative, "") if cut is None else (relative[:cut], relative[cut:])
        if head in _ENDPOINT_NAMES:
            return self._endpoint_url(head) + rest
        return self._base + relative

    def _label_for(self, url: str) -> str:
        """Bounded metrics label for a URL: the endpoint name it starts with, else 'other'."""
        for name in _ENDPOINT_NAMES:
            if url.startswith(self._endpoint_url(name)):
                return name
        return "other"

    def _endpoint_of(self, url: str) -> str:
        """The URL relative to the host, without the query: the 'endpoint' named in errors."""
        path = url.split("?", 1)[0]
        return path[len(self._base) :] if path.startswith(self._base) else path

    # ----------------------------------------------------------------------------------------
    # Requests
    # ----------------------------------------------------------------------------------------

    def _call(
        self,
        method: str,
        url: str,
        label: str,
        policy: Policy,
        *,
        params: Mapping[str, str] | None = None,
        body: Mapping[str, Any] | None = None,
        auth: bool = True,
    ) -> Any:
        """One logical request (transport retries included), renewing a login once on 401."""
        token = self._current_token() if auth else ""
        response = self._send(method, url, label, policy, token=token, params=params, body=body)
        if response.status_code == 401 and auth and self._can_login:
            token = self._renew_token(token)
            response = self._send(method, url, label, policy, token=token, params=params, body=body)
        return self._decode(method, url, response, token)

    def _send(
        self,
        method: str,
        url: str,
        label: str,
        policy: Policy,
        *,
        token: str,
        params: Mapping[str, str] | None = None,
        body: Mapping[str, Any] | None = None,
    ) -> requests.Response:
        headers = dict(self._options.additional_headers)
        if token:
            headers["Authorization"] = f"Bearer {token}"
        started = time.perf_counter()
        status = "error"
        try:
            response = self._session(policy).request(
                method,
                url,
                params=params,
                json=body,
                headers=headers,
                timeout=self._timeout,
                verify=self._options.verify,
            )
            status = str(response.status_code)
            return response
        except requests.exceptions.InvalidURL as err:
            raise SciCatRejected(method, self._endpoint_of(url), None, str(err)) from err
        except requests.RequestException as err:
            raise SciCatUnavailable(
                method, self._endpoint_of(url), None, _transport_error_text(err)
            ) from err
        finally:
            SCICAT_REQUEST_SECONDS.labels(label, status).observe(time.perf_counter() - started)

    def _decode(self, method: str, url: str, response: requests.Response, token: str) -> Any:
        """JSON body of a 2xx answer; a typed error otherwise (``token``: the one sent)."""
        code = response.status_code
        endpoint = self._endpoint_of(url)

        # SciCat or a proxy may quote our request: keep our secrets out of the error.
        redact = Redactor((token, self._token, self._options.token.value, self._password)).redact
        if 200 <= code < 300:
            if not response.content:
                return None
            try:
                return response.json()
            except ValueError:
                message = "answer is not JSON: " + _error_text(response, redact)
                raise SciCatUnavailable(method, endpoint, code, message) from None
        message = _error_text(response, redact)
        if code == 409:
            raise SciCatConflict(method, endpoint, code, message)
        if code in _UNAVAILABLE_STATUSES or code >= 500:
            raise SciCatUnavailable(method, endpoint, code, message)
        raise SciCatRejected(method, endpoint, code, message)

    def _object(self, value: Any, method: str, url: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self._unexpected(value, "object", method, url)
        return value

    def _array(self, value: Any, method: str, url: str) -> list[dict[str, Any]]:
        if not isinstance(value, list):
            raise self._unexpected(value, "array", method, url)
        return value

    def _unexpected(self, value: Any, kind: str, method: str, url: str) -> SciCatUnavailable:
        """A 2xx answer of the wrong shape: not SciCat (e.g. a proxy page), so 'unavailable'."""
        got = type(value).__name__
        return SciCatUnavailable(
            method, self._endpoint_of(url), None, f"expected a JSON {kind}, got {got}"
        )

    def _session(self, policy: Policy) -> requests.Session:
        """This thread's session for ``policy`` (created on first use)."""
        sessions: dict[str, requests.Session] | None = getattr(self._local, "sessions", None)
        if sessions is None:
            sessions = self._local.sessions = {}
        session = sessions.get(policy)
        if session is None:
            session = requests.Session()
            adapter = HTTPAdapter(max_retries=self._retry(policy))
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            sessions[policy] = session
            with self._sessions_lock:
                self._sessions.append(session)
        return session

    def _retry(self, policy: Policy) -> Retry:
        """The urllib3 retry policy; Retry-After is not obeyed so no worker sleeps for hours."""
        if policy == "none":
            return Retry(total=0, redirect=False, raise_on_status=False)
        retries = self._options.max_retries
        return Retry(
            total=retries,
            connect=retries,
            read=retries if policy == "idempotent" else 0,
            status=retries,
            other=0,
            redirect=False,
            allowed_methods=frozenset({"GET", "HEAD", "POST"}),
            status_forcelist=(
                _UNAVAILABLE_STATUSES if policy == "idempotent" else _NOT_PROCESSED_STATUSES
            ),
            backoff_factor=self._options.backoff_factor,
            backoff_jitter=self._options.backoff_factor,
            raise_on_status=False,
            respect_retry_after_header=False,
        )

    # ----------------------------------------------------------------------------------------
    # Authentication
    # ----------------------------------------------------------------------------------------

    def _current_token(self) -> str:
        if self._token or not self._can_login:
            return self._token
        return self._renew_token("")

    def _renew_token(self, rejected: str) -> str:
        """Log in, unless another thread already replaced the ``rejected`` token meanwhile."""
        with self._token_lock:
            if self._token and self._token != rejected:
                return self._token
            self._token = self._login()
            return self._token

    def _login(self) -> str:
        """Functional-account login (``POST auth/login``); never logs the password or token."""
        url = self._base + "auth/login"
        credentials = {"username": self._options.username, "password": self._password}
        response = self._send("POST", url, "auth/login", "idempotent", token="", body=credentials)
        answer = self._decode("POST", url, response, "")
        token = answer.get("access_token") if isinstance(answer, dict) else None
        if not isinstance(token, str) or not token:
            raise SciCatUnavailable("POST", "auth/login", None, "login answer has no access_token")
        logger.info("Logged in to SciCat as %s", self._options.username)
        return token


def _is_absolute(url: str) -> bool:
    return urlsplit(url).scheme in ("http", "https")


def _transport_error_text(err: requests.RequestException) -> str:
    """A short reason for a failure without an HTTP answer (timeout, refused, TLS)."""
    text = " ".join(str(err).split())
    if isinstance(err, requests.Timeout) or "timed out" in text:
        return "timed out (no answer within scicat.timeout)"
    if isinstance(err, requests.exceptions.SSLError):
        return "TLS error: " + text[-300:]
    if "Connection refused" in text:
        return "connection refused"
    return text[:300]
