"""``make chaos``: the ingestor under faults. Bounded (about 8 minutes on 2 cores).

1. The fuzz tests with many more examples (hypothesis profile ``chaos``).
2. A 1000-file run through the daemon (a separate process, configured like production), the real
   broker and the SciCat stand-in, while files are announced at a steady pace and faults are
   injected at random moments: the daemon is SIGKILLed 10 times and restarted at once, SciCat goes
   away (port closed) for 30 s once, and the broker is restarted once. The broker keeps its log in
   S3 (Tansu's ``s3://`` storage on a local ``moto`` server) or, with ``--broker kafka`` (default
   ``$SCICAT_INGESTOR_TEST_BROKER``), in Apache Kafka's log dir, so messages and committed offsets
   survive its restart, as they would on a real cluster.

At the end every announced file must have exactly one dataset with exactly one origdatablock, or a
dead-letter record: the table shows lost / duplicated / dead-lettered counts and, per fault, how
long until the next dataset was created. Exit code 0 only with 0 lost, 0 duplicated, 0 dead letters
and passing fuzz tests. Results also go to ``bench/results/chaos-<UTC time>.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import platform
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests
from confluent_kafka import KafkaError, Message, Producer

from scicat_ingestor.testing.broker import TansuBroker, free_port, producer_test_config
from scicat_ingestor.testing.brokers import BROKER_ENV, HarnessBroker
from scicat_ingestor.testing.daemon_process import DaemonProcess, daemon_config, write_config
from scicat_ingestor.testing.filewriter import SAMPLE_FILES, wrdn_message, write_nexus_copy
from scicat_ingestor.testing.kafka_apache import KafkaBroker, kafka_version
from scicat_ingestor.testing.scicat import SciCatStandIn

REPO = Path(__file__).resolve().parent.parent
SCHEMAS = [REPO / "tests" / "data" / "schemas" / f"{p.stem}.imsc.yml" for p in SAMPLE_FILES]
FUZZ_TESTS = [
    "tests/test_fuzz_triage.py",
    "tests/test_fuzz_schema.py",
    "tests/test_fuzz_converters.py",
]
RESULTS = REPO / "bench" / "results"
PID_PREFIX = "20.500.12269/"  # the sample schemas' pid: <prefix><entry uuid>
BUCKET = "tansu"
PARTITIONS = 4
_PR_SET_PDEATHSIG = 1


def say(text: str = "") -> None:
    print(text, flush=True)


# ------------------------------------------------------------------------------------------------
# The S3 server and the announcing file-writer
# ------------------------------------------------------------------------------------------------


def _die_with_parent() -> None:
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


@contextlib.contextmanager
def moto_s3(log: Path) -> Iterator[dict[str, str]]:
    """A local S3 (``moto``) with one bucket; yields the AWS_* environment for Tansu."""
    port = free_port()
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - Linux only, like the harness
        )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"moto S3 server did not start (pip install 'moto[server]'); {log}"
                )
            time.sleep(0.05)
        requests.put(f"{endpoint}/{BUCKET}", timeout=10).raise_for_status()
        yield {
            "AWS_ACCESS_KEY_ID": "chaos",
            "AWS_SECRET_ACCESS_KEY": "chaos",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT": endpoint,
            "AWS_ALLOW_HTTP": "true",
        }
    finally:
        process.terminate()
        process.wait(10)


class Announcer(threading.Thread):
    """Announces the files at a steady pace, whatever state the broker is in.

    librdkafka buffers and retries while the broker is away (message timeout 5 min), which is
    what a real file-writer's producer does.
    """

    def __init__(
        self, bootstrap: str, topic: str, files: Sequence[tuple[Path, str]], seconds: float
    ):
        super().__init__(name="announcer", daemon=True)
        settings = producer_test_config(bootstrap)
        settings["message.timeout.ms"] = 300_000
        settings["log_level"] = 2  # connection-refused noise while the broker restarts
        self._producer = Producer(settings)
        self._topic = topic
        self._files = files
        self._interval = seconds / max(len(files), 1)
        self.announced = 0
        self.failed: list[str] = []

    def run(self) -> None:
        start = time.monotonic()
        for i, (path, job_id) in enumerate(self._files):
            time.sleep(max(0.0, start + i * self._interval - time.monotonic()))
            self._producer.produce(
                self._topic, wrdn_message(str(path), job_id), on_delivery=self._delivered
            )
            self._producer.poll(0)
            self.announced += 1
        self._producer.flush(300)

    def _delivered(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self.failed.append(str(error))


# ------------------------------------------------------------------------------------------------
# The run
# ------------------------------------------------------------------------------------------------


@dataclass
class Fault:
    kind: str
    at: float  # seconds since the first announcement
    detail: str = ""
    resume_seconds: float | None = None  # fault (or its end) → next dataset created


@dataclass
class Outcome:
    files: int
    announced: int
    delivery_failures: int
    ingested: int
    lost: int
    duplicated: int
    dead_lettered: int
    redelivered: int
    repaired: int
    unexpected_exits: int
    final_exit_code: int | None
    seconds: float
    faults: list[Fault] = field(default_factory=list)


class Chaos:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.rng = random.Random(args.seed)
        self.data = workdir / "data"
        self.dead_file = workdir / "dead-letters.jsonl"
        self.faults: list[Fault] = []
        self.unexpected_exits = 0
        self.t0 = 0.0

    # -- helpers --------------------------------------------------------------------------------

    def since_start(self) -> float:
        return time.monotonic() - self.t0

    def created(self, standin: SciCatStandIn) -> int:
        return int(standin.stats()["origdatablocks"])

    def wait_progress(
        self, standin: SciCatStandIn, daemon: DaemonProcess, timeout: float
    ) -> float | None:
        """Seconds until the next origdatablock is created (restarting a daemon that died)."""
        start, baseline = time.monotonic(), self.created(standin)
        while self.created(standin) <= baseline:
            self.keep_alive(daemon)
            if time.monotonic() - start > timeout:
                return None
            time.sleep(0.05)
        return time.monotonic() - start

    def keep_alive(self, daemon: DaemonProcess) -> None:
        if not daemon.running:
            self.unexpected_exits += 1
            say(
                f"  !! daemon exited by itself at {self.since_start():.1f} s; restarting\n"
                f"{daemon.log_tail(8)}"
            )
            daemon.kill()
            daemon.start()

    def schedule(self, window: float) -> list[tuple[float, str]]:
        """Random moments for the faults inside the announcing window, in time order."""
        kinds = ["kill"] * self.args.kills + ["scicat"] + ["broker"]
        self.rng.shuffle(kinds)
        times = sorted(self.rng.uniform(0.05 * window, 0.9 * window) for _ in kinds)
        return list(zip(times, kinds, strict=True))

    # -- faults ---------------------------------------------------------------------------------

    def kill(self, standin: SciCatStandIn, daemon: DaemonProcess) -> Fault:
        fault = Fault("SIGKILL daemon", self.since_start())
        daemon.kill()
        daemon.start()
        fault.resume_seconds = self.wait_progress(standin, daemon, 120)
        return fault

    def scicat_away(self, standin: SciCatStandIn, daemon: DaemonProcess) -> Fault:
        fault = Fault("SciCat away", self.since_start(), f"{self.args.outage:g} s, port closed")
        before = len(self.letters())
        standin.faults.stop_answering(refuse=True)
        deadline = time.monotonic() + self.args.outage
        while time.monotonic() < deadline:
            self.keep_alive(daemon)
            time.sleep(0.1)
        standin.faults.resume()
        fault.resume_seconds = self.wait_progress(standin, daemon, 120)
        fault.detail += f", {len(self.letters()) - before} dead letters meanwhile"
        return fault

    def broker_restart(
        self, standin: SciCatStandIn, daemon: DaemonProcess, broker: HarnessBroker
    ) -> Fault:
        fault = Fault("broker restart", self.since_start())
        down = time.monotonic()
        broker.stop()
        broker.start(timeout=60)
        storage = "log dir" if isinstance(broker, KafkaBroker) else "S3 storage"
        fault.detail = f"down {time.monotonic() - down:.1f} s, {storage}"
        fault.resume_seconds = self.wait_progress(standin, daemon, 180)
        return fault

    # -- results --------------------------------------------------------------------------------

    def letters(self) -> list[dict[str, Any]]:
        if not self.dead_file.exists():
            return []
        return [json.loads(x) for x in self.dead_file.read_text().splitlines() if x.strip()]

    def tally(self, standin: SciCatStandIn, uuids: set[str]) -> tuple[int, int, int, int]:
        """(ingested, lost, duplicated, dead-lettered) for the announced files."""
        datasets = standin.datasets
        blocks = Counter(b["datasetId"] for b in standin.origdatablocks)
        dead = {str(letter.get("job_id")) for letter in self.letters()}
        ingested = {u for u in uuids if PID_PREFIX + u in datasets and blocks[PID_PREFIX + u]}
        lost = uuids - ingested - dead
        duplicated = sum(n - 1 for n in blocks.values() if n > 1)
        duplicated += sum(1 for pid in datasets if pid.removeprefix(PID_PREFIX) not in uuids)
        return len(ingested), len(lost), duplicated, len(self.letters())

    # -- the whole run --------------------------------------------------------------------------

    def write_files(self) -> list[tuple[Path, str]]:
        """The NeXus copies (alternating samples), each with its entry uuid (= job id)."""
        say(f"writing {self.args.files} NeXus files to {self.data} ...")
        files = []
        for i in range(self.args.files):
            template = SAMPLE_FILES[i % len(SAMPLE_FILES)]
            path = self.data / f"chaos-{i:05d}-{template.name}"
            files.append((path, write_nexus_copy(template, path)))
        return files

    def new_broker(self, stack: contextlib.ExitStack) -> HarnessBroker:
        """Tansu on a local S3, or Apache Kafka with its log dir in the work dir."""
        if self.args.broker == "kafka":
            return KafkaBroker(self.workdir / "kafka")
        env = stack.enter_context(moto_s3(self.workdir / "moto.log"))
        return TansuBroker(storage=f"s3://{BUCKET}/", env=env, log_file=self.workdir / "tansu.log")

    def start_daemon(
        self, stack: contextlib.ExitStack, broker: HarnessBroker, url: str, token: str
    ) -> DaemonProcess:
        schemas = self.workdir / "schemas"
        schemas.mkdir()
        for schema in SCHEMAS:
            shutil.copy(schema, schemas)
        config = daemon_config(
            bootstrap=broker.bootstrap,
            topics=["chaos"],
            group_id="chaos",
            scicat_url=url,
            scicat_token=token,
            schemas_directory=schemas,
            overrides={
                "ingestion.file_handling.data_directory": str(self.data),
                "ingestion.dead_letter.file": str(self.dead_file),
            },
        )
        daemon = DaemonProcess(
            write_config(self.workdir / "config.yml", config), self.workdir / "daemon.log"
        )
        daemon.start()
        stack.callback(daemon.kill)
        daemon.wait_for_log("assigned", timeout=120)
        return daemon

    def inject_faults(
        self, standin: SciCatStandIn, daemon: DaemonProcess, broker: HarnessBroker
    ) -> None:
        for at, kind in self.schedule(self.args.duration):
            time.sleep(max(0.0, at - self.since_start()))
            self.keep_alive(daemon)
            if kind == "kill":
                fault = self.kill(standin, daemon)
            elif kind == "scicat":
                fault = self.scicat_away(standin, daemon)
            else:
                fault = self.broker_restart(standin, daemon, broker)
            resume = "-" if fault.resume_seconds is None else f"{fault.resume_seconds:.1f} s"
            say(f"  {fault.at:6.1f} s  {fault.kind:15s} resumed after {resume} {fault.detail}")
            self.faults.append(fault)

    def drain(self, standin: SciCatStandIn, daemon: DaemonProcess, uuids: set[str]) -> int | None:
        """Wait until nothing is lost (or the drain timeout), then SIGTERM; the exit code."""
        deadline = time.monotonic() + self.args.drain_timeout
        while self.tally(standin, uuids)[1] and time.monotonic() < deadline:
            self.keep_alive(daemon)
            time.sleep(0.5)
        daemon.terminate()
        try:
            return daemon.wait(60)
        except TimeoutError:
            return None

    def run(self) -> Outcome:
        args = self.args
        files = self.write_files()
        uuids = {uuid for _, uuid in files}
        with contextlib.ExitStack() as stack:
            broker = self.new_broker(stack)
            broker.start()
            stack.callback(broker.stop)
            broker.create_topic("chaos", PARTITIONS)
            standin = stack.enter_context(SciCatStandIn())
            daemon = self.start_daemon(stack, broker, standin.url, standin.token)
            say(
                f"announcing over {args.duration:g} s on {PARTITIONS} partitions; faults: "
                f"{args.kills} x SIGKILL, SciCat away {args.outage:g} s, broker restart"
            )
            announcer = Announcer(broker.bootstrap, "chaos", files, args.duration)
            self.t0 = time.monotonic()
            announcer.start()
            self.inject_faults(standin, daemon, broker)
            announcer.join()
            say(f"all announced at {self.since_start():.1f} s; waiting for the daemon to finish")
            code = self.drain(standin, daemon, uuids)
            seconds = self.since_start()
            ingested, lost, duplicated, dead = self.tally(standin, uuids)
        return Outcome(
            files=args.files,
            announced=announcer.announced,
            delivery_failures=len(announcer.failed),
            ingested=ingested,
            lost=lost,
            duplicated=duplicated,
            dead_lettered=dead,
            redelivered=daemon.log_text().count(": existed ("),
            repaired=daemon.log_text().count("exists without an origdatablock: adding it"),
            unexpected_exits=self.unexpected_exits,
            final_exit_code=code,
            seconds=seconds,
            faults=self.faults,
        )


# ------------------------------------------------------------------------------------------------
# Fuzzing, report, entry point
# ------------------------------------------------------------------------------------------------


def run_fuzz() -> tuple[bool, float, str]:
    """The fuzz tests with the ``chaos`` hypothesis profile; (passed, seconds, summary line)."""
    started = time.monotonic()
    env = {**os.environ, "SCICAT_FUZZ_PROFILE": "chaos"}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *FUZZ_TESTS],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    lines = done.stdout.strip().splitlines()
    summary = lines[-1] if lines else done.stderr.strip()[-200:]
    if done.returncode != 0:
        say(done.stdout[-4000:])
    return done.returncode == 0, time.monotonic() - started, summary


def table(outcome: Outcome) -> str:
    resumes = [f.resume_seconds for f in outcome.faults if f.resume_seconds is not None]
    kills = [f.resume_seconds for f in outcome.faults if f.kind.startswith("SIGKILL")]
    known = sorted(k for k in kills if k is not None)
    rows = [
        ("files announced", f"{outcome.announced} of {outcome.files}"),
        ("ingested (1 dataset + 1 origdatablock)", str(outcome.ingested)),
        ("lost", str(outcome.lost)),
        ("duplicated", str(outcome.duplicated)),
        ("dead-lettered", str(outcome.dead_lettered)),
        ("redelivered after a crash (found existing)", str(outcome.redelivered)),
        ("crash between the two POSTs, origdatablock added", str(outcome.repaired)),
        ("daemon exits not caused by the test", str(outcome.unexpected_exits)),
        ("exit code after the final SIGTERM", str(outcome.final_exit_code)),
        ("run time", f"{outcome.seconds:.0f} s"),
    ]
    if known:
        rows.append(
            (
                "resume after SIGKILL (median, max)",
                f"{known[len(known) // 2]:.1f} s, {known[-1]:.1f} s",
            )
        )
    lines = ["| measure | value |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)]
    lines += ["", "| t (s) | fault | resumed after | detail |", "|---:|---|---:|---|"]
    for f in outcome.faults:
        resume = "never" if f.resume_seconds is None else f"{f.resume_seconds:.1f} s"
        lines.append(f"| {f.at:.1f} | {f.kind} | {resume} | {f.detail} |")
    if not resumes:
        lines.append("| | (no fault resumed) | | |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.chaos", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--outage", type=float, default=30.0, help="seconds SciCat is away")
    parser.add_argument("--duration", type=float, default=200.0, help="seconds of announcing")
    parser.add_argument("--drain-timeout", type=float, default=180.0)
    parser.add_argument("--seed", type=int, default=None, help="fault schedule seed")
    parser.add_argument("--no-fuzz", action="store_true", help="skip the fuzz phase")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument(
        "--broker",
        choices=["tansu", "kafka"],
        default=os.environ.get(BROKER_ENV, "tansu"),
        help=f"the broker (default: ${BROKER_ENV} or tansu)",
    )
    args = parser.parse_args(argv)
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(2**32)
    started = datetime.now(UTC)
    broker = f"Apache Kafka {kafka_version()}" if args.broker == "kafka" else "Tansu"
    say(f"chaos run, seed {args.seed}; {os.cpu_count()} cores, Python {platform.python_version()}")
    say(f"broker: {broker}")
    fuzz_ok, fuzz_seconds, fuzz_summary = True, 0.0, "skipped"
    if not args.no_fuzz:
        say("fuzzing with the 'chaos' hypothesis profile ...")
        fuzz_ok, fuzz_seconds, fuzz_summary = run_fuzz()
        say(f"  {fuzz_summary} ({fuzz_seconds:.0f} s)")
    workdir = Path(tempfile.mkdtemp(prefix="scicat-chaos-"))
    try:
        outcome = Chaos(args, workdir).run()
    finally:
        if args.keep:
            say(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    say("")
    say(table(outcome))
    say(f"\nfuzz tests (chaos profile): {fuzz_summary}, {fuzz_seconds:.0f} s")
    RESULTS.mkdir(parents=True, exist_ok=True)
    result_file = RESULTS / f"chaos-{started:%Y%m%dT%H%M%SZ}.json"
    result_file.write_text(
        json.dumps(
            {
                "seed": args.seed,
                "broker": broker,
                "started": started.isoformat(),
                "machine": {"cores": os.cpu_count(), "python": platform.python_version()},
                "fuzz": {
                    "passed": fuzz_ok,
                    "seconds": round(fuzz_seconds, 1),
                    "summary": fuzz_summary,
                },
                **asdict(outcome),
            },
            indent=2,
        )
        + "\n"
    )
    say(f"results: {result_file.relative_to(REPO)}")
    ok = fuzz_ok and outcome.lost == 0 and outcome.duplicated == 0 and outcome.dead_lettered == 0
    return 0 if ok and outcome.final_exit_code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
