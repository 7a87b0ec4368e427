"""The Docker side of the container tests: an engine (docker/engine.sh) and the docker client.

``docker/engine.sh start`` uses the engine that answers or, as root, starts a private dockerd (and
``stop`` stops only that one); ``docker/build.sh`` is ``make image``. Both live in the repository,
so these helpers work from a checkout only.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
NO_ENGINE = 3  # docker/engine.sh start: no container engine can run here


class NoEngineError(RuntimeError):
    """No container engine can run here; ``str()`` is the one-line reason."""


@dataclass(frozen=True)
class Docker:
    """The docker client pointed at one engine."""

    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))

    def run(self, *args: str, check: bool = True, timeout: float = 120) -> str:
        """stdout of ``docker ARGS`` (stripped); AssertionError with stderr when it fails."""
        done = subprocess.run(
            ["docker", *args],
            env=dict(self.env),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)}: exit {done.returncode}\n{done.stderr}")
        return done.stdout.strip()


def _script(
    name: str, *args: str, env: Mapping[str, str] | None = None, timeout: float = 900
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(REPO_ROOT / "docker" / name), *args],
        env=None if env is None else dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def engine_unavailable() -> str | None:
    """Why no engine can run here (one line), or None when ``start_engine`` can give one."""
    done = _script("engine.sh", "check", timeout=60)
    if done.returncode == NO_ENGINE:
        lines = done.stderr.strip().splitlines()
        return lines[-1].removeprefix("engine: ") if lines else "docker/engine.sh found no engine"
    return None


@dataclass(frozen=True)
class Engine:
    """The engine ``start_engine`` found or started; ``pid`` is set only when it started it."""

    docker: Docker
    pid: str
    said: str  # the script's last line: which engine, and whether it was started


def start_engine() -> Engine:
    """A running engine (started if needed); NoEngineError where none can run."""
    done = _script("engine.sh", "start")
    lines = done.stderr.strip().splitlines()
    if done.returncode == NO_ENGINE:
        raise NoEngineError(lines[-1] if lines else "docker/engine.sh found no engine")
    if done.returncode != 0:
        raise RuntimeError(f"docker/engine.sh start failed:\n{done.stderr}")
    values = dict(
        word.partition("=")[::2]
        for line in done.stdout.splitlines()
        for word in shlex.split(line)
        if "=" in word
    )
    env = dict(os.environ)
    if values.get("DOCKER_HOST"):
        env["DOCKER_HOST"] = values["DOCKER_HOST"]
    return Engine(Docker(env), values.get("ENGINE_PID", ""), lines[-1] if lines else "")


def stop_engine(engine: Engine) -> None:
    """Stop the engine if ``start_engine`` started it."""
    done = _script("engine.sh", "stop", engine.pid)
    if done.returncode != 0:
        raise RuntimeError(f"docker/engine.sh stop failed:\n{done.stderr}")


def build_image(docker: Docker, tag: str) -> None:
    """``make image``'s build (base image made or reused on the way)."""
    done = _script("build.sh", tag, env=docker.env)
    if done.returncode != 0:
        raise RuntimeError(f"docker/build.sh failed:\n{done.stderr[-4000:]}")
