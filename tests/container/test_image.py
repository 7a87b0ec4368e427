"""The image, built and run for real: broker and SciCat stand-in on the host, the container beside.

One container runs the image's default command with the documented volumes: the config directory
and the schemas read-only, the data read-only at /data (files directly in it, as announced), and
no /ingestor mount, so the image's own /ingestor volume must take the side files. It uses the host
network (the broker and the stand-in listen on 127.0.0.1) and a health port other than 8080, so
the HEALTHCHECK must follow the configuration. The tests run in file order; the last stops it.
"""

from __future__ import annotations

import json
import re
import statistics
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import yaml

from scicat_ingestor.testing.broker import TansuBroker, free_port
from scicat_ingestor.testing.container import REPO_ROOT, Docker, engine_unavailable
from scicat_ingestor.testing.filewriter import FakeFileWriter, wrdn_message
from scicat_ingestor.testing.scicat import SciCatStandIn

UNAVAILABLE = engine_unavailable()
if UNAVAILABLE is not None:
    pytest.skip(UNAVAILABLE, allow_module_level=True)

FILES = 5
PARTITIONS = 2
GRACE = 10.0
STOP_TIMEOUT = 30  # docker stop's wait before SIGKILL: above GRACE (docs/operator/docker.md)
RUNTIME_UID = "10001"
Record = Callable[[str, str], None]
# The per-file line: "<file>: <outcome>[, dataset <pid>], <seconds> s[: reason]".
DURATION = re.compile(r"(/data/\S+): (\w+)(?:, dataset \S+)?, ([0-9.]+) s")


@dataclass
class Deployment:
    docker: Docker
    name: str
    broker: TansuBroker
    standin: SciCatStandIn
    topic: str
    data: Path
    health_port: int
    started: float  # monotonic time `docker run` returned

    def inspect(self, template: str) -> str:
        return self.docker.run("inspect", "--format", template, self.name)

    def logs(self) -> str:
        return self.docker.run("logs", self.name, check=False)

    def answers(self, path: str) -> dict[str, Any] | None:
        """The health endpoint's JSON body when ``path`` answers 200 (host network), else None."""
        try:
            url = f"http://127.0.0.1:{self.health_port}{path}"
            with urllib.request.urlopen(url, timeout=2) as response:
                body: dict[str, Any] = json.load(response)
                return body if response.status == 200 else None
        except OSError:
            return None

    def wait_for(self, what: str, condition: Callable[[], bool], timeout: float = 90) -> float:
        """Seconds since `docker run` until ``condition()``; fails with the container's log."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                pytest.fail(f"{what}: not within {timeout:g} s; container log:\n{self.logs()}")
            time.sleep(0.2)
        return time.monotonic() - self.started


def write_config(directory: Path, broker: TansuBroker, standin: SciCatStandIn, port: int) -> str:
    topic = "container-test"
    config = {
        "kafka": {
            "topics": topic,
            "group_id": "scicat-ingestor-container-test",
            "bootstrap_servers": broker.bootstrap,
            "security_protocol": "plaintext",
            "sasl_username": "",
            "auto_offset_reset": "earliest",
            # Static membership from the host name (the compose example, docs/operator/docker.md).
            "consumer_config": {
                "group.instance.id": "container-test-1",
                "session.timeout.ms": 6000,
                "heartbeat.interval.ms": 1000,
            },
        },
        "scicat": {"host": standin.url, "timeout": 10},
        "ingestion": {
            "max_offline_ingestors": 4,
            "drain_grace_period": GRACE,
            "file_handling": {"data_directory": "/data"},
        },
        "health_check": {"port": port},
    }
    directory.mkdir()
    (directory / "config.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
    return topic


@pytest.fixture(scope="module")
def deployment(
    docker: Docker, image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    work = tmp_path_factory.mktemp("container")
    data = work / "data"
    data.mkdir()
    data.chmod(0o755)  # the runtime user (uid 10001) must be able to list it
    with TansuBroker(log_file=work / "tansu.log") as broker, SciCatStandIn() as standin:
        port = free_port()
        topic = write_config(work / "config", broker, standin, port)
        broker.create_topic(topic, PARTITIONS)
        secrets = work / "secrets.env"
        secrets.write_text(f"SCICAT_TOKEN={standin.token}\n", encoding="utf-8")
        name = f"scicat-ingestor-test-{uuid.uuid4().hex[:8]}"
        docker.run(
            "run", "--detach", "--name", name, "--network", "host",
            "--env-file", str(secrets), "--stop-timeout", str(STOP_TIMEOUT),
            # the image's HEALTHCHECK command, checked every second instead of every 30 s
            "--health-interval", "1s",
            "--volume", f"{work / 'config'}:/config:ro",
            "--volume", f"{REPO_ROOT / 'config' / 'schemas'}:/schemas:ro",
            "--volume", f"{data}:/data:ro",
            image,
        )  # fmt: skip
        started = time.monotonic()
        try:
            yield Deployment(docker, name, broker, standin, topic, data, port, started)
        finally:
            docker.run("rm", "--force", "--volumes", name, check=False)


def test_help_works(docker: Docker, image: str) -> None:
    out = docker.run("run", "--rm", "--network", "none", image, "--help")
    assert out.startswith("usage: scicat-ingestor")
    assert "run" in out


def test_image_carries_the_version_from_git(docker: Docker, image: str) -> None:
    """docker/build.sh passes the checkout's setuptools-scm version: the image has no .git."""
    expected = version("scicat-ingestor")
    out = docker.run("run", "--rm", "--network", "none", image, "--version")
    assert expected in out
    label = docker.run(
        "image", "inspect", "--format",
        '{{ index .Config.Labels "org.opencontainers.image.version" }}', image,
    )  # fmt: skip
    assert label.strip() == expected


