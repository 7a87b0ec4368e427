"""Real Apache Kafka broker for tests: the jars from Maven Central, KRaft single node, on loopback.

Facilities run Apache Kafka, so the delivery guarantees shown on Tansu are re-run on the real
thing. The broker version is pinned in the shipped pom (``testing/data/kafka-broker.pom.xml``);
``mvn dependency:copy-dependencies`` fetches it once into a cache outside the repository
(``~/.cache/scicat-ingestor/kafka-VERSION``, or ``$SCICAT_INGESTOR_KAFKA_CACHE``). Needs Java 17+
and Maven on ``PATH`` (or ``$JAVA_HOME``).

One process is broker and controller. Listeners: PLAINTEXT (always) and, with ``sasl_ssl=True``,
SASL_SSL with SCRAM-SHA-256: a CA and a broker certificate for 127.0.0.1 made per work dir with
``keytool`` (it ships with the JDK the broker needs anyway, so the Python test extras stay as
they are), and a SCRAM user written into the cluster metadata when the log dir is formatted.
The log dir lives in the work dir, so ``stop()``/``kill()`` then ``start()`` keeps every message
and committed offset.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import json
import logging
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from scicat_ingestor.testing.broker import (
    BrokerError,
    BrokerProcess,
    free_port,
    request_topic,
    stop_on_signals,
)

logger = logging.getLogger("scicat_ingestor.testing.kafka_apache")

CACHE_ENV = "SCICAT_INGESTOR_KAFKA_CACHE"
SCRAM_MECHANISM = "SCRAM-SHA-256"
SCRAM_USER = "ingestor"
_POM = files("scicat_ingestor.testing").joinpath("data", "kafka-broker.pom.xml")
_MAVEN_NS = {"m": "http://maven.apache.org/POM/4.0.0"}
_LOG_TAIL_LINES = 30
# Small heap, client compiler only: a test broker on a 2-core machine shared with many processes.
_JVM_OPTIONS = ("-Xms128m", "-Xmx512m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1")
_LOG4J2 = """\
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = out
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.raft.name = org.apache.kafka.raft
logger.raft.level = WARN
"""


def kafka_version() -> str:
    """The pinned broker version: ``kafka.version`` in the shipped pom (its one source)."""
    root = ET.fromstring(_POM.read_text(encoding="utf-8"))
    version = root.findtext("m:properties/m:kafka.version", namespaces=_MAVEN_NS)
    if not version:
        raise BrokerError(f"{_POM}: no <kafka.version> property")
    return version.strip()


def cache_dir() -> Path:
    """Where the jars are kept: ``$SCICAT_INGESTOR_KAFKA_CACHE`` or ``~/.cache/scicat-ingestor``."""
    base = os.environ.get(CACHE_ENV) or str(Path.home() / ".cache" / "scicat-ingestor")
    return Path(base) / f"kafka-{kafka_version()}"


def _tool(name: str) -> str:
    """Absolute path of a JDK or Maven tool (``$JAVA_HOME/bin`` first), or a one-line error."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home and name != "mvn" and (Path(java_home) / "bin" / name).is_file():
        return str(Path(java_home) / "bin" / name)
    found = shutil.which(name)
    if found is None:
        what = "Maven" if name == "mvn" else "Java 17+ (a JDK)"
        raise BrokerError(f"Apache Kafka broker needs {what}: no {name!r} on PATH")
    return found


def fetch_jars(cache: Path | None = None) -> Path:
    """The directory of broker jars, fetched with Maven on first use (one fetch at a time)."""
    cache = cache or cache_dir()
    jars = cache / "jars"
    if (jars / ".complete").is_file():
        return jars
    mvn = _tool("mvn")
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a parallel run fetching the same version waits here
        if (jars / ".complete").is_file():
            return jars
        staging = Path(tempfile.mkdtemp(prefix="jars-", dir=cache))
        try:
            pom = staging / "pom.xml"
            pom.write_text(_POM.read_text(encoding="utf-8"), encoding="utf-8")
            logger.info("fetching Apache Kafka %s jars with Maven into %s", kafka_version(), jars)
            result = subprocess.run(
                [mvn, "-q", "-B", "-f", str(pom), "dependency:copy-dependencies",
                 "-DincludeScope=runtime", f"-DoutputDirectory={staging / 'jars'}"],
                stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False,
            )  # fmt: skip
            if result.returncode != 0:
                last = (result.stdout + result.stderr).strip().splitlines()[-1:] or ["no output"]
                raise BrokerError(
                    f"fetching Apache Kafka {kafka_version()} with Maven failed "
                    f"(exit {result.returncode}): {last[0]}"
                )
            shutil.rmtree(jars, ignore_errors=True)
            (staging / "jars").rename(jars)
            (jars / ".complete").touch()
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return jars


