"""The SciCat stand-in over real HTTP: OpenAPI validation, auth, storage, filters, faults."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import pytest
import requests

from helpers.standin import expired_token, log_in
from scicat_ingestor.testing.scicat import (
    DTO_ORIGDATABLOCK,
    DTO_RAW_DATASET,
    Account,
    FilterError,
    SciCatStandIn,
    apply_filter,
    load_validators,
)
from scicat_ingestor.testing.scicat.profiles import BACKENDS

integration = pytest.mark.integration
# Tests of behaviour that differs between the backend versions run against each profile.
each_backend = pytest.mark.parametrize("scicat_standin", BACKENDS, indirect=True)


def _dataset(pid: str | None = "20.500.12269/0b4e9d0c-standin", **changes: Any) -> dict[str, Any]:
    """A dataset body shaped like the ingestor's (see upstream-spec §4.10)."""
    body: dict[str, Any] = {
        "pid": pid,
        "size": 29623,
        "numberOfFiles": 2,
        "isPublished": False,
        "datasetName": "odin",
        "principalInvestigator": "Pia Investigator",
        "creationLocation": "ESS:CODA",
        "scientificMetadata": {
            "job_id": {"value": "job-1", "type": "string", "human_name": "Job id", "unit": ""},
            "run_number": {"value": 31010, "type": "integer", "human_name": "Run", "unit": ""},
        },
        "owner": "Pia Investigator",
        "ownerEmail": "pia.investigator@ess.example.org",
        "sourceFolder": "/data/coda/2024/443503",
        "contactEmail": "pia.investigator@ess.example.org",
        "creationTime": "2024-10-28T09:06:41.186000+00:00",
        "type": "raw",
        "techniques": [],
        "instrumentId": "odin-id",
        "proposalId": "443503",
        "ownerGroup": "ess_proposal_443503",
        "accessGroups": ["scientific information management systems group"],
    }
    if pid is None:
        del body["pid"]
    body.update(changes)
    return body


def _block(dataset_id: str, sizes: tuple[int, ...] = (29495, 128)) -> dict[str, Any]:
    files = [
        {
            "path": f"file-{i}.hdf",
            "size": size,
            "time": "2026-11-22T15:46:23.000Z",
            "chk": None if i else "ab" * 64,
            "uid": "0",
            "gid": "0",
            "perm": "0o100644",
        }
        for i, size in enumerate(sizes)
    ]
    return {
        "datasetId": dataset_id,
        "size": sum(sizes),
        "chkAlg": "blake2b",
        "dataFileList": files,
        "ownerGroup": "ignored-group",
        "accessGroups": [],
    }


class Api:
    """A tiny authenticated client for the stand-in (plain ``requests``, one Session)."""

    def __init__(self, standin: SciCatStandIn, token: str | None = None) -> None:
        self.base = standin.url
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token or standin.token}"

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.session.get(self.base + path, timeout=5, **kwargs)

    def post(self, path: str, body: object, **kwargs: Any) -> requests.Response:
        return self.session.post(self.base + path, json=body, timeout=5, **kwargs)

    def find(self, path: str, where: dict[str, Any], **extra: Any) -> requests.Response:
        return self.get(path, params={"filter": json.dumps({"where": where, **extra})})


@pytest.fixture
def api(scicat_standin: SciCatStandIn) -> Api:
    return Api(scicat_standin)


# ---- datasets --------------------------------------------------------------------------------


@integration
def test_valid_dataset_is_created_with_system_fields(api: Api) -> None:
    response = api.post("/datasets", _dataset())
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["pid"] == "20.500.12269/0b4e9d0c-standin"
    assert created["createdBy"] == "ingestor"
    assert created["createdAt"].endswith("Z")
    assert created["creationTime"] == "2024-10-28T09:06:41.186Z"  # stored as UTC, like MongoDB
    assert created["sharedWith"] == []  # schema default filled in


@integration
def test_unknown_field_is_refused_like_forbid_non_whitelisted(api: Api) -> None:
    response = api.post("/datasets", _dataset(foo="bar"))
    assert response.status_code == 400
    assert "property foo should not exist" in response.text
    errors = json.loads(response.json()["message"])  # the real controller JSON-encodes them
    assert errors[0]["constraints"] == {"whitelistValidation": "property foo should not exist"}


