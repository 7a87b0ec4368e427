"""The watch trigger in-process: the state database, the settle rule, restarts, rescans, and what
the daemon does with a watch record (its announcement, not a message to triage)."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import h5py
import pytest
from streaming_data_types import serialise_wrdn

from helpers.wait import wait_until
from scicat_ingestor.commands.replay import read_dead_letters
from scicat_ingestor.config.model import ConfigError, IngestorConfig, WatchOptions, build
from scicat_ingestor.daemon import loop as daemon_module
from scicat_ingestor.daemon.deadletters import DeadLetter, DeadLetters, Done
from scicat_ingestor.daemon.loop import Daemon
from scicat_ingestor.ingest.outcome import Created, Outcome
from scicat_ingestor.ingest.pipeline import Job
from scicat_ingestor.ops.state import ServiceState
from scicat_ingestor.schema.nexus import open_nexus
from scicat_ingestor.sources.base import Record
from scicat_ingestor.sources.offsets import TopicPartition
from scicat_ingestor.sources.triage import Triaged, WritingFinished
from scicat_ingestor.sources.watch import (
    WatchConfigError,
    WatchSource,
    _Events,
    job_id_of,
    record_of,
)
from scicat_ingestor.sources.watch_state import FileVersion, WatchState, WatchStateError
from scicat_ingestor.testing.filewriter import SAMPLE_FILES, write_nexus_copy

SETTLE = 0.2

# watchdog >= 7 warns (RuntimeWarning "Callback with id ... already exists") when it re-registers a
# directory it already watches, e.g. one moved or re-created inside the tree; harmless, but pytest's
# ``filterwarnings = error`` would turn it into an exception that ends watchdog's shared dispatcher
# thread. The source leaves the process's filters alone, so the tests say so here.
pytestmark = pytest.mark.filterwarnings("ignore:Callback with id:RuntimeWarning")


class Listener:
    def __init__(self) -> None:
        self.assigned: list[TopicPartition] = []

    def on_assign(self, partitions: Sequence[TopicPartition]) -> None:
        self.assigned.extend(partitions)

    def on_revoke(self, partitions: Sequence[TopicPartition]) -> None:
        raise AssertionError("a watch source never revokes")

    def on_lost(self, partitions: Sequence[TopicPartition]) -> None:
        raise AssertionError("a watch source never loses")


def options(tmp_path: Path, **changes: object) -> WatchOptions:
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    values: dict[str, object] = {
        "directories": (str(data),),
        "settle_seconds": SETTLE,
        "rescan_interval": 3600.0,
        "state_file": str(tmp_path / "state" / "watch.sqlite"),
    }
    values.update(changes)
    return WatchOptions(**values)  # type: ignore[arg-type]


@pytest.fixture
def started() -> Iterator[list[WatchSource]]:
    sources: list[WatchSource] = []
    yield sources
    for source in sources:
        source.close()


def start(opts: WatchOptions, sources: list[WatchSource]) -> WatchSource:
    source = WatchSource(opts, ServiceState())
    source.start(Listener())
    sources.append(source)
    return source


def next_record(source: WatchSource, timeout: float = 10.0) -> Record:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = source.poll(0.1)
        if record is not None:
            return record
    raise AssertionError(f"no record within {timeout} s")


def no_record(source: WatchSource, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        record = source.poll(0.05)
        assert record is None, f"unexpected {record}"


def announced(record: Record) -> WritingFinished:
    """The record's announcement: made by the source, no message bytes to decode."""
    assert record.value is None
    assert record.announcement is not None
    return record.announcement


def finished(source: WatchSource, record: Record, label: str) -> None:
    source.finished(record, label)


def nexus(path: Path) -> Path:
    write_nexus_copy(SAMPLE_FILES[0], path)
    return path


# -- the state database ---------------------------------------------------------------------


def test_state_records_versions_across_reopen(tmp_path: Path) -> None:
    db_path = tmp_path / "s" / "w.sqlite"
    first = FileVersion("/d/a.nxs", 10, 1)
    second = FileVersion("/d/b.nxs", 20, 2)
    db = WatchState(db_path)
    seq_a, seq_b = db.seen(first), db.seen(second)
    assert seq_a < seq_b
    assert db.seen(first) == seq_a  # seen twice: the same row
    db.finish(seq_a, "ingested", "created")
    db.close()

    db = WatchState(db_path)
    assert db.state_of(first) == "ingested"
    assert [row.version for row in db.unfinished()] == [second]
    assert db.state_of(FileVersion("/d/a.nxs", 11, 1)) is None  # a rewrite is another version
    db.gone(seq_b)
    assert db.unfinished() == []
    assert db.counts() == {"ingested": 1, "gone": 1}
    assert db.known() == {first, second}
    assert sqlite3.connect(db_path).execute("PRAGMA journal_mode").fetchone() == ("wal",)
    db.close()


