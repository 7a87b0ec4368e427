"""Message triage: what is ingested, what is skipped (committed quietly), what is dead-lettered."""

from __future__ import annotations

import logging

import pytest
from streaming_data_types import serialise_6s4t, serialise_f144, serialise_pl72, serialise_wrdn

from scicat_ingestor.sources.triage import Poison, RunStart, Skip, WritingFinished, triage


def wrdn(file_name: str = "/data/run-1.hdf", error: bool = False, job: str = "job-1") -> bytes:
    value: bytes = serialise_wrdn("filewriter", job, error, file_name, '{"a": 1}', "done")
    return value


def test_wrdn_message_is_decoded_with_every_field() -> None:
    assert triage(wrdn()) == WritingFinished(
        service_id="filewriter",
        job_id="job-1",
        error_encountered=False,
        file_name="/data/run-1.hdf",
        metadata='{"a": 1}',
        message="done",
    )


@pytest.mark.parametrize("value", [serialise_f144("temp", 1.5, 0), serialise_6s4t("job-1")])
def test_other_flatbuffer_schemas_are_skipped_not_dead_lettered(value: bytes) -> None:
    verdict = triage(value)
    assert isinstance(verdict, Skip)
    assert repr(value[4:8].decode()) in verdict.reason


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (None, "tombstone"),
        (b"", "too short"),
        (b"\x00\x01\x02", "too short"),
        (b"\x8f\x12\xa0\x07\xfe\x00\x9c\x11" * 4, "no flatbuffer file identifier"),
        (wrdn()[:40], "undecodable"),
        (wrdn(file_name=""), "no file_name"),
        (wrdn(file_name="/data/a\nb.hdf"), "control characters"),
    ],
)
def test_poison_has_a_reason(value: bytes | None, why: str) -> None:
    verdict = triage(value)
    assert isinstance(verdict, Poison)
    assert why in verdict.reason


def test_failed_file_writer_job_is_skipped_with_a_warning_naming_job_and_file(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="scicat_ingestor.triage"):
        verdict = triage(wrdn(error=True, job="job-7", file_name="/data/broken.hdf"))
    assert isinstance(verdict, Skip)
    assert "job-7" in verdict.reason
    (record,) = caplog.records
    assert "job-7" in record.getMessage()
    assert "/data/broken.hdf" in record.getMessage()


def test_as_dict_is_the_job_message() -> None:
    verdict = triage(wrdn())
    assert isinstance(verdict, WritingFinished)
    assert verdict.as_dict()["file_name"] == "/data/run-1.hdf"
    assert set(verdict.as_dict()) == {
        "service_id",
        "job_id",
        "error_encountered",
        "file_name",
        "metadata",
        "message",
    }


def pl72(file_name: str = "/data/run-1.hdf", job: str = "job-1") -> bytes:
    value: bytes = serialise_pl72(job, file_name, run_name="run 1", instrument_name="coda")
    return value


def test_pl72_is_skipped_unless_sample_ingestion_asks_for_it() -> None:
    assert isinstance(triage(pl72()), Skip)
    assert triage(pl72(), run_start=True) == RunStart(
        job_id="job-1",
        file_name="/data/run-1.hdf",
        run_name="run 1",
        instrument_name="coda",
        service_id="",
    )


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (pl72()[:40], "undecodable pl72"),
        (pl72(file_name=""), "no filename"),
        (pl72(file_name="/data/a\rb.hdf"), "control characters"),
    ],
)
def test_bad_pl72_is_poison_only_when_decoded(value: bytes, why: str) -> None:
    verdict = triage(value, run_start=True)
    assert isinstance(verdict, Poison)
    assert why in verdict.reason
    assert isinstance(triage(value), Skip)  # sample ingestion off: not even decoded
