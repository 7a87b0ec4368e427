"""Operators' HTTP endpoint: `/health` (liveness), `/ready` (readiness), `/metrics` (Prometheus),
and the status page `/` with its data `/status.json` (see ``ops.status_page``).

Upstream had one ``/health`` that ran the Kafka, storage and SciCat probes inside the request and
answered 503 when any failed; used as a Docker HEALTHCHECK this restarted a perfectly alive ingestor
whenever SciCat was down (and always with the default empty ``data_directory``). Here the two
questions are separate:

- ``/health`` is **liveness**: 200 while the poll loop has polled within
  ``health_check.liveness_timeout`` seconds (or is draining to stop). Restarting helps only then.
- ``/ready`` is **readiness**: 200 when the poll loop is alive, the service is not stopping, the
  broker is connected, SciCat answered its health endpoint recently (and ingestion requests are
  not failing), SciCat accepts our credentials, dead letters can be stored and every data root
  is listable; no data roots configured counts as ready. With ``ingestion.trigger: watch`` the
  watcher replaces the broker: inotify running and a rescan within two rescan intervals; the body
  shows directories, queue and last rescan under ``watch``.

Both bodies keep upstream's keys ``kafka``, ``storage`` and ``scicat`` (booleans) so dashboards
reading them keep working; only ``/ready``'s status code depends on them. The slow checks
(SciCat over the network, data roots on possibly remote file systems) run in one background thread
every ``check_interval`` seconds, so requests never wait on them and SciCat is never called more
often than that, however often the endpoints are scraped. A check that has not finished for a long
time (a hung mount, an unanswered request) counts as failed. Bodies carry no configuration values
and no exception texts but two: the ``scicat`` check names the health URL it asked (without user
info or query) and the cause in plain words (DNS, refused, timeout, TLS, or SciCat's answer with
the token, password and header values masked by the client); a failing dead-letter sink is named by
its config key with the error it gave (an OS or Kafka error line).
The status page and ``/status.json`` add what operators look for first: why intake is paused, the
partitions' offsets and lag, the last files and dead letters (their names and reasons are the
untrusted part, escaped on the page) and an hour of outcomes. ``/metrics`` also carries the
readiness verdict (``scicat_ingestor_ready``, ``scicat_ingestor_check_ok{check}``), computed at
scrape time from the same cached results, for alerting on "not ready".
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from scicat_ingestor.config.model import HealthCheckOptions
from scicat_ingestor.ops import metrics
from scicat_ingestor.ops.metrics import REGISTRY
from scicat_ingestor.ops.state import ServiceState, StateSnapshot, WatchStatus
from scicat_ingestor.ops.status import SourceInfo, StatusRecorder
from scicat_ingestor.ops.status_page import CONTENT_SECURITY_POLICY, render_page

logger = logging.getLogger("scicat_ingestor.ops.health")

DEFAULT_CHECK_INTERVAL = 5.0


class Credentials(Protocol):
    """What /ready needs from the SciCat client's credential state (``CredentialsState``)."""

    def status(self) -> tuple[bool, str]:
        """(accepted, one line without secrets); cheap, no network."""
        ...

    def recheck(self) -> None:
        """Ask SciCat again during an auth outage (called from the checking thread)."""
        ...


class ProbeAnswer(Protocol):
    """What the SciCat probe (``SciCatClient.healthy``) returns: truthy when SciCat answered,
    ``detail`` one line naming the URL and the cause (no user info, no query)."""

    @property
    def detail(self) -> str: ...

    def __bool__(self) -> bool: ...


Probe = Callable[[], "bool | ProbeAnswer"]


class HealthServerError(RuntimeError):
    """The endpoint could not start; ``str()`` is one line naming the address."""


