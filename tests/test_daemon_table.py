"""The daemon's decisions, one row each, driven by the in-memory ``FakeSource`` (no broker).

Each row: messages per partition, a script of events (rebalances, SciCat and sink outages, stop),
and what must come out: the committed offsets, the stored dead letters and the file outcomes.
A step waits for something the daemon must do (and fails the row if it does not happen).

The daemon runs on a ``FakeClock``: each loop pass (one ``poll``) takes ``PASS`` seconds of it,
and a step moves it further where a row needs a grace period or a long retry delay to pass
(``time_passes``, ``Harness.stop``); no row waits on the wall clock. Rows whose files never hold
an attempt run them inline.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

import pytest
from streaming_data_types import serialise_f144

from helpers.controls import FakeClock, InlineExecutor
from scicat_ingestor.config.model import IngestorConfig, build
from scicat_ingestor.daemon.deadletters import DeadLetter, DeadLetters, Done
from scicat_ingestor.daemon.loop import Daemon
from scicat_ingestor.ingest.outcome import Created, DryRun, Outcome, Permanent, Transient
from scicat_ingestor.ingest.pipeline import Job
from scicat_ingestor.ops.state import ServiceState
from scicat_ingestor.sources.base import Record
from scicat_ingestor.testing.fake_source import FakeSource
from scicat_ingestor.testing.filewriter import run_start_message, wrdn_message

WAIT = 10.0  # wall-clock seconds a step may wait for the daemon
GRACE = 60.0  # fake seconds: passes only when a row says so (``time_passes``, ``stop``)
PASS = 0.1  # fake seconds per loop pass (an idle poll's timeout, as in production)
IDLE_WAIT = 0.002  # wall-clock seconds an idle loop pass waits for a message or an attempt
COMMIT_INTERVAL = 0.05  # fake seconds
POISON = b"\x80\x81 not a flatbuffer"
SKIP = serialise_f144("temperature", 21.5, 0)


def wrdn(name: str) -> bytes:
    return wrdn_message(f"/data/{name}.hdf", f"job-{name}")


def pl72(name: str) -> bytes:
    """The run start of ``wrdn(name)``'s file (a sample job with sample ingestion on)."""
    return run_start_message(f"/data/{name}.hdf", f"job-{name}")


# -- the stand-ins ------------------------------------------------------------------------------

Plan = Literal["ok", "hold", "hold-once", "hold-then-refuse", "refuse", "not-ready", "not-ready-2"]


class ScriptedIngestor:
    """Answers per file as its plan says; a SciCat outage (``scicat``) answers every call."""

    def __init__(self, plans: dict[str, Plan], dry_run: bool) -> None:
        self.plans = plans
        self.dry_run = dry_run
        self.calls: Counter[str] = Counter()
        self.running: Counter[str] = Counter()
        self.gates: dict[str, threading.Event] = {name: threading.Event() for name in plans}
        self.scicat: Literal["", "scicat", "scicat-auth"] = ""
        self._lock = threading.Lock()

    def ingest(self, job: Job) -> Outcome:
        name = job.file_path.removeprefix("/data/").removesuffix(".hdf")
        plan = self.plans.get(name, "ok")
        with self._lock:
            self.calls[name] += 1
            call = self.calls[name]
            self.running[name] += 1
        try:
            if plan.startswith("hold") and (plan != "hold-once" or call == 1):
                self.gates[name].wait(WAIT)
            if self.scicat:
                return Transient("SciCat says no", self.scicat)
            if plan in ("refuse", "hold-then-refuse"):
                return Permanent(f"{job.file_path}: not an HDF5 file")
            if plan == "not-ready" or (plan == "not-ready-2" and call <= 2):
                return Transient(f"{job.file_path}: locked", "file")
            return DryRun(job.job_id) if self.dry_run else Created(job.job_id)
        finally:
            with self._lock:
                self.running[name] -= 1

    def release_all(self) -> None:
        for gate in self.gates.values():
            gate.set()


