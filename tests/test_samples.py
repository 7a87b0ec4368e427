"""Samples from run-start messages: one run's file → one sample in the SciCat stand-in, once.

Also the linking rule: with sample ingestion on, a dataset whose schema sets no ``sampleId`` gets
the sample found by the same name and proposal.
"""

from __future__ import annotations

import logging
import re
import shutil
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import h5py
import pytest

from helpers.standin import linked_samples
from helpers.wait import wait_until
from scicat_ingestor.config.model import IngestorConfig, build
from scicat_ingestor.daemon.deadletters import DeadLetters
from scicat_ingestor.daemon.loop import Daemon
from scicat_ingestor.ingest.outcome import Created, DryRun, Existed, Permanent, Transient
from scicat_ingestor.ingest.pipeline import Job, Pipeline
from scicat_ingestor.ingest.samples import (
    SampleInfo,
    SampleIngestor,
    SampleJob,
    sample_body,
    sample_id,
)
from scicat_ingestor.ops.logcontext import ContextFilter
from scicat_ingestor.ops.metrics import REGISTRY
from scicat_ingestor.schema.loader import load_schemas
from scicat_ingestor.scicat import SciCatClient
from scicat_ingestor.testing.fake_source import FakeSource
from scicat_ingestor.testing.filewriter import run_start_message, wrdn_message
from scicat_ingestor.testing.scicat import SciCatStandIn

pytestmark = pytest.mark.integration

Make = Callable[..., tuple[IngestorConfig, SciCatClient]]


@pytest.fixture
def coda(tmp_path: Path, data_dir: Path) -> Path:
    target = tmp_path / "data" / "coda" / "run-1-small-coda.hdf"
    target.parent.mkdir(parents=True)
    shutil.copy(data_dir / "small-coda.hdf", target)
    return target


@pytest.fixture
def make(tmp_path: Path, data_dir: Path, scicat_standin: SciCatStandIn) -> Iterator[Make]:
    clients: list[SciCatClient] = []
    schemas = tmp_path / "schemas"
    schemas.mkdir()
    shutil.copy(data_dir / "schemas" / "small-coda.imsc.yml", schemas)

    def config(**ingestion: Any) -> tuple[IngestorConfig, SciCatClient]:
        data = {
            "scicat": {
                "host": scicat_standin.url,
                "token": scicat_standin.token,
                "timeout": 2,
                "max_retries": 0,
            },
            "ingestion": {
                "schemas_directory": str(schemas),
                "sample_ingestion": True,
                "file_handling": {"data_directory": str(tmp_path / "data")},
                **ingestion,
            },
        }
        built = build(IngestorConfig, data, "test")
        clients.append(client := SciCatClient(built.scicat))
        return built, client

    yield config
    for client in clients:
        client.close()


def samples(make: Make, **ingestion: Any) -> SampleIngestor:
    return SampleIngestor(*make(**ingestion))


def as_backend_takes_it(body: dict[str, Any], standin: SciCatStandIn) -> dict[str, Any]:
    """A sample made elsewhere: with ``sampleName`` on backend 5 (required), without on 4.5."""
    if standin.backend == "4.5":
        return {k: v for k, v in body.items() if k != "sampleName"}
    return {"sampleName": body["description"], **body}


def test_body_is_upstreams_with_a_stable_sample_id_and_the_sample_name() -> None:
    info = SampleInfo("A Sample", "443503")
    assert sample_body(info) == {
        "sampleId": sample_id(info),
        "sampleName": "A Sample",
        "ownerGroup": "443503",
        "accessGroups": ["443503"],
        "description": "A Sample",
        "proposalId": "443503",
        "isPublished": False,
    }
    assert sample_id(info) == sample_id(SampleInfo("A Sample", "443503"))
    assert sample_id(info) != sample_id(SampleInfo("A Sample", "443504"))


@pytest.mark.parametrize("scicat_standin", ["4.5", "5"], indirect=True)
def test_creates_the_sample_once(make: Make, coda: Path, scicat_standin: SciCatStandIn) -> None:
    """Backend 5 answered our body without ``sampleName`` with 500; 4.5 refuses it (400)."""
    ingestor = samples(make)
    first = ingestor.ingest(SampleJob(str(coda), "job-1"))
    assert isinstance(first, Created), first
    (stored,) = scicat_standin.samples
    assert stored["sampleId"] == first.pid
    assert (stored["description"], stored["proposalId"]) == ("A Sample", "443503")
    assert stored.get("sampleName") == (None if scicat_standin.backend == "4.5" else "A Sample")
    again = ingestor.ingest(SampleJob(str(coda), "job-1"))
    assert again == Existed(first.pid)
    assert len(scicat_standin.samples) == 1