@integration
@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"sourceFolder": None}, "sourceFolder must be a string"),
        ({"creationTime": "yesterday"}, "creationTime must be a valid ISO 8601 date string"),
        ({"ownerEmail": ""}, "ownerEmail must be an email"),
        ({"size": "big"}, "size must be a number"),
        ({"techniques": [{"pid": "t", "name": "x", "extra": 1}]}, "property extra should not"),
    ],
)
def test_invalid_dataset_fields_are_refused(
    api: Api, changes: dict[str, Any], expected: str
) -> None:
    response = api.post("/datasets", _dataset(**changes))
    assert response.status_code == 400
    assert expected in response.json()["message"]


@integration
def test_missing_required_field_is_refused(api: Api) -> None:
    body = _dataset()
    del body["principalInvestigator"]
    response = api.post("/datasets", body)
    assert response.status_code == 400
    assert "principalInvestigator must be a string" in response.json()["message"]


@integration
@each_backend
def test_wrong_dataset_type_is_refused(api: Api, scicat_standin: SciCatStandIn) -> None:
    response = api.post("/datasets", _dataset(type="simulation"))
    assert response.status_code == 400
    message = {"4.5": "Wrong dataset type!", "5": "Invalid dataset type!"}[scicat_standin.backend]
    assert response.json() == {"status": 400, "message": message}


@integration
def test_optional_fields_may_be_null(api: Api, scicat_standin: SciCatStandIn) -> None:
    response = api.post("/datasets", _dataset(description=None, datasetlifecycle=None))
    assert response.status_code == 201, response.text
    assert scicat_standin.datasets[response.json()["pid"]]["description"] is None


@integration
def test_duplicate_pid_conflicts(api: Api) -> None:
    assert api.post("/datasets", _dataset()).status_code == 201
    response = api.post("/datasets", _dataset())
    assert response.status_code == 409
    assert response.json()["error"] == "Conflict"


@integration
def test_dataset_without_pid_gets_one(api: Api, scicat_standin: SciCatStandIn) -> None:
    response = api.post("/datasets", _dataset(pid=None))
    assert response.status_code == 201
    pid = response.json()["pid"]
    assert pid.startswith("20.500.12269/")
    assert list(scicat_standin.datasets) == [pid]


@integration
def test_get_dataset_by_percent_encoded_pid(api: Api) -> None:
    api.post("/datasets", _dataset())
    response = api.get("/datasets/20.500.12269%2F0b4e9d0c-standin")
    assert response.status_code == 200
    assert response.json()["datasetName"] == "odin"
    missing = api.get("/datasets/20.500.12269%2Fnope")
    assert missing.status_code == 404
    assert missing.json()["message"] == "dataset: 20.500.12269/nope not found"


@integration
def test_filter_by_scientific_metadata_key(api: Api) -> None:
    api.post("/datasets", _dataset())
    api.post("/datasets", _dataset(pid="other", scientificMetadata={}))
    found = api.find("/datasets", {"scientificMetadata.job_id.value": "job-1"})
    assert [d["pid"] for d in found.json()] == ["20.500.12269/0b4e9d0c-standin"]
    assert api.find("/datasets", {"scientificMetadata.job_id.value": "job-2"}).json() == []


@integration
def test_filter_limits_and_find_one(api: Api) -> None:
    for pid in ("c", "a", "b"):
        api.post("/datasets", _dataset(pid=pid))
    ordered = api.find("/datasets", {}, limits={"order": "pid:desc", "skip": 1, "limit": 1})
    assert [d["pid"] for d in ordered.json()] == ["b"]
    assert api.find("/datasets/findOne", {"pid": "a"}).json()["pid"] == "a"
    assert api.find("/datasets/findOne", {"pid": "z"}).status_code == 404


@integration
def test_invalid_filter_is_a_400(api: Api) -> None:
    response = api.get("/datasets", params={"filter": "{not json"})
    assert response.status_code == 400
    assert "filter is not valid JSON" in response.json()["message"]


# ---- origdatablocks --------------------------------------------------------------------------


@integration
@each_backend
def test_origdatablocks_count_into_dataset_size_and_file_count(
    api: Api, scicat_standin: SciCatStandIn
) -> None:
    """4.5 recomputes the sums over the blocks; 5 adds each block to what the dataset had."""
    pid = api.post("/datasets", _dataset(size=1, numberOfFiles=0)).json()["pid"]
    first = api.post("/origdatablocks", _block(pid))
    assert first.status_code == 201, first.text
    assert first.json()["_id"] == first.json()["id"]
    assert first.json()["ownerGroup"] == "ess_proposal_443503"  # taken from the dataset
    api.post("/origdatablocks", _block(pid, sizes=(10, 20, 30)))
    dataset = scicat_standin.datasets[pid]
    created_with = 1 if scicat_standin.backend == "5" else 0
    assert (dataset["size"], dataset["numberOfFiles"]) == (created_with + 29495 + 128 + 60, 5)
    assert len(api.get(f"/datasets/{pid.replace('/', '%2F')}/origdatablocks").json()) == 2
    assert len(api.find("/origdatablocks", {"datasetId": pid}).json()) == 2