def test_ca_bundle_for_pip_is_in_no_layer(docker: Docker, image: str) -> None:
    assert "BEGIN CERTIFICATE" not in docker.run("history", "--no-trunc", image)
    docker.run(
        "run", "--rm", "--network", "none", "--entrypoint", "sh", image,
        "-c", "test ! -e /run/secrets/ca-bundle",
    )  # fmt: skip


def test_becomes_healthy_on_the_configured_port(deployment: Deployment, record: Record) -> None:
    alive = deployment.wait_for("/health 200", lambda: deployment.answers("/health") is not None)
    healthy = deployment.wait_for(
        "Docker health status healthy",
        lambda: deployment.inspect("{{.State.Health.Status}}") == "healthy",
    )
    record("time to /health 200", f"{alive:.1f} s after docker run")
    record("time to Docker healthy", f"{healthy:.1f} s (--health-interval 1s; image: 30 s)")
    last = json.loads(deployment.inspect("{{json .State.Health.Log}}"))[-1]
    assert last["ExitCode"] == 0
    assert f":{deployment.health_port}/health: 200" in last["Output"]


def test_runs_as_the_non_root_user(deployment: Deployment) -> None:
    assert deployment.docker.run("exec", deployment.name, "id", "-u") == RUNTIME_UID
    status = deployment.docker.run("exec", deployment.name, "cat", "/proc/1/status")
    uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
    assert uid_line.split()[1:] == [RUNTIME_UID] * 4


def test_health_log_line_names_the_address_really_bound(deployment: Deployment) -> None:
    expected = f"Health endpoint listening on 0.0.0.0:{deployment.health_port} "
    deployment.wait_for("health log line", lambda: expected in deployment.logs())


def test_five_announced_files_become_five_datasets(deployment: Deployment, record: Record) -> None:
    standin = deployment.standin
    # Ready (broker connected, SciCat answering, /data listable) with both partitions assigned.
    ready = deployment.wait_for(
        "/ready 200, 2 partitions",
        lambda: (deployment.answers("/ready") or {}).get("assigned_partitions") == PARTITIONS,
    )
    record("time to ready, assigned", f"{ready:.1f} s after docker run")
    with FakeFileWriter(deployment.broker.bootstrap, deployment.topic, deployment.data) as writer:
        files = writer.write(FILES)
        announced = time.monotonic()
        for written in files:  # announced as the container sees them: directly in /data
            writer.produce_raw(wrdn_message(f"/data/{written.path.name}", written.job_id))
    deployment.wait_for("5 origdatablocks", lambda: len(standin.origdatablocks) >= FILES, 120)
    took = time.monotonic() - announced
    assert len(standin.datasets) == FILES
    assert len(standin.origdatablocks) == FILES
    listed = {Path(e["path"]).name for b in standin.origdatablocks for e in b["dataFileList"]}
    for written in files:
        assert written.path.name in listed
        assert f"{written.path.stem}.b2b" in listed
    side_files = deployment.docker.run("exec", deployment.name, "ls", "/ingestor").split()
    assert sorted(f for f in side_files if f.endswith(".b2b")) == sorted(
        f"{w.path.stem}.b2b" for w in files
    )
    per_file = [float(m[3]) for m in DURATION.finditer(deployment.logs()) if m[2] == "created"]
    assert len(per_file) == FILES
    size = sum(written.path.stat().st_size for written in files)
    record(
        "5-file run",
        f"{took:.2f} s announce → 5th datablock ({FILES / took:.1f} files/s, {size / 1e3:.0f} kB)",
    )
    record(
        "per-file ingest (log)",
        f"min {min(per_file):.3f} / median {statistics.median(per_file):.3f} / "
        f"max {max(per_file):.3f} s",
    )


def test_docker_stop_exits_zero_within_the_grace_period(
    deployment: Deployment, record: Record
) -> None:
    started = time.monotonic()
    deployment.docker.run("stop", deployment.name, timeout=STOP_TIMEOUT + 30)
    took = time.monotonic() - started
    assert deployment.inspect("{{.State.ExitCode}}") == "0", deployment.logs()
    assert took < GRACE, f"docker stop took {took:.1f} s"
    assert f"received SIGTERM: stopping, draining up to {GRACE:g} s" in deployment.logs()
    record("docker stop", f"{took:.2f} s, exit 0 (grace period {GRACE:g} s)")
