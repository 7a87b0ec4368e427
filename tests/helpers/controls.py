"""A clock and an executor the test controls, for the daemon's ``clock`` and ``executor``: retries,
commit intervals and grace periods then run on the test's time, not the wall clock's."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


class FakeClock:
    """Monotonic seconds that move only when ``advance`` is called (from any thread)."""

    def __init__(self) -> None:
        self._now = 1000.0
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds


class InlineExecutor(Executor):
    """Runs each submitted call at once, on the submitting thread: the daemon's attempts then
    finish inside its loop pass, in the order they were started."""

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        future: Future[T] = Future()
        future.set_running_or_notify_cancel()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # handed to the future, as a pool would
            future.set_exception(exc)
        return future
