"""What the daemon is doing right now, readable from other threads (the health server) without locks
on the daemon itself.

The poll thread writes, anyone reads; each read returns a consistent snapshot. No imports from other
project modules, so both ``daemon`` and ``ops.health`` can depend on it without a cycle.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class StateSnapshot:
    """One consistent view of the service state."""

    started_monotonic: float
    last_poll_monotonic: float | None = None
    assigned: bool = False
    assigned_partitions: int = 0
    broker_connected: bool = False
    in_flight: int = 0
    paused: bool = False
    scicat_failing: bool = False
    dead_letter_error: str = ""  # why letters cannot be stored now ("" while they can)
    stopping: bool = False


class ServiceState:
    """Thread-safe holder of a ``StateSnapshot``; setters replace the snapshot under a lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._snapshot = StateSnapshot(started_monotonic=time.monotonic())

    def snapshot(self) -> StateSnapshot:
        with self._lock:
            return self._snapshot

    def polled(self) -> None:
        self._update(last_poll_monotonic=time.monotonic())

    def set_assignment(self, partitions: int) -> None:
        self._update(assigned=partitions > 0, assigned_partitions=partitions)

    def set_broker_connected(self, connected: bool) -> None:
        self._update(broker_connected=connected)

    def set_in_flight(self, count: int) -> None:
        self._update(in_flight=count)

    def set_paused(self, paused: bool) -> None:
        self._update(paused=paused)

    def set_scicat_failing(self, failing: bool) -> None:
        self._update(scicat_failing=failing)

    def set_dead_letter_error(self, error: str) -> None:
        self._update(dead_letter_error=error)

    def set_stopping(self) -> None:
        self._update(stopping=True)

    def _update(self, **changes: object) -> None:
        with self._lock:
            self._snapshot = replace(self._snapshot, **changes)  # type: ignore[arg-type]
