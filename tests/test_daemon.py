"""The daemon in-process against the real broker and the SciCat stand-in.

Each test runs ``Daemon.run`` in a thread with the real ``Pipeline`` (or, where the pipeline's
behaviour is not the point, a small real ``Ingestor`` class) and checks what reached SciCat, what
went to the dead-letter file and which offsets were committed.
"""

from __future__ import annotations

import base64
import contextlib
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from streaming_data_types import serialise_f144

from scicat_ingestor.config import HealthCheckOptions, IngestorConfig, KafkaOptions, build
from scicat_ingestor.daemon import Daemon, Ingestor
from scicat_ingestor.deadletter import DeadLetters, KafkaSink
from scicat_ingestor.ops.health import HealthServer
from scicat_ingestor.outcome import Created, Outcome
from scicat_ingestor.pipeline import Job, Pipeline
from scicat_ingestor.schema.loader import load_schemas
from scicat_ingestor.scicat import SciCatClient
from scicat_ingestor.source import KafkaSource
from scicat_ingestor.state import ServiceState
from scicat_ingestor.testing.broker import (
    BrokerError,
    consumer_test_config,
    read_messages,
)
from scicat_ingestor.testing.brokers import HarnessBroker
from scicat_ingestor.testing.daemon_process import daemon_config
from scicat_ingestor.testing.filewriter import FakeFileWriter, WrittenFile, wrdn_message
from scicat_ingestor.testing.plugin import FileWriterFactory, TopicFactory
from scicat_ingestor.testing.scicat import SciCatStandIn

pytestmark = [pytest.mark.integration, pytest.mark.broker]  # kit uses kafka_broker

WAIT = 60.0
_COORDINATOR_MOVING = {
    KafkaError.NOT_COORDINATOR,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
}


class RunningDaemon:
    """``Daemon.run`` in a thread; ``stop()`` returns its exit code."""

    def __init__(
        self,
        config: IngestorConfig,
        ingestor: Ingestor | None = None,
        dead_letters: DeadLetters | None = None,
    ) -> None:
        self.state = ServiceState()
        self.client = SciCatClient(config.scicat)
        if ingestor is None:
            ingestion = config.ingestion
            schemas = load_schemas(ingestion.schemas_directory, ingestion.fallback_schema_file_path)
            ingestor = Pipeline(config, schemas, self.client)
        self.dead_letters = dead_letters or DeadLetters.from_config(
            config.ingestion.dead_letter, config.kafka
        )
        source = KafkaSource(config.kafka, self.state)
        self.daemon = Daemon(config, ingestor, self.dead_letters, source, self.state)
        self.code: int | None = None
        self._thread = threading.Thread(target=self._run, name="daemon-under-test")
        self._thread.start()

    def _run(self) -> None:
        self.code = self.daemon.run()

    def stop(self, timeout: float = WAIT) -> int | None:
        self.daemon.request_stop("test over")
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "daemon did not stop"
        self.dead_letters.close()
        self.client.close()
        return self.code


