"""Classify one Kafka message value before any work: ingest it, skip it, or dead-letter it.

A topic carries other flatbuffer schemas besides ``wrdn`` and may carry garbage or tombstones;
none of those may stop the daemon, so ``triage`` never raises. Other schemas are skipped (committed,
not an error); anything that cannot be a valid message is ``Poison`` (to the dead-letter sink).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

from streaming_data_types import deserialise_pl72, deserialise_wrdn

logger = logging.getLogger("scicat_ingestor.triage")

WRDN = b"wrdn"
PL72 = b"pl72"
_IDENTIFIER = slice(4, 8)
_MIN_FLATBUFFER_BYTES = 8


@dataclass(frozen=True)
class WritingFinished:
    """A decoded ``wrdn`` ("writing done") message: the file-writer finished ``file_name``."""

    service_id: str
    job_id: str
    error_encountered: bool
    file_name: str
    metadata: str | None
    message: str | None

    def as_dict(self) -> dict[str, Any]:
        """Plain mapping (for ``Job.message`` and the message-to-file dump)."""
        return asdict(self)


@dataclass(frozen=True)
class RunStart:
    """A decoded ``pl72`` run-start message: the file-writer starts writing ``file_name``.

    Only produced with ``triage(..., run_start=True)`` (sample ingestion on); else it is a Skip.
    """

    job_id: str
    file_name: str
    run_name: str
    instrument_name: str
    service_id: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Skip:
    """Not for us (another schema) or deliberately not ingested; the offset is simply committed."""

    reason: str


@dataclass(frozen=True)
class Poison:
    """Can never be ingested as it is; goes to the dead-letter sink with ``reason``."""

    reason: str


Triaged = WritingFinished | RunStart | Skip | Poison


def triage(value: bytes | None, run_start: bool = False) -> Triaged:
    """Classify a raw message value; never raises. ``run_start``: decode ``pl72`` too."""
    if value is None:
        return Poison("tombstone (message without a value)")
    if len(value) < _MIN_FLATBUFFER_BYTES:
        return Poison(f"too short for a flatbuffer ({len(value)} bytes)")
    identifier = value[_IDENTIFIER]
    if identifier == PL72 and run_start:
        return _run_start(value)
    if identifier != WRDN:
        if _looks_like_schema_id(identifier):
            return Skip(f"schema {identifier.decode('ascii')!r} is not wrdn")
        return Poison(f"no flatbuffer file identifier (bytes 4-8 are {identifier!r})")
    try:
        decoded = deserialise_wrdn(value)
        finished = WritingFinished(
            service_id=str(decoded.service_id),
            job_id=str(decoded.job_id),
            error_encountered=bool(decoded.error_encountered),
            file_name=str(decoded.file_name),
            metadata=decoded.metadata,
            message=decoded.message,
        )
    except Exception as exc:
        return Poison(f"undecodable wrdn message: {type(exc).__name__}: {str(exc)!r}")
    return vet(finished)


def vet(finished: WritingFinished) -> WritingFinished | Skip | Poison:
    """The checks of an announcement's content, whether decoded from a ``wrdn`` message or made
    by a source that needs no message (the watch source): one rule for both."""
    if finished.error_encountered:
        # repr() of untrusted text: a newline in it must not forge log lines.
        logger.warning(
            "file-writer reported an error for job %r, file %r (%r); not ingesting it",
            finished.job_id,
            finished.file_name,
            finished.message,
        )
        return Skip(f"file-writer reported an error for job {finished.job_id!r}")
    return _file_name_problem("wrdn", "file_name", finished.job_id, finished.file_name) or finished


def _run_start(value: bytes) -> RunStart | Poison:
    try:
        decoded = deserialise_pl72(value)
        start = RunStart(
            job_id=str(decoded.job_id),
            file_name=str(decoded.filename),
            run_name=str(decoded.run_name),
            instrument_name=str(decoded.instrument_name),
            service_id=str(decoded.service_id),
        )
    except Exception as exc:  # upstream's sample ingestor crashed here
        return Poison(f"undecodable pl72 message: {type(exc).__name__}: {str(exc)!r}")
    return _file_name_problem("pl72", "filename", start.job_id, start.file_name) or start


def _file_name_problem(schema: str, field: str, job_id: str, name: str) -> Poison | None:
    if not name.strip():
        return Poison(f"{schema} message for job {job_id!r} has no {field}")
    if any(ord(char) < 32 for char in name):
        return Poison(f"{schema} {field} has control characters: {name!r}")
    return None


def _looks_like_schema_id(identifier: bytes) -> bool:
    """ESS flatbuffer file identifiers are four ASCII letters or digits (pl72, f144, ...)."""
    return identifier.isascii() and identifier.isalnum()
