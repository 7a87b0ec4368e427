"""pytest fixtures for the Kafka side of the harness: one broker per session, fresh topics.

Enable with ``pytest_plugins = ["scicat_ingestor.testing.plugin"]`` in a ``conftest.py``.
The broker is the one ``SCICAT_INGESTOR_TEST_BROKER`` names (``tansu``, the default, ``kafka`` or
``HOST:PORT``; see ``brokers``). Tests that stop or kill a broker must use ``spare_broker`` or
``broker_factory`` (both honour that choice) instead of the shared ``kafka_broker``.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import pytest

from scicat_ingestor.testing.broker import consumer_test_config
from scicat_ingestor.testing.brokers import BROKER_ENV, BrokerChoice, HarnessBroker, broker_choice
from scicat_ingestor.testing.filewriter import SAMPLE_FILES, FakeFileWriter

_TOPIC_UNSAFE = re.compile(r"[^a-zA-Z0-9._-]+")


class TopicFactory(Protocol):
    def __call__(self, partitions: int = 1) -> str: ...


class ConsumerConfigFactory(Protocol):
    def __call__(self, group_id: str | None = None) -> dict[str, object]: ...


class FileWriterFactory(Protocol):
    def __call__(self, topic: str, data_dir: Path | None = None) -> FakeFileWriter: ...


class BrokerFactory(Protocol):
    def __call__(self, sasl_ssl: bool = False) -> HarnessBroker: ...


_BROKER_FIXTURES = {"kafka_broker", "broker_factory", "spare_broker"}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "broker: uses a Kafka broker (set by the harness plugin)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses a broker fixture ``broker``: ``make test-kafka`` runs those."""
    for item in items:
        if _BROKER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.broker)


def pytest_report_header() -> str:
    """Name the broker (and the Apache Kafka version) at the top of every test log."""
    return f"kafka broker: {broker_choice().describe()} (${BROKER_ENV})"


@pytest.fixture(scope="session")
def test_broker_choice() -> BrokerChoice:
    """The broker kind chosen by ``SCICAT_INGESTOR_TEST_BROKER``."""
    return broker_choice()


@pytest.fixture(scope="session")
def kafka_broker(
    test_broker_choice: BrokerChoice, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HarnessBroker]:
    """The broker shared by the session; its log (and data) is kept under pytest's basetemp.

    On Apache Kafka it also has a SASL_SSL/SCRAM listener (``client_settings()``).
    """
    workdir = tmp_path_factory.mktemp("broker")
    broker = test_broker_choice.new_broker(workdir, sasl_ssl=test_broker_choice.kind == "kafka")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def broker_factory(
    test_broker_choice: BrokerChoice, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BrokerFactory]:
    """Factory: a started broker of the chosen kind of the test's own, to stop, kill, restart.

    Skips the test on an external broker (it cannot be restarted); all are stopped at teardown.
    """
    if not test_broker_choice.can_restart:
        pytest.skip(f"needs a broker it can restart, not {test_broker_choice.describe()}")
    brokers: list[HarnessBroker] = []

    def create(sasl_ssl: bool = False) -> HarnessBroker:
        broker = test_broker_choice.new_broker(tmp_path_factory.mktemp("own-broker"), sasl_ssl)
        brokers.append(broker)
        broker.start()
        return broker

    yield create
    for broker in brokers:
        broker.stop()


@pytest.fixture
def spare_broker(broker_factory: BrokerFactory) -> HarnessBroker:
    """A running broker for this test alone, which it may stop and start (of the chosen kind)."""
    return broker_factory()


@pytest.fixture
def make_topic(kafka_broker: HarnessBroker, request: pytest.FixtureRequest) -> TopicFactory:
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
def kafka_consumer_config(kafka_broker: HarnessBroker) -> ConsumerConfigFactory:
    """Factory: consumer settings for the session broker (fresh group unless one is given)."""

    def config(group_id: str | None = None) -> dict[str, object]:
        return consumer_test_config(kafka_broker.bootstrap, group_id or f"g-{uuid.uuid4().hex}")

    return config


@pytest.fixture
def file_writer(kafka_broker: HarnessBroker, tmp_path: Path) -> Iterator[FileWriterFactory]:
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
