"""The SciCat client: one method per thing the ingestor asks of SciCat, safe to share between
threads.

Which URL and body each method uses per API version is in ``routes`` (the table); how a request
is sent and retried in ``http``; what a 401/403 means in ``credentials``; the errors in ``errors``.
With ``scicat.api_version: auto`` the version is asked once (``GET v4/datasets/count``: backend
4.5 answers 404), at start or before the first request that depends on it, and logged.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from scicat_ingestor.config.model import ConfigError, SciCatOptions
from scicat_ingestor.ops.turns import TURNS
from scicat_ingestor.scicat import routes
from scicat_ingestor.scicat.credentials import Credentials
from scicat_ingestor.scicat.errors import (
    SciCatConflict,
    SciCatError,
    SciCatRejected,
    SciCatUnavailable,
    decode,
)
from scicat_ingestor.scicat.http import Policy, Request, Transport
from scicat_ingestor.scicat.routes import ApiVersion, Route

logger = logging.getLogger("scicat_ingestor.scicat")

# The api_endpoints a schema's SC variable may name (``get_json("proposals/…")``).
_ENDPOINT_NAMES = ("datasets", "proposals", "origdatablocks", "instruments", "samples")


@dataclass(frozen=True)
class HealthAnswer:
    """SciCat's health endpoint's answer: truthy when it answered 2xx (``healthy()`` once
    returned a bare bool); ``detail`` is one line naming the URL and, on failure, the cause."""

    ok: bool
    url: str  # without user info or query: it is shown on /ready
    cause: str

    def __bool__(self) -> bool:
        return self.ok

    @property
    def detail(self) -> str:
        return f"SciCat health endpoint {self.url} {self.cause}"


def _health_cause(err: SciCatError) -> str:
    """In plain words: the transport's reason (DNS, refused, timeout, TLS) or the HTTP answer."""
    if err.status is None:
        return f"not reachable: {err.message}"
    return f"answered {err.status}: {err.message}"


def _shown_url(url: str) -> str:
    """``url`` without user info, query or fragment: safe on /ready and in logs."""
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=netloc, query="", fragment="").geturl()


