"""Dead-letter sinks keep the original message and the reason, never block, say when they fail."""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
import time
from pathlib import Path

import pytest

from helpers.wait import wait_until
from scicat_ingestor.config.model import IngestorConfig, KafkaOptions, build
from scicat_ingestor.daemon.deadletters import (
    DeadLetter,
    DeadLetterError,
    DeadLetters,
    Done,
    FileSink,
    KafkaSink,
)
from scicat_ingestor.sources.base import Record
from scicat_ingestor.testing.broker import consumer_test_config, read_messages
from scicat_ingestor.testing.brokers import HarnessBroker
from scicat_ingestor.testing.plugin import TopicFactory

RECORD = Record("wrdn-topic", 2, 41, b"\x00\x01payload", b"key")


def letter(value: bytes | None = RECORD.value, file_name: str = "") -> DeadLetter:
    record = Record(RECORD.topic, RECORD.partition, RECORD.offset, value, RECORD.key)
    return DeadLetter("why not", record, file_name, "job-1" if file_name else "")


def test_file_sink_appends_one_json_object_per_letter(tmp_path: Path) -> None:
    path = tmp_path / "dead.jsonl"
    sinks = DeadLetters([FileSink(str(path))])
    assert sinks.store(letter(file_name="/data/a.hdf")) is None
    assert sinks.store(letter(value=None)) is None
    first, second = (json.loads(line) for line in path.read_text().splitlines())
    assert first["reason"] == "why not"
    assert (first["source_topic"], first["source_partition"], first["source_offset"]) == (
        "wrdn-topic",
        2,
        41,
    )
    assert base64.b64decode(first["value"]) == RECORD.value
    assert (first["file_name"], first["job_id"]) == ("/data/a.hdf", "job-1")
    assert first["dead_lettered_at"].endswith("+00:00")
    assert second["value"] is None


def test_the_file_sink_creates_its_directory(tmp_path: Path) -> None:
    path = tmp_path / "new" / "dir" / "dead.jsonl"
    FileSink(str(path)).close(1.0)
    assert path.exists()


@pytest.mark.parametrize("where", ["under-a-file/dead.jsonl", "a-directory"])
def test_an_unusable_file_sink_is_one_line_naming_the_key(tmp_path: Path, where: str) -> None:
    (tmp_path / "under-a-file").write_text("x")
    (tmp_path / "a-directory").mkdir()
    with pytest.raises(DeadLetterError) as caught:
        FileSink(str(tmp_path / where))
    message = str(caught.value)
    assert message.startswith("ingestion.dead_letter.file: cannot open ")
    assert "\n" not in message


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_full_disk_is_reported_not_stored_naming_the_key() -> None:
    error = DeadLetters([FileSink("/dev/full")]).store(letter())
    assert error == "ingestion.dead_letter.file: /dev/full: No space left on device"


class ObservedSink:
    """A ``FileSink`` whose answers (given on its writer thread) the test can wait for."""

    def __init__(self, path: Path) -> None:
        self.inner = FileSink(str(path))
        self.name, self.label = self.inner.name, self.inner.label
        self.answered = threading.Event()

    def write(self, letter: DeadLetter, done: Done) -> None:
        def observed(error: str | None) -> None:
            done(error)
            self.answered.set()

        self.inner.write(letter, observed)

    def poll(self) -> None:
        self.inner.poll()

    def close(self, timeout: float) -> None:
        self.inner.close(timeout)


def test_send_never_blocks_and_answers_only_in_poll(tmp_path: Path) -> None:
    sink = ObservedSink(tmp_path / "dead.jsonl")
    sinks = DeadLetters([sink])
    answers: list[str | None] = []
    sinks.send(letter(), answers.append)
    assert sink.answered.wait(10)  # the writer thread stored it and answered
    assert answers == []  # the answer waits for poll()
    sinks.poll()
    assert answers == [None]


def test_one_sink_storing_the_letter_is_enough_the_other_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "dead.jsonl"
    sinks = DeadLetters([FileSink("/dev/full"), FileSink(str(path))])
    with caplog.at_level(logging.WARNING, logger="scicat_ingestor.deadletter"):
        assert sinks.store(letter()) is None
    assert len(path.read_text().splitlines()) == 1
    assert (
        "ingestion.dead_letter.file: dead letter not stored: /dev/full: No space left on device"
        in caplog.text
    )


