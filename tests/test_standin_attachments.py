"""The stand-in's dataset attachments over real HTTP: CreateAttachmentV3Dto validation, listing;
v4 attachments (backend 5) with relationships and an aid."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests

from scicat_ingestor.testing.scicat import SciCatStandIn
from scicat_ingestor.testing.scicat.profiles import BACKENDS

pytestmark = pytest.mark.integration
each_backend = pytest.mark.parametrize("scicat_standin", BACKENDS, indirect=True)
backend_5 = pytest.mark.parametrize("scicat_standin", ["5"], indirect=True)  # API v4

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


@each_backend
def test_created_and_listed_with_a_server_id(scicat_standin: SciCatStandIn) -> None:
    _with_dataset(scicat_standin)
    assert _call(scicat_standin, "GET", PATH).json() == []
    created = _call(scicat_standin, "POST", PATH, ATTACHMENT)
    assert created.status_code == 201
    assert created.json()["datasetId"] == PID
    [listed] = _call(scicat_standin, "GET", PATH).json()
    assert listed["id"] == created.json()["id"] != "a-1"  # the id sent is ignored
    assert listed["caption"] == "counts vs tof"
    assert listed["createdAt"]
    assert scicat_standin.attachments[PID] == [listed]


@each_backend
def test_repeated_id_makes_a_second_attachment(scicat_standin: SciCatStandIn) -> None:
    _with_dataset(scicat_standin)
    assert _call(scicat_standin, "POST", PATH, ATTACHMENT).status_code == 201
    assert _call(scicat_standin, "POST", PATH, ATTACHMENT).status_code == 201
    anonymous = {k: v for k, v in ATTACHMENT.items() if k != "id"}
    assert _call(scicat_standin, "POST", PATH, anonymous).json()["id"]
    assert len(scicat_standin.attachments[PID]) == 3


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


V4_ATTACHMENT = {
    "ownerGroup": "group",
    "accessGroups": ["readers"],
    "isPublished": False,
    "thumbnail": "data:image/png;base64,iVBORw0KGgo=",
    "caption": "thumbnail",
    "relationships": [{"targetId": PID, "targetType": "dataset", "relationType": "is attached to"}],
}


def _v4(standin: SciCatStandIn, method: str, path: str, body: Any = None, **kw: Any) -> Any:
    headers = {"Authorization": f"Bearer {standin.token}"}
    url = f"{standin.api_url}/v4/{path}"
    return requests.request(method, url, json=body, headers=headers, timeout=5, **kw)


@backend_5
def test_v4_aid_again_is_500_and_the_first_stays(scicat_standin: SciCatStandIn) -> None:
    _with_dataset(scicat_standin)
    body = {**V4_ATTACHMENT, "aid": "thumb-1"}
    created = _v4(scicat_standin, "POST", "attachments", body)
    assert (created.status_code, created.json()["aid"], created.json()["id"]) == (
        201,
        "thumb-1",
        "thumb-1",
    )
    again = _v4(scicat_standin, "POST", "attachments", body)
    assert (again.status_code, again.json()) == (500, "Internal server error")
    [listed] = _call(scicat_standin, "GET", PATH).json()  # v3 lists it, datasetId filled in
    assert (listed["id"], listed["datasetId"]) == ("thumb-1", PID)


@backend_5
def test_v4_search_by_target_and_anonymously(scicat_standin: SciCatStandIn) -> None:
    _with_dataset(scicat_standin)
    _call(scicat_standin, "POST", PATH, ATTACHMENT)  # a v3 one is in the same collection
    where = {"params": {"filter": json.dumps({"where": {"relationships.targetId": PID}})}}
    assert len(_v4(scicat_standin, "GET", "attachments", **where).json()) == 1
    anonymous = requests.get(f"{scicat_standin.api_url}/v4/attachments", timeout=5)
    assert (anonymous.status_code, anonymous.json()) == (200, [])


@backend_5
def test_v4_validation_answers_a_list(scicat_standin: SciCatStandIn) -> None:
    body = {k: v for k, v in V4_ATTACHMENT.items() if k != "isPublished"}
    answer = _v4(scicat_standin, "POST", "attachments", {**body, "datasetId": PID})
    assert answer.status_code == 400
    assert sorted(answer.json()["message"]) == [
        "isPublished must be a boolean value",
        "property datasetId should not exist",
    ]
