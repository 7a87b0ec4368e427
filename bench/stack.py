"""The real parts a benchmark run needs: broker, SciCat stand-in process, daemon processes, files.

Everything runs as separate processes, as in production, so that no two parts share a GIL: the
Tansu broker (native), the SciCat stand-in (``python -m scicat_ingestor.testing.scicat``)
and each daemon (``python -m scicat_ingestor run -c CONFIG``). The bench process only publishes
messages, samples the processes with psutil and reads the stand-in's counters.
"""

from __future__ import annotations

import contextlib
import itertools
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil
import requests
import yaml
from confluent_kafka import Producer

from bench.log_lines import FileLine, file_lines
from scicat_ingestor.config.model import IngestionOptions
from scicat_ingestor.testing.broker import TansuBroker, free_port
from scicat_ingestor.testing.filewriter import SAMPLE_FILES, wrdn_message, write_nexus_copy
from scicat_ingestor.testing.scicat import DEFAULT_TOKEN

# The SciCat API every bench daemon and HTTP-only client speaks: v3, so results stay comparable
# across dates (v4 makes the same calls); the HTTP-only run repeats the v3 bodies the daemon sent.
API_VERSION = 3

REPO = Path(__file__).resolve().parent.parent
SCHEMAS_DIR = REPO / "tests" / "data" / "schemas"
PARTITIONS = 4
MB = 1024 * 1024


class BenchError(RuntimeError):
    """A benchmark run could not complete (a part died, or work did not finish in time)."""


# ------------------------------------------------------------------------------------------------
# Files
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PoolFile:
    """A NeXus copy with its own entry uuid; the schemas derive job id and pid from it."""

    path: Path
    uuid: str

    @property
    def pid(self) -> str:
        return f"20.500.12269/{self.uuid}"


def write_pool(directory: Path, count: int, prefix: str) -> list[PoolFile]:
    """``count`` copies of the sample files (coda and ymir alternating), each with a fresh uuid."""
    directory.mkdir(parents=True, exist_ok=True)
    files = []
    for index in range(count):
        template = SAMPLE_FILES[index % len(SAMPLE_FILES)]
        dest = directory / f"{prefix}-{index:06d}-{template.name}"
        files.append(PoolFile(dest, write_nexus_copy(template, dest)))
    return files


# ------------------------------------------------------------------------------------------------
# Process sampling
# ------------------------------------------------------------------------------------------------


@dataclass
class Samples:
    """RSS and CPU time of one process over time (seconds since sampling started)."""

    times: list[float] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)
    cpu_s: list[float] = field(default_factory=list)

    @property
    def peak_rss_mb(self) -> float:
        return max(self.rss_mb, default=0.0)


class Sampler:
    """Samples processes every ``interval`` s in a thread; CPU readings on demand too."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self.started = time.monotonic()
        self._processes: dict[str, psutil.Process] = {}
        self.samples: dict[str, Samples] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-sampler", daemon=True)

    def watch(self, name: str, pid: int) -> None:
        with self._lock:
            self._processes[name] = psutil.Process(pid)
            self.samples.setdefault(name, Samples())

    def start(self) -> Sampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def cpu(self) -> dict[str, float]:
        """CPU seconds (user + system) used so far by each watched process that is alive, by
        this bench process (``BENCH``) and by the whole machine (``MACHINE``, all cores)."""
        with self._lock:
            processes = dict(self._processes)
        readings = {BENCH: _own_cpu(), MACHINE: machine_busy_seconds()}
        for name, process in processes.items():
            with contextlib.suppress(psutil.Error):
                times = process.cpu_times()
                readings[name] = times.user + times.system
        return readings

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            now = time.monotonic() - self.started
            with self._lock:
                processes = list(self._processes.items())
            for name, process in processes:
                try:
                    with process.oneshot():
                        if process.status() == psutil.STATUS_ZOMBIE:
                            continue
                        rss = process.memory_info().rss / MB
                        times = process.cpu_times()
                except psutil.Error:
                    continue
                if rss < 1:  # an exiting process whose memory is already gone
                    continue
                series = self.samples[name]
                series.times.append(round(now, 3))
                series.rss_mb.append(round(rss, 2))
                series.cpu_s.append(round(times.user + times.system, 3))


def thread_switches(pid: int) -> int:
    """Context switches (voluntary + involuntary) of all of ``pid``'s live threads so far.

    ``/proc/PID/status`` counts the main thread only; the workers are under ``task/``.
    """
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            for line in (task / "status").read_text().splitlines():
                if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                    total += int(line.split()[1])
    return total


BENCH = "bench"
MACHINE = "machine"


def _own_cpu() -> float:
    times = psutil.Process().cpu_times()
    return float(times.user + times.system)


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent on anything but idling since boot."""
    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


