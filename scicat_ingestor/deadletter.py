"""Messages that cannot be ingested: kept with their reason instead of dropped, and replayable.

A message is dead-lettered when it can never be ingested as it is (poison bytes, a rejected file),
so its offset can be committed without losing the evidence. Sinks: a Kafka topic (original value and
key, reason in headers) and/or a JSON-lines file. With neither configured the full record is logged
at ERROR; configure a sink to keep them somewhere replayable.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TextIO

import confluent_kafka
from confluent_kafka import KafkaError, KafkaException

from .commands.jobs import (
    EXIT_INTERRUPTED,
    abandon_if_running,
    ctrl_c_stops,
    open_pipeline,
    run_jobs,
)
from .commands.summary import Ending, FileResult, Tally, write_text
from .config import DeadLetterOptions, IngestorConfig, KafkaOptions
from .ops.metrics import DEAD_LETTERS, FILES
from .outcome import Outcome, Skipped, outcome_label
from .pipeline import Job, file_retry_delays
from .source import Record, client_settings
from .triage import WritingFinished, triage

logger = logging.getLogger(__name__)

_PRODUCE_TIMEOUT = 10.0
EXIT_OK, EXIT_FAILED = 0, 1


class DeadLetterError(RuntimeError):
    """A sink could not store a dead letter."""


@dataclass(frozen=True)
class DeadLetter:
    """One message that could not be ingested, with where it came from and why."""

    reason: str
    record: Record
    file_name: str = ""
    job_id: str = ""
    dead_lettered_at: str = field(
        default_factory=lambda: datetime.now(UTC).isoformat(timespec="milliseconds")
    )

    def headers(self) -> list[tuple[str, str | bytes | None]]:
        """Kafka headers describing the letter (the value stays the original bytes)."""
        return [
            ("reason", self.reason.encode()),
            ("source_topic", self.record.topic.encode()),
            ("source_partition", str(self.record.partition).encode()),
            ("source_offset", str(self.record.offset).encode()),
            ("dead_lettered_at", self.dead_lettered_at.encode()),
        ]

    def as_json(self) -> dict[str, Any]:
        """The JSON-lines form: header fields, base64 value and the decoded file/job when known."""
        value = self.record.value
        return {
            "reason": self.reason,
            "source_topic": self.record.topic,
            "source_partition": self.record.partition,
            "source_offset": self.record.offset,
            "dead_lettered_at": self.dead_lettered_at,
            "value": None if value is None else base64.b64encode(value).decode("ascii"),
            "file_name": self.file_name,
            "job_id": self.job_id,
        }


class DeadLetterSink(Protocol):
    name: str

    def write(self, letter: DeadLetter) -> None: ...

    def close(self) -> None: ...


class KafkaSink:
    """Produces the original value and key to a topic; waits for the broker's acknowledgement."""

    name = "kafka"

    def __init__(self, options: KafkaOptions, topic: str) -> None:
        self._topic = topic
        settings = {**client_settings(options), "enable.idempotence": True}
        try:
            self._producer = confluent_kafka.Producer(settings)
        except KafkaException as exc:
            raise DeadLetterError(f"dead-letter topic {topic}: {exc.args[0]}") from None
        self._errors: list[str] = []

    def write(self, letter: DeadLetter) -> None:
        try:
            self._producer.produce(
                self._topic,
                value=letter.record.value,
                key=letter.record.key,
                headers=letter.headers(),
                on_delivery=self._delivered,
            )
        except (KafkaException, BufferError) as exc:
            raise DeadLetterError(f"dead-letter topic {self._topic}: {exc}") from None
        remaining = self._producer.flush(_PRODUCE_TIMEOUT)
        errors, self._errors = self._errors, []
        if remaining:
            errors.append(f"not acknowledged within {_PRODUCE_TIMEOUT:g} s")
        if errors:
            raise DeadLetterError(f"dead-letter topic {self._topic}: {'; '.join(errors)}")

    def _delivered(self, error: KafkaError | None, message: Any) -> None:
        if error is not None:
            self._errors.append(str(error))

    def close(self) -> None:
        self._producer.flush(_PRODUCE_TIMEOUT)


class FileSink:
    """Appends one JSON object per line and fsyncs it before the offset may be committed."""

    name = "file"

    def __init__(self, path: str) -> None:
        self._path = Path(path)

    def write(self, letter: DeadLetter) -> None:
        line = json.dumps(letter.as_json(), ensure_ascii=False) + "\n"
        try:
            with self._path.open("a", encoding="utf-8") as out:
                out.write(line)
                out.flush()
                os.fsync(out.fileno())
        except OSError as exc:
            raise DeadLetterError(f"dead-letter file {self._path}: {exc.strerror or exc}") from None

    def close(self) -> None:
        """Nothing to release: the file is opened per letter (dead letters are rare)."""


