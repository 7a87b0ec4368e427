"""The stand-in's dataset attachments over real HTTP: CreateAttachmentV3Dto validation, listing."""

from __future__ import annotations

from typing import Any

import pytest
import requests

from scicat_ingestor.testing.scicat import SciCatStandIn

pytestmark = pytest.mark.integration

PID = "20.500.12269/attach-me"
PATH = f"datasets/{PID.replace('/', '%2F')}/attachments"


def _call(standin: SciCatStandIn, method: str, path: str, body: Any = None) -> requests.Response:
    headers = {"Authorization": f"Bearer {standin.token}"}
    return requests.request(method, f"{standin.url}/{path}", json=body, headers=headers, timeout=5)


def _with_dataset(standin: SciCatStandIn) -> None:
    body = {
        "pid": PID,
        "type": "raw",
        "owner": "o",
        "contactEmail": "a@b.c",
        "sourceFolder": "/data",
        "creationTime": "2024-10-28T09:06:41Z",
        "creationLocation": "here",
        "datasetName": "d",
        "principalInvestigator": "pi",
        "ownerGroup": "group",
        "accessGroups": ["readers"],
    }
    assert _call(standin, "POST", "datasets", body).status_code == 201


ATTACHMENT = {
    "id": "a-1",
    "caption": "counts vs tof",
    "thumbnail": "data:image/png;base64,iVBORw0KGgo=",
    "ownerGroup": "group",
    "accessGroups": ["readers"],
}


def test_created_and_listed(scicat_standin: SciCatStandIn) -> None:
    _with_dataset(scicat_standin)
    assert _call(scicat_standin, "GET", PATH).json() == []
    created = _call(scicat_standin, "POST", PATH, ATTACHMENT)
    assert created.status_code == 201
    assert created.json()["datasetId"] == PID
    [listed] = _call(scicat_standin, "GET", PATH).json()
    assert listed["id"] == "a-1"
    assert listed["caption"] == "counts vs tof"
    assert listed["createdAt"]
    assert scicat_standin.attachments[PID] == [listed]


def test_repeated_id_is_a_conflict_and_no_id_gets_one(scicat_standin: SciCatStandIn) -> None:
    _with_dataset(scicat_standin)
    assert _call(scicat_standin, "POST", PATH, ATTACHMENT).status_code == 201
    assert _call(scicat_standin, "POST", PATH, ATTACHMENT).status_code == 409
    anonymous = {k: v for k, v in ATTACHMENT.items() if k != "id"}
    assert _call(scicat_standin, "POST", PATH, anonymous).json()["id"]
    assert len(scicat_standin.attachments[PID]) == 2


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"caption": None}, "caption"),  # required
        ({"bogus": 1}, "bogus"),  # not in the DTO
        ({"accessGroups": "readers"}, "accessGroups"),  # must be a list
    ],
)
def test_invalid_bodies_are_400(
    change: dict[str, Any], message: str, scicat_standin: SciCatStandIn
) -> None:
    _with_dataset(scicat_standin)
    body = {k: v for k, v in {**ATTACHMENT, **change}.items() if v is not None}
    answer = _call(scicat_standin, "POST", PATH, body)
    assert answer.status_code == 400
    assert message in str(answer.json()["message"])


def test_unknown_dataset_is_404(scicat_standin: SciCatStandIn) -> None:
    assert _call(scicat_standin, "POST", PATH, ATTACHMENT).status_code == 404