def test_watch_keys_are_checked_when_the_config_loads() -> None:
    with pytest.raises(ConfigError, match=r"watch\.rescan_interval"):
        build(IngestorConfig, {"watch": {"rescan_interval": 0}}, "test")
    with pytest.raises(ConfigError, match=r"ingestion\.trigger"):
        build(IngestorConfig, {"ingestion": {"trigger": "inotify"}}, "test")


def test_state_file_that_cannot_be_opened_names_the_key(tmp_path: Path) -> None:
    (tmp_path / "dir.sqlite").mkdir()
    with pytest.raises(WatchStateError, match=r"watch.state_file .*dir.sqlite"):
        WatchState(tmp_path / "dir.sqlite")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"directories": ()}, "watch.directories: empty"),
        ({"state_file": ""}, "watch.state_file: required"),
        ({"directories": ("/nonexistent/x",)}, "/nonexistent/x is not a directory"),
        ({"patterns": ()}, "watch.patterns: empty"),
    ],
)
def test_bad_watch_options_name_the_key(
    tmp_path: Path, changes: dict[str, object], message: str
) -> None:
    with pytest.raises(WatchConfigError, match=message):
        WatchSource(options(tmp_path, **changes), ServiceState())


# -- the settle rule ------------------------------------------------------------------------


def test_a_closed_file_is_announced_once_after_settling(
    tmp_path: Path, started: list[WatchSource]
) -> None:
    source = start(options(tmp_path), started)
    assert source.poll(0) is None
    path = nexus(tmp_path / "data" / "run1.nxs")
    closed_at = time.monotonic()
    record = next_record(source)
    assert time.monotonic() - closed_at >= SETTLE
    message = announced(record)
    assert message.file_name == str(path)
    st = path.stat()
    assert message.job_id == job_id_of(FileVersion(str(path), st.st_size, st.st_mtime_ns))
    assert record.tp == TopicPartition("watch", 0)
    no_record(source, 3 * SETTLE)
    finished(source, record, "created")
    assert source._db.state_of(FileVersion(str(path), st.st_size, st.st_mtime_ns)) == "ingested"


def test_a_file_held_open_by_its_writer_waits_for_the_close(
    tmp_path: Path, started: list[WatchSource]
) -> None:
    source = start(options(tmp_path), started)
    path = tmp_path / "data" / "slow.h5"
    opened = threading.Event()
    release = threading.Event()
    closed = threading.Event()

    def slow_writer() -> None:
        with h5py.File(path, "w") as out:
            out["x"] = [1, 2, 3]
            out.flush()
            opened.set()
            release.wait(30)  # holds the HDF5 lock, writes nothing, until the test lets go
            out["y"] = [4]
        closed.set()

    writer = threading.Thread(target=slow_writer)
    writer.start()
    try:
        assert opened.wait(10)
        no_record(source, 4 * SETTLE)  # well past the settle time: the open file is not announced
    finally:
        release.set()
    record = next_record(source)
    assert closed.is_set()
    assert announced(record).file_name == str(path)
    writer.join()


def test_patterns_and_recursion(tmp_path: Path, started: list[WatchSource]) -> None:
    source = start(options(tmp_path, recursive=False), started)
    data = tmp_path / "data"
    (data / "notes.txt").write_text("not a data file")
    (data / "sub").mkdir()
    nexus(data / "sub" / "deep.nxs")
    top = nexus(data / "top.hdf")
    assert announced(next_record(source)).file_name == str(top)
    no_record(source, 3 * SETTLE)


def test_recursive_watch_sees_new_subdirectories(
    tmp_path: Path, started: list[WatchSource]
) -> None:
    source = start(options(tmp_path), started)
    (tmp_path / "data" / "2026" / "run7").mkdir(parents=True)
    events = source.events
    (tmp_path / "data" / "2026" / "run7" / "marker.txt").write_text("not a data file")
    wait_until(lambda: source.events > events, "an event from the new directory")
    path = nexus(tmp_path / "data" / "2026" / "run7" / "f.nxs")
    assert announced(next_record(source)).file_name == str(path)


def test_a_file_moved_into_place_is_announced(tmp_path: Path, started: list[WatchSource]) -> None:
    source = start(options(tmp_path), started)
    staging = nexus(tmp_path / "staging.nxs")
    target = tmp_path / "data" / "moved.nxs"
    os.rename(staging, target)
    assert announced(next_record(source)).file_name == str(target)


# -- restarts and rescans -------------------------------------------------------------------


