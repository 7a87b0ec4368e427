"""Delivery guarantees on Apache Kafka (``SCICAT_INGESTOR_TEST_BROKER=kafka``, ``make test-kafka``).

What only the real broker can show: the ESS production path (SASL_SSL, SCRAM-SHA-256, a CA file),
authentication and TLS failures, static membership, cooperative-sticky rebalances, a broker
restart on its persistent log dir, and the consumer-lag metric (Tansu's watermarks are wrong).
Measured figures are printed as ``FIGURE name: value`` lines.
"""

from __future__ import annotations

import re
import shutil
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import (
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)

from helpers.daemon_kit import ProcessKit, announce_round_robin, make_kit, new_group
from helpers.wait import wait_until
from scicat_ingestor.testing.broker import free_port
from scicat_ingestor.testing.brokers import HarnessBroker, broker_choice
from scicat_ingestor.testing.filewriter import FakeFileWriter
from scicat_ingestor.testing.kafka_apache import SCRAM_USER, KafkaBroker, make_tls
from scicat_ingestor.testing.plugin import BrokerFactory

pytestmark = [
    pytest.mark.integration,
    pytest.mark.broker,
    pytest.mark.skipif(
        broker_choice().kind != "kafka",
        reason="needs Apache Kafka (SCICAT_INGESTOR_TEST_BROKER=kafka, make test-kafka)",
    ),
]

AUTH_FAILURE_LOG = re.compile(r"Kafka: .*SASL authentication error: Authentication failed")
TLS_FAILURE_LOG = re.compile(r"Kafka: .*SSL handshake failed: .*certificate verify failed")


class KafkaKit(ProcessKit):
    """``ProcessKit`` that can move to a broker of the test's own (to restart or reconfigure)."""

    own_writers: list[FakeFileWriter]

    def use_broker(self, broker: HarnessBroker) -> None:
        """Topics, file-writers and offset checks go to ``broker`` from now on."""

        def make_topic(partitions: int = 1) -> str:
            name = f"own-{uuid.uuid4().hex[:12]}"
            broker.create_topic(name, partitions)
            return name

        def file_writer(topic: str, data_dir: Path | None = None) -> FakeFileWriter:
            self.own_writers.append(
                FakeFileWriter(broker.bootstrap, topic, data_dir or self.tmp_path)
            )
            return self.own_writers[-1]

        self.broker, self.make_topic, self.file_writer = broker, make_topic, file_writer


@pytest.fixture
def kit(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[KafkaKit]:
    made = KafkaKit(**vars(make_kit(request, tmp_path)))
    made.processes, made.own_writers = [], []
    yield made
    for process in made.processes:
        process.kill()
    for writer in made.own_writers:
        writer.close()


def figure(capsys: pytest.CaptureFixture[str], name: str, value: str) -> None:
    """Print a measured figure into the test log (not captured)."""
    with capsys.disabled():
        print(f"\nFIGURE {name}: {value}")


def ess_kafka_section(broker: KafkaBroker, ca_file: Path | None = None) -> dict[str, Any]:
    """Dotted overrides: the ``kafka`` section as in the upstream sample (sasl_ssl, SCRAM, CA)."""
    settings = broker.client_settings()
    return {
        "kafka.bootstrap_servers": settings["bootstrap"],
        "kafka.security_protocol": "sasl_ssl",
        "kafka.sasl_mechanism": "SCRAM-SHA-256",
        "kafka.sasl_username": settings["sasl_username"],
        "kafka.sasl_password": settings["sasl_password"],
        "kafka.ssl_ca_location": str(ca_file or settings["ssl_ca_location"]),
    }


def with_health(overrides: dict[str, Any]) -> tuple[dict[str, Any], str]:
    port = free_port()
    overrides = {**overrides, "health_check.enabled": True, "health_check.port": port}
    return overrides, f"http://127.0.0.1:{port}"


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def metric(url: str, name: str, labels: str) -> float | None:
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    for line in text.splitlines():
        if line.startswith(name + "{") and all(part in line for part in labels.split(",")):
            return float(line.rsplit(" ", 1)[1])
    return None


def set_scram_password(broker: KafkaBroker, password: str) -> None:
    """Change the SCRAM user's password (through the PLAINTEXT listener's admin client)."""
    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 4096)
    upsert = UserScramCredentialUpsertion(SCRAM_USER, info, password.encode())
    for future in broker.admin().alter_user_scram_credentials([upsert]).values():
        future.result(30)