@dataclass
class Kit:
    """Broker, stand-in, topics, file-writer and daemon configs for one test."""

    broker: HarnessBroker
    standin: SciCatStandIn
    make_topic: TopicFactory
    file_writer: FileWriterFactory
    tmp_path: Path
    schemas: Path
    running: list[RunningDaemon] = field(default_factory=list)

    def config_data(
        self, topic: str, group: str = "", overrides: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Daemon config; ``overrides`` has dotted keys (``{"scicat.timeout": 1}``)."""
        return daemon_config(
            bootstrap=self.broker.bootstrap,
            topics=[topic],
            group_id=group or new_group(),
            scicat_url=self.standin.url,
            scicat_token=self.standin.token,
            schemas_directory=self.schemas,
            overrides={"ingestion.dead_letter.file": str(self.dead_file), **(overrides or {})},
        )

    def config(
        self, topic: str, group: str = "", overrides: Mapping[str, Any] | None = None
    ) -> IngestorConfig:
        return build(IngestorConfig, self.config_data(topic, group, overrides), "test")

    def writer(self, topic: str) -> FakeFileWriter:
        return self.file_writer(topic, self.tmp_path / "data")

    def start(
        self,
        config: IngestorConfig,
        ingestor: Ingestor | None = None,
        dead_letters: DeadLetters | None = None,
    ) -> RunningDaemon:
        self.running.append(running := RunningDaemon(config, ingestor, dead_letters))
        return running

    def committed(self, group: str, topic: str, partitions: int) -> list[int]:
        """The group's committed offsets (Tansu's high watermarks are not reliable)."""
        consumer = Consumer(consumer_test_config(self.broker.bootstrap, group))
        try:
            answer = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], 10)
        except KafkaException as exc:
            if not exc.args[0].retriable() and exc.args[0].code() not in _COORDINATOR_MOVING:
                raise
            return []  # Kafka: the group coordinator is still starting or loading the group
        finally:
            consumer.close()
        return [tp.offset for tp in sorted(answer, key=lambda tp: tp.partition)]

    def wait_committed(self, group: str, topic: str, expected: list[int]) -> None:
        wait_until(
            lambda: self.committed(group, topic, len(expected)) == expected,
            f"offsets {expected} committed",
        )

    def wait_datasets(self, count: int) -> None:
        wait_until(lambda: len(self.standin.datasets) >= count, f"{count} datasets")

    @property
    def dead_file(self) -> Path:
        return self.tmp_path / "dead.jsonl"

    def dead_letters(self) -> list[dict[str, Any]]:
        if not self.dead_file.exists():
            return []
        return [json.loads(line) for line in self.dead_file.read_text().splitlines()]

    def assert_each_file_once(self, files: list[WrittenFile]) -> None:
        """Exactly one dataset per file (pid from its uuid), one origdatablock per dataset."""
        datasets = self.standin.datasets
        uuids = sorted(pid.rsplit("/", 1)[-1] for pid in datasets)
        assert uuids == sorted(f.entry_uuid for f in files)
        blocks = [block["datasetId"] for block in self.standin.origdatablocks]
        assert sorted(blocks) == sorted(datasets)


def make_kit(request: pytest.FixtureRequest, tmp_path: Path) -> Kit:
    """Build a ``Kit`` from the harness fixtures (shared with the process tests)."""
    return Kit(
        broker=request.getfixturevalue("kafka_broker"),
        standin=request.getfixturevalue("scicat_standin"),
        make_topic=request.getfixturevalue("make_topic"),
        file_writer=request.getfixturevalue("file_writer"),
        tmp_path=tmp_path,
        schemas=request.getfixturevalue("data_dir") / "schemas",
    )


@pytest.fixture
def kit(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Kit]:
    made = make_kit(request, tmp_path)
    yield made
    for running in made.running:
        if running.code is None:
            running.stop()


def new_group() -> str:
    return f"g-{uuid.uuid4().hex[:8]}"


def wait_until(condition: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def announce_round_robin(writer: FakeFileWriter, files: list[WrittenFile], partitions: int) -> None:
    for partition in range(partitions):
        writer.announce(files[partition::partitions], partition=partition)


def test_every_file_ingested_once_and_offsets_committed_to_the_end(kit: Kit) -> None:
    topic = kit.make_topic(4)
    config = kit.config(topic)
    writer = kit.writer(topic)
    files = writer.write(200)
    announce_round_robin(writer, files, 4)
    running = kit.start(config)

    wait_until(lambda: len(kit.standin.origdatablocks) >= 200, "200 origdatablocks")
    kit.wait_committed(config.kafka.group_id, topic, [50] * 4)
    assert running.stop() == 0
    kit.assert_each_file_once(files)
    assert kit.dead_letters() == []
    assert running.daemon.totals.peak_in_flight <= running.daemon.bound


class GatedIngestor:
    """A stand-in pipeline: counts calls per file and holds each call until ``gate`` opens."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.calls: Counter[str] = Counter()
        self._lock = threading.Lock()

    def ingest(self, job: Job) -> Outcome:
        with self._lock:
            self.calls[job.file_path] += 1
        self.gate.wait(WAIT)
        return Created(pid=job.job_id)


