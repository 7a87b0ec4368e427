"""Backend 5's API v4 (``/api/v4``: datasets, origdatablocks, attachments, jobs) and its v3
jobs (``POST``, ``GET ?filter=``; each version lists every job in its own shape), answered like
``data/scicat-backend-v5-behaviour.md`` §4 and the recorded scenarios.

v4 differs from v3 in ways a client must see: searches without valid credentials are 403, not
``[]``; ``findOne`` without a match is 200 with an empty body; validation errors are NestJS'
list; an origdatablock needs the dataset's ownerGroup (or an admin account); attachments carry
``relationships`` and an ``aid`` whose repetition is a duplicate key (500, not 409).
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from typing import TYPE_CHECKING

from scicat_ingestor.testing.scicat.filters import apply_filter
from scicat_ingestor.testing.scicat.messages import (
    JSONDict,
    Reply,
    _error,
    _internal_error,
    _now,
    _Request,
)
from scicat_ingestor.testing.scicat.routing import _Route
from scicat_ingestor.testing.scicat.shapes import _add_read_back_fields, _v4_view
from scicat_ingestor.testing.scicat.validation import (
    DTO_ORIGDATABLOCK,
    DTO_V3_JOB,
    DTO_V4_ATTACHMENT,
    DTO_V4_DATASET,
    DTO_V4_DATASET_PATCH,
    DTO_V4_JOB,
)

if TYPE_CHECKING:
    from scicat_ingestor.testing.scicat.routing import StandIn as SciCatStandIn

# The job configuration the recordings ran with (JOB_CONFIGURATION_FILE).
JOB_TYPES = ("archive", "embargo_period")
JOB_CONFIG_VERSION = "standin-jobs-v1"
MERGE_PATCH = "application/merge-patch+json"


def _unauthorised_access(standin: SciCatStandIn, request: _Request) -> Reply:
    return Reply(403, _error(403, "Unauthorized access"))


def _silently_empty(standin: SciCatStandIn, request: _Request) -> Reply:
    return Reply(200, [])


def _dataset_unauthorised(standin: SciCatStandIn, request: _Request) -> Reply:
    with standin._lock:
        exists = request.params["pid"] in standin._datasets
    if exists:
        return Reply(403, _error(403, "Unauthorized access"))
    return Reply(404, _error(404, "dataset: null not found"))


# ---- datasets ------------------------------------------------------------------------------


def create_dataset(standin: SciCatStandIn, request: _Request) -> Reply:
    """``POST v4/datasets``: the v4 DTO (arrays, no singular fields; ``type`` any string)."""
    dataset = standin._validated(request, DTO_V4_DATASET)
    if isinstance(dataset, Reply):
        return dataset
    if not dataset.get("owner"):  # optional in the DTO, required by mongoose
        message = "Something went wrong. Please try again later."
        return Reply(500, {"message": message, "statusCode": 500})
    account = standin._account(request.user)
    if not (account.admin or account.may_create or dataset.get("ownerGroup") in account.groups):
        return Reply(403, _error(403, "Unauthorized to create this dataset"))
    for plural in ("principalInvestigators", "proposalIds", "instrumentIds", "sampleIds"):
        dataset.setdefault(plural, [])
    _add_read_back_fields(dataset)
    dataset["version"] = "4"
    return standin._store_dataset(request, dataset, _v4_view)


def list_datasets(standin: SciCatStandIn, request: _Request) -> Reply:
    return Reply(200, standin._scan_datasets(request, _v4_view))


def find_one_dataset(standin: SciCatStandIn, request: _Request) -> Reply:
    """The first match, or 200 with an empty body (not 404, not ``null``)."""
    found = standin._scan_datasets(request, _v4_view)
    return Reply(200, found[0]) if found else Reply(200)


def count_datasets(standin: SciCatStandIn, request: _Request) -> Reply:
    return Reply(200, {"count": len(standin._scan_datasets(request))})


def get_dataset(standin: SciCatStandIn, request: _Request) -> Reply:
    with standin._lock:
        dataset = standin._datasets.get(request.params["pid"])
        if dataset is None:
            return Reply(404, _error(404, "dataset: null not found"))
        if not standin._account(request.user).may_read(dataset):
            return Reply(403, _error(403, "Unauthorized access"))
        return Reply(200, _v4_view(dataset))


def patch_dataset(standin: SciCatStandIn, request: _Request) -> Reply:
    """``application/json`` replaces each top-level field sent (``scientificMetadata`` as a
    whole); ``application/merge-patch+json`` merges objects (RFC 7396)."""
    changes = standin._validated(request, DTO_V4_DATASET_PATCH)
    if isinstance(changes, Reply):
        return changes
    merge = request.content_type.split(";")[0].strip().lower() == MERGE_PATCH
    with standin._lock:
        dataset = standin._datasets.get(request.params["pid"])
        if dataset is None:
            return Reply(404, _error(404, "Dataset not found"))
        if not standin._account(request.user).may_read(dataset):
            return Reply(403, _error(403, "Unauthorized access"))
        for name, value in changes.items():
            dataset[name] = _merged(dataset.get(name), value) if merge else value
        dataset.update(updatedBy=request.user, updatedAt=_now())
        return Reply(200, _v4_view(dataset))


def _merged(target: object, patch: object) -> object:
    """RFC 7396: objects merge key by key, ``null`` removes, anything else replaces."""
    if not isinstance(patch, dict):
        return patch
    merged = dict(target) if isinstance(target, dict) else {}
    for name, value in patch.items():
        if value is None:
            merged.pop(name, None)
        else:
            merged[name] = _merged(merged.get(name), value)
    return merged


# ---- origdatablocks ------------------------------------------------------------------------


def create_origdatablock(standin: SciCatStandIn, request: _Request) -> Reply:
    """Like v3, but the account must be admin or own the dataset's ownerGroup (else 403)."""
    block = standin._validated(request, DTO_ORIGDATABLOCK)
    if isinstance(block, Reply):
        return block
    return standin._store_block(request, block, owner_only=True)