@integration
def test_origdatablock_for_unknown_dataset_is_404(api: Api) -> None:
    response = api.post("/origdatablocks", _block("no-such-pid"))
    assert response.status_code == 404
    assert "not found for attaching an origdatablock" in response.json()["message"]


@integration
def test_origdatablock_is_validated(api: Api) -> None:
    pid = api.post("/datasets", _dataset()).json()["pid"]
    block = _block(pid)
    block["dataFileList"][0]["mode"] = "rw"
    block["dataFileList"][1]["size"] = None
    response = api.post("/origdatablocks", block)
    assert response.status_code == 400
    assert response.json()["message"] == [
        "dataFileList.0.property mode should not exist",
        "dataFileList.1.size must be a number conforming to the specified constraints",
    ]
    assert api.post("/origdatablocks", {**block, "dataFileList": []}).status_code == 400


# ---- proposals, instruments, samples ---------------------------------------------------------


@integration
def test_seeded_proposals_and_added_ones(api: Api, scicat_standin: SciCatStandIn) -> None:
    coda = api.get("/proposals/443503").json()
    assert (coda["pi_firstname"], coda["pi_lastname"]) == ("Pia", "Investigator")
    assert api.get("/proposals/876380").json()["ownerGroup"] == "ess_proposal_876380"
    assert api.get("/proposals/1").status_code == 404
    scicat_standin.add_proposal({"proposalId": "1", "pi_email": "x@y.org"})
    assert api.get("/proposals/1").json()["pi_email"] == "x@y.org"


@integration
def test_instruments_filter_ilike_and_equality(api: Api) -> None:
    odin = api.find("/instruments", {"name": {"ilike": "ODIN"}}).json()
    assert [i["uniqueName"] for i in odin] == ["ODIN"]
    assert odin[0]["id"] == odin[0]["pid"]
    assert [i["name"] for i in api.find("/instruments", {"uniqueName": "YMIR"}).json()] == ["ymir"]
    assert len(api.get("/instruments").json()) == 3


@integration
@each_backend
def test_samples_are_validated_created_and_found(api: Api, scicat_standin: SciCatStandIn) -> None:
    body = {"ownerGroup": "443503", "accessGroups": ["443503"], "description": "lego"}
    if scicat_standin.backend == "5":  # required since v5, checked by mongoose only: 500
        assert api.post("/samples", body).json() == "Internal server error"
        body["sampleName"] = "lego"
    created = api.post("/samples", {**body, "proposalId": "443503", "isPublished": False})
    assert created.status_code == 201
    found = api.find("/samples", {"description": "lego", "proposalId": "443503"}).json()
    assert [s["sampleId"] for s in found] == [created.json()["sampleId"]]
    refused = api.post("/samples", {**body, "colour": "red"})
    assert refused.json()["message"] == ["property colour should not exist"]


@integration
@each_backend
def test_duplicate_sample_id_is_500_not_409(api: Api) -> None:
    body = {"sampleId": "s-1", "ownerGroup": "443503", "sampleName": "lego"}
    if api.post("/samples", body).status_code == 400:  # 4.5 knows no sampleName
        del body["sampleName"]
        assert api.post("/samples", body).status_code == 201
    again = api.post("/samples", body)
    assert (again.status_code, again.json()) == (500, "Internal server error")
    assert len(api.find("/samples", {"sampleId": "s-1"}).json()) == 1


@integration
def test_samples_without_valid_token(scicat_standin: SciCatStandIn) -> None:
    dead = _dead_api(scicat_standin, "garbage")
    assert dead.find("/samples", {}).json() == []
    refused = dead.post("/samples", {"ownerGroup": "g", "sampleName": "s"})
    assert (refused.status_code, refused.json()["message"]) == (401, "Unauthenticated")


# ---- auth: one test per row of tests/data/scicat-real-backend-behaviour.md ---------------------


# The three kinds of dead credentials the table's right-hand column is about.
DEAD = ["none", "garbage", "expired"]


