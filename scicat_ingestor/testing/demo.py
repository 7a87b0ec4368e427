"""``make demo``: the whole service running locally, from a fresh clone, with nothing else running.

It starts a Kafka broker (Tansu) and a SciCat stand-in on free 127.0.0.1 ports, runs the daemon
(``python -m scicat_ingestor run``) with ``config/demo.yml`` filled in, shows where to look (status
page, ``/ready``, ``/metrics``, the stand-in, the daemon's log) once the daemon is ready, lets the
fake file-writer write and announce a handful of NeXus files, prints each dataset as SciCat receives
it and stops everything: after the run, or at Ctrl-C. The work directory (config, data, logs) is
kept. Exit 0 when every file became a dataset and the daemon stopped cleanly; 2 when the
``testing`` extra (the stand-in's jsonschema) is not installed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, TextIO

import yaml

from scicat_ingestor.config.model import ConfigError, load_config, read_config_file
from scicat_ingestor.ops.exitcodes import EXIT_FAILURE, EXIT_OK, EXIT_USAGE
from scicat_ingestor.testing.broker import BrokerError, TansuBroker, free_port
from scicat_ingestor.testing.dirwriter import DirectoryWriter
from scicat_ingestor.testing.filewriter import FakeFileWriter

if TYPE_CHECKING:
    from scicat_ingestor.testing.scicat import SciCatStandIn

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = REPO_ROOT / "config" / "demo.yml"
PARTITIONS = 2
LOG_TAIL_LINES = 25
# The metrics worth a glance at the end of the run.
SUMMARY_METRICS = ("scicat_ingestor_messages_total", "scicat_ingestor_files_total")
# ``pip install .`` leaves out what the stand-in needs (jsonschema): say which extra brings it.
MISSING_EXTRA = (
    "error: the demo needs the 'testing' extra ({missing} is not installed): "
    "pip install '.[testing]' in the checkout (or 'scicat-ingestor[testing]')"
)


class DemoError(RuntimeError):
    """Something the demo needs did not work; the message says what and where to look."""


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def runtime_config(
    template: Path,
    workdir: Path,
    bootstrap: str,
    scicat_url: str,
    health_port: int,
    *,
    watch: bool = False,
) -> Path:
    """Write ``template`` with the demo's addresses and directories filled in; return its path.

    With ``watch`` the daemon watches the data directory instead of consuming Kafka.
    """
    data = read_config_file(template)
    data.setdefault("kafka", {})["bootstrap_servers"] = bootstrap
    data.setdefault("scicat", {})["host"] = scicat_url
    data.setdefault("health_check", {})["port"] = health_port
    ingestion = data.setdefault("ingestion", {})
    # Relative schema paths in the template are relative to the repository root.
    schemas = Path(ingestion.get("schemas_directory", "schemas"))
    ingestion["schemas_directory"] = str(schemas if schemas.is_absolute() else REPO_ROOT / schemas)
    data_dir = workdir / "data"
    data_dir.mkdir(exist_ok=True)  # a data root must exist, or /ready reports it unmounted
    ingestion.setdefault("file_handling", {})["data_directory"] = str(data_dir)
    if watch:
        ingestion["trigger"] = "watch"
        data["watch"] = {
            "directories": [str(data_dir)],
            "settle_seconds": 1.0,
            "rescan_interval": 10.0,
            "state_file": str(workdir / "watch-state.sqlite"),
        }
    dead_letter = ingestion.setdefault("dead_letter", {})
    if dead_letter.get("file"):
        dead_letter["file"] = str(workdir / Path(dead_letter["file"]).name)
    path = workdir / "config.yml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    load_config(path, environ={})  # fail here, with the key named, rather than in the daemon
    return path


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def get(url: str) -> tuple[int, str]:
    """Status and body of a GET; (0, reason) when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()
    except OSError as err:
        return 0, str(err)


