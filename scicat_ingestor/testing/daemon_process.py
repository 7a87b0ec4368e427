"""Run the daemon as a separate process, as in production: for kill -9 / SIGTERM tests, benchmarks.

``daemon_config`` builds a config (as a plain dict, ready for ``yaml.safe_dump`` or
``config.build``) that points the daemon at a test broker and SciCat stand-in with short timeouts;
``DaemonProcess`` starts ``python -m scicat_ingestor run -c FILE``, waits for log lines, sends
signals and reports the exit code.
"""

from __future__ import annotations

import ctypes
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import yaml

from scicat_ingestor.testing.broker import consumer_test_config

_PR_SET_PDEATHSIG = 1
_LOG_TAIL_LINES = 40


def daemon_config(
    *,
    bootstrap: str,
    topics: Sequence[str],
    group_id: str,
    scicat_url: str,
    scicat_token: str,
    schemas_directory: str | Path,
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Config data for a test daemon; ``overrides`` are dotted keys (``"ingestion.queue_size"``).

    Kafka gets the harness's fast-join consumer settings (Tansu joins take half the session
    timeout) and short fetch waits, commits every 0.2 s; SciCat retries back off from 0.2 s to
    2 s; no health endpoint.
    """
    fast = consumer_test_config(bootstrap, group_id)
    data: dict[str, Any] = {
        "kafka": {
            "topics": list(topics),
            "group_id": group_id,
            "bootstrap_servers": bootstrap,
            "security_protocol": "plaintext",
            "consumer_config": {
                **{k: v for k, v in fast.items() if k not in {"bootstrap.servers", "group.id"}},
                # Tansu workaround: Tansu answers a fetch only after fetch.wait.max.ms (default
                # 500) even when data is there, so every resume after backpressure would stall the
                # pool for 0.5 s. On Apache Kafka it only means more (empty) fetches.
                "fetch.wait.max.ms": 50,
            },
            "commit_interval": 0.2,
        },
        "ingestion": {
            "schemas_directory": str(schemas_directory),
            "max_offline_ingestors": 4,
            "queue_size": 4,
            "drain_grace_period": 10.0,
            "retry_initial_delay": 0.2,
            "retry_max_delay": 2.0,
        },
        "scicat": {"host": scicat_url, "token": scicat_token, "timeout": 5, "max_retries": 1},
        "health_check": {"enabled": False},
    }
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, last = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    return data


def write_config(path: Path, data: Mapping[str, Any]) -> Path:
    """Write config ``data`` as YAML to ``path``; returns ``path``."""
    path.write_text(yaml.safe_dump(dict(data), sort_keys=False), encoding="utf-8")
    return path


def _die_with_parent() -> None:
    """Child-side: SIGKILL the daemon if the test process dies (no orphans on CI)."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class DaemonProcess:
    """``python -m scicat_ingestor run -c CONFIG`` with its output in ``log_path``."""

    def __init__(self, config_path: Path, log_path: Path, extra_args: Sequence[str] = ()) -> None:
        self.config_path = config_path
        self.log_path = log_path
        self.command = [
            sys.executable,
            "-m",
            "scicat_ingestor",
            "run",
            "-c",
            str(config_path),
            *extra_args,
        ]
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def __enter__(self) -> DaemonProcess:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.kill()

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError("daemon not started")
        return self._process.pid

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the daemon (appending to the log, so restarts keep one history)."""
        if self.running:
            raise RuntimeError("daemon already running")
        self._log = self.log_path.open("ab")
        self._process = subprocess.Popen(
            self.command,
            # the health URL file beside the log, so test daemons leave the shared /tmp one alone
            env={
                **os.environ,
                "SCICAT_INGESTOR_HEALTH_URL_FILE": str(self.log_path.parent / "health.url"),
            },
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,  # noqa: PLW1509
        )

    def signal(self, signum: int) -> None:
        if self.running:
            assert self._process is not None
            self._process.send_signal(signum)

    def terminate(self) -> None:
        """SIGTERM: the daemon drains and exits by itself (``wait`` for the code)."""
        self.signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL and reap: a crash with no chance to commit or close."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        self._close_log()

    def wait(self, timeout: float) -> int:
        """The exit code; ``TimeoutError`` with the log tail if still running after ``timeout``."""
        if self._process is None:
            raise RuntimeError("daemon not started")
        try:
            code = self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError(
                f"daemon still running after {timeout} s; log tail:\n{self.log_tail()}"
            ) from None
        self._close_log()
        return code

    def wait_for_log(self, pattern: str, timeout: float, count: int = 1) -> None:
        """Wait until the log has ``count`` lines matching regex ``pattern``."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while sum(1 for line in self.log_text().splitlines() if regex.search(line)) < count:
            if not self.running:
                raise RuntimeError(
                    f"daemon exited ({self._process and self._process.returncode}) before "
                    f"logging {pattern!r}; log tail:\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"no {pattern!r} in the daemon log after {timeout} s; tail:\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None
