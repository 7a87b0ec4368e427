"""The Apache Kafka launcher and the broker choice: errors as one line, the CLI's JSON line.

The error and choice tests run everywhere (no Java needed); the CLI tests start a real broker and
run only with ``SCICAT_INGESTOR_TEST_BROKER=kafka``.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from scicat_ingestor.testing import kafka_apache
from scicat_ingestor.testing.broker import BrokerError
from scicat_ingestor.testing.brokers import BROKER_ENV, BrokerChoice, broker_choice
from scicat_ingestor.testing.kafka_apache import CACHE_ENV, fetch_jars, kafka_version

ON_KAFKA = broker_choice().kind == "kafka"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", BrokerChoice("tansu")),
        ("tansu", BrokerChoice("tansu")),
        ("kafka", BrokerChoice("kafka")),
        ("broker.example:9092", BrokerChoice("external", "broker.example:9092")),
    ],
)
def test_broker_choice(value: str, expected: BrokerChoice) -> None:
    assert broker_choice({BROKER_ENV: value}) == expected


@pytest.mark.parametrize("value", ["kafak", "host:", "host:port", "9092"])
def test_unknown_broker_choice_names_the_variable(value: str) -> None:
    with pytest.raises(BrokerError, match=f"{BROKER_ENV}='{value}': expected tansu, kafka or"):
        broker_choice({BROKER_ENV: value})


def test_external_broker_cannot_be_restarted() -> None:
    assert not BrokerChoice("external", "h:1").can_restart
    assert BrokerChoice("kafka").can_restart


def test_version_is_pinned_in_the_shipped_pom() -> None:
    assert kafka_version() == "4.3.1"
    assert "Apache Kafka 4.3.1" in BrokerChoice("kafka").describe()


def test_cache_is_outside_the_repository_and_overridable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv(CACHE_ENV, raising=False)
    assert kafka_apache.cache_dir() == Path.home() / ".cache/scicat-ingestor/kafka-4.3.1"
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    assert kafka_apache.cache_dir() == tmp_path / "kafka-4.3.1"


def test_no_maven_is_one_clear_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BrokerError, match=r"^Apache Kafka broker needs Maven: no 'mvn' on PATH$"):
        fetch_jars(tmp_path / "cache")


def test_failed_fetch_is_one_line_with_mavens_last_words(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    mvn = tmp_path / "bin" / "mvn"
    mvn.parent.mkdir()
    mvn.write_text(
        "#!/bin/sh\necho '[INFO] trying'\necho '[ERROR] Could not resolve' >&2\nexit 1\n"
    )
    mvn.chmod(0o755)
    monkeypatch.setenv("PATH", str(mvn.parent))
    with pytest.raises(BrokerError) as caught:
        fetch_jars(tmp_path / "cache")
    assert str(caught.value) == (
        "fetching Apache Kafka 4.3.1 with Maven failed (exit 1): [ERROR] Could not resolve"
    )
    assert not (tmp_path / "cache" / "jars").exists()  # nothing half-fetched is kept


def test_cli_without_java_prints_one_error_line(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": str(tmp_path), "JAVA_HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "scicat_ingestor.testing.kafka_apache", "--workdir", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr == "error: Apache Kafka broker needs Java 17+ (a JDK): no 'java' on PATH\n"


def _read_line(process: subprocess.Popen[str], timeout: float) -> str:
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    assert ready, "the launcher printed nothing in time"
    return process.stdout.readline()


@pytest.mark.broker
@pytest.mark.skipif(not ON_KAFKA, reason="starts Apache Kafka (SCICAT_INGESTOR_TEST_BROKER=kafka)")
@pytest.mark.parametrize("sasl_ssl", [False, True], ids=["plaintext", "sasl-ssl"])
def test_cli_prints_one_json_line_and_stops_on_sigterm(tmp_path: Path, sasl_ssl: bool) -> None:
    command = [sys.executable, "-m", "scicat_ingestor.testing.kafka_apache"]
    command += ["--workdir", str(tmp_path / "kafka"), *(["--sasl-ssl"] if sasl_ssl else [])]
    started = time.monotonic()
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as process:
        try:
            settings = json.loads(_read_line(process, 180))
            ready_after = time.monotonic() - started
            keys = ["bootstrap", "security_protocol", "sasl_mechanism", "sasl_username"]
            assert list(settings) == [*keys, "sasl_password", "ssl_ca_location"]
            config = {"bootstrap.servers": settings["bootstrap"]}
            if sasl_ssl:
                assert settings["security_protocol"] == "sasl_ssl"
                assert settings["sasl_mechanism"] == "SCRAM-SHA-256"
                assert Path(settings["ssl_ca_location"]).is_file()
                config |= {
                    "security.protocol": "SASL_SSL",
                    "sasl.mechanism": "SCRAM-SHA-256",
                    "sasl.username": settings["sasl_username"],
                    "sasl.password": settings["sasl_password"],
                    "ssl.ca.location": settings["ssl_ca_location"],
                }
            else:
                assert settings["security_protocol"] == "plaintext"
                assert [settings[k] for k in keys[2:]] == ["", ""]
            assert AdminClient(config).list_topics(timeout=30).brokers
            process.send_signal(signal.SIGTERM)
            assert process.wait(60) == 0
        finally:
            process.kill()
    assert "shut down completely" in (tmp_path / "kafka" / "kafka.log").read_text()
    print(f"launcher ready after {ready_after:.1f} s")


@pytest.mark.broker
@pytest.mark.skipif(not ON_KAFKA, reason="starts Apache Kafka (SCICAT_INGESTOR_TEST_BROKER=kafka)")
def test_a_cluster_id_starting_with_a_dash_formats(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CI once drew such an id (1 in 64) and kafka-storage read it as an option."""
    monkeypatch.setattr(kafka_apache, "_cluster_id", lambda: "-uU78k5SQtKtvSj-rvdduA")
    broker = kafka_apache.KafkaBroker(tmp_path / "kafka")
    broker.start()
    try:
        assert AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(timeout=30).brokers
    finally:
        broker.stop()