def _refused(standin: SciCatStandIn, kind: str, status: int, message: str) -> tuple[int, str]:
    """The answer to dead credentials: as given, but 401 SESSION_EXPIRED for an expired token
    on backend 5."""
    if kind == "expired" and standin.backend == "5":
        return 401, "SESSION_EXPIRED"
    return status, message


def _dead_api(standin: SciCatStandIn, kind: str) -> Api:
    api = Api(standin)
    if kind == "none":
        del api.session.headers["Authorization"]
    else:
        token = "garbage" if kind == "garbage" else expired_token(standin)
        api.session.headers["Authorization"] = f"Bearer {token}"
    return api


@integration
def test_login_with_the_right_password_is_201_with_expires_in(
    scicat_standin_factory: Callable[..., SciCatStandIn],
) -> None:
    standin = scicat_standin_factory(token_lifetime=42)
    response = log_in(standin)
    assert response.status_code == 201
    login = response.json()
    assert set(login) >= {"access_token", "id", "expires_in", "ttl", "created", "userId", "user"}
    assert login["id"] == login["access_token"]
    assert login["expires_in"] == 42
    assert login["user"]["username"] == "ingestor"


@integration
@pytest.mark.parametrize(
    "credentials",
    [
        {"username": "ingestor", "password": "wrong"},
        {"username": "nobody", "password": "pwd"},
        {"username": "ingestor"},
    ],
)
def test_login_with_a_wrong_password_is_401(
    scicat_standin: SciCatStandIn, credentials: dict[str, str]
) -> None:
    response = requests.post(scicat_standin.url + "/auth/login", json=credentials, timeout=5)
    assert response.status_code == 401


@integration
@each_backend
@pytest.mark.parametrize("kind", DEAD)
def test_get_proposal_without_valid_token_is_403(scicat_standin: SciCatStandIn, kind: str) -> None:
    assert Api(scicat_standin).get("/proposals/443503").status_code == 200
    missing = Api(scicat_standin).get("/proposals/nope")
    assert (missing.status_code, missing.json()["message"]) == (404, "Proposal: nope not found")
    response = _dead_api(scicat_standin, kind).get("/proposals/443503")
    assert (response.status_code, response.json()["message"]) == _refused(
        scicat_standin, kind, 403, "Unauthorized to this proposal"
    )


@integration
@each_backend
@pytest.mark.parametrize("kind", DEAD)
@pytest.mark.parametrize("suffix", ["", "/origdatablocks"])
def test_get_dataset_without_valid_token_is_403_only_when_it_exists(
    api: Api, scicat_standin: SciCatStandIn, kind: str, suffix: str
) -> None:
    api.post("/datasets", _dataset())
    pid = quote(_dataset()["pid"], safe="")
    assert api.get(f"/datasets/{pid}{suffix}").status_code == 200
    dead = _dead_api(scicat_standin, kind)
    response = dead.get(f"/datasets/{pid}{suffix}")
    assert (response.status_code, response.json()["message"]) == _refused(
        scicat_standin, kind, 403, "Unauthorized access"
    )
    unknown = quote("20.500.12269/unknown", safe="")
    response = dead.get(f"/datasets/{unknown}{suffix}")
    assert (response.status_code, response.json()["message"]) == _refused(
        scicat_standin, kind, 404, "dataset: 20.500.12269/unknown not found"
    )


@integration
@each_backend
@pytest.mark.parametrize("kind", DEAD)
def test_dataset_search_without_valid_token_is_silently_empty(
    api: Api, scicat_standin: SciCatStandIn, kind: str
) -> None:
    api.post("/datasets", _dataset())
    where = {"scientificMetadata.job_id.value": "job-1"}
    assert len(api.find("/datasets", where).json()) == 1
    response = _dead_api(scicat_standin, kind).find("/datasets", where)
    if kind == "expired" and scicat_standin.backend == "5":
        assert (response.status_code, response.json()["message"]) == (401, "SESSION_EXPIRED")
    else:
        assert (response.status_code, response.json()) == (200, [])


@integration
@each_backend
@pytest.mark.parametrize("kind", DEAD)
def test_posts_without_valid_token_are_403_forbidden_resource(
    api: Api, scicat_standin: SciCatStandIn, kind: str
) -> None:
    dead = _dead_api(scicat_standin, kind)
    for path, body in (("/datasets", _dataset()), ("/origdatablocks", _block("x"))):
        response = dead.post(path, body)
        assert (response.status_code, response.json()["message"]) == _refused(
            scicat_standin, kind, 403, "Forbidden resource"
        )
    assert scicat_standin.datasets == {}