class DeadLetters:
    """Writes each letter to every configured sink; a letter no sink took is logged in full."""

    def __init__(self, sinks: Sequence[DeadLetterSink]) -> None:
        self._sinks = list(sinks)
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, options: DeadLetterOptions, kafka: KafkaOptions) -> DeadLetters:
        sinks: list[DeadLetterSink] = []
        if options.topic:
            sinks.append(KafkaSink(kafka, options.topic))
        if options.file:
            sinks.append(FileSink(options.file))
        if not sinks:
            logger.warning(
                "no dead-letter sink configured (ingestion.dead_letter.topic / .file): messages "
                "that cannot be ingested are only logged at ERROR"
            )
        return cls(sinks)

    def send(self, letter: DeadLetter) -> bool:
        """Store ``letter``; True if at least one sink has it (otherwise it was logged at ERROR)."""
        stored = False
        with self._lock:
            for sink in self._sinks:
                try:
                    sink.write(letter)
                except DeadLetterError as exc:
                    logger.error("%s", exc)
                    continue
                DEAD_LETTERS.labels(sink.name).inc()
                stored = True
        if stored:
            logger.warning(
                "dead-lettered %s[%d]@%d%s: %s",
                letter.record.topic,
                letter.record.partition,
                letter.record.offset,
                f" (file {letter.file_name})" if letter.file_name else "",
                letter.reason,
            )
        else:
            logger.error("dead letter (no sink stored it): %s", json.dumps(letter.as_json()))
        return stored

    def close(self) -> None:
        for sink in self._sinks:
            sink.close()


# ------------------------------------------------------------------------------------------------
# Replay
# ------------------------------------------------------------------------------------------------


def read_dead_letters(lines: Iterator[str], source: str) -> Iterator[tuple[str, Job | str]]:
    """(``file:line``, a Job or the reason the line cannot be replayed) for each non-empty line."""
    for number, line in enumerate(lines, start=1):
        where = f"{source}:{number}"
        if not line.strip():
            continue
        try:
            letter = json.loads(line)
        except ValueError as exc:
            yield where, f"not JSON: {exc}"
            continue
        if not isinstance(letter, Mapping):
            yield where, "not a JSON object"
            continue
        yield where, _job_of(letter)


def _job_of(letter: Mapping[str, Any]) -> Job | str:
    """Rebuild the ingestion job from the original message (or the recorded file name)."""
    decoded: WritingFinished | None = None
    value = letter.get("value")
    if isinstance(value, str):
        try:
            verdict = triage(base64.b64decode(value, validate=True))
        except binascii.Error:
            return "value is not base64"
        if isinstance(verdict, WritingFinished):
            decoded = verdict
    if decoded is not None:
        return Job(decoded.file_name, decoded.job_id, decoded.as_dict())
    file_name = letter.get("file_name")
    if isinstance(file_name, str) and file_name:
        return Job(file_name, str(letter.get("job_id") or ""))
    return f"no file to ingest ({letter.get('reason', 'no reason recorded')})"


def replay_command(config: IngestorConfig, source: str, out: TextIO | None = None) -> int:
    """Re-ingest the files of a dead-letter JSON-lines file; summary on stdout; 1 if any failed.

    Letters without a file (tombstones, garbage) are reported as skipped: replay cannot help them.
    A file dead-lettered several times is ingested once. Ctrl-C stops taking files (exit 130).
    """
    out = out or sys.stdout
    try:
        with open(source, encoding="utf-8") as lines:
            entries = list(read_dead_letters(lines, source))
    except OSError as exc:
        print(f"error: {source}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_FAILED
    tally = Tally()
    jobs: dict[str, tuple[str, Job]] = {}
    for where, entry in entries:
        if isinstance(entry, str):
            _record(tally, FileResult("", Skipped(f"not replayable: {entry}"), where=where))
        else:
            jobs.setdefault(os.path.normpath(entry.file_path), (where, entry))
    skipped = tally.done
    interrupted = _ingest_all(config, list(jobs.values()), tally)
    heading = f"{len(entries)} dead letter(s), {len(jobs)} file(s)"
    not_done = len(jobs) - (tally.done - skipped)
    write_text(tally, out, heading, Ending(interrupted, not_done))
    if interrupted:
        return EXIT_INTERRUPTED
    return EXIT_FAILED if tally.failed else EXIT_OK


def _ingest_all(config: IngestorConfig, jobs: Sequence[tuple[str, Job]], tally: Tally) -> bool:
    """Ingest the jobs into ``tally``; True if Ctrl-C stopped the replay."""
    if not jobs:
        return False
    where_of = {id(job): where for where, job in jobs}
    stop = threading.Event()

    def done(job: Job, outcome: Outcome, seconds: float) -> None:
        _record(tally, FileResult(job.file_path, outcome, seconds, where=where_of[id(job)]))

    with ctrl_c_stops(stop), open_pipeline(config) as pipeline:
        end = run_jobs(
            pipeline,
            [job for _, job in jobs],
            workers=config.ingestion.max_offline_ingestors,
            delays=file_retry_delays(config.ingestion.file_handling),
            stop=stop,
            on_done=done,
        )
    abandon_if_running(end)
    return end.interrupted


def _record(tally: Tally, result: FileResult) -> None:
    tally.add(result)
    FILES.labels(outcome_label(result.outcome)).inc()
