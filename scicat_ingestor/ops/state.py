"""What the daemon is doing right now, readable from other threads (the health server) without locks
on the daemon itself.

The poll thread writes, anyone reads; each read returns a consistent snapshot. No imports from other
project modules, so both ``daemon`` and ``ops.health`` can depend on it without a cycle.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime


@dataclass(frozen=True)
class SchemaStatus:
    """The schema set in use (shown on ``/ready``; a failed reload never makes it unready)."""

    count: int
    newest_mtime: float | None  # epoch seconds of the newest loaded file, None without files
    loaded_at: float  # epoch seconds of the last successful load
    last_error: str = ""  # the failed reload's errors ("; "-joined), "" after a good one
    last_error_at: float | None = None

    def as_json(self) -> dict[str, object]:
        return {
            "count": self.count,
            "newest_mtime": _iso(self.newest_mtime),
            "loaded_at": _iso(self.loaded_at),
            "last_error": self.last_error,
            "last_error_at": _iso(self.last_error_at),
        }


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class WatchStatus:
    """The directory watcher (``ingestion.trigger: watch``), as ``/ready`` shows it."""

    directories: tuple[str, ...]
    observer_alive: bool
    waiting_to_settle: int
    queued: int
    handed_over: int
    last_rescan_monotonic: float | None
    rescan_interval: float
    events: int
    found_by_rescan: int


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
    schemas: SchemaStatus | None = None
    watch: WatchStatus | None = None  # None: the Kafka trigger


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

    def set_watch(self, status: WatchStatus) -> None:
        self._update(watch=status)

    def set_stopping(self) -> None:
        self._update(stopping=True)

    def set_schemas(self, status: SchemaStatus) -> None:
        self._update(schemas=status)

    def _update(self, **changes: object) -> None:
        with self._lock:
            self._snapshot = replace(self._snapshot, **changes)  # type: ignore[arg-type]