class Demo:
    """The running pieces; ``close()`` stops whatever was started, in reverse order."""

    def __init__(
        self,
        config: Path,
        files: int,
        out: TextIO,
        standin: SciCatStandIn,
        *,
        workdir: Path | None = None,
        trigger: str = "kafka",
    ) -> None:
        self.template = config
        self.watch = trigger == "watch"
        self.files = files
        self.out = out
        if workdir is None:
            workdir = Path(tempfile.mkdtemp(prefix="scicat-ingestor-demo-"))
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.broker = TansuBroker(log_file=self.workdir / "tansu.log")
        self.standin = standin
        self.daemon: subprocess.Popen[bytes] | None = None
        self.daemon_log = self.workdir / "daemon.log"
        self.health_url = ""
        self.grace = 30.0
        self.topic = ""
        self._stack = contextlib.ExitStack()

    def say(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def start(self) -> None:
        self.say(f"Demo work directory: {self.workdir}")
        bootstrap = "127.0.0.1:9"  # not contacted in watch mode
        if not self.watch:
            self.broker.start()
            self._stack.callback(self.broker.stop)
            bootstrap = self.broker.bootstrap
            self.say(f"Kafka broker (Tansu):  {bootstrap}")
        self.standin.start()
        self._stack.callback(self.standin.stop)
        self.say(f"SciCat stand-in:       {self.standin.url}")
        health_port = free_port()
        config = runtime_config(
            self.template, self.workdir, bootstrap, self.standin.url, health_port, watch=self.watch
        )
        loaded = load_config(config, environ={})
        self.grace = loaded.ingestion.drain_grace_period
        self.topic = loaded.kafka.topics[0]
        if self.watch:
            self.say(f"Watched directory:     {self.workdir / 'data'}")
        else:
            self.broker.create_topic(self.topic, PARTITIONS)
        self.health_url = f"http://127.0.0.1:{health_port}"
        self._start_daemon(config)
        self._wait_ready()

    def _start_daemon(self, config: Path) -> None:
        env = {**os.environ, "SCICAT_TOKEN": self.standin.token}
        log = self.daemon_log.open("ab")
        self._stack.callback(log.close)
        # Own session: a Ctrl-C in the terminal reaches only the demo, which then stops the
        # daemon with one SIGTERM (a second signal would make the daemon skip its drain).
        self.daemon = subprocess.Popen(
            [sys.executable, "-m", "scicat_ingestor", "run", "-c", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        self._stack.callback(self.stop_daemon)
        self.say(f"Daemon:                pid {self.daemon.pid}, log {self.daemon_log}")

    def _wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        status, body = 0, ""
        while time.monotonic() < deadline:
            self.check_daemon_alive()
            status, body = get(self.health_url + "/ready")
            if status == 200:
                self.say(f"Daemon ready:          {self.health_url}/ready answers 200")
                self.show_urls()
                return
            time.sleep(0.25)
        raise DemoError(f"the daemon did not become ready in {timeout:g} s: {status} {body}")

    def check_daemon_alive(self) -> None:
        if self.daemon is not None and self.daemon.poll() is not None:
            raise DemoError(
                f"the daemon exited with code {self.daemon.returncode}; last lines of "
                f"{self.daemon_log}:\n{log_tail(self.daemon_log)}"
            )

    def run(self, timeout: float = 120.0) -> None:
        """Write (and in Kafka mode announce) the files, then print datasets as they complete."""
        if self.watch:
            self.say(f"\nWriting {self.files} NeXus file(s) into the watched directory ...")
            writer = DirectoryWriter(self.workdir / "data", writers=1)
            for _ in range(self.files):
                self.say(f"  wrote {writer.write(1, prefix='demo')[0].path.name}")
        else:
            self._write_and_announce()
        self.say("\nDatasets created in SciCat:")
        shown: set[str] = set()
        deadline = time.monotonic() + timeout
        while len(shown) < self.files:
            self.check_daemon_alive()
            # A dataset is complete once its origdatablock is there (read first: a datablock's
            # dataset always exists already).
            files = self.files_by_dataset()
            datasets = self.standin.datasets
            for pid in sorted(files.keys() - shown):
                shown.add(pid)
                self.say(describe(pid, datasets[pid], files[pid]))
            if time.monotonic() > deadline:
                raise DemoError(
                    f"only {len(shown)} of {self.files} datasets after {timeout:g} s; last lines "
                    f"of {self.daemon_log}:\n{log_tail(self.daemon_log)}"
                )
            time.sleep(0.1)
        self.show_metrics()

    def _write_and_announce(self) -> None:
        self.say(f"\nWriting and announcing {self.files} NeXus file(s) on topic {self.topic!r} ...")
        with FakeFileWriter(self.broker.bootstrap, self.topic, self.workdir / "data") as writer:
            for _ in range(self.files):
                written = writer.write_and_announce(1)[0]
                self.say(f"  announced {written.path.name}")

    def files_by_dataset(self) -> dict[str, list[str]]:
        """Dataset pid → names of its data files, from the stand-in's origdatablocks."""
        found: dict[str, list[str]] = {}
        for block in self.standin.origdatablocks:
            names = [Path(entry["path"]).name for entry in block.get("dataFileList", [])]
            found.setdefault(block["datasetId"], []).extend(names)
        return found

    def show_urls(self) -> None:
        """Where to look, as soon as the daemon is ready (it runs on while files come in)."""
        self.say("\nWhere to look while it runs:")
        for path, what in (
            ("/", "status page: state, recent files, dead letters"),
            ("/health", "liveness: is the poll loop alive?"),
            ("/ready", "readiness: broker, SciCat, data roots (JSON, 200 or 503)"),
            ("/metrics", "Prometheus metrics"),
        ):
            self.say(f"  {self.health_url}{path:<9} {what}")
        self.say(f"  {self.standin.url}/datasets  the SciCat stand-in's datasets")
        self.say(f"  {self.daemon_log}  the daemon's log")

    def show_metrics(self) -> None:
        status, text = get(self.health_url + "/metrics")
        if status == 200:
            self.say("\nFrom /metrics:")
            for line in text.splitlines():
                if line.startswith(SUMMARY_METRICS):
                    self.say(f"  {line}")

    def stop_daemon(self) -> None:
        """SIGTERM, wait for the drain (grace period + margin), then SIGKILL as systemd would."""
        if self.daemon is None or self.daemon.poll() is not None:
            return
        self.daemon.send_signal(signal.SIGTERM)
        try:
            self.daemon.wait(self.grace + 15)
        except subprocess.TimeoutExpired:
            self.say("The daemon did not stop in time; killing it.")
            self.daemon.kill()
            self.daemon.wait()

    def close(self) -> int | None:
        """Stop everything; the daemon's exit code (None if it never started)."""
        self._stack.close()
        return None if self.daemon is None else self.daemon.returncode


def describe(pid: str, dataset: dict[str, Any], files: list[str]) -> str:
    return (
        f"  {pid}  name={dataset.get('datasetName', '?')!r}\n"
        f"      files={dataset.get('numberOfFiles')} ({', '.join(files)})  "
        f"size={dataset.get('size')} B"
    )


@contextlib.contextmanager
def _signals() -> Iterator[None]:
    """SIGTERM stops the demo like Ctrl-C does."""
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m scicat_ingestor.testing.demo",
        description="Run broker, SciCat stand-in and daemon locally; ingest a few files; stop.",
    )
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="demo config template")
    parser.add_argument("--files", type=int, default=6, help="files to write (default 6)")
    parser.add_argument(
        "--trigger",
        choices=("kafka", "watch"),
        default="kafka",
        help="kafka: a fake file-writer announces files; watch: files are only written into a "
        "watched directory (no broker)",
    )
    parser.add_argument(
        "--keep-running", action="store_true", help="after the run, keep going until Ctrl-C"
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="keep config, data and logs here (default: a new temporary directory, kept)",
    )
    args = parser.parse_args(argv)
    if not args.config.is_file():
        print(f"error: {args.config}: demo config not found (run from a checkout)", file=sys.stderr)
        return EXIT_FAILURE
    try:
        from scicat_ingestor.testing.scicat import SciCatStandIn  # noqa: PLC0415 - checked here
    except ImportError as exc:
        print(MISSING_EXTRA.format(missing=exc.name or exc), file=sys.stderr)
        return EXIT_USAGE
    demo = Demo(
        args.config,
        args.files,
        sys.stdout,
        SciCatStandIn(),
        workdir=args.workdir,
        trigger=args.trigger,
    )
    failed = False
    with _signals():
        try:
            demo.start()
            demo.run()
            if args.keep_running:
                demo.say("\nRunning. Press Ctrl-C to stop.")
                while True:
                    demo.check_daemon_alive()
                    time.sleep(0.5)
        except KeyboardInterrupt:
            demo.say("\nInterrupted: stopping.")
        except (DemoError, BrokerError, ConfigError, OSError, RuntimeError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            failed = True
        finally:
            demo.say("Stopping the daemon (SIGTERM), the SciCat stand-in and the broker ...")
            code = demo.close()
    if code not in (0, None):
        print(f"error: the daemon exited with code {code}; see {demo.daemon_log}", file=sys.stderr)
        failed = True
    if failed:
        print(f"Files kept for inspection in {demo.workdir}", file=sys.stderr)
        return EXIT_FAILURE
    demo.say(f"The daemon's log: {demo.daemon_log} (config and data beside it)")
    demo.say("Done.")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