@dataclass(frozen=True)
class Check:
    ok: bool
    detail: str
    checked_at: float | None = None  # monotonic time of the result, None for instant checks

    def as_json(self, now: float) -> dict[str, Any]:
        body: dict[str, Any] = {"ok": self.ok, "detail": self.detail}
        if self.checked_at is not None:
            body["age_seconds"] = round(now - self.checked_at, 3)
        return body


def check_data_roots(roots: Sequence[str]) -> Check:
    """Every data root is a directory we can list (a missing mount shows up here first)."""
    if not roots:
        return Check(True, "no data roots configured")
    for root in roots:
        try:
            with os.scandir(root) as entries:
                next(entries, None)
        except OSError as exc:
            return Check(False, f"data root {root} is not listable: {exc.strerror or exc}")
    return Check(True, f"{len(roots)} data root(s) listable")


class SlowChecks:
    """Runs the SciCat probe and the data-root check in one thread, every ``interval`` seconds."""

    def __init__(
        self,
        scicat_probe: Probe,
        data_roots: Sequence[str],
        interval: float,
        clock: Callable[[], float] = time.monotonic,
        credentials: Credentials | None = None,
    ) -> None:
        self._probe = scicat_probe
        self._credentials = credentials
        self._roots = tuple(data_roots)
        self.interval = interval
        # A result older than this means the checking thread is stuck (hung mount or request).
        self.stale_after = max(3 * interval, 60.0)
        self._clock = clock
        self._results: dict[str, Check] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="health-checks", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def run_once(self) -> None:
        self._store("scicat", self._scicat())
        if self._credentials is not None:
            self._credentials.recheck()
        self._store("storage", check_data_roots(self._roots))

    def result(self, name: str, now: float) -> Check:
        with self._lock:
            latest = self._results.get(name)
        if latest is None:
            return Check(False, "not checked yet")
        assert latest.checked_at is not None
        if now - latest.checked_at > self.stale_after:
            return Check(False, "check has not completed recently", latest.checked_at)
        return latest

    def _scicat(self) -> Check:
        try:
            answer = self._probe()
        except Exception as exc:  # a probe bug must not kill the checking thread
            logger.warning("SciCat health probe raised %s", type(exc).__name__)
            return Check(False, f"SciCat health probe raised {type(exc).__name__}")
        if isinstance(answer, bool):
            return Check(
                answer, "health endpoint answered" if answer else "health endpoint not answering"
            )
        return Check(bool(answer), answer.detail)

    def _store(self, name: str, check: Check) -> None:
        stamped = Check(check.ok, check.detail, self._clock())
        with self._lock:
            previous = self._results.get(name)
            self._results[name] = stamped
        if previous is not None and previous.ok != stamped.ok:
            if stamped.ok:
                logger.info("Readiness check %s recovered: %s", name, stamped.detail)
            else:
                logger.warning("Readiness check %s failing: %s", name, stamped.detail)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.run_once()
            self._stop.wait(self.interval)