def list_origdatablocks(standin: SciCatStandIn, request: _Request) -> Reply:
    with standin._lock:
        return Reply(200, apply_filter(standin._origdatablocks, request.filter()))


# ---- attachments ---------------------------------------------------------------------------


def create_attachment(standin: SciCatStandIn, request: _Request) -> Reply:
    """``POST v4/attachments``: targets are not checked; an ``aid`` again is a duplicate key."""
    attachment = standin._validated(request, DTO_V4_ATTACHMENT)
    if isinstance(attachment, Reply):
        return attachment
    aid = attachment.pop("aid", None) or str(uuid.uuid4())
    with standin._lock:
        if aid in standin._attachments:
            return Reply(500, _internal_error())
        return Reply(201, standin._store_attachment(request, attachment, aid))


def list_attachments(standin: SciCatStandIn, request: _Request) -> Reply:
    with standin._lock:
        return Reply(200, apply_filter(list(standin._attachments.values()), request.filter()))


def get_attachment(standin: SciCatStandIn, request: _Request) -> Reply:
    aid = request.params["aid"]
    with standin._lock:
        attachment = standin._attachments.get(aid)
        if attachment is None:
            return Reply(404, _error(404, f"Attachment: {aid} not found"))
        return Reply(200, attachment)


# ---- jobs ------------------------------------------------------------------------------------


