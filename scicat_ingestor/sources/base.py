"""What every source gives the daemon: records, and the Kafka-shaped contract they keep."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from scicat_ingestor.sources.offsets import TopicPartition
from scicat_ingestor.sources.triage import WritingFinished


class SourceError(RuntimeError):
    """Kafka cannot be used (unreachable at start, fatal client error); the daemon stops."""


@dataclass(frozen=True)
class Record:
    """One consumed message, detached from the client objects.

    ``announcement``: the announced file, for a source that knows it without any bytes to decode
    (the watch source); the daemon takes it instead of triaging ``value`` (then None).
    """

    topic: str
    partition: int
    offset: int
    value: bytes | None
    key: bytes | None = None
    announcement: WritingFinished | None = None

    @property
    def tp(self) -> TopicPartition:
        return TopicPartition(self.topic, self.partition)


class RebalanceListener(Protocol):
    """Receives partition-assignment changes (called inside ``KafkaSource.poll``)."""

    def on_assign(self, partitions: Sequence[TopicPartition]) -> None: ...

    def on_revoke(self, partitions: Sequence[TopicPartition]) -> None: ...

    def on_lost(self, partitions: Sequence[TopicPartition]) -> None: ...


class Source(Protocol):
    """What the daemon consumes from: ``KafkaSource``, ``watch.WatchSource`` or
    ``testing.fake_source.FakeSource``. Every method is called on the poll thread.

    The contract is Kafka's; a source without partitions (the watch source) fits it like this:

    - **Address**: each record has a topic, partition and offset; offsets grow within a partition.
      A source without partitions gives all its records one partition: its name as the topic,
      partition 0, a sequence of its own as the offset. Metrics, log lines and dead letters name
      records by this address whatever the source.
    - **Assignment**: the daemon tracks and commits only assigned partitions. Kafka's changes
      reach ``listener`` from inside ``poll`` (librdkafka's rebalance callbacks); a source without
      partitions assigns its one partition in ``start`` and never revokes or loses it.
    - **pause / resume**: no records while paused; ``poll`` is still called (for Kafka it keeps
      the group membership).
    - **commit**: the daemon's ``{partition: next offset}`` once every record before it ended; the
      answer is what is now durable. A source that records each record's end in ``finished``
      has nothing left to store and answers with the offsets as given.
    - **finished**: each record's end, once (its dataset exists or its letter is stored); Kafka
      keeps no per-record progress and ignores it.
    """

    @property
    def paused(self) -> bool: ...

    def start(self, listener: RebalanceListener) -> None: ...

    def poll(self, timeout: float) -> Record | None: ...

    def pause(self) -> None: ...

    def resume(self) -> None: ...

    def commit(self, offsets: Mapping[TopicPartition, int]) -> dict[TopicPartition, int]: ...

    def finished(self, record: Record, label: str) -> None:
        """``record``'s file ended as ``label`` (its dataset exists or its letter is stored)."""

    def close(self) -> None: ...
