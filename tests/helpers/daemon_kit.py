"""The daemon under test, with everything it talks to: the real broker, the SciCat stand-in,
topics, the fake file-writer and the daemon configs (``Kit``); in-process (``RunningDaemon``) or as
``python -m scicat_ingestor run`` processes (``ProcessKit``, ``LiveKit``)."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from helpers.wait import WAIT, wait_until
from scicat_ingestor.config.model import IngestorConfig, KafkaOptions, build
from scicat_ingestor.daemon.deadletters import DeadLetters
from scicat_ingestor.daemon.loop import Daemon, Ingestor
from scicat_ingestor.ingest.pipeline import Pipeline
from scicat_ingestor.ops.state import ServiceState
from scicat_ingestor.schema.loader import load_schemas
from scicat_ingestor.scicat import SciCatClient
from scicat_ingestor.sources.kafka import KafkaSource
from scicat_ingestor.sources.offsets import TopicPartition as Partition
from scicat_ingestor.testing.broker import consumer_test_config
from scicat_ingestor.testing.brokers import HarnessBroker
from scicat_ingestor.testing.daemon_process import DaemonProcess, daemon_config, write_config
from scicat_ingestor.testing.filewriter import SAMPLE_FILES, FakeFileWriter, WrittenFile
from scicat_ingestor.testing.plugin import FileWriterFactory, TopicFactory
from scicat_ingestor.testing.scicat import SciCatStandIn

CODA_SCHEMA = "small-coda.imsc.yml"
YMIR_SCHEMA = "small-ymir.imsc.yml"
# Daemon overrides: run starts create samples; a missing file is tried twice, 0.3 s apart.
SAMPLES_ON = {
    "ingestion.sample_ingestion": True,
    "ingestion.file_handling.data_file_open_max_tries": 2,
    "ingestion.file_handling.data_file_open_retry_delay": [0.3],
}
_COORDINATOR_MOVING = {
    KafkaError.NOT_COORDINATOR,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
}


class CountingSource(KafkaSource):
    """``KafkaSource`` that counts the daemon's commit calls (one per commit interval)."""

    def __init__(self, options: KafkaOptions, state: ServiceState) -> None:
        super().__init__(options, state)
        self.commit_calls = 0

    def commit(self, offsets: Mapping[Partition, int]) -> dict[Partition, int]:
        self.commit_calls += 1
        return super().commit(offsets)


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
        self.source = CountingSource(config.kafka, self.state)
        self.daemon = Daemon(config, ingestor, self.dead_letters, self.source, self.state)
        self.code: int | None = None
        self._thread = threading.Thread(target=self._run, name="daemon-under-test")
        self._thread.start()

    def _run(self) -> None:
        self.code = self.daemon.run()

    def commits_pass(self, count: int) -> None:
        """Wait until the daemon made ``count`` more commits (or tried: nothing to commit)."""
        target = self.source.commit_calls + count
        wait_until(lambda: self.source.commit_calls >= target, f"{count} more commit calls")

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


def new_group() -> str:
    return f"g-{uuid.uuid4().hex[:8]}"


def announce_round_robin(writer: FakeFileWriter, files: list[WrittenFile], partitions: int) -> None:
    for partition in range(partitions):
        writer.announce(files[partition::partitions], partition=partition)


class ProcessKit(Kit):
    """``Kit`` plus daemons run as separate processes (killed at teardown)."""

    processes: list[DaemonProcess]

    def daemon(
        self, topic: str, group: str, name: str = "a", overrides: Mapping[str, Any] | None = None
    ) -> DaemonProcess:
        """Start ``python -m scicat_ingestor run`` with its log in ``daemon-<name>.log``."""
        data = self.config_data(topic, group, overrides)
        config = write_config(self.tmp_path / f"daemon-{name}.yml", data)
        process = DaemonProcess(config, self.tmp_path / f"daemon-{name}.log")
        process.start()
        self.processes.append(process)
        return process


class LiveKit(Kit):
    """``Kit`` with its own schema directory, writers per template and daemon processes."""

    processes: list[DaemonProcess]
    writers: list[FakeFileWriter]
    group: str = ""

    @property
    def schema_dir(self) -> Path:
        return self.tmp_path / "live-schemas"

    def daemon(self, topic: str, overrides: Mapping[str, Any]) -> DaemonProcess:
        self.group = new_group()
        data = self.config_data(
            topic, self.group, {"ingestion.schemas_directory": str(self.schema_dir), **overrides}
        )
        config = write_config(self.tmp_path / "daemon.yml", data)
        process = DaemonProcess(config, self.tmp_path / "daemon.log")
        process.start()
        self.processes.append(process)
        process.wait_for_log(r"assigned .*\[0\]", timeout=60)
        return process

    def committed_all(self, topic: str) -> int:
        """The daemon's committed offset of the topic's only partition."""
        (offset,) = self.committed(self.group, topic, 1)
        return offset

    def template_writer(self, topic: str, template: int) -> FakeFileWriter:
        writer = FakeFileWriter(
            self.broker.bootstrap, topic, self.tmp_path / "data", [SAMPLE_FILES[template]]
        )
        self.writers.append(writer)
        return writer

    def dataset_of(self, file: WrittenFile) -> dict[str, Any]:
        wait_until(lambda: self._find(file) is not None, f"the dataset of {file.path.name}")
        found = self._find(file)
        assert found is not None
        return found

    def _find(self, file: WrittenFile) -> dict[str, Any] | None:
        for pid, dataset in self.standin.datasets.items():
            if pid.endswith(file.entry_uuid):
                return dataset
        return None


def ready_body(port: int) -> dict[str, Any]:
    """``/ready``'s body whatever its status (503 here: no SciCat health endpoint check yet)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=5) as answer:
            body: dict[str, Any] = json.load(answer)
    except urllib.error.HTTPError as err:
        body = json.load(err)
    return body