class SciCatClient:
    """Talks to one SciCat backend; safe to share between threads."""

    def __init__(self, options: SciCatOptions) -> None:
        if not _is_absolute(options.host):
            raise ConfigError(f"scicat.host: must be an http(s):// URL, found {options.host!r}")
        self._options = options
        self._layout = routes.layout(options.host)
        self._named = routes.family_versions(options)
        self._version = routes.fixed_version(options, self._layout, self._named)
        self._version_lock = threading.Lock()
        self._base = self._layout.v3
        self._transport = Transport(options)
        self._credentials = Credentials(options, self._transport, self._base)
        self.credentials = self._credentials.state

    # ----------------------------------------------------------------------------------------
    # Public API
    # ----------------------------------------------------------------------------------------

    def get_json(self, url: str) -> Any:
        """GET a schema ``SC`` variable's URL: relative to the host (endpoint names mapped)."""
        full = self._resolve(url)
        endpoint, label = self._endpoint_of(full), self._label_for(full)
        return self._call(Request("GET", full, endpoint, label, "idempotent"))

    def get_dataset(self, pid: str) -> dict[str, Any] | None:
        """The dataset with this pid, or None when SciCat answers 404."""
        try:
            found: dict[str, Any] = self._do("get_dataset", dict, pid=pid)
        except SciCatRejected as err:
            if err.status == 404:
                return None
            raise
        return found

    def find_datasets(
        self, where: Mapping[str, Any], fields: Sequence[str] = (), limit: int = 0
    ) -> list[dict[str, Any]]:
        """Datasets matching a loopback ``where`` filter (an empty list when none); only
        ``fields`` of each (all when empty), at most ``limit`` of them (all when 0).

        The same ``filter`` on API v3 and v4: ``fields`` and ``limits.limit`` (a top-level
        ``limit`` is ignored by both, ``backend-v5-behaviour.md`` §4.1)."""
        spec: dict[str, Any] = {"where": dict(where)}
        if fields:
            spec["fields"] = list(fields)
        if limit:
            spec["limits"] = {"limit": limit}
        params = {"filter": json.dumps(spec)}
        found: list[dict[str, Any]] = self._do("find_datasets", list, params=params)
        return found

    def create_dataset(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """POST a dataset; raises ``SciCatConflict`` when its pid already exists."""
        # Repeated only with its own pid: a repeat then answers 409, read as "exists".
        policy: Policy | None = None if payload.get("pid") else "unsafe"
        created: dict[str, Any] = self._do("create_dataset", dict, body=payload, policy=policy)
        return created

    def create_origdatablock(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """POST an origdatablock (``CreateOrigDatablockDto``, with ``datasetId``)."""
        created: dict[str, Any] = self._do("create_origdatablock", dict, body=payload)
        return created

    def origdatablocks_of(self, pid: str) -> list[dict[str, Any]]:
        """The origdatablocks of one dataset."""
        found: list[dict[str, Any]] = self._do("origdatablocks_of", list, pid=pid)
        return found

    # ---- samples (from run-start messages; v3 on every backend) ---------------------------

    def find_samples(self, where: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Samples matching a loopback ``where`` filter (an empty list when none)."""
        url = self._v3_url("samples")
        params = {"filter": json.dumps({"where": dict(where)})}
        request = Request("GET", url, self._endpoint_of(url), "samples", "idempotent", params)
        found: list[dict[str, Any]] = _shaped(self._call(request), list, request)
        return found

    def create_sample(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """POST a sample (``CreateSampleDto``); ``SciCatConflict`` when its sampleId exists."""
        url = self._v3_url("samples")
        # Not retried on a timeout: the caller's lookup finds a sample that was created anyway.
        request = Request("POST", url, self._endpoint_of(url), "samples", "unsafe", body=payload)
        created: dict[str, Any] = _shaped(self._call(request), dict, request)
        return created

    # ---- attachments (dataset thumbnails) ------------------------------------------------

    def attachments_of(self, pid: str) -> list[dict[str, Any]]:
        """The attachments of one dataset."""
        found: list[dict[str, Any]] = self._do("attachments_of", list, pid=pid)
        return found

    def create_attachment(self, pid: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        """POST an attachment (a ``CreateAttachmentV3Dto``: ``id``, ``datasetId``, caption,
        thumbnail, groups; mapped for v4); ``SciCatConflict`` when its id exists.

        v4 answers a repeated ``aid`` with 500, not 409: after a 500, an attachment of this
        dataset with our id means it exists.
        """
        try:
            created: dict[str, Any] = self._do("create_attachment", dict, pid=pid, body=payload)
        except SciCatUnavailable as err:
            ours = payload.get("id")
            if err.status != 500 or not ours or self._route("create_attachment")[1] != 4:
                raise
            if not any(a.get("aid") == ours for a in self.attachments_of(pid)):
                raise
            message = f"attachment {ours} exists (SciCat answered 500 to it again)"
            raise SciCatConflict(err.method, err.endpoint, 409, message) from err
        return created

    # ---- jobs (after ingestion: archive, embargo; the schema's ``jobs:``) -------------------

    def find_jobs(self, pid: str, job_type: str) -> list[dict[str, Any]]:
        """The jobs of type ``job_type`` on the dataset ``pid`` (an empty list when none)."""
        _, version = self._route("find_jobs")
        params = routes.job_lookup(version, pid, job_type)
        found: list[dict[str, Any]] = self._do("find_jobs", list, params=params)
        return found

    def create_job(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """POST a job (API v4's body: ``type, jobParams, ownerUser, ownerGroup, contactEmail``;
        mapped for v3). Never repeated after an ambiguous answer: the caller looks first."""
        created: dict[str, Any] = self._do("create_job", dict, body=payload)
        return created

    # ---------------------------------------------------------------------------------------

    def api_version(self) -> ApiVersion:
        """The API version for datasets, origdatablocks and attachments (asked once if auto)."""
        version = self._version
        if version is not None:
            return version
        TURNS.take_lock(self._version_lock)  # without the turn: the asker needs it back
        try:
            if self._version is None:
                self._version = self._detect_version()
            return self._version
        finally:
            self._version_lock.release()

    def healthy(self) -> HealthAnswer:
        """Whether SciCat's health endpoint answers 2xx (no credentials, no retries: v5 answers
        an expired token 401 even there); truthy when it does, with the URL and the cause."""
        endpoint = self._options.health_endpoint
        url = endpoint if _is_absolute(endpoint) else self._base + endpoint.lstrip("/")
        request = Request("GET", url, self._endpoint_of(url), "health", "none")
        shown = _shown_url(url)
        try:
            response = self._transport.send(request, "")
            decode("GET", request.endpoint, response, self._credentials.redactor(""))
        except SciCatError as err:
            answer = HealthAnswer(False, shown, _health_cause(err))
            logger.warning("SciCat health check failed: %s", answer.detail)
            return answer
        return HealthAnswer(True, shown, f"answered {response.status_code}")

    def check_credentials(self) -> bool:
        """The start-up check (``Credentials.check``), then the API version when it is auto.
        Never raises: the daemon runs it in a thread of its own."""
        accepted = self._credentials.check()
        if accepted:
            try:
                self.api_version()
            except SciCatError as err:
                logger.warning("SciCat API version not known yet: %s", err)
        return accepted

    def close(self) -> None:
        """Close every thread's sessions (their pooled connections)."""
        self._transport.close()

    # ----------------------------------------------------------------------------------------
    # Routes and URLs
    # ----------------------------------------------------------------------------------------

    def _route(self, operation: str) -> tuple[Route, ApiVersion]:
        """The route of ``operation``: for the version its endpoint names, else the API's."""
        family = "datasets" if operation in ("create_attachment", "attachments_of") else None
        table = routes.ROUTES[operation]
        family = family or table[3].family
        version = self._named.get(family) or self.api_version()
        return table[version], version

    def _do(
        self,
        operation: str,
        shape: type[dict[str, Any]] | type[list[Any]],
        *,
        pid: str = "",
        body: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
        policy: Policy | None = None,
    ) -> Any:
        """One operation of the routes table (its URL, query and body for the version); the
        answer, checked to be a JSON object or array (``shape``)."""
        route, version = self._route(operation)
        url = routes.endpoint_url(self._options, self._layout, route.family, version)
        url += route.path.format(pid=quote(pid, safe=""))
        query = route.query(pid) if route.query is not None else params
        endpoint = self._endpoint_of(url)
        sent: Mapping[str, Any] | None = None
        if body is not None:
            try:
                sent = route.body(body, pid)
            except routes.BodyError as err:
                raise SciCatRejected(route.method, endpoint, None, str(err)) from None
        request = Request(
            route.method,
            url,
            endpoint,
            route.label,
            policy or route.policy,
            query,
            sent,
            version,
            pid,
        )
        return _shaped(self._call(request), shape, request)

    def _v3_url(self, family: str) -> str:
        return routes.endpoint_url(self._options, self._layout, family, 3)

    def _detect_version(self) -> ApiVersion:
        """``GET v4/datasets/count`` for one pid: backend 4.5 has no such route (404), v5 answers
        (with the token: 200; without a valid one 401/403, still v4, never a refusal counted)."""
        url = routes.endpoint_url(self._options, self._layout, "datasets", 4) + "/count"
        endpoint = self._endpoint_of(url)
        params = {"filter": json.dumps({"where": {"pid": "scicat-ingestor-version-check"}})}
        request = Request("GET", url, endpoint, "datasets/count", "none", params)
        response = self._transport.send(request, self._credentials.token())
        version = routes.version_from_status(response.status_code)
        if version is None:
            decode("GET", endpoint, response, self._credentials.redactor(""))
            raise SciCatUnavailable("GET", endpoint, response.status_code, "API version unknown")
        served = "serves" if version == 4 else "does not serve"
        logger.info(
            "SciCat %s API v4 (GET %s → %d): datasets, origdatablocks and attachments "
            "through API v%d (scicat.api_version: auto)",
            served,
            endpoint,
            response.status_code,
            version,
        )
        return version

    def _resolve(self, url: str) -> str:
        """Absolute URL for ``get_json``; refuses hosts other than SciCat's (credentials!)."""
        if _is_absolute(url):
            bases = [b for b in (self._base, self._layout.v4) if b]
            if not any((url + "/").startswith(base) for base in bases):
                raise SciCatRejected(
                    "GET", url, None, f"refusing to send credentials outside {self._base}"
                )
            return url
        relative = url.lstrip("/")
        cut = min((i for i in (relative.find("/"), relative.find("?")) if i >= 0), default=None)
        head, rest = (relative, "") if cut is None else (relative[:cut], relative[cut:])
        if head in _ENDPOINT_NAMES:
            return self._v3_url(head) + rest
        return self._base + relative

    def _label_for(self, url: str) -> str:
        """Bounded metrics label for a URL: the endpoint name it starts with, else 'other'."""
        for name in _ENDPOINT_NAMES:
            if url.startswith(self._v3_url(name)):
                return name
        return "other"

    def _endpoint_of(self, url: str) -> str:
        """The URL relative to the v3 API (v4: to the API root, ``v4/…``), without the query:
        the 'endpoint' named in errors."""
        path = url.split("?", 1)[0]
        for prefix in (self._base, self._layout.root):
            if prefix and path.startswith(prefix):
                return path[len(prefix) :]
        return path

    def _call(self, request: Request) -> Any:
        """One logical request with our credentials; the JSON answer or a typed error."""
        token, response = self._credentials.send(request)
        return decode(request.method, request.endpoint, response, self._credentials.redactor(token))


def _shaped(value: Any, shape: type[Any], request: Request) -> Any:
    """``value`` if it is a JSON object (``dict``) or array (``list``) as expected; else not
    SciCat answering (e.g. a proxy page), so 'unavailable'."""
    if isinstance(value, shape):
        return value
    kind = "object" if shape is dict else "array"
    got = type(value).__name__
    message = f"expected a JSON {kind}, got {got}"
    raise SciCatUnavailable(request.method, request.endpoint, None, message)


def _is_absolute(url: str) -> bool:
    return urlsplit(url).scheme in ("http", "https")
