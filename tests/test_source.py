"""KafkaSource against the real broker: the pause state across an eager rebalance."""

from __future__ import annotations

import time
from collections.abc import Sequence

import confluent_kafka
import pytest

from scicat_ingestor.config.model import KafkaOptions, build
from scicat_ingestor.ops.state import ServiceState
from scicat_ingestor.sources.base import Record
from scicat_ingestor.sources.kafka import KafkaSource
from scicat_ingestor.sources.offsets import TopicPartition
from scicat_ingestor.testing.broker import consumer_test_config, producer_test_config
from scicat_ingestor.testing.plugin import TopicFactory

pytestmark = pytest.mark.integration


class _Listener:
    def __init__(self) -> None:
        self.assigned: set[TopicPartition] = set()
        self.revokes = 0

    def on_assign(self, partitions: Sequence[TopicPartition]) -> None:
        self.assigned |= set(partitions)

    def on_revoke(self, partitions: Sequence[TopicPartition]) -> None:
        self.assigned -= set(partitions)
        self.revokes += 1

    def on_lost(self, partitions: Sequence[TopicPartition]) -> None:
        self.on_revoke(partitions)


def test_partitions_paused_before_an_eager_rebalance_flow_after_a_resume_while_unassigned(
    kafka_broker: object, make_topic: TopicFactory
) -> None:
    """librdkafka keeps a partition's pause across an eager unassign/assign (librdkafka #1849):
    a resume while nothing is assigned must still leave the partitions assigned back flowing.
    Seen as a survivor of a three-daemon rebalance on Apache Kafka ingesting nothing for 60 s."""
    bootstrap = kafka_broker.bootstrap  # type: ignore[attr-defined]
    topic = make_topic(2)
    group = f"g-pause-{time.monotonic_ns()}"
    tuned = consumer_test_config(bootstrap, group)
    extra = {k: v for k, v in tuned.items() if k not in ("bootstrap.servers", "group.id")}
    options = build(
        KafkaOptions,
        {
            "topics": [topic],
            "group_id": group,
            "bootstrap_servers": bootstrap,
            "security_protocol": "plaintext",
            "consumer_config": extra,
        },
        "test",
    )
    listener = _Listener()
    source = KafkaSource(options, ServiceState())
    other = confluent_kafka.Consumer(tuned)
    producer = confluent_kafka.Producer(producer_test_config(bootstrap))
    try:
        source.start(listener)
        _poll_until(source, lambda: len(listener.assigned) == 2, "both partitions assigned")
        source.pause()
        other.subscribe([topic])  # the second member makes the group rebalance (eager)
        resumed = False
        deadline = time.monotonic() + 30
        while not (listener.revokes and listener.assigned):
            assert time.monotonic() < deadline, "no reassignment after the join"
            source.poll(0.1)
            other.poll(0.1)
            if listener.revokes and not listener.assigned and not resumed:
                source.resume()  # the daemon's flow control, during the rebalance gap
                resumed = True
        # A broker that rebalances within one poll leaves no gap (Apache Kafka here, usually):
        # then the resume comes after the reassignment, which must work too.
        source.resume()
        for partition in range(2):
            producer.produce(topic, b"after the rebalance", partition=partition)
        producer.flush(10)
        got: list[Record] = []
        deadline = time.monotonic() + 15
        while not got and time.monotonic() < deadline:
            record = source.poll(0.1)
            other.poll(0.1)
            if record is not None:
                got.append(record)
        assert got, f"nothing fetched from the partitions assigned back: {listener.assigned}"
        assert got[0].tp in listener.assigned
    finally:
        other.close()
        source.close()


def _poll_until(source: KafkaSource, done: object, what: str) -> None:
    deadline = time.monotonic() + 30
    while not done():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        source.poll(0.1)
