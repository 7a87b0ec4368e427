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
failed, or SciCat answered 429/502/503/504. One exception: a request sent on a keep-alive
connection the server closed while it was idle (the real backend closes them after 5 s) fails
before any answer, so it is repeated once at once on a fresh connection, POSTs included.

Credentials (``scicat_auth``): a 401 or 403 renews the login or re-reads ``scicat.token_file``
once and repeats the request; a refusal that survives is probed (``GET auth/whoami``) to tell an
auth outage (``SciCatAuthRefused``, retried like an unreachable SciCat) from a permission problem
of this record (``SciCatForbidden``, naming the account, the request and the fix).
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote, unquote, urlsplit

import requests

from scicat_ingestor.config import ConfigError, SciCatOptions
from scicat_ingestor.ops.metrics import SCICAT_LOGINS, SCICAT_REQUEST_SECONDS
from scicat_ingestor.redact import Redactor
from scicat_ingestor.scicat_auth import Account, CredentialsState, Login, ProbeCache, TokenSource
from scicat_ingestor.scicat_transport import Adapter, PausingRetry

logger = logging.getLogger("scicat_ingestor.scicat")

# Answers that mean "SciCat cannot serve this now": retried, then reported as unavailable.
_UNAVAILABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
# Answers that prove the request was not carried out, so even a non-idempotent POST may repeat.
_NOT_PROCESSED_STATUSES = frozenset({429, 502, 503, 504})
_ENDPOINT_NAMES = ("datasets", "proposals", "origdatablocks", "instruments", "samples")
# Answers that may mean "these credentials are dead" (the real backend: 403 for expired tokens).
_AUTH_REFUSALS = frozenset({401, 403})
# Where the probe asks "who am I?" (the second for backends without auth/whoami).
_PROBE_PATHS = ("auth/whoami", "users/my/self")

# How a request may be retried (see the module docstring); one session per policy and thread.
Policy = Literal["idempotent", "unsafe", "none"]


@dataclass(frozen=True)
class _Request:
    """One logical request: what to send and how it may be retried (``label``: for metrics)."""

    method: str
    url: str
    endpoint: str  # the URL relative to the host, without the query (named in errors)
    label: str
    policy: Policy
    params: Mapping[str, str] | None = None
    body: Mapping[str, Any] | None = None


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


class SciCatForbidden(SciCatRejected):
    """401/403 although SciCat accepts our credentials: this account may not do this to this
    record. ``str()`` names the account, the request and the likely fix."""

    def __str__(self) -> str:
        return self.message


