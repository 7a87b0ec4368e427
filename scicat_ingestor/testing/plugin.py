"""pytest fixtures for the Kafka side of the harness: one Tansu broker per session, fresh topics.

Enable with ``pytest_plugins = ["scicat_ingestor.testing.plugin"]`` in a ``conftest.py``.
Tests that stop or kill a broker must use ``spare_broker`` (or start their own) instead of the
shared ``kafka_broker``.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import pytest

from scicat_ingestor.testing.broker import TansuBroker, consumer_test_config
from scicat_ingestor.testing.filewriter import SAMPLE_FILES, FakeFileWriter

_TOPIC_UNSAFE = re.compile(r"[^a-zA-Z0-9._-]+")


class TopicFactory(Protocol):
    def __call__(self, partitions: int = 1) -> str: ...


class ConsumerConfigFactory(Protocol):
    def __call__(self, group_id: str | None = None) -> dict[str, object]: ...


class FileWriterFactory(Protocol):
    def __call__(self, topic: str, data_dir: Path | None = None) -> FakeFileWriter: ...


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TansuBroker]:
    """A running Tansu broker shared by the session; its log is kept under pytest's basetemp."""
    log_file = tmp_path_factory.mktemp("tansu") / "tansu.log"
    with TansuBroker(log_file=log_file) as broker:
        yield broker


@pytest.fixture
def spare_broker(tmp_path: Path) -> Iterator[TansuBroker]:
    """A running broker for this test alone, which it may stop and start (data may not survive)."""
    with TansuBroker(log_file=tmp_path / "spare-broker.log") as broker:
        yield broker


@pytest.fixture
def make_topic(kafka_broker: TansuBroker, request: pytest.FixtureRequest) -> TopicFactory:
    """Factory: create a fresh topic named after the test with ``partitions`` partitions."""
    stem = _TOPIC_UNSAFE.sub("_", request.node.name)[:80]

    def create(partitions: int = 1) -> str:
        name = f"{stem}-{uuid.uuid4().hex[:8]}"
        kafka_broker.create_topic(name, partitions)
        return name

    return create


@pytest.fixture
def kafka_topic(make_topic: TopicFactory) -> str:
    """A fresh single-partition topic."""
    return make_topic()


@pytest.fixture
def kafka_consumer_config(kafka_broker: TansuBroker) -> ConsumerConfigFactory:
    """Factory: consumer settings for the session broker (fresh group unless one is given)."""

    def config(group_id: str | None = None) -> dict[str, object]:
        return consumer_test_config(kafka_broker.bootstrap, group_id or f"g-{uuid.uuid4().hex}")

    return config


@pytest.fixture
def file_writer(kafka_broker: TansuBroker, tmp_path: Path) -> Iterator[FileWriterFactory]:
    """Factory: a ``FakeFileWriter`` on the session broker (files in ``tmp_path`` by default)."""
    writers: list[FakeFileWriter] = []

    def create(topic: str, data_dir: Path | None = None) -> FakeFileWriter:
        writer = FakeFileWriter(kafka_broker.bootstrap, topic, data_dir or tmp_path)
        writers.append(writer)
        return writer

    yield create
    for writer in writers:
        writer.close()


@pytest.fixture
def sample_nexus_files() -> tuple[Path, ...]:
    """The sample NeXus files shipped with the package (templates for the fake file-writer)."""
    return SAMPLE_FILES
