"""SciCatClient through API v4 (backend 5) and v3 (4.5 and 5) against the stand-in's profiles.

The public methods stay the same; ``routes`` maps them per version. What v4 does differently
(``backend-v5-behaviour.md`` §4, §5): arrays instead of singular ids, ``owner`` required, a
search answered 403 (not ``[]``) without valid credentials, an origdatablock checked against the
dataset's ownerGroup, attachments with ``relationships`` and an ``aid`` whose repetition is 500.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from helpers.standin import DATASET
from scicat_ingestor.config.model import SciCatOptions, build, load_config
from scicat_ingestor.scicat import (
    SciCatAuthRefused,
    SciCatClient,
    SciCatConflict,
    SciCatForbidden,
    SciCatRejected,
)
from scicat_ingestor.testing.scicat import SciCatStandIn

pytestmark = pytest.mark.integration

# (stand-in backend, scicat.api_version): what facilities run today
MATRIX = [("4.5", 3), ("5", 3), ("5", 4)]

V3_DATASET = {**DATASET, "proposalId": "443503", "instrumentId": "odin-pid", "size": 0}
THUMBNAIL = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"


def _client(standin: SciCatStandIn, **options: Any) -> SciCatClient:
    data = {"host": standin.url, "token": standin.token, "timeout": 2, "backoff_factor": 0.01}
    return SciCatClient(build(SciCatOptions, {**data, **options}, "test"))


def _requests(standin: SciCatStandIn, route: str) -> int:
    return sum(n for key, n in standin.stats()["requests"].items() if key.startswith(route))


def _attachment(pid: str) -> dict[str, Any]:
    return {
        "id": "thumb-" + pid.rsplit("/", 1)[-1],
        "datasetId": pid,
        "caption": "thumbnail",
        "thumbnail": THUMBNAIL,
        "ownerGroup": "ess_proposal_443503",
        "accessGroups": ["ess"],
    }


@pytest.mark.parametrize(("backend", "api_version"), MATRIX)
def test_the_ingestors_requests_in_each_profile(
    scicat_standin_factory: Callable[..., SciCatStandIn], backend: str, api_version: int
) -> None:
    standin = scicat_standin_factory(backend=backend)
    client = _client(standin, api_version=api_version)
    prefix = "/v4" if api_version == 4 else ""
    pid = client.create_dataset(V3_DATASET)["pid"]
    assert pid == DATASET["pid"]
    with pytest.raises(SciCatConflict):
        client.create_dataset(V3_DATASET)  # idempotency as on v3: 409 on the same pid
    assert client.get_dataset(pid) is not None
    assert client.get_dataset("20.500.12269/unknown") is None
    assert [
        d["pid"] for d in client.find_datasets({"scientificMetadata.job_id.value": "job-1"})
    ] == [pid]
    assert client.find_datasets({"scientificMetadata.job_id.value": "none"}) == []
    assert client.origdatablocks_of(pid) == []
    block = {
        "datasetId": pid,
        "size": 3,
        "dataFileList": [{"path": "f.hdf", "size": 3, "time": "2024-01-01T00:00:00.000Z"}],
    }
    client.create_origdatablock(block)
    assert [b["datasetId"] for b in client.origdatablocks_of(pid)] == [pid]
    assert client.attachments_of(pid) == []
    client.create_attachment(pid, _attachment(pid))
    assert len(client.attachments_of(pid)) == 1
    for route in ("POST /datasets", "POST /origdatablocks", "GET /datasets/{pid}"):
        versioned = route.replace(" /", f" {prefix}/")
        assert _requests(standin, versioned) >= 1, versioned
    # the stored dataset reads back in v3 shape either way (the stand-in converts like v5)
    stored = standin.datasets[pid]
    assert stored["proposalIds"] == ["443503"] or stored.get("proposalId") == "443503"
    assert standin.datasets[pid]["size"] == 3  # 0 at create, the block counted once


def test_v4_dataset_body_is_the_v4_form(scicat_standin: SciCatStandIn) -> None:
    client = _client(scicat_standin, api_version=4)
    created = client.create_dataset(V3_DATASET)
    assert created["principalInvestigators"] == ["Pia Investigator"]
    assert created["proposalIds"] == ["443503"]
    assert created["instrumentIds"] == ["odin-pid"]
    assert "principalInvestigator" not in created and "proposalId" not in created
    with pytest.raises(SciCatRejected, match="owner is required by API v4"):
        client.create_dataset({k: v for k, v in V3_DATASET.items() if k != "owner"})
    assert _requests(scicat_standin, "POST /v4/datasets") == 1  # the ownerless one not sent


@pytest.mark.parametrize(("backend", "expected"), [("4.5", 3), ("5", 4)])
def test_auto_asks_once_and_logs_it(
    scicat_standin_factory: Callable[..., SciCatStandIn],
    caplog: pytest.LogCaptureFixture,
    backend: str,
    expected: int,
) -> None:
    caplog.set_level(logging.INFO)
    standin = scicat_standin_factory(backend=backend)
    client = _client(standin)  # api_version: auto (the default)
    assert client.check_credentials()
    assert client.api_version() == expected
    client.create_dataset(V3_DATASET)
    client.get_dataset(DATASET["pid"])
    lines = [r.getMessage() for r in caplog.records if "API v4 (GET" in r.getMessage()]
    assert len(lines) == 1
    assert lines[0].endswith(f"through API v{expected} (scicat.api_version: auto)")
    assert _requests(standin, "GET /v4/datasets/count") == (1 if backend == "5" else 0)
    assert _requests(standin, "unrouted 404") == (1 if backend == "4.5" else 0)
    assert _requests(standin, "POST /v4/datasets" if expected == 4 else "POST /datasets") == 1


def test_a_v4_search_refused_is_an_auth_problem_not_none_found(
    scicat_standin: SciCatStandIn,
) -> None:
    """v3 answers a dead token's search 200 ``[]``: "none found", a duplicate dataset next. v4
    answers 403, and that must not become an empty list."""
    client = _client(scicat_standin, token="garbage-token", api_version=4)
    with pytest.raises(SciCatAuthRefused, match=r"HTTP 403 on GET v4/datasets; .*users/my/self"):
        client.find_datasets({"scientificMetadata.job_id.value": "job-1"})
    assert _requests(scicat_standin, "GET /v4/datasets 403") >= 1


def test_a_v4_origdatablock_refused_names_admin_groups(scicat_standin: SciCatStandIn) -> None:
    """``creator`` may create datasets of any group, and on v3 their blocks; v4 checks the
    block against the dataset's ownerGroup."""
    client = _client(scicat_standin, token="", username="creator", password="pwd", api_version=4)
    pid = client.create_dataset(V3_DATASET)["pid"]
    block = {
        "datasetId": pid,
        "size": 1,
        "dataFileList": [{"path": "f", "size": 1, "time": "2024-01-01T00:00:00Z"}],
    }
    with pytest.raises(SciCatForbidden) as info:
        client.create_origdatablock(block)
    assert str(info.value).startswith(
        f"account 'creator' may not add origdatablocks to dataset {pid}: API v4 checks the block "
        "against the dataset's ownerGroup; add the account to ADMIN_GROUPS (SciCat POST "
        "v4/origdatablocks → 403"
    )
    assert client.credentials.ok  # a permission problem, not an outage


