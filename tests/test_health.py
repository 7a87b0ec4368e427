"""The operators' endpoint over real HTTP: /health (liveness), /ready (readiness), /metrics."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from scicat_ingestor.config.model import HealthCheckOptions, SciCatOptions, Secret
from scicat_ingestor.ops.health import HealthServer, HealthServerError, check_data_roots
from scicat_ingestor.ops.metrics import COMMITTED_OFFSET, CONSUMER_LAG, FILES
from scicat_ingestor.ops.state import SchemaStatus, ServiceState, WatchStatus
from scicat_ingestor.ops.status import SourceInfo, StatusRecorder
from scicat_ingestor.scicat import SciCatClient, SciCatError
from scicat_ingestor.testing.scicat import SciCatStandIn

LOCAL = HealthCheckOptions(host="127.0.0.1", port=0, liveness_timeout=60.0)


class Clock:
    """time.monotonic plus a shift the test controls (the state stamps with time.monotonic)."""

    def __init__(self) -> None:
        self.shift = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.shift


class CountingProbe:
    def __init__(self, answer: bool = True) -> None:
        self.answer = answer
        self.calls = 0

    def __call__(self) -> bool:
        self.calls += 1
        return self.answer


@pytest.fixture
def state() -> ServiceState:
    state = ServiceState()
    state.polled()
    state.set_broker_connected(True)
    state.set_assignment(3)
    return state


@pytest.fixture
def serve(state: ServiceState) -> Iterator[Callable[..., HealthServer]]:
    servers: list[HealthServer] = []

    def start(
        probe: Callable[[], bool] | None = None,
        roots: tuple[str, ...] = (),
        **kwargs: Any,
    ) -> HealthServer:
        server = HealthServer(LOCAL, state, probe or CountingProbe(), roots, **kwargs)
        servers.append(server.start())
        return server

    yield start
    for server in servers:
        server.stop()


def get(server: HealthServer, path: str) -> requests.Response:
    return requests.get(server.url + path, timeout=10)


def wait_status(server: HealthServer, path: str, status: int) -> dict[str, Any]:
    """Poll until ``path`` answers ``status`` (the slow checks refresh in the background)."""
    deadline = time.monotonic() + 20
    while True:
        response = get(server, path)
        if response.status_code == status:
            body: dict[str, Any] = response.json()
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} stayed {response.status_code}: {response.text}")
        time.sleep(0.05)


# --- /health ----------------------------------------------------------------------------------


def test_health_is_liveness_with_upstream_keys(
    serve: Callable[..., HealthServer], tmp_path: Path
) -> None:
    server = serve(roots=(str(tmp_path),))
    body = wait_status(server, "/ready", 200)  # the slow checks have run once
    response = get(server, "/health")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert list(body)[:3] == ["kafka", "storage", "scicat"]
    assert body["kafka"] is body["storage"] is body["scicat"] is True
    assert body["live"] is True
    assert body["detail"].startswith("polling (last ")


def test_health_503_when_poll_loop_stalls_and_200_while_stopping(
    serve: Callable[..., HealthServer], state: ServiceState
) -> None:
    clock = Clock()
    server = serve(clock=clock)
    clock.shift = 61.0
    response = get(server, "/health")
    assert response.status_code == 503
    assert response.json()["live"] is False
    assert response.json()["detail"].startswith("no poll for 61.")
    state.set_stopping()  # draining after SIGTERM: restarting would not help
    assert get(server, "/health").status_code == 200
    assert get(server, "/ready").json()["checks"]["service"] == {"ok": False, "detail": "stopping"}


def test_health_before_first_poll_is_alive_until_the_timeout(
    serve: Callable[..., HealthServer], state: ServiceState
) -> None:
    fresh = ServiceState()
    clock = Clock()
    server = serve(clock=clock)
    server.state = fresh
    assert get(server, "/health").json()["detail"].startswith("starting, no poll yet")
    clock.shift = 120.0
    assert get(server, "/health").status_code == 503
    fresh.polled()
    clock.shift = 0.0
    assert get(server, "/health").status_code == 200


def test_health_does_not_depend_on_scicat(serve: Callable[..., HealthServer]) -> None:
    """Upstream's /health went 503 with SciCat down, so a HEALTHCHECK restarted a good daemon."""
    server = serve(probe=CountingProbe(answer=False))
    body = wait_status(server, "/ready", 503)
    assert body["checks"]["scicat"]["ok"] is False
    response = get(server, "/health")
    assert response.status_code == 200
    assert response.json()["scicat"] is False


