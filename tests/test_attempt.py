"""The one error → outcome mapping of an attempt (files and samples alike)."""

from __future__ import annotations

from typing import Literal

import pytest

from scicat_ingestor.ingest.attempt import Refused, classify
from scicat_ingestor.ingest.files import PathRefused
from scicat_ingestor.ingest.outcome import Permanent, Transient
from scicat_ingestor.schema.nexus import FileNotReady, NexusValueError, NotNexus
from scicat_ingestor.scicat import (
    SciCatAuthRefused,
    SciCatConflict,
    SciCatRejected,
    SciCatUnavailable,
)


def raising(err: Exception) -> object:
    def step() -> object:
        raise err

    return classify(step)


@pytest.mark.parametrize(
    ("err", "cause"),
    [
        (FileNotReady("/data/a.hdf", "locked by another process"), "file"),
        (SciCatAuthRefused("POST", "samples", 401, ["static token refused"]), "scicat-auth"),
        (SciCatUnavailable("POST", "datasets", 503, "Service Unavailable"), "scicat"),
    ],
    ids=["file", "scicat-auth", "scicat"],
)
def test_what_may_work_later_is_transient_with_the_cause_retries_are_counted_by(
    err: Exception, cause: Literal["file", "scicat", "scicat-auth"]
) -> None:
    assert raising(err) == Transient(str(err), cause)


@pytest.mark.parametrize(
    "err",
    [
        PathRefused("/etc/passwd: outside the data roots"),
        NotNexus("/data/a.hdf", "not an HDF5 file"),
        NexusValueError("/data/a.hdf", "/entry/sample/name: no such dataset"),
        SciCatRejected("POST", "datasets", 400, "bad field"),
        SciCatConflict("POST", "samples", 409, "exists"),
        Refused("/data/a.hdf: no metadata schema matches this file"),
    ],
    ids=lambda err: type(err).__name__,
)
def test_what_retrying_cannot_fix_is_permanent_with_the_error_as_reason(err: Exception) -> None:
    assert raising(err) == Permanent(str(err))


def test_a_result_passes_and_an_unexpected_error_propagates() -> None:
    assert classify(lambda: 42) == 42
    with pytest.raises(ZeroDivisionError):
        raising(ZeroDivisionError("a bug"))