@integration
@each_backend
def test_health_needs_no_token_but_5_refuses_an_expired_one(scicat_standin: SciCatStandIn) -> None:
    response = requests.get(scicat_standin.url + "/health", timeout=5)
    assert response.json()["status"] == "ok"
    garbage = {"Authorization": "Bearer garbage"}
    assert requests.get(scicat_standin.url + "/health", headers=garbage, timeout=5).ok
    expired = {"Authorization": f"Bearer {expired_token(scicat_standin)}"}
    response = requests.get(scicat_standin.url + "/health", headers=expired, timeout=5)
    if scicat_standin.backend == "5":
        assert response.status_code == 401
        assert response.json() == {
            "message": "SESSION_EXPIRED",
            "error": "Unauthorized",
            "statusCode": 401,
        }
    else:
        assert response.ok


@integration
@pytest.mark.parametrize(("backend", "status"), [("4.5", 403), ("5", 401)])
def test_login_tokens_expire_after_their_lifetime(
    scicat_standin_factory: Callable[..., SciCatStandIn], backend: str, status: int
) -> None:
    standin = scicat_standin_factory(token_lifetime=0.3, backend=backend)
    api = Api(standin, token=log_in(standin).json()["access_token"])
    assert api.get("/proposals/443503").status_code == 200
    time.sleep(0.4)
    assert api.get("/proposals/443503").status_code == status
    assert Api(standin).get("/proposals/443503").status_code == 200  # the static token stays


@integration
@pytest.mark.parametrize("path", ["/auth/whoami", "/users/my/self"])
def test_whoami_and_my_self_name_the_account(scicat_standin: SciCatStandIn, path: str) -> None:
    api = Api(scicat_standin, token=log_in(scicat_standin).json()["access_token"])
    assert api.get(path).json()["username"] == "ingestor"
    assert Api(scicat_standin).get(path).json()["username"] == "ingestor"  # the static token's


@integration
@each_backend
@pytest.mark.parametrize("kind", ["none", "garbage"])
def test_dead_credentials_whoami_200_empty_my_self_401(
    scicat_standin: SciCatStandIn, kind: str
) -> None:
    """Only ``users/my/self`` tells a dead token by its status; whoami says 200 (no body)."""
    dead = _dead_api(scicat_standin, kind)
    whoami = dead.get("/auth/whoami")
    assert (whoami.status_code, whoami.content) == (200, b"")
    my_self = dead.get("/users/my/self")
    assert (my_self.status_code, my_self.json()["message"]) == (401, "Unauthenticated")


@integration
def test_reject_credentials_for_a_while(scicat_standin: SciCatStandIn) -> None:
    token = log_in(scicat_standin).json()["access_token"]
    scicat_standin.faults.reject_credentials(0.5)
    assert log_in(scicat_standin).status_code == 401
    assert Api(scicat_standin).get("/proposals/443503").status_code == 403
    assert Api(scicat_standin, token=token).get("/proposals/443503").status_code == 403
    time.sleep(0.6)
    assert log_in(scicat_standin).status_code == 201
    assert Api(scicat_standin, token=token).get("/proposals/443503").status_code == 200


@integration
def test_change_password_and_rotate_the_static_token(scicat_standin: SciCatStandIn) -> None:
    token = log_in(scicat_standin).json()["access_token"]
    scicat_standin.faults.change_password("ingestor", "new")
    assert log_in(scicat_standin).status_code == 401
    assert log_in(scicat_standin, password="new").status_code == 201
    assert Api(scicat_standin, token=token).get("/proposals/443503").status_code == 200
    old = Api(scicat_standin)
    scicat_standin.faults.set_token("rotated")
    assert old.get("/proposals/443503").status_code == 403
    assert Api(scicat_standin, token="rotated").get("/proposals/443503").status_code == 200


# ---- permissions -----------------------------------------------------------------------------