def test_backpressure_pauses_at_the_bound_and_duplicates_are_ingested_once(kit: Kit) -> None:
    topic = kit.make_topic(1)
    config = kit.config(
        topic, overrides={"ingestion.max_offline_ingestors": 2, "ingestion.queue_size": 3}
    )
    writer = kit.writer(topic)
    paths = [f"/data/run-{i}.hdf" for i in range(30)]
    writer.produce_raw(wrdn_message(paths[0], "job-0"))
    writer.produce_raw(wrdn_message(paths[0], "job-0"))  # the file-writer said it twice
    for i, path in enumerate(paths[1:], start=1):
        writer.produce_raw(wrdn_message(path, f"job-{i}"))
    ingestor = GatedIngestor()
    running = kit.start(config, ingestor)

    wait_until(lambda: running.state.snapshot().paused, "consumption paused at the bound")
    assert running.state.snapshot().in_flight == running.daemon.bound == 5
    ingestor.gate.set()
    kit.wait_committed(config.kafka.group_id, topic, [31])
    assert running.stop() == 0
    assert ingestor.calls == Counter(paths)  # every file once, the duplicated one too
    assert running.daemon.totals.duplicates == 1
    assert running.daemon.totals.peak_in_flight == 5


def test_poison_is_dead_lettered_and_everything_else_ingested(kit: Kit) -> None:
    topic = kit.make_topic(1)
    config = kit.config(
        topic,
        overrides={
            "ingestion.file_handling.data_file_open_max_tries": 1,
            "ingestion.file_handling.data_file_open_retry_delay": [0.1],
        },
    )
    writer = kit.writer(topic)
    files = writer.write(10)
    not_nexus = kit.tmp_path / "data" / "notes.hdf"
    not_nexus.write_text("not HDF5")
    missing = kit.tmp_path / "data" / "never-written.hdf"
    poison: list[tuple[bytes | None, str]] = [
        (bytes(range(0x80, 0xA0)), "no flatbuffer file identifier"),
        (None, "tombstone"),
        (wrdn_message("/data/x.hdf", "job-t")[:40], "undecodable"),
        (wrdn_message(str(not_nexus), "job-n"), str(not_nexus)),
        (wrdn_message(str(missing), "job-m"), "file not readable after 2 attempts"),
    ]
    skipped = [serialise_f144("temperature", 21.5, 0), wrdn_message("/data/y.hdf", "job-e", True)]
    extra = [value for value, _ in poison] + skipped
    for i, written in enumerate(files):  # interleaved: file, odd message, file, ...
        writer.produce_raw(wrdn_message(str(written.path), written.job_id))
        if i < len(extra):
            writer.produce_raw(extra[i])
    running = kit.start(config)

    kit.wait_committed(config.kafka.group_id, topic, [len(files) + len(extra)])
    assert running.stop() == 0
    kit.assert_each_file_once(files)
    letters = kit.dead_letters()
    assert len(letters) == len(poison)
    for letter, (value, why) in zip(letters, poison, strict=True):
        assert why in letter["reason"] + letter["file_name"]
        assert letter["source_topic"] == topic
        assert letter["value"] == (None if value is None else base64.b64encode(value).decode())
    assert running.daemon.totals.messages == Counter(wrdn=12, poison=3, skip=2)


def test_scicat_outage_pauses_intake_and_loses_nothing(kit: Kit) -> None:
    topic = kit.make_topic(2)
    config = kit.config(topic, overrides={"scicat.timeout": 1})
    writer = kit.writer(topic)
    files = writer.write(60)
    announce_round_robin(writer, files, 2)
    running = kit.start(config)

    kit.wait_datasets(5)
    kit.standin.faults.fail_next(10, 503)  # 503s first, then no answer at all for 4 s
    wait_until(lambda: running.state.snapshot().scicat_failing, "the daemon to notice")
    kit.standin.faults.stop_answering(seconds=4)
    wait_until(lambda: len(kit.standin.origdatablocks) >= 60, "all files after recovery")

    assert running.stop() == 0
    kit.assert_each_file_once(files)
    assert kit.dead_letters() == []
    totals = running.daemon.totals
    assert totals.retries["scicat"] > 0
    assert totals.peak_in_flight <= running.daemon.bound


# -- dead letters that cannot be stored -----------------------------------------------------------


