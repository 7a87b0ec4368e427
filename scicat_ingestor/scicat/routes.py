"""Where each SciCat request goes and what body it carries, per API version: the one table.

SciCat backend v5 serves two APIs side by side (``/api/v3``, ``/api/v4``); backend 4.5 only v3.
With API v4 the ingestor writes datasets, origdatablocks and attachments through ``/api/v4``;
everything else (auth, users, proposals, instruments, samples, health) has no v4 route and stays
on v3 (``../../docs/operator/scicat.md``; recorded answers: ``backend-v5-behaviour.md`` §4, §5).

What differs, operation by operation (``ROUTES``):

- ``get_dataset``: ``GET datasets/{pid}`` | ``GET v4/datasets/{pid}``
- ``find_datasets``: ``GET datasets?filter`` (a dead token: ``[]``) | ``GET v4/datasets?filter``
  (a dead token: 403); the same ``filter`` (``where``, ``fields``, ``limits``) on both
- ``create_dataset``: ``POST datasets`` with ``principalInvestigator``, ``proposalId``,
  ``instrumentId``, ``sampleId`` | ``POST v4/datasets`` with ``principalInvestigators``,
  ``proposalIds``, ``instrumentIds``, ``sampleIds`` (arrays) and ``owner`` required (else 500)
- ``create_origdatablock``: ``POST origdatablocks`` | ``POST v4/origdatablocks``, same body, but
  403 unless the account may write the dataset's ``ownerGroup`` (``ADMIN_GROUPS``)
- ``origdatablocks_of``: ``GET datasets/{pid}/origdatablocks`` |
  ``GET v4/origdatablocks?filter={"where":{"datasetId":pid}}``
- ``attachments_of``: ``GET datasets/{pid}/attachments`` |
  ``GET v4/attachments?filter={"where":{"relationships.targetId":pid}}``
- ``create_attachment``: ``POST datasets/{pid}/attachments`` (backend 5 ignores our ``id``) |
  ``POST v4/attachments`` with ``aid`` = our id and a ``relationships`` entry to the dataset
  (a repeated ``aid`` answers 500, not 409)
- ``find_jobs``: ``GET jobs?filter={"where":{"type","datasetList.pid"}}`` |
  ``GET v4/jobs?filter={"where":{"type","jobParams.datasetList.pid"}}`` (``job_lookup``)
- ``create_job``: ``POST jobs`` with ``type, ownerGroup, emailJobInitiator, datasetList`` |
  ``POST v4/jobs`` with ``type, jobParams, ownerUser, ownerGroup, contactEmail``; the caller's body
  is v4's here (the schema's ``jobs:`` format follows v4), mapped for v3 by ``v3_job``
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from scicat_ingestor.config.model import ConfigError, SciCatOptions
from scicat_ingestor.scicat.http import Policy

ApiVersion = Literal[3, 4]

# The families whose version follows ``scicat.api_version`` (``attachments`` follows datasets).
VERSIONED = ("datasets", "origdatablocks")
# v3-only: no v4 route on backend v5.
V3_ONLY = ("proposals", "instruments", "samples")

# v3 field (one value) → v4 field (an array of them), for a dataset body.
V4_ARRAYS: Mapping[str, str] = {
    "principalInvestigator": "principalInvestigators",
    "proposalId": "proposalIds",
    "instrumentId": "instrumentIds",
    "sampleId": "sampleIds",
}


class BodyError(ValueError):
    """A body the chosen API version cannot carry; the message says what is missing."""


Body = Mapping[str, Any]
BodyMap = Callable[[Body, str], dict[str, Any]]
QueryMap = Callable[[str], dict[str, str]]


def unchanged(body: Body, pid: str) -> dict[str, Any]:
    """The body as the caller built it (v3 bodies, and v4 origdatablocks)."""
    return dict(body)


def v4_dataset(body: Body, pid: str) -> dict[str, Any]:
    """A v3 dataset body for ``POST v4/datasets``: the four singular ids become arrays (v4 answers
    400 "should not exist" to the singular ones) and ``owner`` must be there (v4 answers 500
    without it, which would look like an outage and be retried)."""
    if not body.get("owner"):
        raise BodyError("owner is required by API v4 (SciCat answers 500 without it)")
    mapped = {k: v for k, v in body.items() if k not in V4_ARRAYS}
    for single, plural in V4_ARRAYS.items():
        if plural in body:
            continue
        value = body.get(single)
        if value is not None and value != "":
            mapped[plural] = list(value) if isinstance(value, list | tuple) else [value]
    return mapped


def v4_attachment(body: Body, pid: str) -> dict[str, Any]:
    """A v3 attachment body (``id``, ``datasetId``, caption, thumbnail, groups) for
    ``POST v4/attachments``: our deterministic ``id`` becomes the ``aid`` (v4 keeps it; v3 on
    backend v5 does not) and the dataset link a relationship."""
    mapped = {k: v for k, v in body.items() if k not in ("id", "datasetId")}
    if body.get("id"):
        mapped["aid"] = body["id"]
    mapped.setdefault("isPublished", False)
    mapped["relationships"] = [
        {"targetId": pid, "targetType": "dataset", "relationType": "is attached to"}
    ]
    return mapped


def v3_job(body: Body, pid: str) -> dict[str, Any]:
    """A v4 job body for ``POST v3/jobs`` (``CreateJobDtoV3``): the datasets leave ``jobParams``
    for ``datasetList``, ``contactEmail`` becomes ``emailJobInitiator``; v3 has no ``ownerUser``."""
    params = dict(body.get("jobParams") or {})
    datasets = params.pop("datasetList", [])
    mapped: dict[str, Any] = {"type": body.get("type"), "datasetList": datasets}
    if params:
        mapped["jobParams"] = params
    for v4_name, v3_name in (("ownerGroup", "ownerGroup"), ("contactEmail", "emailJobInitiator")):
        if body.get(v4_name):
            mapped[v3_name] = body[v4_name]
    return mapped


# Where each version keeps the datasets of a job (the look-up before a job is created).
_JOB_DATASET_KEY: Mapping[ApiVersion, str] = {3: "datasetList.pid", 4: "jobParams.datasetList.pid"}


def job_lookup(version: ApiVersion, pid: str, job_type: str) -> dict[str, str]:
    """The ``filter`` finding the jobs of type ``job_type`` on the dataset ``pid``."""
    return {"filter": json.dumps({"where": {"type": job_type, _JOB_DATASET_KEY[version]: pid}})}


def _where(key: str) -> QueryMap:
    def query(pid: str) -> dict[str, str]:
        return {"filter": json.dumps({"where": {key: pid}})}

    return query


@dataclass(frozen=True)
class Route:
    """One operation on one API version: ``family``'s URL (``scicat.api_endpoints``) + ``path``.

    ``label`` names it in metrics and in permission reasons; ``query`` turns the pid into query
    parameters, ``body`` the caller's (v3-shaped) body into this version's.
    """

    method: str
    family: str
    path: str
    label: str
    policy: Policy
    query: QueryMap | None = None
    body: BodyMap = unchanged


ROUTES: Mapping[str, Mapping[ApiVersion, Route]] = {
    "get_dataset": {
        3: Route("GET", "datasets", "/{pid}", "datasets/{pid}", "idempotent"),
        4: Route("GET", "datasets", "/{pid}", "datasets/{pid}", "idempotent"),
    },
    "find_datasets": {
        3: Route("GET", "datasets", "", "datasets", "idempotent"),
        4: Route("GET", "datasets", "", "datasets", "idempotent"),
    },
    # "idempotent" only with a pid in the body (a repeat answers 409); the client downgrades.
    "create_dataset": {
        3: Route("POST", "datasets", "", "datasets", "idempotent"),
        4: Route("POST", "datasets", "", "datasets", "idempotent", body=v4_dataset),
    },
    "create_origdatablock": {
        3: Route("POST", "origdatablocks", "", "origdatablocks", "unsafe"),
        4: Route("POST", "origdatablocks", "", "origdatablocks", "unsafe"),
    },
    "origdatablocks_of": {
        3: Route(
            "GET",
            "datasets",
            "/{pid}/origdatablocks",
            "datasets/{pid}/origdatablocks",
            "idempotent",
        ),
        4: Route(
            "GET",
            "origdatablocks",
            "",
            "datasets/{pid}/origdatablocks",
            "idempotent",
            query=_where("datasetId"),
        ),
    },
    "attachments_of": {
        3: Route(
            "GET", "datasets", "/{pid}/attachments", "datasets/{pid}/attachments", "idempotent"
        ),
        4: Route(
            "GET",
            "attachments",
            "",
            "datasets/{pid}/attachments",
            "idempotent",
            query=_where("relationships.targetId"),
        ),
    },
    # v3 stores each POST under an id of its own (ours is ignored), so a re-sent POST can make a
    # second picture even after a 502-504: never re-sent here; the pipeline looks, then posts again.
    # v4 keeps our aid (a repeat answers 500, then found by it): retried when SciCat did nothing.
    "create_attachment": {
        3: Route("POST", "datasets", "/{pid}/attachments", "datasets/{pid}/attachments", "none"),
        4: Route(
            "POST", "attachments", "", "datasets/{pid}/attachments", "unsafe", body=v4_attachment
        ),
    },
    "find_jobs": {
        3: Route("GET", "jobs", "", "jobs", "idempotent"),
        4: Route("GET", "jobs", "", "jobs", "idempotent"),
    },
    # The server picks the job's id, so a POST is never repeated after an answer that leaves
    # open whether it was carried out (``scicat_jobs`` looks the job up again first).
    "create_job": {
        3: Route("POST", "jobs", "", "jobs", "unsafe", body=v3_job),
        4: Route("POST", "jobs", "", "jobs", "unsafe"),
    },
}


# ----------------------------------------------------------------------------------------------
# Where the versions live: scicat.host and scicat.api_endpoints
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    """The API's URLs from ``scicat.host``: ``…/api``, ``…/api/v3`` or ``…/api/v4`` give both
    versions (``v4`` None: a host without a version we can recognise, so v3 only)."""

    v3: str  # with a trailing '/'
    v4: str | None
    root: str | None  # ``…/api/``: where a versioned endpoint (``v4/datasets``) starts

    def base(self, version: ApiVersion) -> str:
        if version == 4:
            if self.v4 is None:
                raise ConfigError(
                    "scicat.host: API v4 needs a host ending in /api, /api/v3 or /api/v4, "
                    f"found {self.v3.rstrip('/')!r}"
                )
            return self.v4
        return self.v3


def layout(host: str) -> Layout:
    """Split ``scicat.host`` into the v3 and v4 bases."""
    base = host.rstrip("/")
    head, _, last = base.rpartition("/")
    if last in ("v3", "v4") and urlsplit(head).path:
        root = head + "/"
    elif last == "api":
        root = base + "/"
    else:
        return Layout(base + "/", None, None)
    return Layout(root + "v3/", root + "v4/", root)


def explicit_version(endpoint: str) -> ApiVersion | None:
    """The version an endpoint names itself (``v4/datasets``: 4), the upstream ingestor's form
    for a host ending in ``/api``; None for a plain name (``datasets``) or an absolute URL."""
    head = endpoint.strip("/").split("/", 1)[0]
    if head == "v3":
        return 3
    if head == "v4":
        return 4
    return None


def endpoint_url(options: SciCatOptions, plan: Layout, family: str, version: ApiVersion) -> str:
    """The URL of ``family`` (an ``api_endpoints`` key, or ``attachments``) for ``version``;
    a leading '/' does not drop the API prefix, an absolute URL is used as it is."""
    configured: str = getattr(options.api_endpoints, family, family)
    if urlsplit(configured).scheme in ("http", "https"):
        return configured.rstrip("/")
    relative = configured.strip("/")
    if explicit_version(relative) is not None:
        if plan.root is None:
            raise ConfigError(
                f"scicat.api_endpoints.{family}: {configured!r} names an API version, so "
                "scicat.host must end in /api, /api/v3 or /api/v4"
            )
        return plan.root + relative
    return plan.base(version) + relative


def family_versions(options: SciCatOptions) -> dict[str, ApiVersion | None]:
    """The version each versioned family's endpoint names itself, after checking that none
    contradicts ``scicat.api_version``."""
    named: dict[str, ApiVersion | None] = {}
    for family in VERSIONED:
        version = explicit_version(getattr(options.api_endpoints, family))
        wanted = options.api_version
        if version is not None and wanted != "auto" and version != int(wanted):
            raise ConfigError(
                f"scicat.api_endpoints.{family}: v{version} contradicts scicat.api_version: "
                f"{wanted}"
            )
        named[family] = version
    return named


def fixed_version(
    options: SciCatOptions, plan: Layout, named: Mapping[str, ApiVersion | None]
) -> ApiVersion | None:
    """The API version when nothing needs asking (set in the config, a host without v4, every
    endpoint naming its own); None: ask SciCat. A setting that cannot work is a ConfigError."""
    for family, own in named.items():
        if own is not None:
            endpoint_url(options, plan, family, own)  # needs a host ending in /api…
    if options.api_version != "auto":
        version: ApiVersion = 4 if options.api_version == 4 else 3
        plan.base(version)  # v4 on a host without one
        return version
    if plan.v4 is None:
        return 3
    if None not in named.values():
        return named["datasets"]
    return None


def version_from_status(status: int) -> ApiVersion | None:
    """API version from the answer to ``GET v4/datasets/count``: backend 4.5 has no such route
    (404); v5 answers it (200, or 401/403 to a dead token). None: SciCat could not say (5xx)."""
    if status in (404, 405):
        return 3
    if status < 500:
        return 4
    return None
