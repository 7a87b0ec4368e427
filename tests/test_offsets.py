"""The commit point never passes an unfinished message, whatever order files finish in."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from scicat_ingestor.sources.offsets import OffsetTracker, TopicPartition

TP = TopicPartition("t", 0)
TP1 = TopicPartition("t", 1)


def test_nothing_to_commit_before_any_message() -> None:
    tracker = OffsetTracker()
    tracker.assign(TP)
    assert tracker.committable() == {}


def test_unfinished_first_message_holds_the_commit() -> None:
    tracker = OffsetTracker()
    for offset in (5, 6, 7):
        tracker.add(TP, offset)
    tracker.done(TP, 6)
    tracker.done(TP, 7)
    assert tracker.committable() == {TP: 5}
    tracker.done(TP, 5)
    assert tracker.committable() == {TP: 8}


def test_commit_stops_at_the_gap() -> None:
    tracker = OffsetTracker()
    for offset in range(10):
        tracker.add(TP, offset)
    for offset in (0, 1, 2, 4, 5):
        tracker.done(TP, offset)
    assert tracker.committable() == {TP: 3}


def test_only_advanced_partitions_are_returned() -> None:
    tracker = OffsetTracker()
    tracker.add(TP, 0)
    tracker.add(TP1, 0)
    tracker.done(TP, 0)
    tracker.done(TP1, 0)
    tracker.mark_committed(tracker.committable())
    assert tracker.committable() == {}
    tracker.add(TP1, 1)
    tracker.done(TP1, 1)
    assert tracker.committable() == {TP1: 2}


def test_a_failed_commit_is_offered_again() -> None:
    tracker = OffsetTracker()
    tracker.add(TP, 0)
    tracker.done(TP, 0)
    assert tracker.committable() == {TP: 1}
    assert tracker.committable() == {TP: 1}


def test_forgotten_partition_ignores_late_completions_and_restarts_fresh() -> None:
    tracker = OffsetTracker()
    tracker.add(TP, 3)
    tracker.add(TP, 4)
    tracker.done(TP, 4)
    tracker.forget(TP)
    assert tracker.done(TP, 3) is False
    assert tracker.committable() == {}
    tracker.assign(TP)
    tracker.add(TP, 3)
    assert tracker.done(TP, 4) is False  # a completion from before the revoke
    assert tracker.committable() == {TP: 3}


def test_done_twice_and_unknown_offsets_are_harmless() -> None:
    tracker = OffsetTracker()
    tracker.add(TP, 0)
    assert tracker.done(TP, 0) is True
    assert tracker.done(TP, 0) is False
    assert tracker.done(TP, 9) is False
    assert tracker.unfinished(TP) == 0
    assert tracker.committable() == {TP: 1}


def test_commit_never_goes_backwards() -> None:
    tracker = OffsetTracker()
    tracker.add(TP, 10)
    tracker.done(TP, 10)
    tracker.mark_committed(tracker.committable())
    tracker.add(TP, 4)  # redelivered below the commit point
    assert tracker.committable() == {}


@given(
    st.lists(st.integers(min_value=1, max_value=3), min_size=1, max_size=60).flatmap(
        lambda gaps: st.tuples(st.just(gaps), st.permutations(range(len(gaps))))
    ),
    st.integers(min_value=0, max_value=1000),
)
def test_random_completion_order_never_commits_past_an_unfinished_offset(
    gaps_and_order: tuple[list[int], list[int]], start: int
) -> None:
    gaps, order = gaps_and_order
    offsets = []
    offset = start
    for gap in gaps:  # offsets may skip (compacted or transactional topics)
        offsets.append(offset)
        offset += gap
    tracker = OffsetTracker()
    for o in offsets:
        tracker.add(TP, o)
    unfinished = set(offsets)
    committed = -1
    for index in order:
        tracker.done(TP, offsets[index])
        unfinished.discard(offsets[index])
        proposed = tracker.committable()
        if proposed:
            point = proposed[TP]
            assert all(point <= o for o in unfinished)
            assert point > committed
            committed = point
            tracker.mark_committed(proposed)
    assert committed == offsets[-1] + 1