def create_job(standin: SciCatStandIn, request: _Request) -> Reply:
    """``POST v4/jobs`` checked like the backend's job configuration (types ``archive``,
    ``embargo_period``): 400 for an unknown type or an archive job without a dataset list,
    422 without any owner or contact, 422 for datasets that do not exist."""
    job = standin._validated(request, DTO_V4_JOB)
    if isinstance(job, Reply):
        return job
    refusal = _job_type_refusal(job["type"])
    if refusal is not None:
        return refusal
    listed = job["jobParams"].get("datasetList")
    if job["type"] == "archive" and not isinstance(listed, list):
        return Reply(400, {"status": 400, "message": "'jobParams.datasetList' is required."})
    if not any(job.get(k) for k in ("ownerUser", "ownerGroup", "contactEmail")):
        return Reply(422, _error(422, "Contact email should be specified for an anonymous job."))
    pids = [d.get("pid") for d in listed or () if isinstance(d, dict)]
    now = _now()
    with standin._lock:
        unknown = [str(pid) for pid in pids if pid not in standin._datasets]
        if unknown:
            message = f"Datasets with pid {', '.join(unknown)} do not exist."
            return Reply(422, _error(422, message))
        job_id = str(uuid.uuid4())
        job.setdefault(
            "contactEmail", f"{job.get('ownerUser') or request.user}@standin.example.org"
        )
        job.update(
            _id=job_id,
            id=job_id,
            createdBy=request.user,
            updatedBy=request.user,
            createdAt=now,
            updatedAt=now,
            accessGroups=[],
            isPublished=False,
            statusCode="jobSubmitted",
            statusMessage="Job submitted.",
            configVersion=JOB_CONFIG_VERSION,
            jobResultObject={},
        )
        standin._jobs[job_id] = job
        return Reply(201, job)


def _job_type_refusal(kind: str) -> Reply | None:
    if kind in JOB_TYPES:
        return None
    return Reply(400, {"status": 400, "message": f"Invalid job type: {kind}"})


def get_job(standin: SciCatStandIn, request: _Request) -> Reply:
    job_id = request.params["id"]
    with standin._lock:
        job = standin._jobs.get(job_id)
        if job is None:
            return Reply(404, _error(404, f"Job: {job_id} not found"))
        return Reply(200, _v4_job_view(job))


def list_jobs(standin: SciCatStandIn, request: _Request) -> Reply:
    """``GET v4/jobs?filter=``: every job (v3-created ones too) in v4's shape, filtered on it
    (``jobParams.datasetList.pid``: the ingestor's look-up before it creates a job)."""
    with standin._lock:
        jobs = [_v4_job_view(job) for job in standin._jobs.values()]
    return Reply(200, apply_filter(jobs, request.filter()))


def list_v3_jobs(standin: SciCatStandIn, request: _Request) -> Reply:
    """``GET v3/jobs?filter=``: every job (v4-created ones too) in v3's shape, filtered on it
    (``datasetList.pid``)."""
    with standin._lock:
        jobs = [_v3_job_view(job) for job in standin._jobs.values()]
    return Reply(200, apply_filter(jobs, request.filter()))


def _v4_job_view(job: JSONDict) -> JSONDict:
    """A job as v4 shows it; a v3-created one gets its datasets back into ``jobParams``."""
    if "statusCode" in job:
        return job
    params = {k: v for k, v in (job.get("jobParams") or {}).items() if k != "username"}
    return {
        "_id": job["_id"],
        "id": job["id"],
        "type": job["type"],
        "ownerUser": (job.get("jobParams") or {}).get("username"),
        "contactEmail": job.get("emailJobInitiator"),
        "createdAt": job.get("creationTime"),
        "statusCode": job.get("jobStatusMessage"),
        "jobParams": {**params, "datasetList": job.get("datasetList") or []},
        "jobResultObject": job.get("jobResultObject") or {},
    }


def _v3_job_view(job: JSONDict) -> JSONDict:
    """A job as v3 shows it; a v4-created one gets its datasets out of ``jobParams``."""
    if "jobStatusMessage" in job:
        return job
    params = dict(job.get("jobParams") or {})
    datasets = params.pop("datasetList", [])
    return {
        "_id": job["_id"],
        "id": job["id"],
        "emailJobInitiator": job.get("contactEmail"),
        "type": job["type"],
        "creationTime": job.get("createdAt"),
        "jobParams": {**params, "username": job.get("createdBy")},
        "jobStatusMessage": job.get("statusCode"),
        "datasetList": datasets,
        "jobResultObject": job.get("jobResultObject") or {},
    }