def foreign_cpu_share(cpu: dict[str, float], seconds: float) -> float:
    """Share of the machine's capacity used by processes that are not part of the run, from
    CPU deltas (``cpu`` as from ``Sampler.cpu``, differenced) over ``seconds`` of wall time."""
    ours = sum(v for k, v in cpu.items() if k != MACHINE)
    capacity = (psutil.cpu_count() or 1) * seconds
    return max(0.0, cpu.get(MACHINE, 0.0) - ours) / capacity if capacity > 0 else 0.0


def busy_elsewhere(seconds: float = 2.0) -> float:
    """Share of the machine used by other processes right now (measured over ``seconds``)."""
    before, own = machine_busy_seconds(), _own_cpu()
    time.sleep(seconds)
    used = machine_busy_seconds() - before - (_own_cpu() - own)
    return max(0.0, used) / ((psutil.cpu_count() or 1) * seconds)


def child_process(name_part: str) -> int:
    """Pid of this process's child whose name contains ``name_part`` (e.g. the Tansu broker)."""
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if name_part in child.name():
                pid: int = child.pid
                return pid
    raise BenchError(f"no child process named like {name_part!r}")


# ------------------------------------------------------------------------------------------------
# SciCat stand-in (its own process)
# ------------------------------------------------------------------------------------------------


