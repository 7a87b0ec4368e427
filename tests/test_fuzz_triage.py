"""Fuzzing the message triage: whatever bytes arrive, ``triage`` classifies them and never raises.

An exception here would escape the poll loop and stop the daemon; a wrong classification would
either lose a file (valid ``wrdn`` skipped) or ingest garbage. Inputs: random bytes, random ``wrdn``
messages, and valid ``wrdn`` flatbuffers with bytes flipped, cut, inserted or overwritten.
"""

from __future__ import annotations

import logging

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from streaming_data_types import serialise_pl72, serialise_wrdn

from helpers.fuzz import FUZZ
from scicat_ingestor.sources.triage import Poison, RunStart, Skip, Triaged, WritingFinished, triage


def _check(value: bytes | None, result: Triaged) -> None:
    """The invariants every classification must satisfy."""
    assert isinstance(result, WritingFinished | Skip | Poison)
    if isinstance(result, Skip | Poison):
        assert result.reason.strip(), "a skip/poison without a reason"
        assert "\n" not in result.reason, f"reason is not one line: {result.reason!r}"
        return
    assert value is not None and value[4:8] == b"wrdn"
    assert not result.error_encountered, "a wrdn with error_encountered must be skipped"
    assert result.file_name.strip(), "a wrdn without file_name must not be ingested"
    assert not any(ord(c) < 32 for c in result.file_name)


@FUZZ
@given(st.one_of(st.none(), st.binary(max_size=512)))
@example(None)
@example(b"")
@example(b"\x00" * 8)
@example(b"\x00\x00\x00\x00wrdn")
@example(b"\xff\xff\xff\xffwrdn" + b"\xff" * 64)
def test_random_bytes_never_raise(value: bytes | None) -> None:
    _check(value, triage(value))


@FUZZ
@given(st.binary(min_size=4, max_size=512))
def test_random_bytes_with_wrdn_identifier_never_raise(tail: bytes) -> None:
    value = tail[:4] + b"wrdn" + tail[4:]
    _check(value, triage(value))


_texts = st.text(max_size=40)


@st.composite
def wrdn_messages(draw: st.DrawFn) -> tuple[bytes, dict[str, object]]:
    fields: dict[str, object] = {
        "service_id": draw(_texts),
        "job_id": draw(_texts),
        "error_encountered": draw(st.booleans()),
        "file_name": draw(st.one_of(st.just("/data/run.hdf"), _texts)),
        "metadata": draw(st.one_of(st.none(), _texts)),
        "message": draw(st.one_of(st.none(), _texts)),
    }
    return serialise_wrdn(**fields), fields


@FUZZ
@given(wrdn_messages())
def test_valid_wrdn_round_trips_or_is_refused_for_a_reason(
    message: tuple[bytes, dict[str, object]],
) -> None:
    value, fields = message
    result = triage(value)
    _check(value, result)
    name = str(fields["file_name"])
    if fields["error_encountered"]:
        assert isinstance(result, Skip)
    elif not name.strip() or any(ord(c) < 32 for c in name):
        assert isinstance(result, Poison)
    else:
        assert isinstance(result, WritingFinished)
        assert result.file_name == name
        assert result.job_id == fields["job_id"]
        assert result.service_id == fields["service_id"]


@st.composite
def mutated_wrdn(draw: st.DrawFn) -> bytes:
    value = bytearray(draw(wrdn_messages())[0])
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["flip", "set", "cut", "insert", "delete"]))
        pos = draw(st.integers(0, max(len(value) - 1, 0)))
        if kind == "flip" and value:
            value[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and value:
            value[pos] = draw(st.sampled_from([0x00, 0x7F, 0x80, 0xFF]))
        elif kind == "cut":
            del value[pos:]
        elif kind == "insert":
            value[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif value:
            del value[pos : pos + draw(st.integers(1, 8))]
    return bytes(value)


@FUZZ
@given(mutated_wrdn())
def test_mutated_wrdn_never_raise(value: bytes) -> None:
    _check(value, triage(value))


def test_every_truncation_of_a_valid_message_is_classified() -> None:
    """Exhaustive, not random: each prefix of a real message (a producer crashed mid-write)."""
    value = serialise_wrdn("filewriter", "job-1", False, "/data/run.hdf", "{}", "done")
    for cut in range(len(value)):
        result = triage(value[:cut])
        _check(value[:cut], result)
        assert not isinstance(result, WritingFinished) or result.file_name == "/data/run.hdf"


def test_untrusted_text_cannot_forge_log_lines(caplog: pytest.LogCaptureFixture) -> None:
    forged = "x\nSFI - 2024-01-01 - scicat_ingestor - CRITICAL - forged line"
    value = serialise_wrdn("fw", forged, True, "/data/a\u2028.hdf", None, forged)
    with caplog.at_level(logging.WARNING, logger="scicat_ingestor.triage"):
        result = triage(value)
    assert isinstance(result, Skip)
    assert "\n" not in result.reason
    assert all("\n" not in record.getMessage() for record in caplog.records)


@st.composite
def mutated_pl72(draw: st.DrawFn) -> bytes:
    value = bytearray(
        serialise_pl72(draw(_texts), draw(st.one_of(st.just("/data/run.hdf"), _texts)))
    )
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, len(value) - 1))
        value[position] = draw(st.integers(0, 255))
    return bytes(value[: draw(st.integers(0, len(value)))])


@FUZZ
@given(mutated_pl72())
def test_damaged_pl72_never_raises_with_sample_ingestion(value: bytes) -> None:
    result = triage(value, run_start=True)
    if isinstance(result, RunStart):
        assert value[4:8] == b"pl72"
        assert result.file_name.strip()
        assert not any(ord(c) < 32 for c in result.file_name)
    else:
        _check(value, result)
