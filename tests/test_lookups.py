"""SC lookup cache: answers reused per URL for a while, errors never, callers cannot share state."""

from __future__ import annotations

from typing import Any

import pytest

from scicat_ingestor.scicat import lookups
from scicat_ingestor.scicat.lookups import LookupCache


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class _Backend:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.fail: Exception | None = None

    def __call__(self, url: str) -> Any:
        self.calls.append(url)
        if self.fail is not None:
            raise self.fail
        return {"url": url, "n": len(self.calls), "items": [1, 2]}


def test_answer_reused_until_it_expires() -> None:
    backend, clock = _Backend(), _Clock()
    cache = LookupCache(backend, 10, clock)
    first = cache.get("proposals/1")
    clock.now += 9.9
    assert cache.get("proposals/1") == first
    assert cache.get("proposals/2")["n"] == 2  # per URL
    clock.now += 0.2
    assert cache.get("proposals/1")["n"] == 3
    assert backend.calls == ["proposals/1", "proposals/2", "proposals/1"]


def test_errors_are_asked_again() -> None:
    backend = _Backend()
    cache = LookupCache(backend, 60, _Clock())
    backend.fail = LookupError("404")
    for _ in range(2):
        with pytest.raises(LookupError):
            cache.get("proposals/new")
    backend.fail = None
    assert cache.get("proposals/new")["n"] == 3


def test_zero_seconds_asks_every_time() -> None:
    backend = _Backend()
    cache = LookupCache(backend, 0, _Clock())
    cache.get("x")
    cache.get("x")
    assert len(backend.calls) == 2


def test_a_caller_changing_its_answer_does_not_change_the_next_one() -> None:
    cache = LookupCache(_Backend(), 60, _Clock())
    first = cache.get("x")
    first["items"].append(3)
    second = cache.get("x")
    second["url"] = "changed"
    assert cache.get("x") == {"url": "x", "n": 1, "items": [1, 2]}


def test_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lookups, "MAX_ENTRIES", 3)
    backend = _Backend()
    cache = LookupCache(backend, 60, _Clock())
    for url in ("a", "b", "c", "d", "b", "a"):
        cache.get(url)
    # "a" was the oldest when "d" came in; "b" was still there
    assert backend.calls == ["a", "b", "c", "d", "a"]