class StandInProcess:
    """``python -m scicat_ingestor.testing.scicat`` on a free port, with an empty store."""

    def __init__(self, log_file: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/api/v3"
        self.control_url = f"http://127.0.0.1:{self.port}/_standin"
        self.token = DEFAULT_TOKEN
        self.log_file = log_file
        self._process: subprocess.Popen[bytes] | None = None
        self._http = requests.Session()

    @property
    def pid(self) -> int:
        if self._process is None:
            raise BenchError("the stand-in is not running")
        return self._process.pid

    def start(self, timeout: float = 30.0) -> StandInProcess:
        command = [
            sys.executable,
            "-m",
            "scicat_ingestor.testing.scicat",
            "--port",
            str(self.port),
            "--token",
            self.token,
        ]
        with self.log_file.open("ab") as log:
            self._process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        while True:
            if self._process.poll() is not None:
                raise BenchError(f"SciCat stand-in exited at start; see {self.log_file}")
            with contextlib.suppress(requests.RequestException):
                if self._http.get(f"{self.url}/health", timeout=1).ok:
                    return self
            if time.monotonic() > deadline:
                raise BenchError(f"SciCat stand-in did not answer within {timeout} s")
            time.sleep(0.05)

    def stop(self) -> None:
        self._http.close()
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def __enter__(self) -> StandInProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stats(self) -> dict[str, Any]:
        """Request counts per route and status, and how many documents are stored."""
        answer = self._http.get(f"{self.control_url}/stats", timeout=10)
        answer.raise_for_status()
        stats: dict[str, Any] = answer.json()
        return stats

    def delay(self, seconds: float) -> None:
        """Answer every request ``seconds`` late (a remote SciCat's round trip)."""
        answer = self._http.post(
            f"{self.control_url}/delay", json={"seconds": seconds, "match": ""}, timeout=10
        )
        answer.raise_for_status()

    def origdatablocks(self) -> list[dict[str, Any]]:
        """Every stored origdatablock (with the stand-in's ``createdAt``, millisecond UTC)."""
        answer = self._http.get(
            f"{self.url}/origdatablocks",
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=60,
        )
        answer.raise_for_status()
        blocks: list[dict[str, Any]] = answer.json()
        return blocks

    def datasets(self) -> dict[str, dict[str, Any]]:
        """Every stored dataset by pid."""
        answer = self._http.get(f"{self.control_url}/datasets", timeout=60)
        answer.raise_for_status()
        found: dict[str, dict[str, Any]] = answer.json()
        return found

    def wait_for(
        self,
        origdatablocks: int,
        timeout: float,
        alive: Callable[[], None] = lambda: None,
        interval: float = 0.1,
    ) -> list[tuple[float, int]]:
        """Poll until ``origdatablocks`` exist; returns (monotonic time, count) samples."""
        deadline = time.monotonic() + timeout
        progress: list[tuple[float, int]] = []
        while True:
            count = int(self.stats()["origdatablocks"])
            progress.append((time.monotonic(), count))
            if count >= origdatablocks:
                return progress
            alive()
            if time.monotonic() > deadline:
                raise BenchError(
                    f"only {count} of {origdatablocks} origdatablocks after {timeout:.0f} s"
                )
            time.sleep(interval)


def created_at(block: dict[str, Any]) -> float:
    """The stand-in's creation time of a document as a Unix timestamp."""
    return datetime.fromisoformat(str(block["createdAt"])).timestamp()


# ------------------------------------------------------------------------------------------------
# The daemon (its own process)
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DaemonSettings:
    """What a benchmark varies in the daemon's configuration."""

    workers: int = 10
    queue_size: int = IngestionOptions().queue_size  # the production default
    # Tansu answers a fetch only after fetch.wait.max.ms even when data arrives meanwhile (Kafka
    # answers at once), so librdkafka's default 500 ms would add ~250 ms to every message.
    fetch_wait_max_ms: int = 500
    profile: str = "production"  # see ``profile_overrides``
    worker_turns: bool = IngestionOptions().worker_turns  # ``ops/turns.py``; the production default


def daemon_config(
    workspace: Path,
    name: str,
    *,
    bootstrap: str,
    topic: str,
    group_id: str,
    standin: StandInProcess,
    data_dir: Path,
    settings: DaemonSettings,
) -> dict[str, Any]:
    """A production-like configuration: hashing, stats, hash and message side files on; INFO
    logging to a file (not DEBUG); only the Kafka session timeout is short (Tansu completes a
    group join after half of it, see ``testing.broker``)."""
    return {
        "dataset": {
            "allow_dataset_pid": True,
            "generate_dataset_pid": False,
        },
        "ingestion": {
            "dry_run": False,
            "max_offline_ingestors": settings.workers,
            "queue_size": settings.queue_size,
            "worker_turns": settings.worker_turns,
            "schemas_directory": str(SCHEMAS_DIR),
            "check_if_dataset_exists_by_metadata": True,
            "check_if_dataset_exists_by_metadata_key": "job_id",
            "file_handling": {
                "compute_file_stats": True,
                "compute_file_hash": True,
                "file_hash_algorithm": "blake2b",
                "save_file_hash": True,
                "message_to_file": True,
                "ingestor_files_directory": "../ingestor",
                "file_path_type": "relative",
                "data_directory": [str(data_dir)],
            },
        },
        "kafka": {
            "topics": [topic],
            "group_id": group_id,
            "bootstrap_servers": bootstrap,
            "security_protocol": "PLAINTEXT",
            "auto_offset_reset": "earliest",
            "consumer_config": {
                "session.timeout.ms": 2000,
                "heartbeat.interval.ms": 500,
                "fetch.wait.max.ms": settings.fetch_wait_max_ms,
            },
        },
        "logging": {
            "verbose": False,
            "file_log": True,
            "file_log_base_name": str(workspace / "logs" / name),
            "file_log_timestamp": False,
            "logging_level": "INFO",
            "system_log": False,
            "graylog": False,
        },
        "scicat": {
            "host": standin.url,
            "token": standin.token,
            "timeout": 30,
            "verify": True,
            "api_version": API_VERSION,
        },
        "health_check": {"host": "127.0.0.1", "port": free_port(), "enabled": True},
    }


PROFILES = ("production", "ess")


def profile_overrides(config: dict[str, Any], profile: str) -> dict[str, Any]:
    """Switch a ``daemon_config`` to a profile, in place: ``production`` is the config as built
    (stats, blake2b, hash and message side files, the metadata search before the POST); ``ess`` is
    the ESS ingestor's integration set-up: stats and blake2b, no side files, no metadata search
    (2 SciCat calls per new file instead of 3)."""
    if profile == "ess":
        ingestion = config["ingestion"]
        ingestion["check_if_dataset_exists_by_metadata"] = False
        ingestion["file_handling"]["save_file_hash"] = False
        ingestion["file_handling"]["message_to_file"] = False
    elif profile != "production":
        raise BenchError(f"unknown profile {profile!r}; use one of {', '.join(PROFILES)}")
    return config


class DaemonProcess:
    """``python -m scicat_ingestor run -c CONFIG`` as a child process (stdout+stderr to a file)."""

    def __init__(self, workspace: Path, name: str, config: dict[str, Any]) -> None:
        self.name = name
        self.config_file = workspace / "config" / f"{name}.yml"
        self.output_file = workspace / "logs" / f"{name}.out"
        self.config_file.parent.mkdir(parents=True, exist_ok=True)
        self.output_file.parent.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(yaml.safe_dump(config), encoding="utf-8")
        self.health_port = int(config["health_check"]["port"])
        self._process: subprocess.Popen[bytes] | None = None
        self._scanned = 0

    @property
    def pid(self) -> int:
        if self._process is None:
            raise BenchError(f"daemon {self.name} is not running")
        return self._process.pid

    def start(self) -> DaemonProcess:
        command = [sys.executable, "-m", "scicat_ingestor", "run", "-c", str(self.config_file)]
        with self.output_file.open("ab") as out:
            self._process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            )
        return self

    def check_alive(self) -> None:
        """Raise with the end of the daemon's output if it has exited or dead-lettered a file
        (a benchmark file that cannot be ingested means the set-up is wrong)."""
        if self._process is not None and self._process.poll() is not None:
            raise BenchError(
                f"daemon {self.name} exited with code {self._process.returncode}:\n"
                + self.output_tail()
            )
        with self.output_file.open("rb") as out:
            out.seek(self._scanned)
            new = out.read()
        self._scanned += new.rfind(b"\n") + 1
        for line in new.splitlines():
            if b"dead letter" in line or b"failed_permanent" in line:
                raise BenchError(f"daemon {self.name}: {line.decode(errors='replace')[:600]}")

    def output_tail(self, lines: int = 20) -> str:
        try:
            text = self.output_file.read_text(errors="replace")
        except OSError:
            return "(no output)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM (graceful drain), SIGKILL after ``timeout``; returns the exit code."""
        process, self._process = self._process, None
        if process is None:
            return 0
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        return process.returncode

    def finished_files(self) -> list[FileLine]:
        """Every file the daemon logged as created or existed, from its one INFO line per file."""
        text = self.output_file.read_text(errors="replace")
        return file_lines(text)

    def ingest_seconds(self) -> dict[str, float]:
        """Per created dataset's pid, the pipeline's own duration (its log line)."""
        return {d.pid: d.seconds for d in self.finished_files() if d.outcome == "created"}


