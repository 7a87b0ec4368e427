"""Pipeline: one file through the real schema engine, h5py and the SciCat stand-in."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import threading
from pathlib import Path
from typing import Any

import pytest

from helpers.pipeline import PID, MakePipeline, ingest
from helpers.versions import VERSIONS
from scicat_ingestor.config.model import ConfigError
from scicat_ingestor.ingest.outcome import Created, DryRun, Existed, Outcome, Permanent, Transient
from scicat_ingestor.ops.logcontext import ContextFilter
from scicat_ingestor.ops.metrics import REGISTRY
from scicat_ingestor.testing.scicat import SciCatStandIn


def _posts(standin: SciCatStandIn) -> int:
    return sum(n for key, n in standin.stats()["requests"].items() if key.startswith("POST"))


# ---- the happy path and re-runs ------------------------------------------------------------


@pytest.mark.integration
def test_creates_dataset_and_origdatablock(
    make_pipeline: MakePipeline, coda: Path, scicat_standin: SciCatStandIn
) -> None:
    outcome = ingest(make_pipeline(), coda, job_id="job-1")
    assert isinstance(outcome, Created)
    assert outcome.pid == PID
    # the stand-in validates both bodies against SciCat's OpenAPI DTOs (400 otherwise)
    datasets = scicat_standin.datasets
    assert list(datasets) == [PID]
    dataset = datasets[PID]
    assert dataset["sourceFolder"] == str(coda.parent.parent)
    assert dataset["principalInvestigator"] == "Pia Investigator"
    assert dataset["scientificMetadata"]["run_number"]["value"] == 31010
    [block] = scicat_standin.origdatablocks
    assert block["datasetId"] == PID
    assert outcome.datablock_id == block["_id"]
    digest = hashlib.blake2b(coda.read_bytes()).hexdigest()
    hash_file = coda.parent.parent / "ingestor" / "small-coda.b2b"
    assert hash_file.read_text() == digest
    files = block["dataFileList"]
    # paths relative to sourceFolder exactly once (upstream crashed on the second relativisation)
    assert [f["path"] for f in files] == ["raw/small-coda.hdf", "ingestor/small-coda.b2b"]
    assert files[0]["chk"] == digest and "chk" not in files[1]
    assert files[0]["size"] == coda.stat().st_size and files[1]["size"] == 128
    assert block["chkAlg"] == "blake2b"
    assert block["size"] == dataset["size"] == coda.stat().st_size + 128
    assert dataset["numberOfFiles"] == 2
    assert block["ownerGroup"] == dataset["ownerGroup"] == "ess_proposal_443503"


@pytest.mark.integration
@VERSIONS
def test_the_datasets_size_and_file_count_are_its_blocks(
    make_pipeline: MakePipeline, coda: Path, scicat_standin: SciCatStandIn, api_version: int
) -> None:
    """4.5 sets them to the sum of the dataset's blocks, 5 adds each block to what the dataset
    was created with: sent with the dataset, they doubled there."""
    outcome = ingest(make_pipeline(scicat={"api_version": api_version}), coda)
    assert isinstance(outcome, Created), outcome
    [block] = scicat_standin.origdatablocks
    dataset = scicat_standin.datasets[outcome.pid]
    counted = (dataset["size"], dataset["numberOfFiles"])
    assert counted == (block["size"], len(block["dataFileList"])) == (coda.stat().st_size + 128, 2)


@pytest.mark.integration
def test_second_run_finds_it_and_creates_nothing(
    make_pipeline: MakePipeline, coda: Path, scicat_standin: SciCatStandIn
) -> None:
    pipeline = make_pipeline()
    assert isinstance(ingest(pipeline, coda), Created)
    posts_before = _posts(scicat_standin)
    assert ingest(pipeline, coda) == Existed(PID, repaired=False)
    assert _posts(scicat_standin) == posts_before
    assert len(scicat_standin.datasets) == 1
    assert len(scicat_standin.origdatablocks) == 1


@pytest.mark.integration
def test_redelivered_file_meets_409_before_its_data_is_read(
    make_pipeline: MakePipeline, coda: Path, scicat_standin: SciCatStandIn
) -> None:
    """POST first: the checksum is computed only after a 201, so a redelivery reads no data."""

    def hashed() -> float:
        return REGISTRY.get_sample_value("scicat_ingestor_bytes_hashed_total") or 0.0

    ingestion = {"check_if_dataset_exists_by_metadata_when_pid_known": False}
    pipeline = make_pipeline(ingestion=ingestion)
    assert isinstance(ingest(pipeline, coda), Created)
    before = hashed()
    assert ingest(pipeline, coda) == Existed(PID)
    assert hashed() == before
    assert scicat_standin.stats()["requests"]["POST /datasets 409"] == 1


@pytest.mark.integration
def test_metadata_check_needs_a_non_empty_answer(
    make_pipeline: MakePipeline, coda: Path, scicat_standin: SciCatStandIn
) -> None:
    """Upstream took '200 []' as 'exists' and never ingested anything with the default config."""
    pipeline = make_pipeline(ingestion={"check_if_dataset_exists_by_pid": False})
    assert isinstance(ingest(pipeline, coda), Created)
    assert ingest(pipeline, coda) == Existed(PID)  # now found by job_id
    assert len(scicat_standin.datasets) == 1


@pytest.mark.integration
@pytest.mark.parametrize("failure", ["400", "outage"])
def test_failed_origdatablock_is_repaired_on_rerun(
    make_pipeline: MakePipeline, coda: Path, scicat_standin: SciCatStandIn, failure: str
) -> None:
    """Upstream left the dataset without its datablock forever (the rerun skipped it)."""
    pipeline = make_pipeline(scicat={"max_retries": 1})
    if failure == "400":
        scicat_standin.faults.fail_next(1, 400, "origdatablocks")
    else:
        scicat_standin.faults.fail_next(2, 503, "origdatablocks")  # the first try and its one retry
    first = ingest(pipeline, coda)
    if failure == "400":
        assert isinstance(first, Permanent)
        assert "SciCat POST origdatablocks → 400" in first.reason
    else:
        assert isinstance(first, Transient) and first.cause == "scicat"
        assert "SciCat POST origdatablocks → 503" in first.reason
    assert list(scicat_standin.datasets) == [PID]
    assert scicat_standin.origdatablocks == []
    assert ingest(pipeline, coda) == Existed(PID, repaired=True)
    assert list(scicat_standin.datasets) == [PID]
    [block] = scicat_standin.origdatablocks
    assert block["datasetId"] == PID
    dataset = scicat_standin.datasets[PID]
    assert (dataset["size"], dataset["numberOfFiles"]) == (block["size"], 2)
    assert ingest(pipeline, coda) == Existed(PID, repaired=False)


# ---- SciCat failures -----------------------------------------------------------------------


@pytest.mark.integration
def test_scicat_503_then_ok(
    make_pipeline: MakePipeline, coda: Path, scicat_standin: SciCatStandIn
) -> None:
    pipeline = make_pipeline(
        ingestion={
            "check_if_dataset_exists_by_pid": False,
            "check_if_dataset_exists_by_metadata": False,
        }
    )
    scicat_standin.faults.fail_next(2, 503, "datasets")
    assert isinstance(ingest(pipeline, coda), Created)
    assert scicat_standin.stats()["requests"]["POST /datasets 503"] == 2
    assert len(scicat_standin.datasets) == 1
    assert len(scicat_standin.origdatablocks) == 1


@pytest.mark.integration
def test_lost_answer_to_dataset_post_still_ends_with_one_dataset(
    make_pipeline: MakePipeline, coda: Path, scicat_standin: SciCatStandIn
) -> None:
    """SciCat stored the dataset but the answer was a 502: the retry gets 409 → exists."""
    pipeline = make_pipeline(
        ingestion={
            "check_if_dataset_exists_by_pid": False,
            "check_if_dataset_exists_by_metadata": False,
        }
    )
    scicat_standin.faults.fail_next(1, 502, "datasets", commit=True)
    assert ingest(pipeline, coda) == Existed(PID, repaired=True)
    assert list(scicat_standin.datasets) == [PID]
    assert len(scicat_standin.origdatablocks) == 1


@pytest.mark.integration
def test_scicat_400_is_permanent_with_the_reason(
    make_pipeline: MakePipeline,
    coda: Path,
    scicat_standin: SciCatStandIn,
    caplog: pytest.LogCaptureFixture,
) -> None:
    pipeline = make_pipeline(
        ingestion={
            "check_if_dataset_exists_by_pid": False,
            "check_if_dataset_exists_by_metadata": False,
        }
    )
    scicat_standin.faults.fail_next(1, 400, "datasets")
    outcome = ingest(pipeline, coda)
    assert isinstance(outcome, Permanent)
    assert outcome.reason.startswith("SciCat POST datasets → 400: ")
    assert scicat_standin.datasets == {}
    [line] = [r for r in caplog.records if r.name == "scicat_ingestor.pipeline"]
    assert "failed_permanent" in line.getMessage() and PID in line.getMessage()
    assert line.levelno == logging.WARNING


@pytest.mark.integration
def test_expired_login_is_renewed(
    make_pipeline: MakePipeline, coda: Path, scicat_standin: SciCatStandIn
) -> None:
    pipeline = make_pipeline(scicat={"token": "", "username": "ingestor", "password": "pwd"})
    assert isinstance(ingest(pipeline, coda), Created)
    scicat_standin.faults.expire_tokens()
    assert ingest(pipeline, coda) == Existed(PID)
    logins = scicat_standin.stats()["requests"].get("POST /auth/login 201")
    assert logins == 2


@pytest.mark.integration
def test_scicat_not_answering_is_transient_then_works(
    make_pipeline: MakePipeline, coda: Path, scicat_standin: SciCatStandIn
) -> None:
    """The first SciCat call is an SC variable: its timeout must not become 'missing field'."""
    pipeline = make_pipeline(scicat={"timeout": 0.3, "max_retries": 0})
    scicat_standin.faults.stop_answering()
    outcome = ingest(pipeline, coda)
    assert isinstance(outcome, Transient)
    assert outcome.cause == "scicat"
    assert "timed out" in outcome.reason
    scicat_standin.faults.resume()
    assert isinstance(ingest(pipeline, coda), Created)


# ---- file problems -------------------------------------------------------------------------


@pytest.mark.integration
def test_missing_file_is_transient_file(make_pipeline: MakePipeline, tmp_path: Path) -> None:
    outcome = ingest(make_pipeline(), tmp_path / "data" / "coda" / "raw" / "small-coda.hdf")
    assert isinstance(outcome, Transient)
    assert outcome.cause == "file"
    assert "not found" in outcome.reason


@pytest.mark.integration
def test_not_hdf5_is_permanent(make_pipeline: MakePipeline, coda: Path) -> None:
    coda.write_text("not an HDF5 file\n")
    outcome = ingest(make_pipeline(), coda)
    assert isinstance(outcome, Permanent)
    assert str(coda) in outcome.reason and "not an HDF5 file" in outcome.reason


@pytest.mark.integration
def test_truncated_hdf5_is_permanent(make_pipeline: MakePipeline, coda: Path) -> None:
    data = coda.read_bytes()
    coda.write_bytes(data[: len(data) // 2])
    outcome = ingest(make_pipeline(), coda)
    assert isinstance(outcome, Permanent)
    assert str(coda) in outcome.reason and "truncated" in outcome.reason


@pytest.mark.integration
def test_file_outside_data_roots_is_refused(
    make_pipeline: MakePipeline, tmp_path: Path, data_dir: Path, scicat_standin: SciCatStandIn
) -> None:
    outside = tmp_path / "elsewhere" / "small-coda.hdf"
    outside.parent.mkdir()
    shutil.copy(data_dir / "small-coda.hdf", outside)
    outcome = ingest(make_pipeline(), outside)
    assert outcome == Permanent(
        f"{outside}: outside the data roots; data roots: {tmp_path / 'data'}"
    )
    assert scicat_standin.stats()["requests"] == {}


@pytest.mark.integration
def test_dotdot_traversal_is_refused(
    make_pipeline: MakePipeline, tmp_path: Path, coda: Path
) -> None:
    secret = tmp_path / "secret.hdf"
    shutil.copy(coda, secret)
    outcome = ingest(make_pipeline(), f"{coda.parent}/../../../secret.hdf")
    assert isinstance(outcome, Permanent)
    assert "'..' leads outside the data roots" in outcome.reason


@pytest.mark.integration
def test_symlink_escaping_the_root_is_refused(
    make_pipeline: MakePipeline, tmp_path: Path, coda: Path
) -> None:
    secret = tmp_path / "secret.hdf"
    shutil.copy(coda, secret)
    link = coda.parent / "link.hdf"
    link.symlink_to(secret)
    outcome = ingest(make_pipeline(), link)
    assert isinstance(outcome, Permanent)
    assert "a symlink leads outside the data roots" in outcome.reason


@pytest.mark.integration
def test_no_matching_schema_and_no_fallback_is_permanent(
    make_pipeline: MakePipeline, coda: Path
) -> None:
    other = coda.with_name("run-0001.hdf")
    coda.rename(other)
    outcome = ingest(make_pipeline(), other)
    assert isinstance(outcome, Permanent)
    assert "no metadata schema matches" in outcome.reason


@pytest.mark.integration
def test_missing_mandatory_field_names_the_fields_and_causes(
    make_pipeline: MakePipeline, coda: Path, scicat_standin: SciCatStandIn
) -> None:
    """Proposal unknown to SciCat: the PI fields stay empty, and the reason says why."""
    scicat_standin.faults.fail_next(3, 404, "proposals")
    outcome = ingest(make_pipeline(), coda)
    assert isinstance(outcome, Permanent)
    assert "mandatory dataset fields empty: " in outcome.reason
    assert "principalInvestigator" in outcome.reason
    assert "variable pi_firstname: SciCat GET proposals/443503 → 404" in outcome.reason
    assert scicat_standin.datasets == {}


# ---- options -------------------------------------------------------------------------------


@pytest.mark.integration
def test_dry_run_posts_nothing_and_writes_nothing(
    make_pipeline: MakePipeline, coda: Path, scicat_standin: SciCatStandIn
) -> None:
    """Upstream wrote the hash file even in a dry run."""
    pipeline = make_pipeline(ingestion={"dry_run": True})
    outcome = ingest(pipeline, coda, message={"job_id": "j"})
    assert outcome == DryRun(PID)
    assert scicat_standin.datasets == {}
    assert _posts(scicat_standin) == 0
    assert not (coda.parent.parent / "ingestor").exists()


@pytest.mark.integration
def test_scicat_assigned_pid_is_used_for_the_origdatablock(
    make_pipeline: MakePipeline, coda: Path, scicat_standin: SciCatStandIn
) -> None:
    """allow_dataset_pid: false → upstream crashed (KeyError 'pid') building the datablock."""
    outcome = ingest(make_pipeline(dataset={"allow_dataset_pid": False}), coda)
    assert isinstance(outcome, Created)
    assert outcome.pid != PID
    assert list(scicat_standin.datasets) == [outcome.pid]
    assert [b["datasetId"] for b in scicat_standin.origdatablocks] == [outcome.pid]


@pytest.mark.integration
def test_fix_generated_pid_is_stable_across_redelivery(
    make_pipeline: MakePipeline, coda: Path, scicat_standin: SciCatStandIn
) -> None:
    """Upstream generated a random uuid per attempt: a redelivered message made a second dataset."""
    pipeline = make_pipeline(
        dataset={"generate_dataset_pid": True},
        ingestion={"check_if_dataset_exists_by_metadata": False},
    )
    first = ingest(pipeline, coda, job_id="job-1")
    again = ingest(pipeline, coda, job_id="job-1")
    assert isinstance(first, Created)
    assert first.pid.startswith("20.500.12269/")
    assert again == Existed(first.pid)
    assert list(scicat_standin.datasets) == [first.pid]
    os.utime(coda, ns=(1, 10**18))  # a rewritten file is a new version: a new dataset
    assert isinstance(ingest(pipeline, coda, job_id="job-1"), Created)


@pytest.mark.integration
def test_save_hash_without_computing_it(
    make_pipeline: MakePipeline, coda: Path, scicat_standin: SciCatStandIn
) -> None:
    """Upstream raised 'Checksum is not provided'; now there is simply no hash file."""
    pipeline = make_pipeline(file_handling={"compute_file_hash": False, "save_file_hash": True})
    assert isinstance(ingest(pipeline, coda), Created)
    [block] = scicat_standin.origdatablocks
    assert [f["path"] for f in block["dataFileList"]] == ["raw/small-coda.hdf"]
    assert "chk" not in block["dataFileList"][0]
    assert not (coda.parent.parent / "ingestor" / "small-coda.b2b").exists()


@pytest.mark.integration
def test_absolute_paths_and_stats_off(
    make_pipeline: MakePipeline, coda: Path, scicat_standin: SciCatStandIn
) -> None:
    pipeline = make_pipeline(
        file_handling={"file_path_type": "absolute", "compute_file_stats": False}
    )
    assert isinstance(ingest(pipeline, coda), Created)
    [block] = scicat_standin.origdatablocks
    first, second = block["dataFileList"]
    assert first["path"] == str(coda)
    assert second["path"] == str(coda.parent.parent / "ingestor" / "small-coda.b2b")
    assert first["size"] == coda.stat().st_size
    assert "uid" not in first and "perm" not in first


@pytest.mark.integration
def test_message_file_is_a_json_object(make_pipeline: MakePipeline, coda: Path) -> None:
    message = {"job_id": "j-7", "file_name": str(coda), "service_id": "fw"}
    assert isinstance(ingest(make_pipeline(), coda, message=message), Created)
    written = coda.parent.parent / "ingestor" / "small-coda.message.json"
    assert json.loads(written.read_text()) == message


@pytest.mark.integration
def test_source_folder_not_containing_the_files_is_permanent(
    make_pipeline: MakePipeline, coda: Path, tmp_path: Path, scicat_standin: SciCatStandIn
) -> None:
    side = tmp_path / "side"
    outcome = ingest(make_pipeline(file_handling={"ingestor_files_directory": str(side)}), coda)
    assert isinstance(outcome, Permanent)
    assert f"{side}/small-coda.b2b is not inside sourceFolder" in outcome.reason
    # refused before the dataset's POST, not left in SciCat without its files
    assert scicat_standin.datasets == {}
    assert not side.exists()


def test_unsupported_hash_algorithm_is_a_config_error(
    make_pipeline: MakePipeline,
) -> None:
    """Rejected when the config is loaded (the config model's check), before any pipeline."""
    with pytest.raises(
        ConfigError, match=r"'ingestion\.file_handling\.file_hash_algorithm' must be one of blake2b"
    ):
        make_pipeline(file_handling={"file_hash_algorithm": "crc32"})


# ---- concurrency, logs, metrics ------------------------------------------------------------


@pytest.mark.integration
def test_same_file_twice_at_once_gives_one_dataset_one_datablock(
    make_pipeline: MakePipeline, coda: Path, scicat_standin: SciCatStandIn
) -> None:
    pipeline = make_pipeline()
    scicat_standin.faults.delay(0.2, "proposals")  # widen the window for a race
    outcomes: list[Outcome] = []
    threads = [
        threading.Thread(target=lambda: outcomes.append(ingest(pipeline, coda))) for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(type(o).__name__ for o in outcomes) == ["Created", "Existed", "Existed"]
    assert len(scicat_standin.datasets) == 1
    assert len(scicat_standin.origdatablocks) == 1


@pytest.mark.integration
def test_one_log_line_with_context_and_duration_metric(
    make_pipeline: MakePipeline, coda: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def observed() -> float:
        value = REGISTRY.get_sample_value("scicat_ingestor_ingest_duration_seconds_count")
        return value or 0.0

    pipeline = make_pipeline()
    caplog.handler.addFilter(ContextFilter())
    caplog.set_level(logging.INFO, logger="scicat_ingestor.pipeline")
    before = observed()
    ingest(pipeline, coda, job_id="job-42")
    assert observed() - before == 1
    lines = [r for r in caplog.records if r.name == "scicat_ingestor.pipeline"]
    assert len(lines) == 1
    record = lines[0]
    assert record.levelno == logging.INFO
    message = record.getMessage()
    assert str(coda) in message and "created" in message
    assert PID in message and " s" in message
    assert (record.job_id, record.file, record.dataset_pid, record.outcome) == (  # type: ignore[attr-defined]
        "job-42",
        str(coda),
        PID,
        "created",
    )


# ---- SC lookup cache -----------------------------------------------------------------------


def _lookups(standin: SciCatStandIn) -> int:
    requests = standin.stats()["requests"]
    return sum(n for key, n in requests.items() if key.startswith(("GET /proposals", "GET /instr")))


def _normalised(dataset: dict[str, Any], uuid: str) -> str:
    """The stored dataset without what differs between two copies: the uuid, the store's
    timestamps and ``creationTime`` (the schema's ``<now>``)."""
    differ = ("createdAt", "updatedAt", "creationTime")
    text = json.dumps({k: v for k, v in dataset.items() if k not in differ}, sort_keys=True)
    return text.replace(uuid, "<uuid>")


@pytest.mark.integration
def test_cached_lookups_give_the_same_payloads_as_uncached(
    make_pipeline: MakePipeline, coda: Path, scicat_standin: SciCatStandIn
) -> None:
    from scicat_ingestor.testing.filewriter import write_nexus_copy

    copies = [coda.with_name(f"small-coda-{i}.hdf") for i in range(4)]
    uuids = [write_nexus_copy(coda, copy) for copy in copies]
    uncached = make_pipeline(scicat={"lookup_cache_seconds": 0})
    cached = make_pipeline(scicat={"lookup_cache_seconds": 60})
    before = _lookups(scicat_standin)
    assert isinstance(ingest(uncached, copies[0], job_id="a"), Created)
    assert isinstance(ingest(uncached, copies[1], job_id="b"), Created)
    per_file = (_lookups(scicat_standin) - before) // 2
    assert per_file == 2  # the proposal and the instrument
    before = _lookups(scicat_standin)
    assert isinstance(ingest(cached, copies[2], job_id="c"), Created)  # fills the cache
    assert isinstance(ingest(cached, copies[3], job_id="d"), Created)  # answered from it
    assert _lookups(scicat_standin) - before == per_file
    stored = scicat_standin.datasets
    texts = [
        _normalised(stored[f"20.500.12269/{u}"], u).replace(f'"{job}"', '"<job>"')
        for u, job in zip(uuids, "abcd", strict=True)
    ]
    assert texts[1] == texts[0]
    assert texts[2] == texts[0]
    assert texts[3] == texts[0]


@pytest.mark.integration
def test_a_missing_proposal_is_not_cached(
    make_pipeline: MakePipeline, coda: Path, scicat_standin: SciCatStandIn
) -> None:
    import h5py

    with h5py.File(coda, "r+") as nexus:
        del nexus["entry/experiment_identifier"]
        nexus["entry/experiment_identifier"] = "990001"
    pipeline = make_pipeline(scicat={"lookup_cache_seconds": 60})
    first = ingest(pipeline, coda, job_id="j")
    assert isinstance(first, Permanent)  # the PI fields stay empty
    assert "404" in first.reason
    scicat_standin.add_proposal(
        {
            "proposalId": "990001",
            "pi_firstname": "New",
            "pi_lastname": "Person",
            "pi_email": "new@example.org",
            "title": "T",
        }
    )
    assert isinstance(ingest(pipeline, coda, job_id="j"), Created)
    [dataset] = scicat_standin.datasets.values()
    assert dataset["principalInvestigator"] == "New Person"