def test_ess_style_sasl_ssl_daemon_ingests_30_files_across_kill_9(
    kit: KafkaKit, capsys: pytest.CaptureFixture[str]
) -> None:
    broker = kit.broker
    assert isinstance(broker, KafkaBroker)
    topic, group = kit.make_topic(2), new_group()
    writer = kit.writer(topic)
    files = writer.write(30)
    announce_round_robin(writer, files, 2)
    daemon = kit.daemon(topic, group, overrides=ess_kafka_section(broker))

    kit.wait_datasets(10)
    daemon.kill()
    at_kill = len(kit.standin.datasets)
    daemon.start()
    kit.wait_committed(group, topic, [15, 15])
    daemon.terminate()
    assert daemon.wait(30) == 0
    kit.assert_each_file_once(files)
    assert broker.scram_password not in daemon.log_text()
    assert "sasl_ssl" in daemon.log_text().lower()
    figure(capsys, "sasl_ssl 30 files across kill -9", f"{at_kill} before the kill, 0 lost, 0 dup")


def test_password_rotated_on_the_broker_is_one_line_503_and_recovers(
    kit: KafkaKit, broker_factory: BrokerFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    broker = broker_factory(sasl_ssl=True)
    assert isinstance(broker, KafkaBroker)
    kit.use_broker(broker)
    topic, group = kit.make_topic(1), new_group()
    overrides, url = with_health(ess_kafka_section(broker))
    # The ESS config has no consumer_config: only the daemon's own reconnect backoff applies.
    overrides["kafka.consumer_config"] = {"fetch.wait.max.ms": 50}
    writer = kit.writer(topic)
    daemon = kit.daemon(topic, group, overrides=overrides)
    writer.announce(first := writer.write(2))
    kit.wait_committed(group, topic, [2])
    wait_until(lambda: http_status(f"{url}/ready") == 200, "ready")

    wrong = "rotated-" + broker.scram_password[::-1]
    set_scram_password(broker, wrong)  # the daemon keeps the old one
    broker.kill()  # drop the authenticated connections
    broker.start()
    wait_until(lambda: bool(AUTH_FAILURE_LOG.search(daemon.log_text())), "the failure log line", 60)
    wait_until(lambda: http_status(f"{url}/ready") == 503, "/ready 503")
    attempts_before = _failed_authentications(broker)
    time.sleep(20)
    attempts = _failed_authentications(broker) - attempts_before
    assert daemon.running
    assert http_status(f"{url}/health") == 200
    lines = [line for line in daemon.log_text().splitlines() if AUTH_FAILURE_LOG.search(line)]
    assert 1 <= len(lines) <= 2, lines  # rate-limited: one per 30 s
    # librdkafka's backoff does not grow on failed handshakes; 100 ms made 56 in 20 s, 1 s ~40.
    assert attempts <= 50, f"{attempts} authentication attempts in 20 s"

    set_scram_password(broker, broker.scram_password)  # fixed
    writer.announce(second := writer.write(2))
    kit.wait_committed(group, topic, [4])
    wait_until(lambda: http_status(f"{url}/ready") == 200, "ready again")
    for secret in (broker.scram_password, wrong):
        assert secret not in daemon.log_text()
    kit.assert_each_file_once(first + second)
    figure(capsys, "wrong password", f"{len(lines)} log line(s); {attempts} attempts in 20 s")


def _failed_authentications(broker: KafkaBroker) -> int:
    return broker.log_file.read_text(errors="replace").count("Failed authentication")


def test_broker_certificate_from_another_ca_is_one_line_503_and_recovers(
    kit: KafkaKit,
    broker_factory: BrokerFactory,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    broker = broker_factory(sasl_ssl=True)
    assert isinstance(broker, KafkaBroker)
    kit.use_broker(broker)
    tls = broker.workdir / "tls"
    daemon_ca = shutil.copy(tls / "ca.pem", tmp_path / "daemon-ca.pem")
    topic, group = kit.make_topic(1), new_group()
    overrides, url = with_health(ess_kafka_section(broker, Path(daemon_ca)))
    overrides["kafka.consumer_config"] = {"fetch.wait.max.ms": 50}
    writer = kit.writer(topic)
    daemon = kit.daemon(topic, group, overrides=overrides)
    writer.announce(first := writer.write(2))
    kit.wait_committed(group, topic, [2])

    kept = tmp_path / "tls-original"
    shutil.copytree(tls, kept)
    other = make_tls(tmp_path / "tls-other")  # the broker now presents a certificate of another CA
    broker.stop()
    for name in ("broker.p12", "broker.pass", "ca.pem"):
        shutil.copy(other.keystore.parent / name, tls / name)
    broker.start()
    wait_until(lambda: bool(TLS_FAILURE_LOG.search(daemon.log_text())), "the TLS failure line", 60)
    wait_until(lambda: http_status(f"{url}/ready") == 503, "/ready 503")
    time.sleep(10)
    assert daemon.running
    lines = [line for line in daemon.log_text().splitlines() if TLS_FAILURE_LOG.search(line)]
    assert 1 <= len(lines) <= 2, lines

    broker.stop()  # fixed: the original certificate again
    for name in ("broker.p12", "broker.pass", "ca.pem"):
        shutil.copy(kept / name, tls / name)
    broker.start()
    writer.announce(second := writer.write(2))
    kit.wait_committed(group, topic, [4])
    wait_until(lambda: http_status(f"{url}/ready") == 200, "ready again")
    assert broker.scram_password not in daemon.log_text()
    kit.assert_each_file_once(first + second)
    figure(capsys, "wrong CA", f"{len(lines)} log line(s): {lines[0].split('Kafka: ', 1)[1]}")


@pytest.mark.parametrize("static", [False, True], ids=["default-session", "static-membership"])
def test_restart_after_kill_9_owns_the_partitions(
    kit: KafkaKit, static: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    """Default session.timeout.ms (45 s) vs ``group.instance.id``: time until the restart owns."""
    topic, group = kit.make_topic(4), new_group()
    overrides: dict[str, Any] = {"kafka.consumer_config": {"fetch.wait.max.ms": 50}}  # defaults
    if static:
        overrides["kafka.group_instance_id"] = "ingestor-host-a"
    writer = kit.writer(topic)
    daemon = kit.daemon(topic, group, overrides=overrides)
    daemon.wait_for_log(r"assigned .*\[3\]", timeout=60)
    announce_round_robin(writer, first := writer.write(4), 4)
    kit.wait_committed(group, topic, [1] * 4)

    daemon.kill()
    killed = time.monotonic()
    daemon.start()
    announce_round_robin(writer, second := writer.write(4), 4)
    kit.wait_committed(group, topic, [2] * 4)
    owned_after = time.monotonic() - killed
    kit.assert_each_file_once(first + second)
    if static:
        assert owned_after < 15
    else:
        assert owned_after > 25  # the dead member holds the partitions until its session expires
    name = "static membership" if static else "default session.timeout.ms 45 s"
    figure(capsys, f"kill -9 to restarted daemon ingesting, {name}", f"{owned_after:.1f} s")


@pytest.mark.parametrize("strategy", ["range,roundrobin", "cooperative-sticky"])
def test_three_daemons_one_joins_and_one_is_killed_under_load(
    kit: KafkaKit, strategy: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Eager and incremental rebalances under load: a third member joins, then one is killed."""
    topic, group = kit.make_topic(6), new_group()
    writer = kit.writer(topic)
    files = writer.write(300)
    kit.standin.faults.delay(0.1, match="")  # every SciCat answer 0.1 s late: the run lasts seconds
    overrides = harness_consumer_config(kit, {"partition.assignment.strategy": strategy})
    first = [kit.daemon(topic, group, name=n, overrides=overrides) for n in "ab"]
    for daemon in first:
        daemon.wait_for_log(r"assigned \w", timeout=60)
    announce_round_robin(writer, files, 6)
    wait_until(lambda: all("created" in d.log_text() for d in first), "two members ingesting")
    third = kit.daemon(topic, group, name="c", overrides=overrides)
    wait_until(lambda: "created" in third.log_text(), "the third member ingesting")
    at_kill = len(kit.standin.datasets)
    first[0].kill()
    kit.wait_committed(group, topic, [50] * 6)
    for daemon in (first[1], third):
        daemon.terminate()
        assert daemon.wait(30) == 0
    kit.assert_each_file_once(files)
    partial, full = revokes(first[1].log_text())
    if strategy == "cooperative-sticky":
        assert partial and not full  # b gave c only some of its partitions and kept the rest
    else:
        assert full and not partial
    figure(
        capsys,
        f"3 daemons, {strategy}, c joins, a killed at {at_kill}/300",
        f"0 lost, 0 dup; b revoked part of its partitions {partial}x, all of them {full}x",
    )


def revokes(log: str) -> tuple[int, int]:
    """(partial, full) revokes in a daemon log before its SIGTERM (which revokes everything)."""
    held: set[str] = set()
    partial = full = 0
    for line in log.partition("received SIGTERM")[0].splitlines():
        kind, _, names = line.partition(" - INFO - ")[2].partition(" ")
        parts = set(re.findall(r"\[(\d+)\]", names))
        if kind == "assigned":
            held |= parts
        elif kind == "revoking" and parts:
            partial, full = (partial, full + 1) if parts >= held else (partial + 1, full)
            held -= parts
    return partial, full


def harness_consumer_config(kit: KafkaKit, extra: dict[str, Any]) -> dict[str, Any]:
    """Override: the harness's fast consumer settings plus ``extra`` (dotted key names)."""
    harness = kit.config_data("t")["kafka"]["consumer_config"]
    return {"kafka.consumer_config": {**harness, **extra}}


def test_broker_restart_mid_run_loses_nothing(
    kit: KafkaKit, broker_factory: BrokerFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    broker = broker_factory()
    kit.use_broker(broker)
    topic, group = kit.make_topic(2), new_group()
    writer = kit.writer(topic)
    files = writer.write(40)
    announce_round_robin(writer, files, 2)
    kit.standin.faults.delay(0.05, match="")  # slow enough that the kill finds work in flight
    daemon = kit.daemon(topic, group)
    kit.wait_datasets(15)
    broker.kill()
    time.sleep(3)
    broker.start()
    back = time.monotonic()
    later = writer.write(20)  # announced after the restart: measures when the daemon is back
    announce_round_robin(writer, later, 2)
    wait_until(
        lambda: any(pid.endswith(f.entry_uuid) for pid in kit.standin.datasets for f in later),
        "a file announced after the restart",
    )
    resumed = time.monotonic() - back
    kit.wait_committed(group, topic, [30, 30])
    daemon.terminate()
    assert daemon.wait(30) == 0
    kit.assert_each_file_once(files + later)
    figure(capsys, "broker kill -9, 3 s down, restart", f"0 lost; ingesting {resumed:.1f} s after")


def test_consumer_lag_metric_is_right(kit: KafkaKit) -> None:
    topic, group = kit.make_topic(1), new_group()
    overrides, url = with_health(harness_consumer_config(kit, {"statistics.interval.ms": 500}))
    writer = kit.writer(topic)
    daemon = kit.daemon(topic, group, overrides=overrides)
    writer.announce(first := writer.write(10))
    kit.wait_committed(group, topic, [10])
    labels = f'topic="{topic}",partition="0"'
    wait_until(lambda: metric(url, "scicat_ingestor_consumer_lag", labels) == 0, "lag 0")

    kit.standin.faults.stop_answering()
    writer.announce(second := writer.write(20))
    wait_until(lambda: metric(url, "scicat_ingestor_consumer_lag", labels) == 20, "lag 20")
    kit.standin.faults.resume()
    kit.wait_committed(group, topic, [30])
    wait_until(lambda: metric(url, "scicat_ingestor_consumer_lag", labels) == 0, "lag 0 again")
    daemon.terminate()
    assert daemon.wait(30) == 0
    kit.assert_each_file_once(first + second)