@dataclass(frozen=True)
class TlsFiles:
    """Per-run TLS material: the broker's PKCS12 keystore and the CA certificate as PEM."""

    keystore: Path
    password: str
    ca_pem: Path


def make_ca(directory: Path, name: str = "ca") -> Path:
    """A self-signed CA in ``directory/NAME.p12`` (password in ``NAME.pass``); returns its PEM."""
    keytool = _tool("keytool")
    password = _password_file(directory / f"{name}.pass")
    store = directory / f"{name}.p12"
    pem = directory / f"{name}.pem"
    common = ["-storetype", "PKCS12", "-storepass", password, "-keystore", str(store)]
    _run([keytool, "-genkeypair", "-alias", name, "-keyalg", "RSA", "-keysize", "2048",
          "-dname", f"CN=scicat-ingestor test {name} {uuid.uuid4().hex[:8]}", "-validity", "30",
          "-ext", "bc:c", *common])  # fmt: skip
    _run([keytool, "-exportcert", "-rfc", "-alias", name, "-file", str(pem), *common])
    return pem


def make_tls(directory: Path) -> TlsFiles:
    """A CA and a broker certificate for 127.0.0.1/localhost signed by it (kept if present)."""
    directory.mkdir(parents=True, exist_ok=True)
    keystore, ca_pem = directory / "broker.p12", directory / "ca.pem"
    if keystore.is_file() and ca_pem.is_file():
        return TlsFiles(keystore, (directory / "broker.pass").read_text().strip(), ca_pem)
    keytool = _tool("keytool")
    make_ca(directory)
    ca_pass = (directory / "ca.pass").read_text().strip()
    password = _password_file(directory / "broker.pass")
    ca = ["-storetype", "PKCS12", "-keystore", str(directory / "ca.p12"), "-storepass", ca_pass]
    broker = ["-storetype", "PKCS12", "-keystore", str(keystore), "-storepass", password]
    request, signed = directory / "broker.csr", directory / "broker.pem"
    _run([keytool, "-genkeypair", "-alias", "broker", "-keyalg", "RSA", "-keysize", "2048",
          "-dname", "CN=127.0.0.1", "-validity", "30", *broker])  # fmt: skip
    _run([keytool, "-certreq", "-alias", "broker", "-file", str(request), *broker])
    _run([keytool, "-gencert", "-alias", "ca", "-rfc", "-infile", str(request),
          "-outfile", str(signed), "-validity", "30",
          "-ext", "SAN=ip:127.0.0.1,dns:localhost", *ca])  # fmt: skip
    _run([keytool, "-importcert", "-noprompt", "-alias", "ca", "-file", str(ca_pem), *broker])
    _run([keytool, "-importcert", "-alias", "broker", "-file", str(signed), *broker])
    return TlsFiles(keystore, password, ca_pem)


def _password_file(path: Path) -> str:
    password = secrets.token_urlsafe(18)
    path.write_text(password + "\n", encoding="utf-8")
    path.chmod(0o600)
    return password


