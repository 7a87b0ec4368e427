"""SciCat requests per file, counted by the stand-in: what each exists-check choice costs.

A new file whose pid is known costs its two POSTs (dataset, origdatablock) when the metadata
search is skipped, three with the search (or with a pid SciCat assigns); a redelivered file
costs two (its POST's 409 or the search, then the origdatablock look-up). The schema's look-ups
(``GET proposals``) are cached and not counted here. ``scicat_ingestor_scicat_requests_total``
counts the same requests on the ingestor's side.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from helpers.http import EchoHandler, serving
from helpers.pipeline import PID, MakePipeline, ingest
from helpers.standin import DATASET
from helpers.versions import VERSIONS
from scicat_ingestor.config.model import SciCatOptions, build
from scicat_ingestor.ingest.outcome import Created, Existed
from scicat_ingestor.ops.metrics import REGISTRY
from scicat_ingestor.scicat import SciCatClient
from scicat_ingestor.testing.scicat import SciCatStandIn

pytestmark = pytest.mark.integration

_FAMILIES = ("/datasets", "/origdatablocks", "/v4/datasets", "/v4/origdatablocks")

# Each configuration: its ingestion/dataset sections, then the requests of a new file and of the
# same file redelivered, as the stand-in names its routes (API v3; v4 adds "/v4").
_SEARCH_OFF = {"check_if_dataset_exists_by_metadata_when_pid_known": False}
CASES = {
    "pid known, search off": (
        _SEARCH_OFF,
        {},
        ["POST /datasets 201", "POST /origdatablocks 201"],
        ["POST /datasets 409", "GET /datasets/{pid}/origdatablocks 200"],
    ),
    "pid known, search on": (
        {},
        {},
        ["GET /datasets 200", "POST /datasets 201", "POST /origdatablocks 201"],
        ["GET /datasets 200", "GET /datasets/{pid}/origdatablocks 200"],
    ),
    "pid assigned by SciCat": (
        _SEARCH_OFF,  # does not apply: there is no pid before the POST
        {"allow_dataset_pid": False},
        ["GET /datasets 200", "POST /datasets 201", "POST /origdatablocks 201"],
        ["GET /datasets 200", "GET /datasets/{pid}/origdatablocks 200"],
    ),
}
_V4_NAMES = {
    "/datasets/{pid}/origdatablocks": "/v4/origdatablocks",
    "/datasets": "/v4/datasets",
    "/origdatablocks": "/v4/origdatablocks",
}


def _v4(requests: list[str]) -> list[str]:
    """The same requests as the stand-in names them on API v4."""
    renamed = []
    for request in requests:
        method, route, status = request.split(" ")
        renamed.append(f"{method} {_V4_NAMES[route]} {status}")
    return renamed


def _catalogue_requests(before: Mapping[str, int], standin: SciCatStandIn) -> Counter[str]:
    """The dataset and origdatablock requests the stand-in answered since ``before``."""
    after = Counter(standin.stats()["requests"])
    after.subtract(before)
    return Counter({k: n for k, n in after.items() if n and k.split(" ")[1].startswith(_FAMILIES)})


def _metric_total() -> float:
    """``scicat_ingestor_scicat_requests_total`` over the dataset and origdatablock routes."""
    total = 0.0
    for metric in REGISTRY.collect():
        for sample in metric.samples:
            endpoint = sample.labels.get("endpoint", "")
            if sample.name == "scicat_ingestor_scicat_requests_total" and endpoint.startswith(
                ("datasets", "origdatablocks")
            ):
                total += sample.value
    return total


def _measured(standin: SciCatStandIn, run: Any) -> tuple[Any, Counter[str], float]:
    """``run()``'s result, the stand-in's requests and the metric's count during it."""
    before, counted = Counter(standin.stats()["requests"]), _metric_total()
    result = run()
    return result, _catalogue_requests(before, standin), _metric_total() - counted


@VERSIONS
@pytest.mark.parametrize("case", list(CASES))
def test_requests_per_new_and_redelivered_file(
    make_pipeline: MakePipeline,
    coda: Path,
    scicat_standin: SciCatStandIn,
    api_version: int,
    case: str,
) -> None:
    ingestion, dataset, new, again = CASES[case]
    if api_version == 4:
        new, again = _v4(new), _v4(again)
    pipeline = make_pipeline(
        scicat={"api_version": api_version}, ingestion=ingestion, dataset=dataset
    )
    first, sent_new, counted = _measured(scicat_standin, lambda: ingest(pipeline, coda))
    assert isinstance(first, Created), first
    assert sent_new == Counter(new)
    assert counted == len(new)
    second, sent_again, counted = _measured(scicat_standin, lambda: ingest(pipeline, coda))
    assert second == Existed(first.pid)
    assert sent_again == Counter(again)
    assert counted == len(again)
    assert len(scicat_standin.datasets) == 1
    assert len(scicat_standin.origdatablocks) == 1
    print(
        f"\n[figures] {case}, backend {scicat_standin.profile.name} API v{api_version}: "
        f"new file {sent_new.total()}, redelivered {sent_again.total()} SciCat requests"
    )


