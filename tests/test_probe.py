"""The Docker HEALTHCHECK probe: finds the daemon, reads its port, asks its /health for real.

A fake /proc (cmdline files and a cwd link) stands for the container's processes; the endpoint is
a real HealthServer on a free port, so the probe's port can only come from the daemon's config.
"""

from __future__ import annotations

import dataclasses
import socket
import urllib.error
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import yaml

from scicat_ingestor.config import HealthCheckOptions
from scicat_ingestor.ops.health import HealthServer
from scicat_ingestor.ops.probe import cause, daemon_arguments, main
from scicat_ingestor.state import ServiceState

IMAGE_CMD = ["run", "-c", "/config/config.yml", "--health-check.host", "0.0.0.0"]


@pytest.mark.parametrize(
    ("cmdline", "expected"),
    [
        (["python", "-m", "scicat_ingestor", *IMAGE_CMD], IMAGE_CMD),
        (["/sbin/docker-init", "--", "python", "-m", "scicat_ingestor", *IMAGE_CMD], IMAGE_CMD),
        (["/usr/local/bin/scicat-ingestor", "-c", "c.yml"], ["run", "-c", "c.yml"]),
        (["python3", "/usr/local/bin/scicat_ingestor", "-c", "c.yml"], ["run", "-c", "c.yml"]),
        (["python", "-m", "scicat_ingestor.ops.probe"], None),
        (["python", "-m", "scicat_ingestor", "validate-config", "c.yml"], None),
        (["sh", "-c", "sleep 1"], None),
        ([], None),
    ],
)
def test_daemon_arguments(cmdline: list[str], expected: list[str] | None) -> None:
    assert daemon_arguments(cmdline) == expected


@pytest.fixture
def server() -> Iterator[HealthServer]:
    state = ServiceState()
    state.polled()
    options = HealthCheckOptions(host="0.0.0.0", port=0, liveness_timeout=3600.0)
    with HealthServer(options, state, lambda: False) as running:  # SciCat down: still alive
        yield running


def fake_proc(root: Path, processes: dict[int, Sequence[str]], cwd: Path) -> Path:
    for pid, cmdline in processes.items():
        (root / str(pid)).mkdir(parents=True)
        (root / str(pid) / "cmdline").write_bytes(b"".join(a.encode() + b"\0" for a in cmdline))
        (root / str(pid) / "cwd").symlink_to(cwd)
    (root / "self").mkdir()
    return root


def config_dir(tmp_path: Path, health_check: dict[str, object]) -> Path:
    directory = tmp_path / "app"
    directory.mkdir()
    text = yaml.safe_dump({"health_check": health_check})
    (directory / "config.yml").write_text(text, encoding="utf-8")
    return directory


def test_probes_the_port_of_the_daemons_config_file(
    tmp_path: Path, server: HealthServer, capsys: pytest.CaptureFixture[str]
) -> None:
    cwd = config_dir(tmp_path, {"port": server.port})
    daemon = ["python", "-m", "scicat_ingestor", "run", "-c", "config.yml"]  # relative to its cwd
    proc = fake_proc(tmp_path / "proc", {1: ["/sbin/docker-init", "--", "x"], 7: daemon}, cwd)
    assert main([], proc) == 0
    assert capsys.readouterr().out == f"http://127.0.0.1:{server.port}/health: 200\n"


def test_a_command_line_override_beats_the_file(
    tmp_path: Path, server: HealthServer, capsys: pytest.CaptureFixture[str]
) -> None:
    cwd = config_dir(tmp_path, {"port": 1})
    daemon = [
        "python",
        "-m",
        "scicat_ingestor",
        *IMAGE_CMD,
        "--health-check.port",
        str(server.port),
    ]
    daemon[daemon.index("/config/config.yml")] = str(cwd / "config.yml")
    assert main([], fake_proc(tmp_path / "proc", {1: daemon}, cwd)) == 0
    assert f":{server.port}/health: 200" in capsys.readouterr().out


def test_unhealthy_when_the_poll_loop_stalls(
    tmp_path: Path, server: HealthServer, capsys: pytest.CaptureFixture[str]
) -> None:
    server.options = dataclasses.replace(server.options, liveness_timeout=-1.0)
    cwd = config_dir(tmp_path, {"port": server.port})
    proc = fake_proc(tmp_path / "proc", {1: ["scicat-ingestor", "-c", "config.yml"]}, cwd)
    assert main([], proc) == 1
    out = capsys.readouterr().out
    assert out.startswith(f"unhealthy: http://127.0.0.1:{server.port}/health: 503 ")
    assert '"live": false' in out


Case = tuple[dict[int, list[str]], dict[str, object], int, str]


@pytest.mark.parametrize(
    "case",
    [
        ({1: ["sleep", "60"]}, {}, 1, "unhealthy: no scicat-ingestor daemon process found"),
        ({1: ["scicat-ingestor", "-c", "missing.yml"]}, {}, 1, "unhealthy: cannot read the"),
        ({1: ["scicat-ingestor", "-c", "config.yml"]}, {"port": "x"}, 1, "unhealthy: cannot read"),
        ({1: ["scicat-ingestor", "-c", "config.yml"]}, {"enabled": False}, 0, "health endpoint"),
    ],
)
def test_one_line_for_everything_else(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: Case
) -> None:
    processes, health_check, code, output = case
    cwd = config_dir(tmp_path, health_check)
    assert main([], fake_proc(tmp_path / "proc", processes, cwd)) == code
    out = capsys.readouterr().out
    assert out.startswith(output)
    assert out.count("\n") == 1


def test_an_endpoint_that_does_not_answer_is_named_with_the_cause(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """It printed '<urlopen error [Errno 111] Connection refused>'."""
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cwd = config_dir(tmp_path, {"host": "127.0.0.1", "port": port})
    processes = {1: ["scicat-ingestor", "-c", "config.yml"]}
    assert main([], fake_proc(tmp_path / "proc", processes, cwd)) == 1
    assert capsys.readouterr().out == (
        f"unhealthy: http://127.0.0.1:{port}/health: not answering "
        "(connection refused: nothing listens on that port)\n"
    )


def test_causes_in_plain_words() -> None:
    assert cause(urllib.error.URLError(TimeoutError()), 5) == "no answer within 5 s"
    gaierror = socket.gaierror(-2, "Name or service not known")
    assert cause(urllib.error.URLError(gaierror), 5) == (
        "host name not found: Name or service not known"
    )