# --- /ready -----------------------------------------------------------------------------------


def test_ready_lists_every_check(
    serve: Callable[..., HealthServer], state: ServiceState, tmp_path: Path
) -> None:
    state.set_in_flight(4)
    state.set_paused(True)
    server = serve(roots=(str(tmp_path),))
    body = wait_status(server, "/ready", 200)
    assert body["ready"] is True
    assert set(body["checks"]) == {
        "poll_loop",
        "service",
        "broker",
        "scicat",
        "storage",
        "dead_letters",
    }
    assert body["checks"]["broker"]["detail"] == "connected, 3 partition(s) assigned"
    assert body["checks"]["storage"]["detail"] == "1 data root(s) listable"
    assert body["checks"]["scicat"]["age_seconds"] >= 0
    assert (body["in_flight"], body["paused"], body["assigned_partitions"]) == (4, True, 3)


def test_ready_503_names_the_failing_check(
    serve: Callable[..., HealthServer], state: ServiceState, tmp_path: Path
) -> None:
    missing = tmp_path / "unmounted"
    server = serve(roots=(str(tmp_path), str(missing)), check_interval=0.1)
    body = wait_status(server, "/ready", 503)
    assert body["storage"] is False
    assert body["checks"]["storage"]["detail"] == (
        f"data root {missing} is not listable: No such file or directory"
    )
    missing.mkdir()
    wait_status(server, "/ready", 200)
    state.set_broker_connected(False)
    body = get(server, "/ready").json()
    assert body["kafka"] is False
    assert body["checks"]["broker"] == {"ok": False, "detail": "not connected to the Kafka broker"}
    state.set_broker_connected(True)
    state.set_scicat_failing(True)
    body = wait_status(server, "/ready", 503)
    assert body["checks"]["scicat"]["detail"] == (
        "health endpoint answers, but ingestion requests fail"
    )


def test_ready_503_while_dead_letters_cannot_be_stored_naming_the_sink(
    serve: Callable[..., HealthServer], state: ServiceState
) -> None:
    server = serve(check_interval=0.1)
    body = wait_status(server, "/ready", 200)
    assert body["checks"]["dead_letters"] == {"ok": True, "detail": "dead letters are stored"}
    state.set_dead_letter_error("ingestion.dead_letter.file: /dl: No space left on device")
    body = wait_status(server, "/ready", 503)
    assert body["checks"]["dead_letters"] == {
        "ok": False,
        "detail": "dead letters cannot be stored: "
        "ingestion.dead_letter.file: /dl: No space left on device",
    }
    state.set_dead_letter_error("")
    wait_status(server, "/ready", 200)


def watcher(**changes: Any) -> WatchStatus:
    values: dict[str, Any] = {
        "directories": ("/data/a", "/data/b"),
        "observer_alive": True,
        "waiting_to_settle": 3,
        "queued": 2,
        "handed_over": 5,
        "last_rescan_monotonic": time.monotonic() - 4,
        "rescan_interval": 60.0,
        "events": 120,
        "found_by_rescan": 7,
    }
    values.update(changes)
    return WatchStatus(**values)


def test_ready_shows_the_watcher_instead_of_the_broker(
    serve: Callable[..., HealthServer], state: ServiceState
) -> None:
    state.set_broker_connected(False)  # watch mode has no broker
    state.set_watch(watcher())
    server = serve(check_interval=0.1)
    body = wait_status(server, "/ready", 200)
    assert "broker" not in body["checks"]
    assert body["checks"]["watcher"]["detail"].startswith("watching 2 director")
    watch = body["watch"]
    assert watch["directories"] == ["/data/a", "/data/b"]
    assert (watch["waiting_to_settle"], watch["queued"], watch["handed_over"]) == (3, 2, 5)
    assert (watch["events"], watch["found_by_rescan"]) == (120, 7)
    assert 3 <= watch["last_rescan_seconds_ago"] < 30
    state.set_watch(watcher(last_rescan_monotonic=time.monotonic() - 500))
    body = wait_status(server, "/ready", 503)
    assert body["checks"]["watcher"]["detail"].startswith("no rescan for 500 s")
    state.set_watch(watcher(observer_alive=False))
    body = wait_status(server, "/ready", 503)
    assert body["checks"]["watcher"]["detail"] == "the inotify observer is not running"