def test_no_get_by_pid_before_a_create(
    make_pipeline: MakePipeline, coda: Path, scicat_standin: SciCatStandIn
) -> None:
    """``check_if_dataset_exists_by_pid`` (on by default) no longer costs a GET: the POST's 409
    answers the same question."""
    pipeline = make_pipeline(ingestion={"check_if_dataset_exists_by_pid": True})
    assert isinstance(ingest(pipeline, coda), Created)
    assert ingest(pipeline, coda) == Existed(PID)
    assert not any(k.startswith("GET /datasets/{pid} ") for k in scicat_standin.stats()["requests"])


def test_dry_run_still_asks_by_pid(
    make_pipeline: MakePipeline, coda: Path, scicat_standin: SciCatStandIn
) -> None:
    """A dry run may not POST, so it asks by GET what a real run learns from the 409."""
    assert isinstance(ingest(make_pipeline(), coda), Created)
    dry = make_pipeline(ingestion={"dry_run": True, **_SEARCH_OFF})
    before = Counter(scicat_standin.stats()["requests"])
    assert ingest(dry, coda) == Existed(PID)
    assert _catalogue_requests(before, scicat_standin) == Counter(
        ["GET /datasets/{pid} 200", "GET /datasets/{pid}/origdatablocks 200"]
    )


def test_search_off_does_not_find_a_dataset_another_tool_created(
    make_pipeline: MakePipeline, coda: Path, scicat_standin: SciCatStandIn
) -> None:
    """What the search is for: a dataset of the same run under another pid. With the search
    skipped the file makes a second dataset (the docs say so); with it, it is found."""
    other = make_pipeline(dataset={"generate_dataset_pid": True})  # another tool's pids
    made = ingest(other, coda)
    assert isinstance(made, Created) and made.pid != PID
    assert ingest(make_pipeline(), coda) == Existed(made.pid)
    assert isinstance(ingest(make_pipeline(ingestion=_SEARCH_OFF), coda), Created)
    assert sorted(scicat_standin.datasets) == sorted([made.pid, PID])


def test_assigned_pid_without_any_search_makes_a_second_dataset(
    make_pipeline: MakePipeline, coda: Path, scicat_standin: SciCatStandIn
) -> None:
    """Why the switch leaves SciCat-assigned pids alone: without the search nothing can tell a
    redelivered file from a new one (the docs' table)."""
    pipeline = make_pipeline(
        ingestion={"check_if_dataset_exists_by_metadata": False},
        dataset={"allow_dataset_pid": False},
    )
    outcomes = [ingest(pipeline, coda) for _ in range(2)]
    assert all(isinstance(o, Created) for o in outcomes)
    assert len(scicat_standin.datasets) == 2


# ---- the search's filter -------------------------------------------------------------------


class _Recording(EchoHandler):
    """A SciCat that finds nothing and remembers the query strings it was sent."""

    queries: list[dict[str, list[str]]] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.queries.append(parse_qs(urlsplit(self.path).query))
        self._reply_list()

    def _reply_list(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"[]")


@pytest.fixture
def recording() -> Iterator[tuple[str, type[_Recording]]]:
    _Recording.queries = []
    for port in serving(_Recording):
        yield f"http://127.0.0.1:{port}/api/v3", _Recording


@pytest.mark.parametrize("api_version", [3, 4])
def test_search_asks_for_one_pid(recording: tuple[str, type[_Recording]], api_version: int) -> None:
    """v3 and v4 take the same ``filter``: ``fields`` and ``limits.limit`` (a top-level
    ``limit`` is ignored by both: backend-v5-behaviour.md §4.1)."""
    host, handler = recording
    options = {"host": host, "token": "t", "api_version": api_version}
    client = SciCatClient(build(SciCatOptions, options, "test"))
    try:
        where = {"scientificMetadata.job_id.value": "job-1"}
        assert client.find_datasets(where, fields=("pid",), limit=1) == []
        assert client.find_datasets(where) == []
    finally:
        client.close()
    [narrow], [plain] = handler.queries[0]["filter"], handler.queries[1]["filter"]
    assert narrow == (
        '{"where": {"scientificMetadata.job_id.value": "job-1"}, "fields": ["pid"], '
        '"limits": {"limit": 1}}'
    )
    assert plain == '{"where": {"scientificMetadata.job_id.value": "job-1"}}'


@VERSIONS
def test_narrow_search_is_accepted_by_every_version(
    scicat_standin: SciCatStandIn, api_version: int
) -> None:
    """Two datasets of the same run: the narrow search answers one, with its pid."""
    options = {"host": scicat_standin.url, "token": scicat_standin.token}
    client = SciCatClient(build(SciCatOptions, {**options, "api_version": api_version}, "t"))
    try:
        for n in (1, 2):
            client.create_dataset({**DATASET, "pid": f"20.500.12269/narrow-{n}"})
        where = {"scientificMetadata.job_id.value": "job-1"}
        [found] = client.find_datasets(where, fields=("pid",), limit=1)
    finally:
        client.close()
    assert found["pid"].startswith("20.500.12269/narrow-")
