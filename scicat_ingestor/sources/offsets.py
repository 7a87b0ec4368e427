"""Which offsets may be committed: per partition, the lowest offset whose message is not finished.

Files finish out of order (a slow file, a retry), but a Kafka commit means "everything before this
offset is done". Committing a later finished offset would lose the slow one on a crash, so the
commit for a partition never passes its lowest unfinished offset. Pure logic, no Kafka imports.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple


class TopicPartition(NamedTuple):
    topic: str
    partition: int


@dataclass
class _Partition:
    pending: list[int] = field(default_factory=list)  # heap; may hold finished offsets (lazy)
    unfinished: set[int] = field(default_factory=set)
    highest: int | None = None
    committed: int | None = None

    def next_offset(self) -> int | None:
        """The offset a commit may name now (the next message to read after a restart)."""
        while self.pending and self.pending[0] not in self.unfinished:
            heapq.heappop(self.pending)
        if self.pending:
            return self.pending[0]
        return None if self.highest is None else self.highest + 1


class OffsetTracker:
    """Unfinished offsets of the partitions this consumer owns; used by the poll thread only."""

    def __init__(self) -> None:
        self._partitions: dict[TopicPartition, _Partition] = {}

    def assign(self, tp: TopicPartition) -> None:
        """Start (again) without history: a re-assigned partition resumes at its commit."""
        self._partitions[tp] = _Partition()

    def __len__(self) -> int:
        """How many partitions are tracked (the assigned ones)."""
        return len(self._partitions)

    def forget(self, tp: TopicPartition) -> None:
        """Drop a revoked or lost partition; late completions for it are ignored."""
        self._partitions.pop(tp, None)

    def add(self, tp: TopicPartition, offset: int) -> None:
        """A message was received and is now unfinished."""
        part = self._partitions.setdefault(tp, _Partition())
        if offset in part.unfinished:
            return
        part.unfinished.add(offset)
        heapq.heappush(part.pending, offset)
        if part.highest is None or offset > part.highest:
            part.highest = offset

    def done(self, tp: TopicPartition, offset: int) -> bool:
        """The message is finished (ingested, skipped or dead-lettered); False if not tracked."""
        part = self._partitions.get(tp)
        if part is None or offset not in part.unfinished:
            return False
        part.unfinished.remove(offset)
        return True

    def unfinished(self, tp: TopicPartition) -> int:
        """How many messages of ``tp`` are not finished."""
        part = self._partitions.get(tp)
        return len(part.unfinished) if part else 0

    def committable(self) -> dict[TopicPartition, int]:
        """``{partition: next offset}`` for partitions whose commit point moved since last commit.

        Call ``mark_committed`` after a successful commit; until then the same offsets come back.
        """
        result: dict[TopicPartition, int] = {}
        for tp, part in self._partitions.items():
            offset = part.next_offset()
            if offset is not None and (part.committed is None or offset > part.committed):
                result[tp] = offset
        return result

    def mark_committed(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Record a successful commit so the same offsets are not committed again."""
        for tp, offset in offsets.items():
            part = self._partitions.get(tp)
            if part is not None and (part.committed is None or offset > part.committed):
                part.committed = offset