def test_no_data_roots_configured_is_ready() -> None:
    """Upstream answered 503 forever with its default ``data_directory: ''``."""
    assert check_data_roots(()).ok
    assert check_data_roots(()).detail == "no data roots configured"


def test_scicat_is_probed_at_most_once_per_interval(serve: Callable[..., HealthServer]) -> None:
    probe = CountingProbe()
    server = serve(probe=probe, check_interval=3600.0)
    wait_status(server, "/ready", 200)
    for _ in range(20):
        get(server, "/ready")
        get(server, "/health")
    assert probe.calls == 1


def test_probe_errors_and_hangs_make_scicat_not_ready(serve: Callable[..., HealthServer]) -> None:
    def broken() -> bool:
        raise RuntimeError("bug in the probe")

    server = serve(probe=broken)
    body = wait_status(server, "/ready", 503)
    assert body["checks"]["scicat"]["detail"] == "SciCat health probe raised RuntimeError"

    release = threading.Event()
    started = threading.Event()

    def hanging() -> bool:
        started.set()
        return release.wait(30)

    clock = Clock()
    hung = serve(probe=hanging, clock=clock)
    assert started.wait(10)
    assert get(hung, "/ready").json()["checks"]["scicat"]["detail"] == "not checked yet"
    release.set()
    wait_status(hung, "/ready", 200)
    clock.shift = 3600.0  # the checking thread has not reported for an hour
    body = get(hung, "/ready").json()
    assert body["checks"]["scicat"]["detail"] == "check has not completed recently"
    assert get(hung, "/health").status_code == 503  # and the poll loop is an hour old too


@pytest.mark.integration
def test_ready_follows_the_real_scicat_stand_in(serve: Callable[..., HealthServer]) -> None:
    with SciCatStandIn() as standin:
        client = SciCatClient(
            SciCatOptions(host=standin.url, token=Secret(standin.token), timeout=5.0)
        )
        server = serve(probe=client.healthy, check_interval=0.1)
        body = wait_status(server, "/ready", 200)
        url = f"{standin.url}/health"
        assert body["checks"]["scicat"]["detail"] == f"SciCat health endpoint {url} answered 200"
        standin.stop()
        body = wait_status(server, "/ready", 503)
        assert body["scicat"] is False
        # It said "health endpoint not answering": no URL, no cause.
        where = url.split("/")[2]
        assert body["checks"]["scicat"]["detail"] == (
            f"SciCat health endpoint {url} not reachable: "
            f"connection refused by {where} (nothing listens there)"
        )
        assert get(server, "/health").status_code == 200
        standin.start()
        body = wait_status(server, "/ready", 200)
        assert body["scicat"] is True
        client.close()


# --- /metrics and the rest --------------------------------------------------------------------


def test_metrics_in_prometheus_text_format(serve: Callable[..., HealthServer]) -> None:
    FILES.labels(outcome="created").inc()
    response = get(serve(), "/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    assert {"scicat_ingestor_files", "scicat_ingestor_in_flight", "scicat_ingestor_paused"} <= set(
        families
    )
    created = [s for s in families["scicat_ingestor_files"].samples if s.name.endswith("_total")]
    assert any(s.labels == {"outcome": "created"} and s.value >= 1 for s in created)


def test_unknown_path_404_other_methods_501_head_ok(serve: Callable[..., HealthServer]) -> None:
    server = serve()
    assert get(server, "/index.html").status_code == 404
    assert get(server, "/healthz").status_code == 404
    assert requests.post(server.url + "/health", timeout=10).status_code == 501
    head = requests.head(server.url + "/health", timeout=10)
    assert head.status_code == 200
    assert head.content == b""
    assert get(server, "/health?verbose=1").status_code == 200


