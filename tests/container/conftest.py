"""The container tests' engine, image and measured figures (`make container-test` only).

`make test` does not collect this directory (see ``pytest_ignore_collect`` in tests/conftest.py).
The engine comes from docker/engine.sh: the running one, or (as root) a private dockerd started for
the session and stopped after it. Without any engine the tests are skipped with one line.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from scicat_ingestor.testing.container import (
    Docker,
    NoEngineError,
    build_image,
    start_engine,
    stop_engine,
)

IMAGE = "scicat-ingestor:latest"
Record = Callable[[str, str], None]

_FIGURES: dict[str, str] = {}


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The figures go just above pytest's closing summary line."""
    if _FIGURES:
        terminalreporter.section("container figures")
        for name, value in _FIGURES.items():
            terminalreporter.write_line(f"{name:<24} {value}")


@pytest.fixture(scope="session")
def record() -> Record:
    """Note a figure (build time, image size, timings of the run) for the closing summary."""
    return _FIGURES.__setitem__


@pytest.fixture(scope="session")
def docker(record: Record) -> Iterator[Docker]:
    started = time.monotonic()
    try:
        engine = start_engine()
    except NoEngineError as exc:
        pytest.skip(f"no container engine can run here: {exc}")
    record("engine ready", f"{time.monotonic() - started:.1f} s ({engine.said})")
    try:
        yield engine.docker
    finally:
        stop_engine(engine)


@pytest.fixture(scope="session")
def image(docker: Docker, record: Record) -> str:
    started = time.monotonic()
    build_image(docker, IMAGE)
    record("build (incl. base)", f"{time.monotonic() - started:.1f} s")
    size = int(docker.run("image", "inspect", "--format", "{{.Size}}", IMAGE))
    record("image size", f"{size / 1e6:.0f} MB")
    return IMAGE