def test_restart_neither_reingests_nor_misses(tmp_path: Path, started: list[WatchSource]) -> None:
    opts = options(tmp_path)
    data = tmp_path / "data"
    source = start(opts, started)
    done = nexus(data / "done.nxs")
    handed = nexus(data / "handed.nxs")
    records = {announced(r).file_name: r for r in (next_record(source), next_record(source))}
    finished(source, records[str(done)], "created")  # 'handed' is still in flight at the stop
    source.close()
    started.remove(source)

    while_down = nexus(data / "while_down.nxs")
    source = start(opts, started)
    again = [announced(next_record(source)).file_name for _ in range(2)]
    assert again == [str(handed), str(while_down)]  # unfinished first, under its old number
    no_record(source, 3 * SETTLE)


def test_a_rewritten_file_is_a_new_version(tmp_path: Path, started: list[WatchSource]) -> None:
    source = start(options(tmp_path), started)
    path = nexus(tmp_path / "data" / "again.nxs")
    first = next_record(source)
    finished(source, first, "created")
    time.sleep(0.01)
    with h5py.File(path, "r+") as out:
        out["entry/extra"] = [1.0]
    second = next_record(source)
    assert second.offset > first.offset
    assert announced(second).job_id != announced(first).job_id  # so: a new dataset pid


def test_second_version_waits_for_the_first_to_finish(
    tmp_path: Path, started: list[WatchSource]
) -> None:
    """Two versions of one path in flight would meet as 'duplicates' of one job in the daemon."""
    source = start(options(tmp_path), started)
    path = nexus(tmp_path / "data" / "busy.nxs")
    first = next_record(source)
    with h5py.File(path, "r+") as out:
        out["entry/extra"] = [1.0]
    no_record(source, 4 * SETTLE)
    finished(source, first, "created")
    assert next_record(source).offset > first.offset


def test_rescan_finds_what_inotify_missed(
    tmp_path: Path, started: list[WatchSource], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_Events, "on_any_event", lambda self, event: None)  # every event lost
    source = start(options(tmp_path, rescan_interval=0.5), started)
    wait_until(lambda: source._last_rescan is not None, "the start-up scan")
    path = nexus(tmp_path / "data" / "missed.nxs")
    assert announced(next_record(source)).file_name == str(path)
    assert source.found_by_rescan == 1
    status = source._state.snapshot().watch
    assert status is not None and status.last_rescan_monotonic is not None