class HealthServer:
    """The HTTP endpoint, served by a ThreadingHTTPServer in a daemon thread.

    ``port`` 0 binds a free port (tests); the bound one is ``self.port`` after ``start()``.
    """

    def __init__(
        self,
        options: HealthCheckOptions,
        state: ServiceState,
        scicat_probe: Probe,
        data_roots: Sequence[str] = (),
        *,
        check_interval: float = DEFAULT_CHECK_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
        credentials: Credentials | None = None,
        recorder: StatusRecorder | None = None,
        source: SourceInfo | None = None,
    ) -> None:
        """``recorder`` and ``source`` feed the status page (empty history and Kafka without)."""
        self.options = options
        self.state = state
        self.credentials = credentials
        self.recorder = recorder or StatusRecorder()
        self.source = source or SourceInfo()
        self.checks = SlowChecks(scicat_probe, data_roots, check_interval, clock, credentials)
        self._clock = clock
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("health server not started")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return local_url(self.options.host, self.port)

    def start(self) -> HealthServer:
        """Bind and serve; HealthServerError (one line) when the address is unusable."""
        host, port = self.options.host, self.options.port
        try:
            httpd = _Server(host, port, self)
        except (OSError, OverflowError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise HealthServerError(
                f"health_check: cannot listen on {host}:{port}: {reason}"
            ) from None
        self._httpd = httpd
        self.checks.start()
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.25},
            name="health-http",
            daemon=True,
        )
        self._thread.start()
        READINESS.server = self
        bound_host, bound_port = httpd.server_address[:2]
        logger.info(
            "Health endpoint listening on %s (%s/ status page, /health, /ready, /metrics)",
            _host_port(str(bound_host), int(bound_port)),
            self.url,
        )
        return self

    def stop(self) -> None:
        if READINESS.server is self:
            READINESS.server = None
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.checks.stop()

    def __enter__(self) -> HealthServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the answers ------------------------------------------------------------------------

    def poll_loop_check(self, snap: StateSnapshot, now: float) -> Check:
        """Alive while the poll loop polled within ``liveness_timeout`` (or is draining to stop)."""
        if snap.stopping:
            return Check(True, "stopping: draining in-flight work")
        since = snap.last_poll_monotonic
        if since is None:
            since = snap.started_monotonic
        age = now - since
        limit = self.options.liveness_timeout
        if age <= limit:
            what = "starting, no poll yet" if snap.last_poll_monotonic is None else "polling"
            return Check(True, f"{what} (last {age:.1f} s ago)")
        return Check(False, f"no poll for {age:.1f} s (limit {limit:g} s)")

    def liveness(self) -> tuple[bool, dict[str, Any]]:
        now, snap = self._clock(), self.state.snapshot()
        poll = self.poll_loop_check(snap, now)
        body = self._compat_keys(snap, now)
        body.update(live=poll.ok, detail=poll.detail)
        return poll.ok, body

    def readiness_checks(self, snap: StateSnapshot, now: float) -> dict[str, Check]:
        checks = {
            "poll_loop": self.poll_loop_check(snap, now),
            "service": Check(False, "stopping") if snap.stopping else Check(True, "running"),
            "broker" if snap.watch is None else "watcher": _source_check(snap, now),
            "scicat": self._scicat_check(snap, now),
            "storage": self.checks.result("storage", now),
            "dead_letters": _dead_letter_check(snap),
        }
        if self.credentials is not None:
            checks["scicat_credentials"] = Check(*self.credentials.status())
        return checks

    def checks_now(self) -> dict[str, Check]:
        return self.readiness_checks(self.state.snapshot(), self._clock())

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        now, snap = self._clock(), self.state.snapshot()
        checks = self.readiness_checks(snap, now)
        ready = all(check.ok for check in checks.values())
        body = self._compat_keys(snap, now)
        body.update(
            ready=ready,
            checks={name: check.as_json(now) for name, check in checks.items()},
            assigned_partitions=snap.assigned_partitions,
            in_flight=snap.in_flight,
            paused=snap.paused,
        )
        if snap.schemas is not None:  # informative only: a failed reload keeps the old set
            body["schemas"] = snap.schemas.as_json()
        if snap.watch is not None:
            body["watch"] = _watch_body(snap.watch, now)
        return ready, body

    def status(self) -> dict[str, Any]:
        """``/status.json``, and what the page shows: state and why, source, schemas, history."""
        now, snap = self._clock(), self.state.snapshot()
        checks = self.readiness_checks(snap, now)
        body: dict[str, Any] = {
            "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "state": _state(snap, checks, self.checks.result("scicat", now).ok),
            "checks": {name: check.as_json(now) for name, check in checks.items()},
            "trigger": self.source.trigger,
            "source": self._source_body(snap, now),
            "schemas": None if snap.schemas is None else snap.schemas.as_json(),
        }
        body.update(self.recorder.view(self.source))
        return body

    def _source_body(self, snap: StateSnapshot, now: float) -> dict[str, Any]:
        if snap.watch is not None:
            return _watch_body(snap.watch, now)
        if self.source.trigger == "watch":  # the watcher reports once the daemon started it
            return _watch_body(_WATCH_NOT_STARTED, now)
        return {
            "topics": list(self.source.topics),
            "assigned_partitions": snap.assigned_partitions,
            "in_flight": snap.in_flight,
            "partitions": _partitions(self.source.topics),
        }

    def _scicat_check(self, snap: StateSnapshot, now: float) -> Check:
        probe = self.checks.result("scicat", now)
        if probe.ok and snap.scicat_failing:
            return Check(
                False, "health endpoint answers, but ingestion requests fail", probe.checked_at
            )
        return probe

    def _compat_keys(self, snap: StateSnapshot, now: float) -> dict[str, Any]:
        """Upstream's /health keys, in upstream's order, from cached results (never blocks)."""
        return {
            "kafka": snap.broker_connected,
            "storage": self.checks.result("storage", now).ok,
            "scicat": self._scicat_check(snap, now).ok,
        }