def test_without_sinks_letters_are_logged_at_error(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="scicat_ingestor.deadletter"):
        sinks = DeadLetters.from_config(IngestorConfig().ingestion.dead_letter, KafkaOptions())
        assert sinks.store(letter()) is None
    warning, error = caplog.records
    assert "dead_letter" in warning.getMessage()
    assert error.levelno == logging.ERROR
    assert base64.b64encode(RECORD.value or b"").decode() in error.getMessage()


def test_file_sink_write_time(tmp_path: Path) -> None:
    """Append + fsync per letter, off the poll thread (figure in docs/operator/dead-letters.md)."""
    sinks = DeadLetters([FileSink(str(tmp_path / "dead.jsonl"))])
    times = []
    for _ in range(50):
        started = time.perf_counter()
        assert sinks.store(letter()) is None
        times.append(time.perf_counter() - started)
    assert max(times) < 5.0  # generous: fsync on a loaded CI disk; the poll thread never waits


def _options(bootstrap: str) -> KafkaOptions:
    return build(
        KafkaOptions, {"bootstrap_servers": bootstrap, "security_protocol": "plaintext"}, "test"
    )


@pytest.mark.integration
def test_kafka_sink_keeps_value_and_key_and_puts_the_reason_in_headers(
    kafka_broker: HarnessBroker, make_topic: TopicFactory
) -> None:
    topic = make_topic()
    sinks = DeadLetters([KafkaSink(_options(kafka_broker.bootstrap), topic)])
    assert sinks.store(letter()) is None
    sinks.close()
    (message,) = read_messages(consumer_test_config(kafka_broker.bootstrap, "dl-reader"), topic, 1)
    assert (message.value(), message.key()) == (RECORD.value, RECORD.key)
    headers = dict(message.headers() or [])
    assert headers["reason"] == b"why not"
    assert (headers["source_topic"], headers["source_partition"], headers["source_offset"]) == (
        b"wrdn-topic",
        b"2",
        b"41",
    )
    assert headers["dead_lettered_at"]


def test_an_unreachable_kafka_sink_reports_the_letter_not_stored_without_blocking() -> None:
    sink = KafkaSink(_options("127.0.0.1:1"), "dead", delivery_timeout=0.5)
    sinks = DeadLetters([sink])
    answers: list[str | None] = []
    started = time.monotonic()
    sinks.send(letter(), answers.append)
    assert time.monotonic() - started < 0.1
    wait_until(lambda: polled(sinks, answers), "the sink's failure", timeout=10)
    (error,) = answers
    assert error is not None
    assert error.startswith("ingestion.dead_letter.topic: topic dead: ")
    sinks.close(0.1)


def polled(sinks: DeadLetters, answers: list[str | None]) -> bool:
    """Serve the sinks' answers; True once one arrived."""
    sinks.poll()
    return bool(answers)


class SilentSink:
    """A sink that never answers (a write hanging on a dead mount)."""

    name = "test.silent"
    label = "silent"

    def write(self, letter: DeadLetter, done: Done) -> None:
        self.late = done

    def poll(self) -> None:
        """Never answers by itself."""

    def close(self, timeout: float) -> None:
        """Nothing to release."""


def test_a_sink_that_never_answers_is_reported_failing_after_the_timeout() -> None:
    silent = SilentSink()
    sinks = DeadLetters([silent], answer_timeout=0.2)
    answers: list[str | None] = []
    sent = time.monotonic()
    sinks.send(letter(), answers.append)
    sinks.poll()
    assert answers == []
    wait_until(lambda: polled(sinks, answers), "the timeout reported", timeout=10)
    assert time.monotonic() - sent >= 0.2  # not before the answer timeout
    assert answers == ["test.silent: no answer within 0.2 s"]
    silent.late(None)  # the hung write finishes after all: ignored, the caller already retries
    sinks.poll()
    assert answers == ["test.silent: no answer within 0.2 s"]