@pytest.mark.parametrize("scicat_standin", ["4.5"], indirect=True)
def test_a_backend_refusing_sample_name_is_asked_once(
    make: Make, coda: Path, scicat_standin: SciCatStandIn
) -> None:
    """4.5 refuses ``sampleName`` (400, unknown field): the first POST is repeated without it,
    later samples are created without it at once."""
    other = coda.with_name("run-2-small-coda.hdf")
    shutil.copy(coda, other)
    with h5py.File(other, "r+") as nexus:
        nexus["entry/sample/name"][()] = b"Another Sample"
    ingestor = samples(make)
    assert isinstance(ingestor.ingest(SampleJob(str(coda))), Created)
    assert isinstance(ingestor.ingest(SampleJob(str(other))), Created)
    assert len(scicat_standin.samples) == 2
    assert scicat_standin.stats()["requests"]["POST /samples 400"] == 1


@pytest.mark.parametrize("scicat_standin", ["4.5", "5"], indirect=True)
def test_ten_workers_on_one_run_make_one_sample(
    make: Make, coda: Path, scicat_standin: SciCatStandIn
) -> None:
    """SciCat carries out each POST late, so all ten look before any is created and all ten
    POST: one 201, nine refused with 500 (duplicate key), which the look-up by sampleId turns
    into existed. Before, those were SciCat failures (and on 5 every POST was, without
    ``sampleName``)."""
    ingestor = samples(make)
    scicat_standin.faults.delay(0.5, '"isPublished"')  # in the POST's body only
    with ThreadPoolExecutor(10) as pool:
        outcomes = list(pool.map(lambda _: ingestor.ingest(SampleJob(str(coda))), range(10)))
    (stored,) = scicat_standin.samples
    assert Counter(type(o) for o in outcomes) == {Created: 1, Existed: 9}, outcomes
    assert {o.pid for o in outcomes if isinstance(o, Created | Existed)} == {stored["sampleId"]}
    assert scicat_standin.stats()["requests"]["POST /samples 500"] == 9


def test_a_sample_created_elsewhere_is_not_created_again(
    make: Make, coda: Path, scicat_standin: SciCatStandIn
) -> None:
    _, client = make()
    body = {"ownerGroup": "g", "description": "A Sample", "proposalId": "443503", "sampleId": "s-1"}
    client.create_sample(as_backend_takes_it(body, scicat_standin))
    assert samples(make).ingest(SampleJob(str(coda))) == Existed("s-1")
    assert len(scicat_standin.samples) == 1


@pytest.mark.parametrize("scicat_standin", ["4.5", "5"], indirect=True)
def test_a_racing_creator_makes_the_post_a_500_that_counts_as_existed(
    make: Make, coda: Path, scicat_standin: SciCatStandIn
) -> None:
    ingestor = samples(make)
    body = sample_body(SampleInfo("A Sample", "443503"))
    _, client = make()
    # the other creator's sample is not found by the lookup (another description), same id
    client.create_sample(as_backend_takes_it({**body, "description": "renamed"}, scicat_standin))
    assert ingestor.ingest(SampleJob(str(coda))) == Existed(body["sampleId"])
    assert len(scicat_standin.samples) == 1
    assert scicat_standin.stats()["requests"]["POST /samples 500"] == 1


def test_a_missing_file_is_transient_for_the_file_retry_schedule(
    make: Make, tmp_path: Path
) -> None:
    outcome = samples(make).ingest(SampleJob(str(tmp_path / "data" / "not-yet.hdf")))
    assert isinstance(outcome, Transient)
    assert outcome.cause == "file"
    assert "not-yet.hdf" in outcome.reason


def test_scicat_down_is_transient_scicat(
    make: Make, coda: Path, scicat_standin: SciCatStandIn
) -> None:
    scicat_standin.faults.fail_next(1, 503, "samples")
    outcome = samples(make).ingest(SampleJob(str(coda)))
    assert isinstance(outcome, Transient)
    assert outcome.cause == "scicat"
    assert scicat_standin.samples == []


def retries(cause: str) -> float:
    return REGISTRY.get_sample_value("scicat_ingestor_retries_total", {"cause": cause}) or 0.0


@pytest.mark.parametrize("message", [run_start_message, wrdn_message], ids=["sample", "file"])
def test_an_auth_outage_is_retried_as_scicat_auth_for_a_sample_as_for_a_file(
    make: Make,
    coda: Path,
    scicat_standin: SciCatStandIn,
    message: Callable[[str, str], bytes],
) -> None:
    """The daemon counts a retry by its outcome's cause; refused credentials are
    ``scicat-auth`` for both (a sample's were once ``scicat``: counted as SciCat down)."""
    config, client = make(retry_initial_delay=0.02, retry_max_delay=0.1, drain_grace_period=0.3)
    pipeline = Pipeline(config, load_schemas(config.ingestion.schemas_directory), client)
    source = FakeSource()
    source.produce(0, message(str(coda), "job-1"))
    daemon = Daemon(
        config, pipeline, DeadLetters([]), source, samples=SampleIngestor(config, client)
    )
    scicat_standin.faults.reject_credentials(60.0)
    auth, down = retries("scicat-auth"), retries("scicat")
    thread = threading.Thread(target=daemon.run, name="daemon-auth-outage")
    thread.start()
    try:
        wait_until(lambda: retries("scicat-auth") + retries("scicat") > auth + down, "a retry")
    finally:
        daemon.request_stop("test over")
        thread.join(30)
    assert (retries("scicat-auth") > auth, retries("scicat")) == (True, down)
    assert scicat_standin.samples == [] and scicat_standin.datasets == {}