@integration
def test_account_that_may_create_but_not_read_other_groups(
    scicat_standin_factory: Callable[..., SciCatStandIn],
) -> None:
    """The table's permission row: 201, then 403 by pid, [] by search, 409 on a repeat, 403 for
    the origdatablocks."""
    account = Account("pwd", groups=("ingestor",), admin=False, may_create=True)
    standin = scicat_standin_factory(accounts={"ingestor": account})
    api = Api(standin, token=log_in(standin).json()["access_token"])
    assert api.post("/datasets", _dataset()).status_code == 201
    assert api.post("/origdatablocks", _block(_dataset()["pid"])).status_code == 201
    pid = quote(_dataset()["pid"], safe="")
    response = api.get(f"/datasets/{pid}")
    assert (response.status_code, response.json()["message"]) == (403, "Unauthorized access")
    assert api.find("/datasets", {"scientificMetadata.job_id.value": "job-1"}).json() == []
    assert api.post("/datasets", _dataset()).status_code == 409
    assert api.get(f"/datasets/{pid}/origdatablocks").status_code == 403
    own = _dataset("20.500.12269/own", ownerGroup="ingestor")
    assert api.post("/datasets", own).status_code == 201
    assert api.get("/datasets/" + quote(own["pid"], safe="")).status_code == 200


@integration
def test_account_in_no_create_group_may_not_create(
    scicat_standin_factory: Callable[..., SciCatStandIn],
) -> None:
    account = Account("pwd", groups=("someone",), admin=False, may_create=False)
    standin = scicat_standin_factory(accounts={"ingestor": account})
    api = Api(standin, token=log_in(standin).json()["access_token"])
    response = api.post("/datasets", _dataset())
    assert response.status_code == 403
    assert response.json()["message"] == "Unauthorized to create this dataset"


# ---- other behaviour -------------------------------------------------------------------------


@integration
def test_duplicate_pid_is_409_naming_the_pid(api: Api) -> None:
    assert api.post("/datasets", _dataset()).status_code == 201
    response = api.post("/datasets", _dataset())
    assert response.status_code == 409
    assert response.json()["message"] == f"A dataset with pid {_dataset()['pid']} already exists!"


@integration
def test_dates_are_normalised_on_read_back_but_not_in_scientific_metadata(api: Api) -> None:
    sent = "2024-11-01T10:00:55.671448+00:00"
    metadata = {"start": {"value": sent, "type": "date", "unit": ""}}
    body = _dataset(creationTime=sent, scientificMetadata=metadata)
    api.post("/datasets", body)
    stored = api.get("/datasets/" + quote(body["pid"], safe="")).json()
    assert stored["creationTime"] == "2024-11-01T10:00:55.671Z"
    assert stored["scientificMetadata"]["start"]["value"] == sent


@integration
def test_fields_added_on_read_back(api: Api) -> None:
    api.post("/datasets", _dataset())
    stored = api.get("/datasets/" + quote(_dataset()["pid"], safe="")).json()
    assert stored["keywords"] == []
    assert stored["proposalIds"] == ["443503"]
    assert stored["instrumentIds"] == ["odin-id"]
    assert stored["principalInvestigators"] == ["Pia Investigator"]
    assert stored["sampleIds"] == [None]  # the v3 conversion copies the absent sampleId
    assert stored["sampleId"] is None
    assert stored["history"] == []
    assert stored["version"] == "3"
    assert stored["createdBy"] == "ingestor"
    for name in ("classification", "datasetlifecycle", "createdAt", "updatedAt"):
        assert name in stored


@integration
def test_idle_keep_alive_connection_is_closed_before_any_answer(
    scicat_standin_factory: Callable[..., SciCatStandIn],
) -> None:
    standin = scicat_standin_factory(idle_timeout=0.3)
    api = Api(standin)
    first = api.get("/proposals/443503")
    assert first.headers["Keep-Alive"] == "timeout=0.3"
    assert api.get("/proposals/443503").ok  # not idle: the same connection answers
    time.sleep(0.5)
    with pytest.raises(requests.ConnectionError, match="Remote end closed connection"):
        api.get("/proposals/443503")
    assert standin.stats()["idle_closed"] == 1
    assert api.get("/proposals/443503").ok  # a fresh connection
    control = requests.Session()
    assert control.get(standin.control_url + "/stats", timeout=5).ok
    time.sleep(0.5)
    assert control.get(standin.control_url + "/stats", timeout=5).ok  # /_standin is not closed


@integration
def test_custom_token_and_accounts(
    scicat_standin_factory: Callable[..., SciCatStandIn],
) -> None:
    standin = scicat_standin_factory(token="t0k", accounts={"bob": "secret"})
    assert Api(standin).get("/proposals/443503").status_code == 200
    login = {"username": "bob", "password": "secret"}
    assert requests.post(standin.url + "/auth/login", json=login, timeout=5).status_code == 201