def test_a_file_whose_close_event_was_lost_is_announced_by_a_rescan(
    tmp_path: Path, started: list[WatchSource], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An inotify overflow can drop a file's close event after its create event was seen: the
    rescan must not leave it waiting for a close that never comes (seen in the overflow test)."""
    seen = _Events.on_any_event
    monkeypatch.setattr(
        _Events,
        "on_any_event",
        lambda self, event: seen(self, event) if event.event_type == "created" else None,
    )
    source = start(options(tmp_path, rescan_interval=0.5), started)
    wait_until(lambda: source._last_rescan is not None, "the start-up scan")
    path = nexus(tmp_path / "data" / "close-lost.nxs")
    assert announced(next_record(source)).file_name == str(path)


def test_dry_run_records_nothing(tmp_path: Path, started: list[WatchSource]) -> None:
    opts = options(tmp_path)
    source = start(opts, started)
    nexus(tmp_path / "data" / "dry.nxs")
    finished(source, next_record(source), "dry_run")
    source.close()
    started.remove(source)
    source = start(opts, started)
    assert announced(next_record(source)).file_name.endswith("dry.nxs")


def test_the_one_partition_is_assigned_in_start_for_good(
    tmp_path: Path, started: list[WatchSource]
) -> None:
    source = WatchSource(options(tmp_path), ServiceState())
    listener = Listener()  # fails the test on a revoke or a loss
    source.start(listener)
    started.append(source)
    assert listener.assigned == [TopicPartition("watch", 0)]
    no_record(source, 0.2)
    assert listener.assigned == [TopicPartition("watch", 0)]


def test_start_and_close_leave_the_process_warnings_filters_alone(
    tmp_path: Path, started: list[WatchSource]
) -> None:
    before = list(warnings.filters)
    source = start(options(tmp_path), started)
    assert warnings.filters == before
    source.close()
    started.remove(source)
    assert warnings.filters == before


# -- the daemon with a watch source ---------------------------------------------------------


class RecordingIngestor:
    """Creates every dataset and keeps the jobs it was given."""

    def __init__(self) -> None:
        self.jobs: list[Job] = []

    def ingest(self, job: Job) -> Outcome:
        self.jobs.append(job)
        return Created(job.job_id)


class MemorySink:
    """A dead-letter sink that keeps its letters in memory."""

    name = "test.dead_letter.sink"
    label = "test"

    def __init__(self) -> None:
        self.stored: list[DeadLetter] = []

    def write(self, letter: DeadLetter, done: Done) -> None:
        self.stored.append(letter)
        done(None)

    def poll(self) -> None:
        """Answers are given in ``write``."""

    def close(self, timeout: float) -> None:
        """Nothing to release."""


def test_the_daemon_takes_a_watch_record_as_announced_not_triaged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No message bytes are made or decoded; the announcement gets triage's content checks."""

    def no_triage(value: bytes | None, run_start: bool = False) -> Triaged:
        raise AssertionError(f"a watch record was triaged: {value!r}")

    monkeypatch.setattr(daemon_module, "triage", no_triage)
    config = build(IngestorConfig, {"kafka": {"commit_interval": 0.05}}, "test")
    opts = options(tmp_path)
    state = ServiceState()
    ingestor, sink = RecordingIngestor(), MemorySink()
    daemon = Daemon(config, ingestor, DeadLetters([sink]), WatchSource(opts, state), state)
    codes: list[int] = []
    thread = threading.Thread(target=lambda: codes.append(daemon.run()), name="daemon-watch")
    thread.start()
    try:
        good = nexus(tmp_path / "data" / "good.nxs")
        bad = nexus(tmp_path / "data" / "two\nlines.nxs")
        wait_until(lambda: bool(ingestor.jobs and sink.stored), "a job and a letter", 10)
    finally:
        daemon.request_stop("test over")
        thread.join(10)
    assert codes == [0]
    (job,) = ingestor.jobs
    st = good.stat()
    assert job.message == {  # what message_to_file writes, as with the former synthetic wrdn
        "service_id": "scicat-ingestor-watch",
        "job_id": job_id_of(FileVersion(str(good), st.st_size, st.st_mtime_ns)),
        "error_encountered": False,
        "file_name": str(good),
        "metadata": None,
        "message": None,
    }
    (letter,) = sink.stored  # the file-name rule of wrdn messages holds for watch records too
    assert letter.reason == f"wrdn file_name has control characters: {str(bad)!r}"
    assert (letter.record.topic, letter.record.value) == ("watch", None)
    assert daemon.totals.messages == {"wrdn": 1, "poison": 1}
    snapshot = state.snapshot()  # what /ready and the status page show
    assert snapshot.assigned_partitions == 1
    assert snapshot.watch is not None and snapshot.watch.directories == (str(tmp_path / "data"),)
    db = WatchState(opts.state_file)
    # the poison file's stored letter ends it too: left 'seen', every restart dead-lettered it again
    assert db.counts() == {"ingested": 1, "dead_lettered": 1}
    db.close()


def test_a_last_write_during_the_lock_probe_hands_over_the_final_version(
    tmp_path: Path, started: list[WatchSource]
) -> None:
    """The settle rule stat'ed the file, then its writer made its last write and let go while the
    lock was probed: the stale version was handed over, and the final one again by a rescan (a
    second state row; seen 1 run in 3 in test_watch_daemon's concurrent writers)."""
    opts = options(tmp_path)
    path = nexus(tmp_path / "data" / "late.nxs")
    writes = [b"-the writer's last bytes-"]

    def probe(probed: Path) -> None:
        if writes:
            with probed.open("ab") as f:
                f.write(writes.pop())
        with open_nexus(probed):
            pass

    source = WatchSource(opts, ServiceState(), probe=probe)
    source.start(Listener())
    started.append(source)
    record = next_record(source)
    st = path.stat()
    final = FileVersion(str(path), st.st_size, st.st_mtime_ns)
    assert announced(record).job_id == job_id_of(final)
    finished(source, record, "created")
    no_record(source, 3 * SETTLE)


def test_watch_letters_old_and_new_replay_the_same_file_and_job() -> None:
    """Letters of earlier versions carry the synthetic ``wrdn`` the watch source used to build;
    today's carry no value. ``replay`` gets the same file and job id (so pid) from both."""
    version = FileVersion("/data/run-7.nxs", 1234, 5678)
    job_id = job_id_of(version)
    former_value = serialise_wrdn(
        service_id="scicat-ingestor-watch",
        job_id=job_id,
        error_encountered=False,
        file_name=version.path,
    )
    former = Record("watch", 0, 7, former_value, version.path.encode())
    letters = [
        DeadLetter("not an HDF5 file", record, version.path, job_id)
        for record in (former, record_of(7, version))
    ]
    lines = [json.dumps(letter.as_json()) for letter in letters]
    (_, old_job, _), (_, new_job, _) = read_dead_letters(iter(lines), "dead.jsonl")
    assert isinstance(old_job, Job) and isinstance(new_job, Job)
    assert (old_job.file_path, old_job.job_id) == (new_job.file_path, new_job.job_id)
    assert (new_job.file_path, new_job.job_id) == (version.path, job_id)