def test_bind_failure_is_one_line(state: ServiceState) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = HealthServer(
            HealthCheckOptions(host="127.0.0.1", port=port), state, CountingProbe()
        )
        with pytest.raises(HealthServerError) as exc:
            server.start()
    assert str(exc.value) == (
        f"health_check: cannot listen on 127.0.0.1:{port}: Address already in use"
    )


@pytest.mark.parametrize(("host", "bound"), [("0.0.0.0", "0.0.0.0"), ("127.0.0.1", "127.0.0.1")])
def test_log_line_names_the_address_really_bound(
    state: ServiceState, caplog: pytest.LogCaptureFixture, host: str, bound: str
) -> None:
    """The image binds 0.0.0.0: the log said http://127.0.0.1:8080 (the client URL) instead."""
    caplog.set_level("INFO", logger="scicat_ingestor.ops.health")
    with HealthServer(HealthCheckOptions(host=host, port=0), state, CountingProbe()) as server:
        (line,) = [r.getMessage() for r in caplog.records if "listening" in r.getMessage()]
        assert line == (
            f"Health endpoint listening on {bound}:{server.port} "
            f"(http://127.0.0.1:{server.port}/ status page, /health, /ready, /metrics)"
        )


def test_ready_shows_the_schema_set_and_a_failed_reload_does_not_make_it_unready(
    serve: Callable[..., HealthServer], state: ServiceState
) -> None:
    server = serve()
    assert "schemas" not in wait_status(server, "/ready", 200)  # no registry: no key
    state.set_schemas(SchemaStatus(3, 1_796_000_000.0, 1_796_000_100.0, "a.imsc.yml: id: bad", 1.0))
    body = wait_status(server, "/ready", 200)
    assert body["ready"] is True
    assert body["schemas"] == {
        "count": 3,
        "newest_mtime": "2026-11-30T00:53:20+00:00",
        "loaded_at": "2026-11-30T00:55:00+00:00",
        "last_error": "a.imsc.yml: id: bad",
        "last_error_at": "1970-01-01T00:00:01+00:00",
    }


@pytest.mark.integration
def test_ready_names_refused_credentials_and_recovers(
    serve: Callable[..., HealthServer], scicat_standin: SciCatStandIn
) -> None:
    """An auth outage: /ready 503 with a check saying SciCat refuses our credentials (no secret);
    the checker's recheck brings it back once they work again, with no file being retried."""
    options = SciCatOptions(host=scicat_standin.url, username="ingestor", password=Secret("pwd"))
    client = SciCatClient(options)
    server = serve(client.healthy, credentials=client.credentials, check_interval=0.1)
    assert client.check_credentials()
    wait_status(server, "/ready", 200)
    scicat_standin.faults.reject_credentials(1.0)
    scicat_standin.faults.expire_tokens()
    with pytest.raises(SciCatError):
        client.get_json("proposals/443503")
    body = get(server, "/ready").json()
    assert get(server, "/ready").status_code == 503
    assert body["checks"]["scicat_credentials"] == {
        "ok": False,
        "detail": "SciCat refuses our credentials (HTTP 403 on GET proposals/443503; "
        "login as 'ingestor' failed: 401)",
    }
    assert "pwd" not in json.dumps(body)
    body = wait_status(server, "/ready", 200)
    assert body["checks"]["scicat_credentials"]["ok"] is True
    client.close()