@integration
def test_unknown_route_is_404_without_auth(scicat_standin: SciCatStandIn) -> None:
    response = requests.get(scicat_standin.url + "/nothing/here", timeout=5)
    assert response.status_code == 404
    assert response.json()["message"] == "Cannot GET /api/v3/nothing/here"


# ---- fault injection -------------------------------------------------------------------------


@integration
def test_fail_next_then_ok(api: Api, scicat_standin: SciCatStandIn) -> None:
    scicat_standin.faults.fail_next(2, 503)
    assert [api.get("/proposals/443503").status_code for _ in range(3)] == [503, 503, 200]
    assert scicat_standin.stats()["requests"]["GET /proposals/{pid} 503"] == 2


@integration
def test_fail_next_only_hits_its_path_prefix(api: Api, scicat_standin: SciCatStandIn) -> None:
    pid = api.post("/datasets", _dataset()).json()["pid"]
    scicat_standin.faults.fail_next(1, 503, "/api/v3/origdatablocks")  # "origdatablocks" works too
    assert api.get("/proposals/443503").status_code == 200
    assert api.post("/origdatablocks", _block(pid)).status_code == 503
    assert api.post("/origdatablocks", _block(pid)).status_code == 201


@integration
def test_fail_next_with_commit_stores_but_fails(api: Api, scicat_standin: SciCatStandIn) -> None:
    scicat_standin.faults.fail_next(1, 502, "datasets", commit=True)
    assert api.post("/datasets", _dataset()).status_code == 502
    assert list(scicat_standin.datasets) == ["20.500.12269/0b4e9d0c-standin"]
    assert api.post("/datasets", _dataset()).status_code == 409  # the client's retry


@integration
def test_stop_answering_makes_clients_time_out_then_resume(
    scicat_standin: SciCatStandIn,
) -> None:
    url = scicat_standin.url + "/health"
    scicat_standin.faults.stop_answering()
    with pytest.raises(requests.ReadTimeout):
        requests.get(url, timeout=0.5)
    scicat_standin.faults.resume()
    assert requests.get(url, timeout=5).status_code == 200
    assert ("GET", "/api/v3/health", 0) in scicat_standin.requests_log  # never answered


@integration
def test_refusing_closes_the_port_until_resume(scicat_standin: SciCatStandIn) -> None:
    url = scicat_standin.url + "/health"
    session = requests.Session()
    assert session.get(url, timeout=5).status_code == 200
    scicat_standin.faults.stop_answering(refuse=True)
    with pytest.raises(requests.ConnectionError):
        requests.get(url, timeout=5)
    scicat_standin.faults.resume()
    assert session.get(url, timeout=5).status_code == 200  # same port, new connection


@integration
def test_a_timed_refusal_ends_by_itself_but_not_after_stop(
    scicat_standin_factory: Callable[..., SciCatStandIn],
) -> None:
    first, second = scicat_standin_factory(), scicat_standin_factory()
    for standin in (first, second):
        standin.faults.stop_answering(refuse=True, seconds=0.2)
    second.stop()  # its faults' timer must not open the port again
    time.sleep(0.5)
    assert requests.get(first.url + "/health", timeout=5).status_code == 200
    with pytest.raises(requests.ConnectionError):
        requests.get(second.url + "/health", timeout=5)


@integration
def test_expire_tokens_spares_the_logins_after_it(scicat_standin: SciCatStandIn) -> None:
    def my_self(token: str) -> int:
        headers = {"Authorization": f"Bearer {token}"}
        url = scicat_standin.url + "/users/my/self"
        return requests.get(url, headers=headers, timeout=5).status_code

    before = expired_token(scicat_standin)
    after = str(log_in(scicat_standin).json()["access_token"])
    assert (my_self(before), my_self(after)) == (401, 200)


@integration
def test_delay_holds_only_matching_requests(api: Api, scicat_standin: SciCatStandIn) -> None:
    scicat_standin.faults.delay(30, "876380")
    with pytest.raises(requests.ReadTimeout):
        api.session.get(api.base + "/proposals/876380", timeout=0.3)
    assert api.get("/proposals/443503").status_code == 200
    scicat_standin.faults.delay(0, "876380")
    assert api.get("/proposals/876380").status_code == 200