def test_one_log_line_with_context_and_duration_metric(
    make: Make, coda: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Like a file's: the line's ``seconds`` field, ``outcome`` in the context, the histogram."""

    def observed() -> float:
        value = REGISTRY.get_sample_value("scicat_ingestor_sample_duration_seconds_count")
        return value or 0.0

    caplog.handler.addFilter(ContextFilter())
    caplog.set_level(logging.INFO, logger="scicat_ingestor.samples")
    before = observed()
    created = samples(make).ingest(SampleJob(str(coda), "job-42"))
    assert isinstance(created, Created)
    assert observed() - before == 1
    [record] = [r for r in caplog.records if r.name == "scicat_ingestor.samples"]
    assert record.levelno == logging.INFO
    pattern = rf"sample of {re.escape(str(coda))}: created \(job job-42, sample {created.pid}\) in"
    assert re.fullmatch(pattern + r" \d+\.\d{3} s", record.getMessage())
    assert record.seconds >= 0  # type: ignore[attr-defined]
    assert (record.job_id, record.file, record.outcome) == ("job-42", str(coda), "created")  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (lambda f: f.__delitem__("entry/sample/name"), "/entry/sample/name: no such dataset"),
        (lambda f: f["entry/experiment_identifier"].__setitem__((), b" "), "is empty"),
    ],
)
def test_a_file_without_sample_name_or_proposal_is_permanent_naming_the_path(
    make: Make, coda: Path, change: Callable[[h5py.File], None], why: str
) -> None:
    with h5py.File(coda, "r+") as nexus:
        change(nexus)
    outcome = samples(make).ingest(SampleJob(str(coda)))
    assert isinstance(outcome, Permanent)
    assert why in outcome.reason
    assert str(coda) in outcome.reason


def test_configured_paths_are_read(make: Make, coda: Path, scicat_standin: SciCatStandIn) -> None:
    ingestor = samples(
        make, sample_name_path="/entry/title", sample_proposal_id_path="/entry/instrument/name"
    )
    assert isinstance(ingestor.ingest(SampleJob(str(coda))), Created)
    (stored,) = scicat_standin.samples
    with h5py.File(coda) as nexus:
        assert stored["description"] == nexus["entry/title"][()].decode()


def test_outside_the_data_roots_is_permanent(make: Make, tmp_path: Path, coda: Path) -> None:
    outside = tmp_path / "elsewhere.hdf"
    shutil.copy(coda, outside)
    outcome = samples(make).ingest(SampleJob(str(outside)))
    assert isinstance(outcome, Permanent)
    assert "outside the data roots" in outcome.reason


def test_dry_run_creates_nothing(make: Make, coda: Path, scicat_standin: SciCatStandIn) -> None:
    outcome = samples(make, dry_run=True).ingest(SampleJob(str(coda)))
    assert outcome == DryRun(sample_id(SampleInfo("A Sample", "443503")))
    assert scicat_standin.samples == []


# ---- the dataset links the run's sample ----------------------------------------------------


def dataset_of(make: Make, coda: Path, standin: SciCatStandIn, **ingestion: Any) -> Any:
    config, client = make(**ingestion)
    schemas = load_schemas(config.ingestion.schemas_directory)
    outcome = Pipeline(config, schemas, client).ingest(Job(str(coda), "job-1"))
    assert isinstance(outcome, Created), outcome
    return standin.datasets[outcome.pid]


def test_a_sample_ingested_before_its_dataset_is_linked_from_it(
    make: Make, coda: Path, scicat_standin: SciCatStandIn
) -> None:
    created = samples(make).ingest(SampleJob(str(coda)))
    assert isinstance(created, Created)
    assert linked_samples(dataset_of(make, coda, scicat_standin)) == [created.pid]


def test_without_sample_ingestion_the_dataset_links_no_sample(
    make: Make, coda: Path, scicat_standin: SciCatStandIn
) -> None:
    assert isinstance(samples(make).ingest(SampleJob(str(coda))), Created)
    assert linked_samples(dataset_of(make, coda, scicat_standin, sample_ingestion=False)) == []


def test_a_schema_setting_sample_id_wins(
    make: Make, coda: Path, scicat_standin: SciCatStandIn, tmp_path: Path
) -> None:
    assert isinstance(samples(make).ingest(SampleJob(str(coda))), Created)
    schema = tmp_path / "schemas" / "small-coda.imsc.yml"
    text = schema.read_text(encoding="utf-8")
    marker = "schema:\n"
    own = (
        "  sample_id:\n    field_type: high_level\n    machine_name: sampleId\n"
        "    value: own-sample\n    type: string\n"
    )
    schema.write_text(text.replace(marker, marker + own, 1), encoding="utf-8")
    assert linked_samples(dataset_of(make, coda, scicat_standin)) == ["own-sample"]
