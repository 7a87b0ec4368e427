"""The Docker HEALTHCHECK probe and the file through which the daemon tells it its health URL.

The endpoint is a real HealthServer on a free port, so the probe's port can only come from the
published file; one test runs the real daemon (watch trigger, no broker) and follows the file
from start to a clean stop.
"""

from __future__ import annotations

import dataclasses
import logging
import socket
import urllib.error
from collections.abc import Iterator
from pathlib import Path

import pytest

from scicat_ingestor.config.model import HealthCheckOptions
from scicat_ingestor.ops.health import HealthServer
from scicat_ingestor.ops.probe import URL_FILE_VARIABLE, cause, main, publish_health_url, url_file
from scicat_ingestor.ops.state import ServiceState
from scicat_ingestor.testing.broker import free_port
from scicat_ingestor.testing.daemon_process import DaemonProcess, daemon_config, write_config
from scicat_ingestor.testing.scicat import SciCatStandIn


@pytest.fixture
def server() -> Iterator[HealthServer]:
    state = ServiceState()
    state.polled()
    options = HealthCheckOptions(host="0.0.0.0", port=0, liveness_timeout=3600.0)
    with HealthServer(options, state, lambda: False) as running:  # SciCat down: still alive
        yield running


@pytest.fixture
def url_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The file daemon and probe use in this test (never the machine's /tmp one)."""
    path = tmp_path / "health.url"
    monkeypatch.setenv(URL_FILE_VARIABLE, str(path))
    return path


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({URL_FILE_VARIABLE: "/run/x/h.url", "XDG_RUNTIME_DIR": "/run/user/7"}, "/run/x/h.url"),
        ({"XDG_RUNTIME_DIR": "/run/user/7"}, "/run/user/7/scicat-ingestor-health.url"),
        ({URL_FILE_VARIABLE: "", "XDG_RUNTIME_DIR": ""}, "/tmp/scicat-ingestor-health.url"),
    ],
)
def test_where_the_url_file_is(environ: dict[str, str], expected: str) -> None:
    assert url_file(environ) == Path(expected)


def test_probes_the_published_url(
    url_path: Path, server: HealthServer, capsys: pytest.CaptureFixture[str]
) -> None:
    published = publish_health_url(server.url)
    assert published is not None
    assert url_path.read_text() == f"http://127.0.0.1:{server.port}\n"
    assert main([]) == 0
    assert capsys.readouterr().out == f"http://127.0.0.1:{server.port}/health: 200\n"
    published.remove()
    assert not url_path.exists()
    assert list(url_path.parent.iterdir()) == []  # no temporary file left either


def test_a_clean_stop_leaves_another_daemons_url_alone(url_path: Path) -> None:
    first = publish_health_url("http://127.0.0.1:8081")
    assert first is not None
    publish_health_url("http://127.0.0.1:8082")  # a second daemon with the same file
    first.remove()
    assert url_path.read_text() == "http://127.0.0.1:8082\n"


def test_an_unwritable_file_is_a_warning_and_the_probe_asks_the_default_port(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    missing = tmp_path / "no-such-directory" / "health.url"
    monkeypatch.setenv(URL_FILE_VARIABLE, str(missing))
    with caplog.at_level(logging.WARNING):
        assert publish_health_url("http://127.0.0.1:8081") is None
    (record,) = caplog.records
    assert f"cannot write the health URL for the Docker HEALTHCHECK to {missing}" in record.message
    assert URL_FILE_VARIABLE in record.message


def test_unhealthy_when_the_poll_loop_stalls(
    url_path: Path, server: HealthServer, capsys: pytest.CaptureFixture[str]
) -> None:
    server.options = dataclasses.replace(server.options, liveness_timeout=-1.0)
    publish_health_url(server.url)
    assert main([]) == 1
    out = capsys.readouterr().out
    assert out.startswith(f"unhealthy: http://127.0.0.1:{server.port}/health: 503 ")
    assert '"live": false' in out


def free_local_port() -> int:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_an_endpoint_that_does_not_answer_is_named_with_the_cause(
    url_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """It printed '<urlopen error [Errno 111] Connection refused>'."""
    port = free_local_port()
    publish_health_url(f"http://127.0.0.1:{port}")
    assert main([]) == 1
    assert capsys.readouterr().out == (
        f"unhealthy: http://127.0.0.1:{port}/health: not answering "
        "(connection refused: nothing listens on that port)\n"
    )


@pytest.mark.parametrize(
    ("text", "code", "output"),
    [
        (None, 1, "unhealthy: http://127.0.0.1:8080/health: not answering (connection refused"),
        ("disabled\n", 0, "health endpoint disabled (health_check.enabled: false)"),
        ("127.0.0.1:8080\n", 1, "unhealthy: {path}: not a health URL: '127.0.0.1:8080'"),
    ],
)
def test_one_line_for_everything_else(
    url_path: Path, capsys: pytest.CaptureFixture[str], text: str | None, code: int, output: str
) -> None:
    if text is not None:
        url_path.write_text(text)
    with socket.socket() as sock:
        if sock.connect_ex(("127.0.0.1", 8080)) == 0 and text is None:
            pytest.skip("something listens on the default port 8080 here")
    assert main([]) == code
    out = capsys.readouterr().out
    assert out.startswith(output.format(path=url_path))
    assert out.count("\n") == 1
    if text is None:
        assert out.endswith(f" (no {url_path}: the default port)\n")


def test_a_disabled_endpoint_is_published_as_such(
    url_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    publish_health_url(None)
    assert main([]) == 0
    assert capsys.readouterr().out.startswith("health endpoint disabled")


def test_causes_in_plain_words() -> None:
    assert cause(urllib.error.URLError(TimeoutError()), 5) == "no answer within 5 s"
    gaierror = socket.gaierror(-2, "Name or service not known")
    assert cause(urllib.error.URLError(gaierror), 5) == (
        "host name not found: Name or service not known"
    )


@pytest.mark.integration
def test_the_daemon_publishes_the_port_it_bound_and_removes_it_on_a_clean_stop(
    tmp_path: Path,
    url_path: Path,
    data_dir: Path,
    scicat_standin: SciCatStandIn,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "data").mkdir()
    port = free_port()
    data = daemon_config(
        bootstrap="127.0.0.1:9",  # never contacted in watch mode
        topics=["unused"],
        group_id="unused",
        scicat_url=scicat_standin.url,
        scicat_token=scicat_standin.token,
        schemas_directory=data_dir / "schemas",
        overrides={
            "ingestion.trigger": "watch",
            "watch.directories": [str(tmp_path / "data")],
            "watch.state_file": str(tmp_path / "watch.sqlite"),
            "ingestion.dead_letter.file": str(tmp_path / "dead-letters.jsonl"),
            "health_check.enabled": True,
            "health_check.port": port,
        },
    )
    with DaemonProcess(write_config(tmp_path / "c.yml", data), tmp_path / "d.log") as daemon:
        daemon.wait_for_log(r"watching ", 30)  # the source starts after the file is written
        assert url_path.read_text() == f"http://127.0.0.1:{port}\n"
        assert main([]) == 0
        assert capsys.readouterr().out == f"http://127.0.0.1:{port}/health: 200\n"
        daemon.terminate()
        assert daemon.wait(30) == 0
    assert not url_path.exists()
