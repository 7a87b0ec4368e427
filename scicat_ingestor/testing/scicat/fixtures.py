"""pytest fixtures for the SciCat stand-in (``pytest_plugins = [...scicat.fixtures]``).

The OpenAPI validators are compiled once per process and profile (``load_validators`` is cached),
so a fresh stand-in per test starts in well under a millisecond after the first.

Both fixtures play backend ``5`` (API v3 and v4) unless the environment variable
``SCICAT_STANDIN_BACKEND`` names another profile (``4.5``), so the whole suite can be run against
4.5 with ``SCICAT_STANDIN_BACKEND=4.5 pytest``; ``scicat_standin_factory(backend="4.5")`` pins one.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from scicat_ingestor.testing.scicat import SciCatStandIn
from scicat_ingestor.testing.scicat.profiles import DEFAULT_BACKEND, profile

BACKEND_VARIABLE = "SCICAT_STANDIN_BACKEND"


def default_backend() -> str:
    """The fixtures' profile: ``SCICAT_STANDIN_BACKEND`` if set (checked), else backend 5."""
    backend = os.environ.get(BACKEND_VARIABLE) or DEFAULT_BACKEND
    try:
        profile(backend)
    except ValueError as exc:
        raise pytest.UsageError(f"{BACKEND_VARIABLE}: {exc}") from None
    return backend


@pytest.fixture
def scicat_standin() -> Iterator[SciCatStandIn]:
    """A running stand-in with default token, accounts and profile; stopped after the test."""
    with SciCatStandIn(backend=default_backend()) as standin:
        yield standin


@pytest.fixture
def scicat_standin_factory() -> Iterator[Callable[..., SciCatStandIn]]:
    """Start stand-ins with custom arguments (backend, token, accounts, port); all stopped
    afterwards."""
    started: list[SciCatStandIn] = []

    def start(**kwargs: Any) -> SciCatStandIn:
        kwargs.setdefault("backend", default_backend())
        standin = SciCatStandIn(**kwargs)
        standin.start()
        started.append(standin)
        return standin

    yield start
    for standin in reversed(started):
        standin.stop()
