"""pytest fixtures for the SciCat stand-in (``pytest_plugins = [...scicat.fixtures]``).

The OpenAPI validators are compiled once per process (``load_validators`` is cached), so a
fresh stand-in per test starts in well under a millisecond after the first.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from scicat_ingestor.testing.scicat import SciCatStandIn


@pytest.fixture
def scicat_standin() -> Iterator[SciCatStandIn]:
    """A running stand-in with default token and accounts; stopped after the test."""
    with SciCatStandIn() as standin:
        yield standin


@pytest.fixture
def scicat_standin_factory() -> Iterator[Callable[..., SciCatStandIn]]:
    """Start stand-ins with custom arguments (token, accounts, port); all stopped afterwards."""
    started: list[SciCatStandIn] = []

    def start(**kwargs: Any) -> SciCatStandIn:
        standin = SciCatStandIn(**kwargs)
        standin.start()
        started.append(standin)
        return standin

    yield start
    for standin in reversed(started):
        standin.stop()