@integration
def test_control_over_http(scicat_standin: SciCatStandIn) -> None:
    control = scicat_standin.control_url
    api = Api(scicat_standin)

    def post(action: str, body: dict[str, Any] | None = None) -> requests.Response:
        return requests.post(f"{control}/{action}", json=body or {}, timeout=5)

    assert post("fail", {"status": 500, "count": 1, "path_prefix": "proposals"}).ok
    assert api.get("/proposals/443503").status_code == 500
    assert post("stop_answering").ok
    with pytest.raises(requests.ReadTimeout):
        requests.get(scicat_standin.url + "/health", timeout=0.3)
    assert post("resume").ok
    assert post("proposals", {"proposalId": "42", "title": "added over HTTP"}).ok
    assert api.get("/proposals/42").json()["title"] == "added over HTTP"
    assert post("delay", {"seconds": 0, "match": "x"}).ok
    assert post("expire_tokens").ok
    assert post("change_password", {"username": "admin", "password": "new"}).ok
    assert log_in(scicat_standin, "admin", "new").status_code == 201
    assert post("reject_credentials", {"seconds": 0}).ok
    assert post("set_token", {"token": scicat_standin.token}).ok
    assert post("stop_answering", {"refuse": True}).status_code == 400  # could never resume
    assert post("nonsense").status_code == 404
    api.post("/datasets", _dataset())
    assert list(requests.get(f"{control}/datasets", timeout=5).json()) == [_dataset()["pid"]]
    stats = requests.get(f"{control}/stats", timeout=5).json()
    assert stats["datasets"] == 1
    assert stats["requests"]["GET /proposals/{pid} 500"] == 1


@integration
def test_keep_alive_reuses_one_connection(api: Api, scicat_standin: SciCatStandIn) -> None:
    for _ in range(200):
        assert api.get("/proposals/443503").status_code == 200
    assert scicat_standin.stats()["connections"] == 1


@integration
@pytest.mark.parametrize(
    ("header", "status"),
    # Over the 16 MB body limit: body-parser's error is no HttpException, NestJS answers 500.
    [("Content-Length: 99999999", 500), ("Transfer-Encoding: chunked", 411)],
)
def test_bodies_it_cannot_read_are_refused(
    scicat_standin: SciCatStandIn, header: str, status: int
) -> None:
    request = f"POST /api/v3/datasets HTTP/1.1\r\nHost: x\r\n{header}\r\n\r\n"
    with socket.create_connection(("127.0.0.1", scicat_standin.port), timeout=5) as conn:
        conn.sendall(request.encode())
        with conn.makefile("rb") as reader:
            head = reader.readline().decode()
    assert head.split()[1] == str(status)


@integration
def test_requests_log_records_method_path_status(api: Api, scicat_standin: SciCatStandIn) -> None:
    api.get("/proposals/0")
    assert scicat_standin.requests_log == [("GET", "/api/v3/proposals/0", 404)]


@integration
def test_cli_serves_until_sigterm() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "scicat_ingestor.testing.scicat", "--token", "cli-token"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        headers = {"Authorization": "Bearer cli-token"}
        assert requests.get(url + "/proposals/443503", headers=headers, timeout=5).ok
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        process.kill()
        process.wait()
        if process.stdout is not None:
            process.stdout.close()


# ---- pure logic ------------------------------------------------------------------------------


def test_filter_operators() -> None:
    docs: list[dict[str, Any]] = [
        {"name": "odin", "groups": ["a", "b"], "n": 10, "rel": [{"to": "x"}, {"to": "y"}]},
        {"name": "Loki", "groups": ["c"], "n": 9},
        {"name": "coda"},
    ]

    def names(where: dict[str, Any], **extra: Any) -> list[str]:
        found = apply_filter(docs, json.dumps({"where": where, **extra}))
        return [d["name"] for d in found]

    assert names({"groups": "b"}) == ["odin"]  # array membership, like MongoDB
    assert names({"rel.to": "y"}) == ["odin"]  # through an array of objects, like MongoDB
    assert names({"name": {"like": "^[a-z]"}}) == ["odin", "coda"]
    assert names({"name": {"inq": ["Loki", "coda"]}}) == ["Loki", "coda"]
    assert names({"n": None}) == ["coda"]  # missing equals null
    assert names({"or": [{"n": 9}, {"name": "coda"}]}) == ["Loki", "coda"]
    assert names({}, order=["n ASC"]) == ["coda", "Loki", "odin"]  # numeric, not lexical
    with pytest.raises(FilterError, match="unsupported filter operator"):
        names({"n": {"$gt": 1}})


def test_validators_are_compiled_once_per_process() -> None:
    validators = load_validators()
    assert load_validators() is validators
    assert validators[DTO_RAW_DATASET].violations(_dataset()) == []
    assert validators[DTO_ORIGDATABLOCK].violations(_block("p")) == []
