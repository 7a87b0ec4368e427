"""Dead-letter sinks keep the original message and the reason; replay re-ingests the files."""

from __future__ import annotations

import base64
import io
import json
import logging
import re
from pathlib import Path

import pytest

from scicat_ingestor.config import IngestorConfig, KafkaOptions, build
from scicat_ingestor.deadletter import DeadLetter, DeadLetters, FileSink, KafkaSink, replay_command
from scicat_ingestor.source import Record
from scicat_ingestor.testing.broker import TansuBroker, consumer_test_config, read_messages
from scicat_ingestor.testing.filewriter import SAMPLE_FILES, wrdn_message, write_nexus_copy
from scicat_ingestor.testing.plugin import TopicFactory
from scicat_ingestor.testing.scicat_standin import SciCatStandIn

RECORD = Record("wrdn-topic", 2, 41, b"\x00\x01payload", b"key")


def letter(value: bytes | None = RECORD.value, file_name: str = "") -> DeadLetter:
    record = Record(RECORD.topic, RECORD.partition, RECORD.offset, value, RECORD.key)
    return DeadLetter("why not", record, file_name, "job-1" if file_name else "")


def test_file_sink_appends_one_json_object_per_letter(tmp_path: Path) -> None:
    path = tmp_path / "dead.jsonl"
    sinks = DeadLetters([FileSink(str(path))])
    assert sinks.send(letter(file_name="/data/a.hdf"))
    assert sinks.send(letter(value=None))
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


def test_unwritable_file_sink_falls_back_to_an_error_log_with_the_record(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sinks = DeadLetters([FileSink(str(tmp_path / "missing-dir" / "dead.jsonl"))])
    with caplog.at_level(logging.ERROR, logger="scicat_ingestor.deadletter"):
        assert not sinks.send(letter())
    messages = [r.getMessage() for r in caplog.records]
    assert any("missing-dir" in m for m in messages)  # the sink failure, naming the file
    assert any('"reason": "why not"' in m and "source_offset" in m for m in messages)


def test_without_sinks_letters_are_logged_at_error(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="scicat_ingestor.deadletter"):
        sinks = DeadLetters.from_config(IngestorConfig().ingestion.dead_letter, KafkaOptions())
        assert not sinks.send(letter())
    warning, error = caplog.records
    assert "dead_letter" in warning.getMessage()
    assert error.levelno == logging.ERROR
    assert base64.b64encode(RECORD.value or b"").decode() in error.getMessage()


@pytest.mark.integration
def test_kafka_sink_keeps_value_and_key_and_puts_the_reason_in_headers(
    kafka_broker: TansuBroker, make_topic: TopicFactory
) -> None:
    topic = make_topic()
    options = build(
        KafkaOptions,
        {"bootstrap_servers": kafka_broker.bootstrap, "security_protocol": "plaintext"},
        "test",
    )
    sink = KafkaSink(options, topic)
    sink.write(letter())
    sink.close()
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


@pytest.mark.integration
def test_replay_ingests_the_files_and_skips_letters_without_one(
    tmp_path: Path, data_dir: Path, scicat_standin: SciCatStandIn
) -> None:
    nexus = tmp_path / "data" / "run-1-small-coda.hdf"
    uuid = write_nexus_copy(SAMPLE_FILES[0], nexus)
    missing = tmp_path / "data" / "gone-small-coda.hdf"
    dead = tmp_path / "dead.jsonl"
    sink = DeadLetters([FileSink(str(dead))])
    sink.send(letter(value=wrdn_message(str(nexus), uuid), file_name=str(nexus)))
    sink.send(letter(value=wrdn_message(str(nexus), uuid), file_name=str(nexus)))  # twice
    sink.send(letter(value=None))  # a tombstone: nothing to replay
    config = build(
        IngestorConfig,
        {
            "scicat": {"host": scicat_standin.url, "token": scicat_standin.token},
            "ingestion": {
                "schemas_directory": str(data_dir / "schemas"),
                "file_handling": {"data_file_open_max_tries": 0},
            },
        },
        "test",
    )
    out = io.StringIO()
    assert replay_command(config, str(dead), out) == 0
    assert list(scicat_standin.datasets) == [f"20.500.12269/{uuid}"]
    lines = out.getvalue().splitlines()
    assert lines[:2] == [
        "not ingested:",
        f"  skipped\t{dead}:3 not replayable: no file to ingest (why not)",
    ]
    assert re.fullmatch(
        r"3 dead letter\(s\), 1 file\(s\) in \d+\.\d s: "
        r"1 created, 0 existed, 0 dry run, 1 skipped, 0 failed",
        lines[2],
    )

    sink.send(letter(value=wrdn_message(str(missing), "job-2"), file_name=str(missing)))
    out = io.StringIO()
    assert replay_command(config, str(dead), out) == 1
    assert "1 existed" in out.getvalue()
    assert f"  failed_transient\t{dead}:4 {missing}: file not found\n" in out.getvalue()


def test_replay_of_a_missing_file_is_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert replay_command(IngestorConfig(), str(tmp_path / "nope.jsonl")) == 1
    assert (
        capsys.readouterr().err.strip()
        == f"error: {tmp_path / 'nope.jsonl'}: No such file or directory"
    )