def create_v3_job(standin: SciCatStandIn, request: _Request) -> Reply:
    """``POST v3/jobs`` (backend 5): the v3 body and answer shape, same job types.

    ``ownerGroup`` is accepted although ``CreateJobDtoV3`` in the OpenAPI document lacks it: the
    v5 record (§4.4) shows ``{type, ownerGroup, emailJobInitiator, datasetList}`` answered 201."""
    owner_group = _json_field(request, "ownerGroup")
    if owner_group is not None:
        request = _without_field(request, "ownerGroup")
    body = standin._validated(request, DTO_V3_JOB)
    if isinstance(body, Reply):
        return body
    refusal = _job_type_refusal(body["type"])
    if refusal is not None:
        return refusal
    job_id = str(uuid.uuid4())
    job: JSONDict = {
        "_id": job_id,
        "id": job_id,
        "emailJobInitiator": body.get("emailJobInitiator"),
        "type": body["type"],
        "creationTime": _now(),
        "jobParams": {**(body.get("jobParams") or {}), "username": request.user},
        "jobStatusMessage": "jobSubmitted",
        "datasetList": body["datasetList"],
        "jobResultObject": {},
    }
    if owner_group is not None:
        job["ownerGroup"] = owner_group
    with standin._lock:
        standin._jobs[job_id] = job
    return Reply(201, job)


def _json_field(request: _Request, name: str) -> object:
    """A top-level field of a JSON object body (None when absent or not such a body)."""
    try:
        body = json.loads(request.body or b"null")
    except ValueError:
        return None
    return body.get(name) if isinstance(body, dict) else None


def _without_field(request: _Request, name: str) -> _Request:
    body = json.loads(request.body)
    body.pop(name, None)
    return dataclasses.replace(request, body=json.dumps(body).encode())


ROUTES: tuple[_Route, ...] = (
    _Route("POST", ("datasets",), "POST /v4/datasets", create_dataset),
    _Route("GET", ("datasets",), "GET /v4/datasets", list_datasets, anonymous=_unauthorised_access),
    _Route(
        "GET",
        ("datasets", "findOne"),
        "GET /v4/datasets/findOne",
        find_one_dataset,
        anonymous=_unauthorised_access,
    ),
    _Route(
        "GET",
        ("datasets", "count"),
        "GET /v4/datasets/count",
        count_datasets,
        anonymous=_unauthorised_access,
    ),
    _Route(
        "GET",
        ("datasets", "{pid}"),
        "GET /v4/datasets/{pid}",
        get_dataset,
        anonymous=_dataset_unauthorised,
    ),
    _Route("PATCH", ("datasets", "{pid}"), "PATCH /v4/datasets/{pid}", patch_dataset),
    _Route("POST", ("origdatablocks",), "POST /v4/origdatablocks", create_origdatablock),
    _Route(
        "GET",
        ("origdatablocks",),
        "GET /v4/origdatablocks",
        list_origdatablocks,
        anonymous=_unauthorised_access,
    ),
    _Route("POST", ("attachments",), "POST /v4/attachments", create_attachment),
    _Route(
        "GET",
        ("attachments",),
        "GET /v4/attachments",
        list_attachments,
        anonymous=_silently_empty,
    ),
    _Route("GET", ("attachments", "{aid}"), "GET /v4/attachments/{aid}", get_attachment),
    _Route("POST", ("jobs",), "POST /v4/jobs", create_job),
    _Route("GET", ("jobs",), "GET /v4/jobs", list_jobs),
    _Route("GET", ("jobs", "{id}"), "GET /v4/jobs/{id}", get_job),
)

V3_ROUTES: tuple[_Route, ...] = (
    _Route("POST", ("jobs",), "POST /jobs", create_v3_job),
    _Route("GET", ("jobs",), "GET /jobs", list_v3_jobs),
)