class SwitchableSink:
    """A dead-letter sink that stores letters in memory, or fails while ``down``."""

    name = "test.dead_letter.sink"
    label = "test"

    def __init__(self) -> None:
        self.down = False
        self.stored: list[DeadLetter] = []

    def write(self, letter: DeadLetter, done: Done) -> None:
        if self.down:
            done("No space left on device")
        else:
            self.stored.append(letter)
            done(None)

    def poll(self) -> None:
        """Answers are given in ``write``."""

    def close(self, timeout: float) -> None:
        """Nothing to release."""


# -- the harness --------------------------------------------------------------------------------


class PassingSource(FakeSource):
    """``FakeSource`` whose every ``poll`` (one daemon loop pass) moves the clock by ``PASS``."""

    def __init__(self, clock: FakeClock, partitions: int) -> None:
        super().__init__(partitions=partitions)
        self.clock = clock
        self.passes = 0

    def poll(self, timeout: float) -> Record | None:
        self.passes += 1
        self.clock.advance(PASS)
        return super().poll(timeout)


@dataclass
class Harness:
    source: PassingSource
    ingestor: ScriptedIngestor
    sink: SwitchableSink
    state: ServiceState
    daemon: Daemon
    thread: threading.Thread
    clock: FakeClock
    code: list[int] = field(default_factory=list)

    def wait(self, condition: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + WAIT
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(0.001)

    def passes_go_by(self, count: int) -> None:
        """Wait until the daemon made ``count`` more loop passes."""
        target = self.source.passes + count
        self.wait(lambda: self.source.passes >= target, f"{count} loop passes")

    def committed(self) -> dict[int, int]:
        return {tp.partition: o for tp, o in self.source.committed.items()}

    def stop(self) -> None:
        """Request the stop, let the drain apply what finished, then let its grace period pass:
        what still runs is left."""
        self.daemon.request_stop("row over")
        target = self.source.passes + 2
        self.wait(lambda: self.source.passes >= target or not self.thread.is_alive(), "a drain")
        self.clock.advance(GRACE)
        self.thread.join(WAIT)
        assert not self.thread.is_alive(), "daemon did not stop"


Step = Callable[[Harness], None]


def running(name: str) -> Step:
    return lambda h: h.wait(lambda: h.ingestor.running[name] > 0, f"{name} running")


def called(name: str, times: int) -> Step:
    def step(h: Harness) -> None:
        h.wait(lambda: h.ingestor.calls[name] >= times, f"{name} called {times} times")
        h.wait(lambda: h.ingestor.running[name] == 0, f"{name} attempt over")

    return step


def duplicates(count: int) -> Step:
    return lambda h: h.wait(lambda: h.daemon.totals.duplicates == count, f"{count} duplicate(s)")


def release(name: str) -> Step:
    return lambda h: h.ingestor.gates[name].set()


def revoke(*partitions: int) -> Step:
    return lambda h: h.source.revoke(*partitions)


def lose(*partitions: int) -> Step:
    return lambda h: h.source.lose(*partitions)


def assign(*partitions: int) -> Step:
    return lambda h: h.source.assign(*partitions)


def rebalancing(h: Harness) -> None:
    h.wait(lambda: h.source.rebalancing, "a rebalance callback running")


def rebalanced(h: Harness) -> None:
    h.wait(h.source.rebalanced, "the rebalance handled")


def time_passes(seconds: float, until: Callable[[Harness], bool], what: str) -> Step:
    """The clock moves on by ``seconds`` at a time until ``until`` holds: a deadline the daemon
    sets after the first move is passed by the next (no loop pass runs during a rebalance
    callback, so its grace period needs this)."""

    def step(h: Harness) -> None:
        def moved_on() -> bool:
            h.clock.advance(seconds)
            return until(h)

        h.wait(moved_on, what)

    return step


def scicat(cause: Literal["", "scicat", "scicat-auth"]) -> Step:
    def step(h: Harness) -> None:
        h.ingestor.scicat = cause

    return step


def sink(down: bool) -> Step:
    def step(h: Harness) -> None:
        h.sink.down = down

    return step


def paused(h: Harness) -> None:
    h.wait(lambda: h.state.snapshot().paused, "intake paused")


def sink_failing(h: Harness) -> None:
    h.wait(lambda: bool(h.state.snapshot().dead_letter_error), "the sink failure noticed")
    assert "test.dead_letter.sink: No space left on device" in h.state.snapshot().dead_letter_error


def retried(cause: str, times: int) -> Step:
    return lambda h: h.wait(lambda: h.daemon.totals.retries[cause] >= times, f"{times} retries")


def commits_held(expected: dict[int, int]) -> Step:
    """The committed offsets reach ``expected`` and stay there for ten commit intervals."""

    def step(h: Harness) -> None:
        h.wait(lambda: h.committed() == expected, f"commits {expected}")
        h.passes_go_by(round(10 * COMMIT_INTERVAL / PASS) + 1)
        assert h.committed() == expected

    return step


def stop(h: Harness) -> None:
    h.stop()


@dataclass(frozen=True)
class Row:
    name: str
    messages: list[tuple[int, bytes | None]]  # (partition, value), produced in this order
    commits: dict[int, int]  # committed offsets at the end
    letters: list[tuple[int, int]] = field(default_factory=list)  # (partition, offset) stored
    files: dict[str, int] = field(default_factory=dict)  # daemon.totals.files at the end
    steps: list[Step] = field(default_factory=list)
    plans: dict[str, Plan] = field(default_factory=dict)
    partitions: int = 1
    sink_down: bool = False
    scicat: Literal["", "scicat", "scicat-auth"] = ""
    dry_run: bool = False
    calls: dict[str, int] = field(default_factory=dict)  # ingest calls per file, where it matters
    config: dict[str, Any] = field(default_factory=dict)  # ingestion.* overrides
    samples: dict[str, int] = field(default_factory=dict)  # daemon.totals.samples at the end
    sample_ingestion: bool = False  # the scripted ingestor also gets the pl72 sample jobs


ROWS = [
    Row(
        "a run start without sample ingestion is skipped and committed",
        [(0, pl72("a")), (0, wrdn("a"))],
        {0: 2},
        files={"created": 1},
        calls={"a": 1},
    ),
    Row(
        "a run start and its file are separate work: one sample, one dataset",
        [(0, pl72("a")), (0, wrdn("a"))],
        {0: 2},
        files={"created": 1},
        samples={"created": 1},
        calls={"a": 2},
        sample_ingestion=True,
    ),
    Row(
        "a run announced twice while its sample is in flight makes one sample",
        [(0, pl72("a")), (0, pl72("a"))],
        {0: 2},
        plans={"a": "hold"},
        samples={"created": 1},
        calls={"a": 1},
        steps=[running("a"), duplicates(1), release("a")],
        sample_ingestion=True,
    ),
    Row(
        "a run start whose file never becomes readable is dead-lettered",
        [(0, pl72("a")), (0, wrdn("b"))],
        {0: 2},
        letters=[(0, 0)],
        plans={"a": "not-ready"},
        files={"created": 1},
        samples={"dead_lettered": 1},
        calls={"a": 3},
        sample_ingestion=True,
    ),
    Row(
        "a run start during a SciCat outage is retried, never dead-lettered, then created",
        [(0, pl72("a"))],
        {0: 1},
        scicat="scicat",
        samples={"created": 1},
        steps=[retried("scicat", 4), commits_held({0: 0}), scicat("")],
        sample_ingestion=True,
    ),
    Row(
        "files in order are committed to the end",
        [(0, wrdn("a")), (0, wrdn("b"))],
        {0: 2},
        files={"created": 2},
    ),
    Row(
        "a slow first file holds the commit until it finishes",
        [(0, wrdn("a")), (0, wrdn("b")), (0, wrdn("c"))],
        {0: 3},
        plans={"a": "hold"},
        files={"created": 3},
        steps=[called("b", 1), called("c", 1), commits_held({0: 0}), release("a")],
    ),
    Row(
        "poison gets one letter, skips are finished, both committed",
        [(0, wrdn("a")), (0, POISON), (0, SKIP), (0, wrdn("b"))],
        {0: 4},
        letters=[(0, 1)],
        files={"created": 2},
    ),
    Row(
        "a refused file is dead-lettered, then committed",
        [(0, wrdn("a")), (0, wrdn("b"))],
        {0: 2},
        letters=[(0, 0)],
        plans={"a": "refuse"},
        files={"dead_lettered": 1, "created": 1},
    ),
    Row(
        "a file failing on open past its retries is dead-lettered",
        [(0, wrdn("a")), (0, wrdn("b"))],
        {0: 2},
        letters=[(0, 0)],
        plans={"a": "not-ready"},
        files={"dead_lettered": 1, "created": 1},
        calls={"a": 3},
    ),
    Row(
        "a file not ready twice, then readable, is ingested",
        [(0, wrdn("a"))],
        {0: 1},
        plans={"a": "not-ready-2"},
        files={"created": 1},
        calls={"a": 3},
    ),
    Row(
        "the same file announced twice while in flight is ingested once",
        [(0, wrdn("a")), (0, wrdn("a"))],
        {0: 2},
        plans={"a": "hold"},
        files={"created": 1},
        calls={"a": 1},
        steps=[
            running("a"),
            duplicates(1),
            release("a"),
        ],
    ),
    Row(
        "a duplicate of a refused file finishes with its one letter",
        [(0, wrdn("a")), (0, wrdn("a"))],
        {0: 2},
        letters=[(0, 0)],
        plans={"a": "hold-then-refuse"},
        files={"dead_lettered": 1},
        steps=[running("a"), duplicates(1), release("a")],
    ),
    Row(
        "revoke: work finishing within the grace period is committed",
        [(0, wrdn("a")), (0, wrdn("b"))],
        {0: 2},
        plans={"a": "hold"},
        files={"created": 2},
        steps=[called("b", 1), running("a"), revoke(0), rebalancing, release("a"), rebalanced],
    ),
    Row(
        "revoke: work running past the grace period is left for the new owner",
        [(0, wrdn("a")), (0, wrdn("b"))],
        {0: 2},
        plans={"a": "hold-once"},
        files={"created": 3},
        calls={"a": 2, "b": 2},
        steps=[
            called("b", 1),
            running("a"),
            revoke(0),
            time_passes(GRACE, lambda h: h.source.rebalanced(), "the grace period over"),
            commits_held({0: 0}),
            release("a"),
            assign(0),
            rebalanced,
        ],
    ),
    Row(
        "revoke: work waiting for a file retry is dropped at once, redelivered later",
        [(0, wrdn("a"))],
        {0: 1},
        plans={"a": "not-ready-2"},
        config={
            "file_handling": {"data_file_open_max_tries": 3, "data_file_open_retry_delay": [600.0]}
        },
        files={"created": 1},
        calls={"a": 3},
        steps=[
            called("a", 1),
            revoke(0),
            rebalanced,
            commits_held({0: 0}),
            assign(0),
            time_passes(600.0, lambda h: h.ingestor.calls["a"] >= 3, "the retry delay over"),
        ],
    ),
    Row(
        "lost: running work is dropped without a commit and redelivered",
        [(0, wrdn("a")), (0, wrdn("b"))],
        {0: 2},
        plans={"a": "hold-once"},
        files={"created": 3},
        calls={"a": 2},
        steps=[
            called("b", 1),
            running("a"),
            commits_held({0: 0}),
            lose(0),
            rebalanced,
            commits_held({0: 0}),
            release("a"),
            assign(0),
        ],
    ),
    Row(
        "a duplicate on another partition carries the file when the original's is revoked",
        [(0, wrdn("x")), (1, wrdn("x"))],
        {0: 0, 1: 1},
        partitions=2,
        plans={"x": "hold"},
        files={"created": 1},
        calls={"x": 1},
        steps=[
            running("x"),
            duplicates(1),
            revoke(0),
            rebalanced,
            release("x"),
        ],
    ),
    Row(
        "a letter after the original's partition was revoked names the kept duplicate",
        [(0, wrdn("y")), (1, wrdn("y"))],
        {0: 0, 1: 1},
        partitions=2,
        plans={"y": "hold-then-refuse"},
        letters=[(1, 0)],
        files={"dead_lettered": 1},
        steps=[
            running("y"),
            duplicates(1),
            revoke(0),
            rebalanced,
            release("y"),
        ],
    ),
    Row(
        "dry run never commits",
        [(0, wrdn("a")), (0, POISON), (0, wrdn("b"))],
        {},
        dry_run=True,
        letters=[(0, 1)],
        files={"dry_run": 2},
    ),
    Row(
        "a sink failure holds the commit and pauses; the letter is stored once it works",
        [(0, wrdn("a")), (0, POISON), (0, wrdn("b"))],
        {0: 3},
        sink_down=True,
        letters=[(0, 1)],
        files={"created": 2},
        steps=[sink_failing, paused, called("a", 1), commits_held({0: 1}), sink(False)],
    ),
    Row(
        "a refused file waits for the sink like poison does",
        [(0, wrdn("a")), (0, wrdn("b"))],
        {0: 2},
        sink_down=True,
        plans={"a": "refuse"},
        letters=[(0, 0)],
        files={"dead_lettered": 1, "created": 1},
        steps=[sink_failing, commits_held({0: 0}), sink(False)],
    ),
    Row(
        "a letter waiting for the sink is dropped with its partition; one letter in the end",
        [(0, POISON)],
        {0: 1},
        sink_down=True,
        letters=[(0, 0)],
        steps=[sink_failing, revoke(0), rebalanced, sink(False), commits_held({0: 0}), assign(0)],
    ),
    Row(
        "shutdown while the sink fails leaves the letter's offset uncommitted",
        [(0, wrdn("a")), (0, POISON)],
        {0: 1},
        sink_down=True,
        files={"created": 1},
        steps=[sink_failing, called("a", 1), stop],
    ),
    Row(
        "a SciCat outage pauses intake, dead-letters nothing, then everything is ingested",
        [(0, wrdn(f"f{i}")) for i in range(6)],
        {0: 6},
        scicat="scicat",
        files={"created": 6},
        steps=[paused, retried("scicat", 4), commits_held({0: 0}), scicat("")],
    ),
    Row(
        "refused SciCat credentials pause like an outage, retried past every file limit",
        [(0, wrdn("a")), (0, wrdn("b"))],
        {0: 2},
        scicat="scicat-auth",
        files={"created": 2},
        steps=[paused, retried("scicat-auth", 6), commits_held({0: 0}), scicat("")],
    ),
    Row(
        "shutdown with work running past the grace period commits only before it",
        [(0, wrdn("a")), (0, wrdn("b"))],
        {0: 0},
        plans={"a": "hold"},
        files={"created": 1},
        steps=[called("b", 1), running("a"), stop],
    ),
]


def settled(h: Harness) -> bool:
    """Everything read and finished, and still so a few loop passes later."""

    def quiet() -> bool:
        return h.source.rebalanced() and h.source.drained() and h.state.snapshot().in_flight == 0

    if not quiet():
        return False
    h.passes_go_by(3)  # the in-flight gauge is updated once per pass
    return quiet()


def harness(row: Row) -> Harness:
    ingestion: dict[str, Any] = {
        "max_offline_ingestors": 2,
        "queue_size": 2,
        "drain_grace_period": GRACE,
        "retry_initial_delay": 0.02,
        "retry_max_delay": 0.1,
        "dry_run": row.dry_run,
        "file_handling": {"data_file_open_max_tries": 2, "data_file_open_retry_delay": [0.02]},
        **row.config,
    }
    config = build(
        IngestorConfig,
        {"kafka": {"topics": ["wrdn"], "commit_interval": COMMIT_INTERVAL}, "ingestion": ingestion},
        "row",
    )
    clock = FakeClock()
    source = PassingSource(clock, row.partitions)
    for partition, value in row.messages:
        source.produce(partition, value)
    ingestor = ScriptedIngestor(dict(row.plans), row.dry_run)
    ingestor.scicat = row.scicat
    letters = SwitchableSink()
    letters.down = row.sink_down
    state = ServiceState()
    samples = ingestor if row.sample_ingestion else None
    holds = any(plan.startswith("hold") for plan in row.plans.values())
    executor: Executor = ThreadPoolExecutor(2, "row") if holds else InlineExecutor()
    daemon = Daemon(
        config,
        ingestor,
        DeadLetters([letters]),
        source,
        state,
        samples=samples,
        clock=clock,
        executor=executor,
        poll_timeout=IDLE_WAIT,
    )
    code: list[int] = []
    thread = threading.Thread(target=lambda: code.append(daemon.run()), name="daemon-row")
    return Harness(source, ingestor, letters, state, daemon, thread, clock, code)


@pytest.mark.parametrize("row", ROWS, ids=[row.name for row in ROWS])
def test_row(row: Row) -> None:
    h = harness(row)
    h.thread.start()
    try:
        for step in row.steps:
            step(h)
        if h.thread.is_alive():
            h.wait(lambda: settled(h), "every message read and nothing left in flight")
            h.stop()
    finally:
        h.ingestor.release_all()
        h.stop()
    assert h.code == [0]
    assert h.committed() == row.commits
    assert [(letter.record.partition, letter.record.offset) for letter in h.sink.stored] == (
        row.letters
    )
    assert h.daemon.totals.files == Counter(row.files)
    assert h.daemon.totals.samples == Counter(row.samples)
    for name, times in row.calls.items():
        assert h.ingestor.calls[name] == times, name
    if row.dry_run:
        assert h.source.commits == []


def test_a_sink_outage_is_one_error_line_however_often_letters_are_retried(
    caplog: pytest.LogCaptureFixture,
) -> None:
    row = Row("three letters, sink down", [(0, POISON)] * 3, {0: 3}, sink_down=True)
    h = harness(row)
    with caplog.at_level(logging.ERROR):
        h.thread.start()
        try:
            sink_failing(h)
            h.wait(lambda: h.daemon.totals.letter_failures >= 12, "a dozen failed attempts")
            h.sink.down = False
            h.wait(lambda: h.committed() == {0: 3}, "the letters stored and committed")
        finally:
            h.stop()
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert errors[0].startswith("dead letters cannot be stored (")
    assert errors[0].endswith("test.dead_letter.sink: No space left on device")
    assert len(h.sink.stored) == 3


def test_the_source_hears_each_file_end_only_once_its_letter_is_stored() -> None:
    """``Source.finished`` (the watch trigger's record of a file version) follows delivery."""
    row = Row(
        "finished hook",
        [(0, wrdn("a")), (0, wrdn("b"))],
        {0: 2},
        plans={"b": "refuse"},
        sink_down=True,
    )
    h = harness(row)
    h.thread.start()
    try:
        sink_failing(h)
        h.wait(lambda: len(h.source.finished_records) == 1, "a finished")
        assert [(r.offset, label) for r, label in h.source.finished_records] == [(0, "created")]
        failures = h.daemon.totals.letter_failures
        h.wait(lambda: h.daemon.totals.letter_failures >= failures + 3, "3 more letter failures")
        assert len(h.source.finished_records) == 1  # b's end is not heard meanwhile
        h.sink.down = False
        h.wait(lambda: len(h.source.finished_records) == 2, "the letter stored")
    finally:
        h.stop()
    labels = sorted((r.offset, label) for r, label in h.source.finished_records)
    assert labels == [(0, "created"), (1, "dead_lettered")]
