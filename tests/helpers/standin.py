"""Bodies sent to the SciCat stand-in and direct calls to it, shared by the client, stand-in and
daemon tests."""

from __future__ import annotations

from typing import Any

import requests

from scicat_ingestor.testing.scicat import SciCatStandIn

# A v3 raw dataset as the ingestor sends it.
DATASET: dict[str, Any] = {
    "pid": "20.500.12269/client-test-1",
    "type": "raw",
    "datasetName": "client test",
    "principalInvestigator": "Pia Investigator",
    "creationLocation": "ESS:CODA",
    "owner": "Pia Investigator",
    "ownerEmail": "pia@example.org",
    "contactEmail": "pia@example.org",
    "sourceFolder": "/data/coda",
    "creationTime": "2024-10-28T09:06:41+00:00",
    "ownerGroup": "ess_proposal_443503",
    "accessGroups": ["ess"],
    "scientificMetadata": {"job_id": {"value": "job-1", "type": "string", "unit": ""}},
}

V4_PID = "20.500.12269/profiles"
# The smallest dataset API v4 accepts.
V4_DATASET: dict[str, Any] = {
    "pid": V4_PID,
    "type": "raw",
    "datasetName": "min",
    "ownerGroup": "ingestor",
    "sourceFolder": "/d",
    "creationTime": "2024-11-01T10:00:00Z",
    "contactEmail": "someone@example.com",
    "owner": "o",
}

# Daemon config overrides: log in with the stand-in's ingestor account instead of a static token.
LOGIN = {"scicat.token": "", "scicat.username": "ingestor", "scicat.password": "pwd"}


def call(
    standin: SciCatStandIn,
    method: str,
    path: str,
    body: Any = None,
    *,
    token: str | None = "static",
    params: dict[str, str] | None = None,
) -> requests.Response:
    """``path`` under ``/api`` (``v3/...``, ``v4/...``); ``token=None`` sends none."""
    headers = {} if token is None else {"Authorization": f"Bearer {standin.token}"}
    if token not in (None, "static"):
        headers["Authorization"] = f"Bearer {token}"
    url = f"{standin.api_url}/{path}"
    return requests.request(method, url, json=body, headers=headers, params=params, timeout=5)


def log_in(standin: SciCatStandIn, username: str = "ingestor", password: str = "pwd") -> Any:
    """POST /auth/login with the stand-in's account (or the given one): the raw response."""
    body = {"username": username, "password": password}
    return requests.post(standin.url + "/auth/login", json=body, timeout=5)


def expired_token(standin: SciCatStandIn) -> str:
    """A token from a login, then expired by the stand-in."""
    token = str(log_in(standin).json()["access_token"])
    standin.faults.expire_tokens()
    return token


def logins(standin: SciCatStandIn, status: int = 201) -> int:
    """How many logins the stand-in answered with ``status``."""
    return int(standin.stats()["requests"].get(f"POST /auth/login {status}", 0))


def linked_samples(dataset: dict[str, Any]) -> list[str]:
    """The samples a dataset links, whichever API created it (v3's ``sampleId`` is stored as
    ``sampleIds`` too, ``[null]`` without one)."""
    return [sample for sample in dataset.get("sampleIds") or [] if sample]