def local_url(host: str, port: int) -> str:
    """The URL a client on this machine uses for an endpoint bound to ``host``:``port``.

    A wildcard bind (``0.0.0.0``, ``::``, empty) is reached on the loopback address.
    """
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    return f"http://{_host_port(host, port)}"


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# What each failing readiness check means for an operator, in the page's "why" list.
_CAUSES = {
    "scicat_credentials": "SciCat auth",
    "scicat": "SciCat outage",
    "dead_letters": "dead-letter sink",
    "broker": "Kafka broker",
    "watcher": "directory watcher",
    "storage": "data roots",
    "poll_loop": "poll loop",
}


def _state(snap: StateSnapshot, checks: dict[str, Check], scicat_answers: bool) -> dict[str, Any]:
    """running / paused / not ready / stopping, with the failing checks as the reasons.

    During an auth outage SciCat's health endpoint answers while our requests fail: that is the
    auth reason alone, not also an outage (``scicat_answers``: the probe's result).
    """
    auth = checks.get("scicat_credentials")
    auth_only = auth is not None and not auth.ok and scicat_answers
    reasons = [
        {"cause": _CAUSES[name], "detail": check.detail}
        for name, check in checks.items()
        if not check.ok and name in _CAUSES and not (auth_only and name == "scicat")
    ]
    if snap.paused and not reasons:
        reasons.append(
            {
                "cause": "backpressure",
                "detail": f"{snap.in_flight} file(s) in flight: intake waits for the workers",
            }
        )
    if snap.stopping:
        name = "stopping"
    elif snap.paused:
        name = "paused"
    else:
        name = "not ready" if reasons else "running"
    return {"name": name, "ready": all(c.ok for c in checks.values()), "reasons": reasons}


def _partitions(topics: Sequence[str]) -> list[dict[str, Any]]:
    """Committed offset and lag per partition of ``topics``, as the metrics last recorded them."""
    rows: dict[tuple[str, int], dict[str, Any]] = {}
    for gauge, key in ((metrics.COMMITTED_OFFSET, "committed"), (metrics.CONSUMER_LAG, "lag")):
        for family in gauge.collect():
            for sample in family.samples:
                topic, partition = sample.labels["topic"], int(sample.labels["partition"])
                if topic in topics:
                    row = rows.setdefault(
                        (topic, partition),
                        {"topic": topic, "partition": partition, "committed": None, "lag": None},
                    )
                    row[key] = int(sample.value)
    return [rows[key] for key in sorted(rows)]