def test_status_page_and_json_show_the_same_recorded_files(
    serve: Callable[..., HealthServer],
) -> None:
    recorder = StatusRecorder()
    recorder.file_finished("/data/<b>run</b>.hdf", "created", 0.25, "20.500/x y")
    recorder.dead_letter("/data/bad.hdf", "not a NeXus file: <img src=x onerror=alert(1)>")
    source = SourceInfo("kafka", ("wrdn",), "https://scicat.example/")
    server = serve(recorder=recorder, source=source)
    body = get(server, "/status.json").json()
    assert body["trigger"] == "kafka"
    assert body["files"][0]["url"] == "https://scicat.example/datasets/20.500%2Fx%20y"
    assert body["dead_letters"][0]["subject"] == "/data/bad.hdf"
    page = get(server, "/")
    assert page.status_code == 200
    assert page.headers["Content-Type"] == "text/html; charset=utf-8"
    assert "script-src 'sha256-" in page.headers["Content-Security-Policy"]
    assert "/data/&lt;b&gt;run&lt;/b&gt;.hdf" in page.text
    assert "&lt;img src=x onerror=alert(1)&gt;" in page.text
    assert "<img" not in page.text
    assert "href='https://scicat.example/datasets/20.500%2Fx%20y'" in page.text
    assert get(server, "/?t=1").status_code == 200


def test_status_says_why_intake_is_paused(
    serve: Callable[..., HealthServer], state: ServiceState
) -> None:
    server = serve()
    wait_status(server, "/ready", 200)
    assert get(server, "/status.json").json()["state"] == {
        "name": "running",
        "ready": True,
        "reasons": [],
    }
    state.set_in_flight(8)
    state.set_paused(True)
    assert get(server, "/status.json").json()["state"]["reasons"] == [
        {"cause": "backpressure", "detail": "8 file(s) in flight: intake waits for the workers"}
    ]
    state.set_dead_letter_error("ingestion.dead_letter.file: [Errno 28] No space left on device")
    answer = get(server, "/status.json").json()["state"]
    assert answer["name"] == "paused"
    assert answer["ready"] is False
    assert answer["reasons"] == [
        {
            "cause": "dead-letter sink",
            "detail": "dead letters cannot be stored: "
            "ingestion.dead_letter.file: [Errno 28] No space left on device",
        }
    ]
    state.set_paused(False)
    assert get(server, "/status.json").json()["state"]["name"] == "not ready"
    state.set_stopping()
    assert get(server, "/status.json").json()["state"]["name"] == "stopping"


def test_status_lists_offsets_and_lag_of_the_configured_topics(
    serve: Callable[..., HealthServer],
) -> None:
    COMMITTED_OFFSET.labels("status-topic", "1").set(40)
    CONSUMER_LAG.labels("status-topic", "1").set(2)
    CONSUMER_LAG.labels("status-topic", "0").set(5)
    COMMITTED_OFFSET.labels("other-topic", "0").set(7)
    server = serve(source=SourceInfo("kafka", ("status-topic",)))
    source = get(server, "/status.json").json()["source"]
    assert source["topics"] == ["status-topic"]
    assert source["assigned_partitions"] == 3
    assert source["partitions"] == [
        {"topic": "status-topic", "partition": 0, "committed": None, "lag": 5},
        {"topic": "status-topic", "partition": 1, "committed": 40, "lag": 2},
    ]


def test_metrics_carry_the_readiness_verdict(
    serve: Callable[..., HealthServer], state: ServiceState
) -> None:
    server = serve()
    wait_status(server, "/ready", 200)

    def gauges() -> dict[str, float]:
        families = text_string_to_metric_families(get(server, "/metrics").text)
        return {
            sample.labels.get("check", sample.name): sample.value
            for family in families
            if family.name in ("scicat_ingestor_ready", "scicat_ingestor_check_ok")
            for sample in family.samples
        }

    assert gauges()["scicat_ingestor_ready"] == 1
    state.set_broker_connected(False)
    values = gauges()
    assert values["scicat_ingestor_ready"] == 0
    assert values["broker"] == 0
    assert values["scicat"] == 1


def test_status_page_of_a_watcher_before_and_after_it_reports(
    serve: Callable[..., HealthServer], state: ServiceState
) -> None:
    server = serve(source=SourceInfo("watch"))
    assert get(server, "/status.json").json()["source"]["directories"] == []
    assert get(server, "/").status_code == 200
    state.set_watch(watcher(directories=("/data/<in>",)))
    body = get(server, "/status.json").json()
    assert body["trigger"] == "watch"
    assert body["source"]["directories"] == ["/data/<in>"]
    assert "/data/&lt;in&gt;" in get(server, "/").text
