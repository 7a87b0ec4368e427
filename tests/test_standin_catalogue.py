"""The stand-in as a filled catalogue: preloaded datasets, and searches that cost what a MongoDB
collection scan costs (every dataset examined, counted as ``examined``), while a look-up by pid
examines none. The benchmark's catalogue-size scenario rests on both."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import pytest
import requests

from scicat_ingestor.testing.scicat import SciCatStandIn, apply_filter
from scicat_ingestor.testing.scicat.backend import PID_PREFIX
from scicat_ingestor.testing.scicat.profiles import BACKENDS

integration = pytest.mark.integration
each_backend = pytest.mark.parametrize("backend", BACKENDS)
Factory = Callable[..., SciCatStandIn]


def _preloaded_pid(number: int) -> str:
    return f"{PID_PREFIX}/preloaded-{number:09d}"


def _in_path(pid: str) -> str:
    """A pid as a path segment (its ``/`` encoded, as the ingestor's client sends it)."""
    return quote(pid, safe="")


def _search(standin: SciCatStandIn, where: dict[str, Any], api: str = "v3", **extra: Any) -> Any:
    """GET datasets?filter= (v3 or v4) with the static token; the answer's JSON."""
    answer = requests.get(
        f"{standin.api_url}/{api}/datasets",
        params={"filter": json.dumps({"where": where, **extra})},
        headers={"Authorization": f"Bearer {standin.token}"},
        timeout=10,
    )
    answer.raise_for_status()
    return answer.json()


def _examined(standin: SciCatStandIn) -> int:
    return int(standin.stats()["examined"])


# ---- searches scan -----------------------------------------------------------------------------


@integration
@each_backend
def test_a_search_that_finds_nothing_examines_every_dataset(
    scicat_standin_factory: Factory, backend: str
) -> None:
    standin = scicat_standin_factory(backend=backend, preload=1000)
    before = _examined(standin)
    found = _search(standin, {"scientificMetadata.job_id.value": "not-there"})
    assert found == []
    assert _examined(standin) - before == 1000


@integration
@pytest.mark.parametrize("api", ["v3", "v4"])
def test_a_search_answers_as_backend_5_does_to_fields_and_a_top_level_limit(
    scicat_standin_factory: Factory, api: str
) -> None:
    """Recorded on backend 5 (v3 and v4): ``fields: ["pid"]`` answers ``_id`` and ``pid`` only;
    ``limit``/``skip`` outside ``limits`` are ignored (all rows)."""
    standin = scicat_standin_factory(preload=3)
    projected = _search(standin, {}, api=api, fields=["pid"], limits={"limit": 1})
    assert projected == [{"_id": _preloaded_pid(0), "pid": _preloaded_pid(0)}]
    assert len(_search(standin, {}, api=api, limit=1, skip=2)) == 3


@integration
def test_a_search_with_a_limit_stops_at_the_match_like_a_collection_scan(
    scicat_standin_factory: Factory,
) -> None:
    standin = scicat_standin_factory(preload=1000)
    where = {"scientificMetadata.job_id.value": "preloaded-000000004"}
    before = _examined(standin)
    found = _search(standin, where, limits={"limit": 1}, fields=["pid"])
    assert [d["pid"] for d in found] == [_preloaded_pid(4)]
    assert _examined(standin) - before == 5
    # an order needs every match first: the whole collection is examined
    _search(standin, where, limits={"limit": 1, "order": "pid:desc"})
    assert _examined(standin) - before == 5 + 1000


@integration
def test_the_v4_search_scans_too(scicat_standin_factory: Factory) -> None:
    standin = scicat_standin_factory(backend="5", preload=300)
    assert _search(standin, {"scientificMetadata.job_id.value": "x"}, api="v4") == []
    assert _examined(standin) == 300


@integration
def test_a_look_up_by_pid_examines_no_dataset(scicat_standin_factory: Factory) -> None:
    standin = scicat_standin_factory(preload=1000)
    headers = {"Authorization": f"Bearer {standin.token}"}
    url = f"{standin.url}/datasets/{_in_path(_preloaded_pid(999))}"
    assert requests.get(url, headers=headers, timeout=10).status_code == 200
    blocks = requests.get(f"{url}/origdatablocks", headers=headers, timeout=10)
    assert blocks.json() == []
    assert _examined(standin) == 0


# ---- preloading --------------------------------------------------------------------------------


@integration
@each_backend
def test_preloaded_datasets_read_back_like_created_ones(
    scicat_standin_factory: Factory, backend: str
) -> None:
    standin = scicat_standin_factory(backend=backend, preload=3)
    assert standin.stats()["datasets"] == 3
    answer = requests.get(
        f"{standin.url}/datasets/{_in_path(_preloaded_pid(2))}",
        headers={"Authorization": f"Bearer {standin.token}"},
        timeout=10,
    )
    dataset = answer.json()
    assert answer.status_code == 200
    assert dataset["scientificMetadata"]["job_id"]["value"] == "preloaded-000000002"
    assert dataset["type"] == "raw"
    assert dataset["ownerGroup"] == "ess_proposal_443503"
    assert dataset["createdAt"].endswith("Z")


@integration
def test_a_preloaded_pid_is_taken(scicat_standin_factory: Factory) -> None:
    standin = scicat_standin_factory(preload=1)
    body = standin.datasets[_preloaded_pid(0)]
    created = {k: body[k] for k in ("pid", "type", "datasetName", "owner", "sourceFolder")}
    created |= {k: body[k] for k in ("creationTime", "ownerGroup", "contactEmail")}
    created |= {"principalInvestigator": "Pia Investigator", "creationLocation": "ESS:CODA"}
    answer = requests.post(
        f"{standin.url}/datasets",
        json=created,
        headers={"Authorization": f"Bearer {standin.token}"},
        timeout=10,
    )
    assert answer.status_code == 409, answer.text


@integration
def test_preload_over_http_continues_the_numbering(scicat_standin_factory: Factory) -> None:
    standin = scicat_standin_factory(preload=2)
    answer = requests.post(f"{standin.control_url}/preload", json={"count": 3}, timeout=10)
    assert answer.status_code == 200, answer.text
    assert sorted(standin.datasets) == [_preloaded_pid(n) for n in range(5)]
    refused = requests.post(f"{standin.control_url}/preload", json={"count": -1}, timeout=10)
    assert refused.status_code == 400
    assert "cannot preload -1 datasets" in refused.json()["message"]


def test_no_preload_by_default_keeps_the_store_empty() -> None:
    assert SciCatStandIn().stats()["datasets"] == 0


def test_a_negative_preload_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot preload -2 datasets"):
        SciCatStandIn(preload=-2)


@integration
def test_cli_preload() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "scicat_ingestor.testing.scicat", "--preload", "25"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        stats = requests.get(url.replace("/api/v3", "/_standin/stats"), timeout=5).json()
        assert stats["datasets"] == 25
    finally:
        process.kill()
        process.wait()
        if process.stdout is not None:
            process.stdout.close()


def test_cli_refuses_a_negative_preload(capsys: pytest.CaptureFixture[str]) -> None:
    from scicat_ingestor.testing.scicat.__main__ import main

    with pytest.raises(SystemExit) as exited:
        main(["--preload", "-1"])
    assert exited.value.code == 2
    assert "--preload: -1 is not a number of datasets" in capsys.readouterr().err


# ---- the filter engine (pure) ------------------------------------------------------------------


class _Counted:
    """Documents handed out one by one, counting how many were taken."""

    def __init__(self, documents: list[dict[str, Any]]) -> None:
        self.documents = documents
        self.taken = 0

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for document in self.documents:
            self.taken += 1
            yield document


def _docs(count: int) -> list[dict[str, Any]]:
    return [{"n": n, "even": n % 2 == 0} for n in range(count)]


@pytest.mark.parametrize(
    ("limits", "found", "taken"),
    [
        ({}, list(range(0, 10, 2)), 10),  # no limit: all
        ({"limit": 2}, [0, 2], 3),  # stops at the second match
        ({"limit": 2, "skip": 1}, [2, 4], 5),  # skipped matches are examined too
        ({"limit": 9}, list(range(0, 10, 2)), 10),  # fewer matches than the limit: all
        ({"limit": 1, "order": "n:desc"}, [8], 10),  # an order needs them all
    ],
)
def test_apply_filter_examines_as_a_collection_scan(
    limits: dict[str, Any], found: list[int], taken: int
) -> None:
    documents = _Counted(_docs(10))
    result = apply_filter(documents, json.dumps({"where": {"even": True}, "limits": limits}))
    assert [d["n"] for d in result] == found
    assert documents.taken == taken