def _write_missing_then_files(kit: Kit, topic: str) -> tuple[Path, list[WrittenFile]]:
    """Offset 0: a file that never appears (dead-lettered after ~1 s of retries); 1-5: good ones."""
    writer = kit.writer(topic)
    files = writer.write(5)
    missing = kit.tmp_path / "data" / "never-written.hdf"
    writer.produce_raw(wrdn_message(str(missing), "job-missing"))
    for written in files:
        writer.produce_raw(wrdn_message(str(written.path), written.job_id))
    return missing, files


_SLOW_MISSING = {
    "ingestion.file_handling.data_file_open_max_tries": 2,
    "ingestion.file_handling.data_file_open_retry_delay": [0.5],
}


def _ready_body(state: ServiceState) -> tuple[int, dict[str, Any]]:
    options = build(HealthCheckOptions, {"port": 0}, "test")
    with HealthServer(options, state, lambda: True) as health:
        answer = requests.get(f"{health.url}/ready", timeout=5)
    return answer.status_code, answer.json()


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_letter_on_a_full_disk_holds_its_offset_until_a_restart_stores_it(kit: Kit) -> None:
    topic = kit.make_topic(1)
    group = new_group()
    missing, files = _write_missing_then_files(kit, topic)
    full = kit.config(topic, group, {"ingestion.dead_letter.file": "/dev/full", **_SLOW_MISSING})
    running = kit.start(full)

    wait_until(lambda: running.state.snapshot().dead_letter_error != "", "the sink failure")
    kit.wait_datasets(5)  # the later files are ingested meanwhile
    status, body = _ready_body(running.state)
    assert status == 503
    detail = body["checks"]["dead_letters"]["detail"]
    assert "ingestion.dead_letter.file: /dev/full: No space left on device" in detail
    assert running.state.snapshot().paused
    time.sleep(1.0)  # several commit intervals: the commit stays before the unstored letter
    assert kit.committed(group, topic, 1) == [0]
    assert running.stop() == 0  # it stayed up
    assert running.daemon.totals.letter_failures >= 2  # retried

    working = kit.start(kit.config(topic, group, _SLOW_MISSING))
    kit.wait_committed(group, topic, [6])
    assert working.stop() == 0
    (letter,) = kit.dead_letters()
    assert (letter["source_offset"], letter["file_name"]) == (0, str(missing))
    kit.assert_each_file_once(files)


def test_a_letter_waits_while_the_dead_letter_broker_refuses_writes(
    kit: Kit, spare_broker: HarnessBroker
) -> None:
    topic = kit.make_topic(1)
    group = new_group()
    spare_broker.stop()  # the dead-letter topic's broker refuses writes for a while
    options = build(
        KafkaOptions,
        {"bootstrap_servers": spare_broker.bootstrap, "security_protocol": "plaintext"},
        "test",
    )
    sink = DeadLetters([KafkaSink(options, "dead-letters", delivery_timeout=1.0)])
    missing, files = _write_missing_then_files(kit, topic)
    running = kit.start(kit.config(topic, group, _SLOW_MISSING), dead_letters=sink)

    wait_until(lambda: running.state.snapshot().dead_letter_error != "", "the sink failure")
    kit.wait_datasets(5)
    status, body = _ready_body(running.state)
    assert status == 503
    assert (
        "ingestion.dead_letter.topic: topic dead-letters: "
        in (body["checks"]["dead_letters"]["detail"])
    )
    time.sleep(1.0)
    assert kit.committed(group, topic, 1) == [0]

    spare_broker.start()
    with contextlib.suppress(BrokerError):  # the producer's metadata request may auto-create it
        spare_broker.create_topic("dead-letters")
    kit.wait_committed(group, topic, [6])
    assert running.state.snapshot().dead_letter_error == ""
    assert running.stop() == 0
    reader = consumer_test_config(spare_broker.bootstrap, new_group())
    (letter,) = read_messages(reader, "dead-letters", 1)
    headers = dict(letter.headers() or [])
    assert (headers["source_topic"], headers["source_offset"]) == (topic.encode(), b"0")
    assert str(missing) in headers["reason"].decode()
    with pytest.raises(TimeoutError):  # stored once
        read_messages(
            consumer_test_config(spare_broker.bootstrap, new_group()), "dead-letters", 2, 3
        )
    kit.assert_each_file_once(files)
