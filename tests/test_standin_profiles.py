"""The stand-in's backend profiles beyond the recorded scenarios: which version serves API v4,
v4 answers the scenarios do not cover (jobs, anonymous searches, owner, validation shape), the
route-removal fault, expiry answers after ``expire_tokens`` and how the fixtures pick a profile."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from typing import Any

import pytest
import requests

from helpers.standin import V4_DATASET, V4_PID, call
from scicat_ingestor.testing.scicat import SciCatStandIn
from scicat_ingestor.testing.scicat.fixtures import BACKEND_VARIABLE, default_backend

pytestmark = pytest.mark.integration
backend_5 = pytest.mark.parametrize("scicat_standin", ["5"], indirect=True)
backend_45 = pytest.mark.parametrize("scicat_standin", ["4.5"], indirect=True)


def _where(**where: Any) -> dict[str, str]:
    return {"filter": json.dumps({"where": where})}


# ---- which version serves what ---------------------------------------------------------------


@backend_45
def test_backend_4_5_serves_no_api_v4(scicat_standin: SciCatStandIn) -> None:
    answer = call(scicat_standin, "POST", "v4/datasets", V4_DATASET)
    assert (answer.status_code, answer.json()["message"]) == (
        404,
        "Cannot POST /api/v4/datasets",
    )
    assert call(scicat_standin, "POST", "v3/jobs", {"type": "archive"}).status_code == 404


@backend_5
@pytest.mark.parametrize(
    ("method", "path"), [("POST", "v4/auth/login"), ("POST", "v4/samples"), ("GET", "v4/health")]
)
def test_backend_5_keeps_auth_samples_health_on_v3(
    scicat_standin: SciCatStandIn, method: str, path: str
) -> None:
    assert call(scicat_standin, method, path, {}).status_code == 404


# ---- v4 datasets -----------------------------------------------------------------------------


@backend_5
def test_v4_dataset_without_owner_is_500(scicat_standin: SciCatStandIn) -> None:
    body = {k: v for k, v in V4_DATASET.items() if k != "owner"}
    answer = call(scicat_standin, "POST", "v4/datasets", body)
    assert (answer.status_code, answer.json()) == (
        500,
        {"message": "Something went wrong. Please try again later.", "statusCode": 500},
    )
    assert scicat_standin.datasets == {}


@backend_5
def test_v4_validation_errors_are_a_list_and_type_is_any_string(
    scicat_standin: SciCatStandIn,
) -> None:
    body = {k: v for k, v in V4_DATASET.items() if k != "type"}
    answer = call(scicat_standin, "POST", "v4/datasets", body)
    assert answer.json() == {
        "statusCode": 400,
        "message": ["type must be a string"],
        "error": "Bad Request",
    }
    assert call(scicat_standin, "POST", "v4/datasets", {**body, "type": "weird"}).ok


@backend_5
@pytest.mark.parametrize("path", ["v4/datasets", "v4/datasets/findOne", "v4/datasets/count"])
@pytest.mark.parametrize("token", [None, "garbage"])
def test_v4_searches_without_valid_token_are_403_not_empty(
    scicat_standin: SciCatStandIn, path: str, token: str | None
) -> None:
    assert call(scicat_standin, "POST", "v4/datasets", V4_DATASET).status_code == 201
    answer = call(scicat_standin, "GET", path, token=token, params=_where(pid=V4_PID))
    assert (answer.status_code, answer.json()["message"]) == (403, "Unauthorized access")


@backend_5
def test_v4_origdatablock_search_without_valid_token_is_403(
    scicat_standin: SciCatStandIn,
) -> None:
    answer = call(scicat_standin, "GET", "v4/origdatablocks", token=None)
    assert (answer.status_code, answer.json()["message"]) == (403, "Unauthorized access")


@backend_5
def test_v3_reads_a_v4_dataset_with_singular_fields(scicat_standin: SciCatStandIn) -> None:
    body = {**V4_DATASET, "proposalIds": ["443503"], "sampleIds": ["s-1"]}
    created = call(scicat_standin, "POST", "v4/datasets", body).json()
    assert "proposalId" not in created
    quoted = V4_PID.replace("/", "%2F")
    read = call(scicat_standin, "GET", f"v3/datasets/{quoted}").json()
    assert (read["proposalId"], read["sampleId"], read["history"]) == ("443503", "s-1", [])
    assert read["principalInvestigator"] is None


# ---- jobs ------------------------------------------------------------------------------------


@backend_5
def test_v4_jobs_types_and_refusals(scicat_standin: SciCatStandIn) -> None:
    assert call(scicat_standin, "POST", "v4/datasets", V4_DATASET).status_code == 201
    embargo = {"type": "embargo_period", "ownerUser": "ingestor", "jobParams": {}}
    created = call(scicat_standin, "POST", "v4/jobs", embargo)
    assert created.status_code == 201
    job = created.json()
    assert (job["statusCode"], job["statusMessage"], job["contactEmail"]) == (
        "jobSubmitted",
        "Job submitted.",
        "ingestor@standin.example.org",
    )
    assert call(scicat_standin, "GET", f"v4/jobs/{job['id']}").json()["type"] == "embargo_period"
    no_list = call(scicat_standin, "POST", "v4/jobs", {**embargo, "type": "archive"})
    assert (no_list.status_code, no_list.json()) == (
        400,
        {"status": 400, "message": "'jobParams.datasetList' is required."},
    )
    no_params = call(scicat_standin, "POST", "v4/jobs", {"type": "archive"})
    assert no_params.json()["message"] == ["jobParams must be an object"]
    anonymous = call(scicat_standin, "GET", "v4/jobs", token=None)
    assert (anonymous.status_code, anonymous.json()["message"]) == (403, "Forbidden resource")


@backend_5
def test_v3_job_answers_the_v3_shape(scicat_standin: SciCatStandIn) -> None:
    body = {
        "type": "archive",
        "emailJobInitiator": "pi@example.com",
        "datasetList": [{"pid": V4_PID, "files": []}],
    }
    answer = call(scicat_standin, "POST", "v3/jobs", body)
    assert answer.status_code == 201
    job = answer.json()
    assert (job["jobStatusMessage"], job["jobParams"], job["datasetList"]) == (
        "jobSubmitted",
        {"username": "ingestor"},
        body["datasetList"],
    )
    assert job["_id"] == job["id"]


# ---- proposals -------------------------------------------------------------------------------


def test_proposals_are_created_by_admin_accounts_once(scicat_standin: SciCatStandIn) -> None:
    body = {"proposalId": "p-1", "title": "t", "email": "pi@example.com", "ownerGroup": "g"}
    created = call(scicat_standin, "POST", "v3/proposals", body)
    assert (created.status_code, created.json()["createdBy"]) == (201, "ingestor")
    assert call(scicat_standin, "POST", "v3/proposals", body).status_code == 409
    login = {"username": "creator", "password": "pwd"}
    token = call(scicat_standin, "POST", "v3/auth/login", login, token=None).json()["access_token"]
    other = {**body, "proposalId": "p-2"}
    refused = call(scicat_standin, "POST", "v3/proposals", other, token=token)
    assert (refused.status_code, refused.json()["message"]) == (403, "Forbidden resource")
    missing = call(scicat_standin, "POST", "v3/proposals", {"proposalId": "p-3"})
    assert missing.status_code == 400


# ---- faults: expiry on 5, a route removed ----------------------------------------------------


def _login(standin: SciCatStandIn) -> str:
    body = {"username": "ingestor", "password": "pwd"}
    return str(call(standin, "POST", "v3/auth/login", body, token=None).json()["access_token"])


@backend_5
def test_expire_tokens_on_5_is_401_session_expired_everywhere(
    scicat_standin: SciCatStandIn,
) -> None:
    token = _login(scicat_standin)
    assert call(scicat_standin, "GET", "v3/users/my/self", token=token).ok
    scicat_standin.faults.expire_tokens()
    for path in ("v3/users/my/self", "v3/auth/whoami", "v3/samples", "v4/datasets"):
        answer = call(scicat_standin, "GET", path, token=token)
        assert (answer.status_code, answer.json()["message"]) == (401, "SESSION_EXPIRED"), path
    assert call(scicat_standin, "GET", "v3/users/my/self").ok  # the static token stays


@backend_45
def test_expire_tokens_on_4_5_looks_anonymous(scicat_standin: SciCatStandIn) -> None:
    token = _login(scicat_standin)
    scicat_standin.faults.expire_tokens()
    whoami = call(scicat_standin, "GET", "v3/auth/whoami", token=token)
    assert (whoami.status_code, whoami.content) == (200, b"")
    assert call(scicat_standin, "GET", "v3/users/my/self", token=token).status_code == 401


def test_remove_route_answers_404_like_a_backend_without_it(
    scicat_standin: SciCatStandIn,
) -> None:
    assert call(scicat_standin, "GET", "v3/users/my/self").ok
    scicat_standin.faults.remove_route("users/my/self")
    answer = call(scicat_standin, "GET", "v3/users/my/self")
    assert (answer.status_code, answer.json()["message"]) == (
        404,
        "Cannot GET /api/v3/users/my/self",
    )
    assert call(scicat_standin, "GET", "v3/auth/whoami").ok  # only that route is gone
    assert scicat_standin.stats()["requests"]["unrouted 404"] == 1


@backend_5
def test_remove_route_over_http_by_method_and_full_path(scicat_standin: SciCatStandIn) -> None:
    control = scicat_standin.control_url + "/remove_route"
    body = {"path": "/api/v4/datasets", "method": "POST"}
    assert requests.post(control, json=body, timeout=5).ok
    assert call(scicat_standin, "POST", "v4/datasets", V4_DATASET).status_code == 404
    assert call(scicat_standin, "GET", "v4/datasets").status_code == 200
    assert requests.post(control, json={}, timeout=5).status_code == 400  # no path


# ---- how a profile is chosen ---------------------------------------------------------------


def test_fixtures_default_profile_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(BACKEND_VARIABLE, raising=False)
    assert default_backend() == "5"
    monkeypatch.setenv(BACKEND_VARIABLE, "4.5")
    assert default_backend() == "4.5"
    monkeypatch.setenv(BACKEND_VARIABLE, "4")
    with pytest.raises(pytest.UsageError, match="SCICAT_STANDIN_BACKEND: unknown SciCat backend"):
        default_backend()


def test_unknown_backend_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"unknown SciCat backend '6': choose one of 4\.5, 5"):
        SciCatStandIn(backend="6")


def test_cli_plays_the_backend_asked_for() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "scicat_ingestor.testing.scicat", "--backend", "4.5"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        v4 = url.removesuffix("/v3") + "/v4/datasets"
        assert requests.get(v4, timeout=5).status_code == 404
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        process.kill()
        process.wait()
        if process.stdout is not None:
            process.stdout.close()