class _Readiness(Collector):
    """``/ready``'s verdict as gauges, from the running server (alert rules need a series)."""

    def __init__(self) -> None:
        self.server: HealthServer | None = None

    def describe(self) -> Iterator[Metric]:
        return iter(self._families())

    def collect(self) -> Iterator[Metric]:
        server = self.server
        ready, by_check = self._families()
        if server is not None:
            checks = server.checks_now()
            ready.add_metric([], float(all(check.ok for check in checks.values())))
            for name, check in checks.items():
                by_check.add_metric([name], float(check.ok))
        return iter((ready, by_check))

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily(
                "scicat_ingestor_ready", "1 while /ready answers 200 (every check passes), else 0."
            ),
            GaugeMetricFamily(
                "scicat_ingestor_check_ok",
                "1 while the named /ready check passes (scicat, scicat_credentials, "
                "dead_letters, broker or watcher, storage, poll_loop, service), else 0.",
                labels=["check"],
            ),
        )


READINESS = _Readiness()
REGISTRY.register(READINESS)


def _dead_letter_check(snap: StateSnapshot) -> Check:
    if snap.dead_letter_error:
        return Check(False, f"dead letters cannot be stored: {snap.dead_letter_error}")
    return Check(True, "dead letters are stored")


def _source_check(snap: StateSnapshot, now: float) -> Check:
    return _broker_check(snap) if snap.watch is None else _watcher_check(snap.watch, now)


def _watcher_check(watch: WatchStatus, now: float) -> Check:
    if not watch.observer_alive:
        return Check(False, "the inotify observer is not running")
    if watch.last_rescan_monotonic is None:
        return Check(True, "start-up scan running")
    age = now - watch.last_rescan_monotonic
    if age > 2 * watch.rescan_interval + 60:
        return Check(False, f"no rescan for {age:.0f} s (every {watch.rescan_interval:g} s)")
    return Check(True, f"watching {len(watch.directories)} director(y/ies), rescan {age:.0f} s ago")


_WATCH_NOT_STARTED = WatchStatus((), False, 0, 0, 0, None, 0.0, 0, 0)


def _watch_body(watch: WatchStatus, now: float) -> dict[str, Any]:
    last = watch.last_rescan_monotonic
    return {
        "directories": list(watch.directories),
        "waiting_to_settle": watch.waiting_to_settle,
        "queued": watch.queued,
        "handed_over": watch.handed_over,
        "last_rescan_seconds_ago": None if last is None else round(now - last, 1),
        "events": watch.events,
        "found_by_rescan": watch.found_by_rescan,
    }


def _broker_check(snap: StateSnapshot) -> Check:
    if not snap.broker_connected:
        return Check(False, "not connected to the Kafka broker")
    return Check(True, f"connected, {snap.assigned_partitions} partition(s) assigned")


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, host: str, port: int, health: HealthServer) -> None:
        if ":" in host:
            self.address_family = socket.AF_INET6
        self.health = health
        super().__init__((host, port), _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "scicat-ingestor"

    def do_GET(self) -> None:
        self._answer(with_body=True)

    def do_HEAD(self) -> None:
        self._answer(with_body=False)

    def log_message(self, format: str, *args: Any) -> None:
        """No access log: the Docker HEALTHCHECK and scrapers would flood it."""

    def _answer(self, with_body: bool) -> None:
        health = self.server.health
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._send(200, CONTENT_TYPE_LATEST, generate_latest(REGISTRY), with_body)
        elif path == "/":
            page = render_page(health.status()).encode()
            self._send(200, "text/html; charset=utf-8", page, with_body, CONTENT_SECURITY_POLICY)
        elif path == "/status.json":
            data = json.dumps(health.status()).encode()
            self._send(200, "application/json", data, with_body)
        elif path in ("/health", "/ready"):
            ok, body = health.liveness() if path == "/health" else health.readiness()
            data = json.dumps(body).encode()
            self._send(200 if ok else 503, "application/json", data, with_body)
        else:
            self._send(404, "text/plain; charset=utf-8", b"not found\n", with_body)

    def _send(
        self, status: int, content_type: str, data: bytes, with_body: bool, policy: str = ""
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        if policy:
            self.send_header("Content-Security-Policy", policy)
        self.end_headers()
        if with_body:
            self.wfile.write(data)