# ------------------------------------------------------------------------------------------------
# Publishing
# ------------------------------------------------------------------------------------------------


class Publisher:
    """Announces pool files with ``wrdn`` messages as the file-writer would."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self._producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "linger.ms": 0,
                "queue.buffering.max.messages": 200_000,
                "message.timeout.ms": 30_000,
            }
        )

    def _produce(self, file: PoolFile, partition: int | None = None) -> None:
        value = wrdn_message(str(file.path), file.uuid)
        if partition is None:
            self._producer.produce(self.topic, value)
        else:
            self._producer.produce(self.topic, value, partition=partition)
        self._producer.poll(0)

    def flush(self) -> None:
        remaining = self._producer.flush(30)
        if remaining:
            raise BenchError(f"{remaining} message(s) to {self.topic} not delivered")

    def all_at_once(self, files: Iterable[PoolFile]) -> None:
        """Produce every message without pause, then wait for delivery."""
        for file in files:
            self._produce(file)
        self.flush()

    def one_per_partition(self, files: Sequence[PoolFile]) -> None:
        """Warm-up: one message on each partition, so every consumer in the group gets work."""
        for partition, file in enumerate(files):
            self._produce(file, partition % PARTITIONS)
        self.flush()

    def paced(self, files: Sequence[PoolFile], rate: float) -> dict[str, float]:
        """A steady ``rate`` of messages per second; returns the publish time (Unix) by uuid."""
        published: dict[str, float] = {}
        start = time.monotonic()
        for index, file in enumerate(files):
            delay = start + index / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            published[file.uuid] = time.time()
            self._produce(file)
        self.flush()
        return published


# ------------------------------------------------------------------------------------------------
# The environment of a whole benchmark
# ------------------------------------------------------------------------------------------------


class Stack:
    """Broker + file pool shared by all scenarios; stand-ins and daemons are per run."""

    def __init__(self, workspace: Path, pool_size: int, warmup: int = PARTITIONS) -> None:
        self.workspace = workspace
        self.data_dir = workspace / "data"
        self._counter = itertools.count(1)
        self.broker = TansuBroker(log_file=workspace / "logs" / "tansu.log")
        self.broker.start()
        self.broker_pid = child_process("tansu")
        self.warmup_files = write_pool(self.data_dir / "warmup", warmup, "warmup")
        self.pool = write_pool(self.data_dir / "raw", pool_size, "bench")

    def close(self) -> None:
        self.broker.stop()

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def unique(self, stem: str) -> str:
        return f"{stem}-{next(self._counter)}-{uuid.uuid4().hex[:6]}"

    def topic(self, stem: str) -> str:
        name = self.unique(stem)
        self.broker.create_topic(name, PARTITIONS)
        return name

    def standin(self, stem: str) -> StandInProcess:
        return StandInProcess(self.workspace / "logs" / f"{self.unique(stem)}-standin.log").start()

    def daemon(
        self,
        stem: str,
        topic: str,
        group_id: str,
        standin: StandInProcess,
        settings: DaemonSettings,
    ) -> DaemonProcess:
        name = self.unique(stem)
        config = daemon_config(
            self.workspace,
            name,
            bootstrap=self.broker.bootstrap,
            topic=topic,
            group_id=group_id,
            standin=standin,
            data_dir=self.data_dir,
            settings=settings,
        )
        return DaemonProcess(self.workspace, name, profile_overrides(config, settings.profile))


@contextlib.contextmanager
def running(daemons: Sequence[DaemonProcess]) -> Iterator[Sequence[DaemonProcess]]:
    """Start daemons, and stop them (SIGTERM) whatever happens; a non-zero exit is an error."""
    try:
        for daemon in daemons:
            daemon.start()
        yield daemons
    finally:
        codes = {d.name: d.stop() for d in daemons}
    failed = {name: code for name, code in codes.items() if code not in (0, None)}
    if failed:
        raise BenchError(f"daemon(s) exited with {failed}; see {daemons[0].output_file.parent}")
