"""An in-memory ``Source`` for daemon unit tests: scripted partitions, rebalances, recorded commits.

It behaves like the Kafka consumer where the daemon can tell: messages come in offset order per
partition; a (re)assigned partition restarts at its committed offset, so unfinished messages are
redelivered; assignment changes are delivered inside ``poll`` on the poll thread, with the revoked
partitions still assigned during ``on_revoke`` (so its commit lands) and lost ones already gone
during ``on_lost`` (so no commit can). Test threads produce messages and schedule rebalances;
``poll`` wakes up at once when either happens.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from scicat_ingestor.sources.base import RebalanceListener, Record
from scicat_ingestor.sources.offsets import TopicPartition


@dataclass(frozen=True)
class _Event:
    kind: str  # "assign", "revoke" or "lost"
    partitions: tuple[TopicPartition, ...]


class FakeSource:
    """One topic with ``partitions`` partitions, all assigned at ``start`` unless told otherwise."""

    def __init__(self, topic: str = "wrdn", partitions: int = 1, assign_at_start: bool = True):
        self.topic = topic
        self._logs: dict[TopicPartition, list[tuple[bytes | None, bytes | None]]] = {
            TopicPartition(topic, p): [] for p in range(partitions)
        }
        self._assign_at_start = assign_at_start
        self._positions: dict[TopicPartition, int] = {}  # assigned partitions, next offset
        self._events: list[_Event] = []
        self._handled = 0
        self._scheduled = 0
        self._changed = threading.Condition()
        self._listener: RebalanceListener | None = None
        self._paused = False
        self.committed: dict[TopicPartition, int] = {}
        self.commits: list[dict[TopicPartition, int]] = []  # every non-empty commit, in order
        self.finished_records: list[
            tuple[Record, str]
        ] = []  # (record, label) as the daemon ends it
        self.rebalancing = False  # True while a listener callback runs
        self.closed = False

    def tp(self, partition: int) -> TopicPartition:
        return TopicPartition(self.topic, partition)

    # -- the test's side (any thread) -----------------------------------------------------------

    def produce(self, partition: int, value: bytes | None, key: bytes | None = None) -> int:
        """Append a message; returns its offset."""
        with self._changed:
            log = self._logs[self.tp(partition)]
            log.append((value, key))
            self._changed.notify_all()
            return len(log) - 1

    def assign(self, *partitions: int) -> None:
        self._schedule("assign", partitions)

    def revoke(self, *partitions: int) -> None:
        self._schedule("revoke", partitions)

    def lose(self, *partitions: int) -> None:
        self._schedule("lost", partitions)

    def rebalanced(self) -> bool:
        """Every scheduled assignment change has been handled by the listener."""
        with self._changed:
            return self._handled == self._scheduled

    def drained(self) -> bool:
        """Every message of every assigned partition has been handed out."""
        with self._changed:
            return all(pos >= len(self._logs[tp]) for tp, pos in self._positions.items())

    def _schedule(self, kind: str, partitions: Sequence[int]) -> None:
        with self._changed:
            self._events.append(_Event(kind, tuple(self.tp(p) for p in partitions)))
            self._scheduled += 1
            self._changed.notify_all()

    # -- the Source protocol (poll thread) ------------------------------------------------------

    @property
    def paused(self) -> bool:
        return self._paused

    def start(self, listener: RebalanceListener) -> None:
        self._listener = listener
        if self._assign_at_start:
            self.assign(*(tp.partition for tp in self._logs))

    def poll(self, timeout: float) -> Record | None:
        event = self._next_event()
        if event is not None:
            self._deliver(event)
            return None
        with self._changed:
            record = self._next_record()
            if record is None and timeout > 0:
                self._changed.wait(timeout)
                record = self._next_record()
            return record

    def pause(self) -> None:
        self._paused = True

    def resume(self) -> None:
        self._paused = False

    def commit(self, offsets: Mapping[TopicPartition, int]) -> dict[TopicPartition, int]:
        """Commits only for assigned partitions, as a group coordinator would."""
        with self._changed:
            done = {tp: o for tp, o in offsets.items() if tp in self._positions}
        if done:
            self.committed.update(done)
            self.commits.append(done)
        return done

    def finished(self, record: Record, label: str) -> None:
        self.finished_records.append((record, label))

    def close(self) -> None:
        self.closed = True

    # -- internals ------------------------------------------------------------------------------

    def _next_event(self) -> _Event | None:
        with self._changed:
            return self._events.pop(0) if self._events else None

    def _next_record(self) -> Record | None:
        if self._paused:
            return None
        for tp, position in sorted(self._positions.items()):
            log = self._logs[tp]
            if position < len(log):
                self._positions[tp] = position + 1
                value, key = log[position]
                return Record(tp.topic, tp.partition, position, value, key)
        return None

    def _deliver(self, event: _Event) -> None:
        if self._listener is None:
            raise RuntimeError("FakeSource.poll() before start()")
        self.rebalancing = True
        try:
            if event.kind == "assign":
                with self._changed:
                    for tp in event.partitions:
                        self._positions[tp] = self.committed.get(tp, 0)
                self._listener.on_assign(list(event.partitions))
            elif event.kind == "revoke":
                self._listener.on_revoke(list(event.partitions))
                self._unassign(event.partitions)
            else:
                self._unassign(event.partitions)
                self._listener.on_lost(list(event.partitions))
        finally:
            self.rebalancing = False
            with self._changed:
                self._handled += 1

    def _unassign(self, partitions: Sequence[TopicPartition]) -> None:
        with self._changed:
            for tp in partitions:
                self._positions.pop(tp, None)