def test_v4_attachment_keeps_our_aid_and_a_repeat_is_exists(scicat_standin: SciCatStandIn) -> None:
    """v4 answers our aid again with 500; finding it then means it exists (409 to the caller)."""
    client = _client(scicat_standin, api_version=4)
    pid = client.create_dataset(V3_DATASET)["pid"]
    body = _attachment(pid)
    created = client.create_attachment(pid, body)
    assert created["aid"] == body["id"]
    assert created["relationships"][0]["targetId"] == pid
    with pytest.raises(SciCatConflict, match="exists"):
        client.create_attachment(pid, body)
    [found] = client.attachments_of(pid)
    assert found["aid"] == body["id"]
    assert _requests(scicat_standin, "POST /v4/attachments 500") == 1
    assert len(scicat_standin.attachments[pid]) == 1


def test_v4_attachment_500_without_ours_stays_unavailable(scicat_standin: SciCatStandIn) -> None:
    from scicat_ingestor.scicat import SciCatUnavailable

    client = _client(scicat_standin, api_version=4, max_retries=0)
    pid = client.create_dataset(V3_DATASET)["pid"]
    scicat_standin.faults.fail_next(1, 500, "/api/v4/attachments")
    with pytest.raises(SciCatUnavailable) as info:
        client.create_attachment(pid, _attachment(pid))
    assert not isinstance(info.value, SciCatConflict)
    assert client.attachments_of(pid) == []


@pytest.mark.parametrize("suffix", ["/api", "/api/v3", "/api/v4"])
def test_the_host_may_end_in_api_or_a_version(scicat_standin: SciCatStandIn, suffix: str) -> None:
    root = scicat_standin.url.rsplit("/api/", 1)[0]
    client = _client(scicat_standin, host=root + suffix)
    assert client.get_json("proposals/443503")["proposalId"] == "443503"
    assert client.create_dataset(V3_DATASET)["pid"] == DATASET["pid"]
    assert _requests(scicat_standin, "POST /v4/datasets 201") == 1


def test_the_upstream_ingestors_versioned_config_loads_unchanged(
    scicat_standin: SciCatStandIn, tmp_path: Path
) -> None:
    """The ESS ingestor's next form: ``host: …/api`` and each endpoint with its version."""
    root = scicat_standin.url.rsplit("/api/", 1)[0]
    config = {
        "scicat": {
            "host": root + "/api",
            "token": scicat_standin.token,
            "api_endpoints": {
                "datasets": "v4/datasets",
                "proposals": "v3/proposals",
                "origdatablocks": "v4/origdatablocks",
                "instruments": "v3/instruments",
                "samples": "v3/samples",
            },
        }
    }
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump(config))
    client = SciCatClient(load_config(path).scicat)
    assert client.api_version() == 4
    assert client.get_json("proposals/443503")["proposalId"] == "443503"
    assert client.get_json("instruments")[0]["name"]
    pid = client.create_dataset(V3_DATASET)["pid"]
    assert client.find_samples({"sampleId": "none"}) == []
    assert client.attachments_of(pid) == []
    assert _requests(scicat_standin, "POST /v4/datasets 201") == 1
    assert _requests(scicat_standin, "GET /v4/datasets/count") == 0  # the config said v4