def _run(command: Sequence[str]) -> None:
    result = subprocess.run(
        list(command), stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        detail = (result.stdout + result.stderr).strip().replace("\n", " ")
        raise BrokerError(f"{Path(command[0]).name} {command[1]} failed: {detail}")


class KafkaBroker(BrokerProcess):
    """One Apache Kafka process (KRaft broker+controller) on 127.0.0.1 with its data in ``workdir``.

    Same surface as ``TansuBroker`` (``bootstrap``, ``start``/``stop``/``kill``, ``create_topic``,
    ``admin``); ``stop()`` or ``kill()`` then ``start()`` reuses the ports and the log dir.
    ``bootstrap`` is the PLAINTEXT listener; ``client_settings()`` describes the SASL_SSL one.
    """

    def __init__(self, workdir: Path, sasl_ssl: bool = False) -> None:
        self.workdir = workdir
        self.sasl_ssl = sasl_ssl
        self.port = free_port()
        self.controller_port = free_port()
        self.sasl_port = free_port() if sasl_ssl else 0
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.log_file = workdir / "kafka.log"
        self.version = kafka_version()
        self.scram_password = ""
        self.tls: TlsFiles | None = None
        self.label = f"Apache Kafka {self.version}"
        self.stop_timeout = 30.0  # a controlled shutdown flushes the log
        self._sasl_checked = False
        super().__init__()

    def __repr__(self) -> str:
        return f"KafkaBroker(version={self.version!r}, bootstrap={self.bootstrap!r})"

    @property
    def sasl_bootstrap(self) -> str:
        return f"127.0.0.1:{self.sasl_port}" if self.sasl_ssl else ""

    def client_settings(self) -> dict[str, str]:
        """The ESS-style ``kafka`` connection keys for the SASL_SSL listener (plaintext without)."""
        if not self.sasl_ssl:
            return {"bootstrap": self.bootstrap, "security_protocol": "plaintext",
                    "sasl_mechanism": "", "sasl_username": "", "sasl_password": "",
                    "ssl_ca_location": ""}  # fmt: skip
        assert self.tls is not None
        return {
            "bootstrap": self.sasl_bootstrap,
            "security_protocol": "sasl_ssl",
            "sasl_mechanism": SCRAM_MECHANISM,
            "sasl_username": SCRAM_USER,
            "sasl_password": self.scram_password,
            "ssl_ca_location": str(self.tls.ca_pem),
        }

    def start(self, timeout: float = 90.0) -> None:
        """Fetch the jars if needed, format the log dir once, start, wait for a metadata answer."""
        if self.running:
            return
        java = _tool("java")
        jars = fetch_jars()
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.sasl_ssl:
            self.tls = make_tls(self.workdir / "tls")
            self.scram_password = self._scram_password()
        properties = self._write_properties()
        classpath = f"{jars}/*"
        base = [java, *_JVM_OPTIONS, f"-Dlog4j2.configurationFile={self._write_log4j()}"]
        base += ["-cp", classpath]
        if not (self.workdir / "data" / "meta.properties").is_file():
            self._format(base, properties)
        self._spawn([*base, "kafka.Kafka", str(properties)])
        try:
            self._wait_ready(time.monotonic() + timeout)
        except BrokerError:
            self.kill()
            raise

    def _scram_password(self) -> str:
        path = self.workdir / "tls" / "scram.pass"
        if path.is_file():
            return path.read_text().strip()
        return _password_file(path)

    def _format(self, base: Sequence[str], properties: Path) -> None:
        """``kafka-storage format``: a new cluster id and, for SASL_SSL, the SCRAM user.

        The id goes in as ``--cluster-id=ID``: one id in 64 starts with ``-``, which
        argparse would take for an option if it were a separate argument.
        """
        command = [*base, "kafka.tools.StorageTool", "format", "--ignore-formatted",
                   f"--cluster-id={_cluster_id()}", "-c", str(properties)]  # fmt: skip
        if self.sasl_ssl:
            user = f"{SCRAM_MECHANISM}=[name={SCRAM_USER},password={self.scram_password}]"
            command += ["--add-scram", user]
        result = subprocess.run(
            command, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            detail = (result.stdout + result.stderr).strip().splitlines()[-1:] or ["no output"]
            raise BrokerError(f"formatting the Kafka log dir {self.workdir} failed: {detail[0]}")

    def _write_properties(self) -> Path:
        listeners = [f"PLAINTEXT://127.0.0.1:{self.port}"]
        if self.sasl_ssl:
            listeners.append(f"SASL_SSL://127.0.0.1:{self.sasl_port}")
        lines = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "listeners": ",".join([*listeners, f"CONTROLLER://127.0.0.1:{self.controller_port}"]),
            "advertised.listeners": ",".join(listeners),
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,"
            "SASL_SSL:SASL_SSL",
            "log.dirs": str(self.workdir / "data"),
            "num.partitions": "1",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "5",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            # Test-friendly: no 3 s wait before the first rebalance; the harness's 2 s session
            # timeout (which Tansu needs) is below Kafka's default minimum of 6 s.
            "group.initial.rebalance.delay.ms": "0",
            "group.min.session.timeout.ms": "1000",
            "log.segment.bytes": str(1 << 20),
            "log.retention.check.interval.ms": "60000",
        }
        if self.sasl_ssl:
            assert self.tls is not None
            lines |= {
                "sasl.enabled.mechanisms": SCRAM_MECHANISM,
                "listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config":
                    "org.apache.kafka.common.security.scram.ScramLoginModule required;",
                "listener.name.sasl_ssl.ssl.keystore.type": "PKCS12",
                "listener.name.sasl_ssl.ssl.keystore.location": str(self.tls.keystore),
                "listener.name.sasl_ssl.ssl.keystore.password": self.tls.password,
                "listener.name.sasl_ssl.ssl.key.password": self.tls.password,
            }  # fmt: skip
        path = self.workdir / "server.properties"
        path.write_text("".join(f"{key}={value}\n" for key, value in lines.items()))
        path.chmod(0o600)
        return path

    def _write_log4j(self) -> Path:
        path = self.workdir / "log4j2.properties"
        path.write_text(_LOG4J2, encoding="utf-8")
        return path

    def _wait_ready(self, deadline: float) -> None:
        """Ready = a metadata answer listing this broker, on every listener clients use.

        The SASL_SSL listener is asked only at the first start: a test may have changed the
        user's password or the certificate since, and then only the port is checked.
        """
        checks: list[dict[str, str | int | float | bool]] = [{"bootstrap.servers": self.bootstrap}]
        if self.sasl_ssl and not self._sasl_checked:
            self._sasl_checked = True
            settings = self.client_settings()
            checks.append({
                "bootstrap.servers": settings["bootstrap"],
                "security.protocol": "SASL_SSL",
                "sasl.mechanism": SCRAM_MECHANISM,
                "sasl.username": SCRAM_USER,
                "sasl.password": self.scram_password,
                "ssl.ca.location": settings["ssl_ca_location"],
            })  # fmt: skip
        for port in (self.port, self.sasl_port) if self.sasl_ssl else (self.port,):
            while not _port_open(port):  # before any client: no connection-refused log spam
                self._check_alive()
                if time.monotonic() > deadline:
                    raise self._error(f"did not open port {port} in time")
                time.sleep(0.05)
        for config in checks:
            admin = AdminClient(config)
            while True:
                self._check_alive()
                try:
                    if admin.list_topics(timeout=1.0).brokers:
                        break
                except KafkaException as exc:
                    if time.monotonic() > deadline:
                        raise self._error(f"did not answer a metadata request: {exc}") from None
                    continue
                if time.monotonic() > deadline:
                    raise self._error("metadata response lists no broker")
        self._check_alive()
        logger.info("Apache Kafka %s ready at %s", self.version, self.bootstrap)

    def create_topic(self, name: str, partitions: int = 1, timeout: float = 30.0) -> None:
        create_topic(self.admin(), name, partitions, timeout)


def create_topic(admin: AdminClient, name: str, partitions: int = 1, timeout: float = 30.0) -> None:
    """Create a topic and wait until the metadata lists all its partitions with a leader."""
    request_topic(admin, name, partitions, timeout)
    deadline = time.monotonic() + timeout
    while True:
        topic = admin.list_topics(name, timeout=timeout).topics.get(name)
        if (
            topic is not None
            and topic.error is None
            and len(topic.partitions) == partitions
            and all(p.leader >= 0 for p in topic.partitions.values())
        ):
            logger.info("created topic %s with %d partition(s)", name, partitions)
            return
        if time.monotonic() > deadline:
            raise BrokerError(f"topic {name!r} has no leader for every partition after create")
        time.sleep(0.05)


def _port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
        return True
    return False


def _cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding (as kafka-storage)."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def main(argv: Sequence[str] | None = None) -> int:
    """Run a broker until SIGINT/SIGTERM; print one JSON line with its client settings."""
    parser = argparse.ArgumentParser(
        prog="python -m scicat_ingestor.testing.kafka_apache",
        description="Run a local Apache Kafka broker (KRaft, one node) for scicat-ingestor tests.",
    )
    parser.add_argument("--workdir", type=Path, required=True, help="log dir, TLS files, config")
    parser.add_argument(
        "--sasl-ssl", action="store_true", help="add a SASL_SSL SCRAM-SHA-256 listener"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    stop = stop_on_signals()
    broker = KafkaBroker(args.workdir.resolve(), sasl_ssl=args.sasl_ssl)
    try:
        broker.start()
    except BrokerError as exc:
        broker.stop()
        print(f"error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    print(json.dumps(broker.client_settings()), flush=True)
    return broker.serve(stop)


if __name__ == "__main__":
    sys.exit(main())