class SciCatAuthRefused(SciCatUnavailable):
    """SciCat refuses our credentials (expired or revoked token, wrong password): an auth outage.
    Like an unreachable SciCat it says nothing about the file; it is retried until they work."""

    def __init__(self, method: str, endpoint: str, status: int | None, causes: Sequence[str]):
        super().__init__(method, endpoint, status, "; ".join(causes))
        self.causes = tuple(causes)

    def __str__(self) -> str:
        return f"SciCat refuses our credentials ({self.message})"


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
        # (scheme, host) → requests' environment settings; a race only computes one twice
        self._environments: dict[tuple[str, str], dict[str, Any]] = {}
        self._sessions: list[requests.Session] = []
        self._sessions_lock = threading.Lock()
        self._password = options.password.value
        self._tokens = TokenSource(options, self._login)
        self._probes = ProbeCache()
        self._warned_read_access = False
        self.credentials = CredentialsState(self._recheck_credentials, self._credentials_hint())

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
        return self._find("datasets", where)

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

    # ---- samples (from run-start messages) -----------------------------------------------

    def find_samples(self, where: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Samples matching a loopback ``where`` filter (an empty list when none)."""
        return self._find("samples", where)

    def create_sample(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """POST a sample (``CreateSampleDto``); ``SciCatConflict`` when its sampleId exists."""
        url = self._endpoint_url("samples")
        # Not retried on a timeout: the caller's lookup finds a sample that was created anyway.
        created = self._call("POST", url, "samples", "unsafe", body=payload)
        return self._object(created, "POST", url)

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

    def check_credentials(self) -> bool:
        """The start-up probe: False, after one ERROR line, when SciCat is reachable and refuses
        our credentials; True when it accepts them or cannot be asked now (logged either way)."""
        try:
            token = self._tokens.current()
            account = self._probe(token)
            if account is None and self._tokens.renew(token):
                token = self._tokens.current()
                account = self._probe(token)
        except SciCatAuthRefused as err:
            self.credentials.refused(str(err))
            return False
        except SciCatUnavailable as err:
            logger.warning("SciCat credentials not checked at start: %s", err)
            return True
        if account is None:
            verdict = self._probes.get(token)
            cause = verdict[1] if verdict else "refused"
            self.credentials.refused(str(SciCatAuthRefused("GET", "auth/whoami", None, [cause])))
            return False
        kind = self._tokens.kind
        logger.info("SciCat accepts our credentials: account '%s' (%s)", account.name, kind)
        self.credentials.accepted(account.name)
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

    def _find(self, endpoint: str, where: Mapping[str, Any]) -> list[dict[str, Any]]:
        url = self._endpoint_url(endpoint)
        params = {"filter": json.dumps({"where": dict(where)})}
        found = self._call("GET", url, endpoint, "idempotent", params=params)
        return self._array(found, "GET", url)

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
        """One logical request (transport retries included); a 401/403 is handled once by
        ``_after_refusal`` (renew, repeat, probe)."""
        request = _Request(method, url, self._endpoint_of(url), label, policy, params, body)
        if not auth:
            return self._decode(method, url, self._send(request, ""), "")
        token = self._current_token()
        response = self._send(request, token)
        if response.status_code in _AUTH_REFUSALS:
            token, response = self._after_refusal(request, token, response)
        elif response.status_code < 400 and request.method != "GET":
            # a GET may be answered for anyone (public datasets): only a write proves the token
            self.credentials.accepted()
        return self._decode(method, url, response, token)

    def _after_refusal(
        self, request: _Request, token: str, response: requests.Response
    ) -> tuple[str, requests.Response]:
        """Renew the credentials once and repeat; a refusal that survives is probed: the token
        refused too → ``SciCatAuthRefused``; accepted → ``SciCatForbidden`` (this record).

        A token the probe accepted moments ago is probed first instead (renewing it would only
        add a login per permission problem) and renewed only if that probe refuses it.
        """
        renewed = False
        if not self._probes.accepted_recently(token):
            renewed = True
            token, response = self._renew_and_repeat(request, token, response)
            if response.status_code not in _AUTH_REFUSALS:
                return token, response
        account = self._probe(token)
        if account is None and not renewed:
            token, response = self._renew_and_repeat(request, token, response)
            if response.status_code not in _AUTH_REFUSALS:
                return token, response
            account = self._probe(token)
        if account is None:
            verdict = self._probes.get(token)
            refusal = f"HTTP {response.status_code} on {request.method} {request.endpoint}"
            raise self._refused(request, response, refusal, verdict[1] if verdict else "")
        raise self._forbidden(request, response, account, token)

    def _renew_and_repeat(
        self, request: _Request, token: str, response: requests.Response
    ) -> tuple[str, requests.Response]:
        """A new token (login, token file) and the request repeated with it, if there is one."""
        try:
            renewed = self._tokens.renew(token)
        except SciCatAuthRefused as err:
            refusal = f"HTTP {response.status_code} on {request.method} {request.endpoint}"
            raise self._refused(request, response, refusal, *err.causes) from None
        if not renewed:
            return token, response
        token = self._current_token()
        response = self._send(request, token)
        if 200 <= response.status_code < 400:
            self.credentials.accepted()
        return token, response

    def _refused(
        self, request: _Request, response: requests.Response | None, *causes: str
    ) -> SciCatAuthRefused:
        """An auth outage: the error to raise, after updating ``credentials`` (log, metric)."""
        status = response.status_code if response is not None else None
        endpoint = request.endpoint
        err = SciCatAuthRefused(request.method, endpoint, status, [c for c in causes if c])
        self.credentials.refused(str(err))
        return err

    def _forbidden(
        self, request: _Request, response: requests.Response, account: Account, token: str
    ) -> SciCatForbidden:
        """A refusal although our credentials work: name the account, the request and the fix."""
        endpoint = request.endpoint
        answer = _error_text(response, self._redactor(token))
        reason = _permission_reason(request, endpoint, account.name)
        reads_dataset = request.label in ("datasets/{pid}", "datasets/{pid}/origdatablocks")
        if reads_dataset and not self._warned_read_access:
            self._warned_read_access = True
            logger.warning(
                "SciCat account '%s' cannot read datasets of other groups: a redelivered file "
                "is not recognised by its pid; add the account to ADMIN_GROUPS",
                account.name,
            )
        status = response.status_code
        message = f"{reason} (SciCat {request.method} {endpoint} → {status}: {answer})"
        return SciCatForbidden(request.method, endpoint, status, message)

    def _probe(self, token: str) -> Account | None:
        """Who SciCat says this token belongs to (None: refused). A refusal is reused for a few
        seconds (no probe storm in an outage); an acceptance is not: the token may have died
        since, and taking that for a permission problem would dead-letter the file."""
        cached = self._probes.get(token)
        if cached is not None and cached[0] is None:
            return None
        for path in _PROBE_PATHS:
            url = self._base + path
            response = self._send(_Request("GET", url, path, "auth/whoami", "idempotent"), token)
            if response.status_code == 404 and path != _PROBE_PATHS[-1]:
                continue
            if response.status_code in _AUTH_REFUSALS:
                refused = f"{self._tokens.kind}: GET {path} → {response.status_code}"
                self._probes.put(token, None, refused)
                return None
            answer = self._decode("GET", url, response, token)
            name = answer.get("username") if isinstance(answer, dict) else None
            account = Account(str(name or self._options.username or "?"))
            self._probes.put(token, account)
            self.credentials.accepted(account.name)
            return account
        raise AssertionError("unreachable: the last probe path always returns")  # pragma: no cover

    def _recheck_credentials(self) -> None:
        """During an auth outage (health checker's thread): renew, probe, update the verdict."""
        try:
            token = self._tokens.current()
            if self._probe(token) is None and self._tokens.renew(token):
                self._probe(self._tokens.current())
        except SciCatUnavailable as err:
            logger.debug("SciCat credentials recheck: %s", err)

    def _credentials_hint(self) -> str:
        """What an operator can do about an auth outage, for the ERROR line."""
        if self._options.token_file:
            return f"write a valid token to {self._options.token_file} (re-read, no restart)"
        if self._tokens.can_login:
            return "check the account and scicat.password (logins are retried)"
        return "set a valid scicat.token and restart, or use scicat.token_file to rotate it live"

    def _send(self, request: _Request, token: str) -> requests.Response:
        """Send once; a connection the server closed before answering is retried once at once."""
        headers = dict(self._options.additional_headers)
        if token:
            headers["Authorization"] = f"Bearer {token}"
        endpoint = request.endpoint
        try:
            return self._send_once(request, headers)
        except requests.ConnectionError as err:
            if not _closed_before_answer(err):
                raise SciCatUnavailable(
                    request.method, endpoint, None, _transport_error_text(err)
                ) from err
            logger.debug(
                "SciCat closed an idle connection: repeating %s %s", request.method, endpoint
            )
        try:
            return self._send_once(request, headers)
        except requests.RequestException as err:
            raise SciCatUnavailable(
                request.method, endpoint, None, _transport_error_text(err)
            ) from err

    def _send_once(self, request: _Request, headers: Mapping[str, str]) -> requests.Response:
        """One request through this thread's session; ConnectionErrors are left to ``_send``."""
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
            raise SciCatRejected(method, self._endpoint_of(url), None, str(err)) from err
        except requests.ConnectionError:
            raise
        except requests.RequestException as err:
            raise SciCatUnavailable(
                method, self._endpoint_of(url), None, _transport_error_text(err)
            ) from err
        finally:
            elapsed = time.perf_counter() - started
            SCICAT_REQUEST_SECONDS.labels(request.label, status).observe(elapsed)

    def _decode(self, method: str, url: str, response: requests.Response, token: str) -> Any:
        """JSON body of a 2xx answer; a typed error otherwise (``token``: the one sent)."""
        code = response.status_code
        endpoint = self._endpoint_of(url)
        redact = self._redactor(token)
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

    def _redactor(self, token: str) -> Callable[[str], str]:
        """SciCat or a proxy may quote our request: keep our secrets out of the error."""
        return Redactor((token, self._options.token.value, self._password)).redact

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
        """The token to send; a refused login becomes an auth outage."""
        try:
            return self._tokens.current()
        except SciCatAuthRefused as err:
            self.credentials.refused(str(err))
            raise

    def _login(self) -> Login:
        """Functional-account login (``POST auth/login``); never logs the password or token."""
        url = self._base + "auth/login"
        credentials = {"username": self._options.username, "password": self._password}
        try:
            response = self._send(
                _Request("POST", url, "auth/login", "auth/login", "idempotent", body=credentials),
                "",
            )
            if response.status_code in _AUTH_REFUSALS:
                SCICAT_LOGINS.labels("refused").inc()
                cause = f"login as '{self._options.username}' failed: {response.status_code}"
                raise SciCatAuthRefused("POST", "auth/login", response.status_code, [cause])
            answer = self._decode("POST", url, response, "")
        except SciCatAuthRefused:
            raise
        except SciCatError:
            SCICAT_LOGINS.labels("error").inc()
            raise
        token = answer.get("access_token") if isinstance(answer, dict) else None
        if not isinstance(token, str) or not token:
            SCICAT_LOGINS.labels("error").inc()
            raise SciCatUnavailable("POST", "auth/login", None, "login answer has no access_token")
        SCICAT_LOGINS.labels("ok").inc()
        return Login(token, _lifetime(answer))


def _prepared(
    session: requests.Session, request: _Request, headers: Mapping[str, str]
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


def _lifetime(answer: Mapping[str, Any]) -> float | None:
    """The token's lifetime in seconds from a login answer (``expires_in``, else ``ttl``)."""
    for key in ("expires_in", "ttl"):
        value = answer.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
            return float(value)
    return None


def _closed_before_answer(err: BaseException) -> bool:
    """Whether the server closed the connection before answering (``RemoteDisconnected`` or a
    reset on a reused keep-alive connection): the request was not processed, so it may repeat."""
    todo: list[BaseException] = [err]
    seen: set[int] = set()
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, http.client.RemoteDisconnected | ConnectionResetError):
            return True
        linked = [*current.args, getattr(current, "reason", None)]
        linked += [current.__cause__, current.__context__]
        todo.extend(e for e in linked if isinstance(e, BaseException))
    return False


def _permission_reason(request: _Request, endpoint: str, account: str) -> str:
    """What this account may not do, and what would allow it (SciCat's group settings)."""
    method, label, body = request.method, request.label, request.body or {}
    parts = endpoint.split("/")
    subject = unquote(parts[1]) if len(parts) > 1 else ""
    who = f"account '{account}'"
    if label == "datasets/{pid}":
        return (
            f"{who} may not read dataset {subject}: add it to ADMIN_GROUPS or to the "
            "dataset's accessGroups"
        )
    if label == "datasets/{pid}/origdatablocks":
        return (
            f"{who} may not read the origdatablocks of dataset {subject}: add it to "
            "ADMIN_GROUPS or to the dataset's accessGroups"
        )
    if method == "POST" and label == "datasets":
        group = body.get("ownerGroup") or "?"
        return (
            f"{who} may not create datasets of ownerGroup '{group}': add it to "
            "CREATE_DATASET_PRIVILEGED_GROUPS (or to that group)"
        )
    if method == "POST" and label == "origdatablocks":
        return (
            f"{who} may not add origdatablocks to dataset {body.get('datasetId') or '?'}: add "
            "it to CREATE_DATASET_PRIVILEGED_GROUPS or to the dataset's accessGroups"
        )
    if label == "proposals":
        return (
            f"{who} may not read proposal {subject}: add it to ADMIN_GROUPS or to the "
            "proposal's accessGroups"
        )
    return f"{who} may not {method} {endpoint}: check the account's groups in SciCat"


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
