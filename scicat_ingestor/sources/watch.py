"""The watch trigger: a daemon source that announces finished files found in watched directories.

For facilities without the ESS file-writer. Two ways of noticing a file, one rule for "finished":

- **inotify** (through ``watchdog``): create/modify/close-write/move/delete events, milliseconds
  after they happen;
- **rescans** every ``watch.rescan_interval`` (and one at start-up): the safety net, because
  inotify drops events when its queue overflows and does not see changes made by other machines
  on network file systems. A file first found by a rescan was missed by inotify (or written while
  the service was down) and is counted.

A file is **finished** when it was closed after its last write (inotify's ``IN_CLOSE_WRITE``, or
moved into place; a file only a rescan saw, or one a rescan finds unchanged for the settle time
after inotify's last event, counts as closed: an overflow can drop a close event), its size and
mtime did not change for ``watch.settle_seconds``, and h5py can open it (the writer's HDF5 lock
is released). Then the
version is recorded as seen in the ``WatchState`` database and handed to the daemon as a record
that carries its announcement already decoded (no message bytes: the daemon does not triage it),
at the address ``watch[0]@<sequence>`` (see ``source.Source`` for how a source without partitions
fits the daemon's Kafka-shaped contract). The version is recorded as ingested / dead-lettered when
the daemon reports it ``finished``, i.e. after its dataset exists or its letter is stored: that
database, not ``commit``, is the watch trigger's durable progress.

Threads: watchdog's observer thread only updates the candidate table; one watcher thread rescans
and settles; the daemon's poll thread calls the ``Source`` methods.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from watchdog.events import (
    FileClosedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
    FileSystemMovedEvent,
)
from watchdog.observers.inotify import InotifyObserver

from scicat_ingestor.config.model import WatchOptions
from scicat_ingestor.ops import metrics
from scicat_ingestor.ops.state import ServiceState, WatchStatus
from scicat_ingestor.schema.nexus import FileNotReady, NexusError, open_nexus
from scicat_ingestor.sources.base import RebalanceListener, Record, SourceError
from scicat_ingestor.sources.offsets import TopicPartition
from scicat_ingestor.sources.triage import WritingFinished
from scicat_ingestor.sources.watch_state import FileVersion, WatchState, WatchStateError

logger = logging.getLogger("scicat_ingestor.watch")

TOPIC = "watch"
PARTITION = TopicPartition(TOPIC, 0)
SERVICE_ID = "scicat-ingestor-watch"
_TICK = 0.2  # seconds between settle checks of the candidates
_JOB_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "scicat-ingestor:watch")


class WatchConfigError(SourceError):
    """``watch.*`` cannot work as configured (missing directory, no state file)."""


def check_options(options: WatchOptions) -> None:
    """Start-up checks; one line naming the key at fault."""
    if not options.directories:
        raise WatchConfigError("watch.directories: empty (ingestion.trigger is watch)")
    if not options.state_file:
        raise WatchConfigError(
            "watch.state_file: required with ingestion.trigger: watch (the ingested-files database)"
        )
    for directory in options.directories:
        if not os.path.isdir(directory):
            raise WatchConfigError(f"watch.directories: {directory} is not a directory")
    if not options.patterns:
        raise WatchConfigError("watch.patterns: empty (no file would ever match)")


def job_id_of(version: FileVersion) -> str:
    """Deterministic per file version: the same version always gets the same dataset pid."""
    return str(uuid.uuid5(_JOB_NAMESPACE, f"{version.path}|{version.size}|{version.mtime_ns}"))


def record_of(seq: int, version: FileVersion) -> Record:
    """The record announcing ``version`` (offset = its database sequence; key = its path, which
    a Kafka dead-letter sink keeps as the letter's key)."""
    announcement = WritingFinished(
        service_id=SERVICE_ID,
        job_id=job_id_of(version),
        error_encountered=False,
        file_name=version.path,
        metadata=None,
        message=None,
    )
    return Record(TOPIC, PARTITION.partition, seq, None, os.fsencode(version.path), announcement)


@dataclass
class _Candidate:
    """A file that may be finished; waits until the settle rule holds."""

    path: str
    origin: str  # "inotify", "rescan" (inotify missed it) or "startup" (written while down)
    changed_at: float
    closed: bool
    stat: tuple[int, int] | None = None  # (size, mtime_ns) at the last look


class _Events(FileSystemEventHandler):
    """Observer-thread side: forward matching file events to the source."""

    def __init__(self, source: WatchSource) -> None:
        self._source = source

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory:
            return
        self._source.on_event(event)


class WatchSource:
    """The ``Source`` of ``ingestion.trigger: watch`` (see the module docstring)."""

    def __init__(
        self,
        options: WatchOptions,
        state: ServiceState,
        probe: Callable[[Path], None] | None = None,
    ) -> None:
        check_options(options)
        self._options = options
        self._state = state
        self._probe = probe or _probe_hdf5
        self._directories = [os.path.abspath(d) for d in options.directories]
        try:
            self._db = WatchState(options.state_file)
        except WatchStateError as exc:
            raise WatchConfigError(str(exc)) from None
        self._lock = threading.Lock()
        self._candidates: dict[str, _Candidate] = {}
        self._in_flight: dict[int, str] = {}  # seq → path, handed to the daemon, not finished
        self._in_flight_paths: set[str] = set()
        self._ready: queue.SimpleQueue[Record] = queue.SimpleQueue()
        self._paused = False
        self._stop = threading.Event()
        self._observer: InotifyObserver | None = None
        self._thread: threading.Thread | None = None
        self._last_rescan: float | None = None
        self._next_rescan = 0.0
        self._first_scan = True
        self.found_by_rescan = 0
        self.events = 0

    # -- the Source protocol (poll thread) ------------------------------------------------------

    @property
    def paused(self) -> bool:
        return self._paused

    def start(self, listener: RebalanceListener) -> None:
        """Hand over versions a previous run left unfinished, start inotify, then rescan; the
        one partition is assigned here, for good."""
        self._resume_unfinished()
        # Full events: a file moved in from outside the tree is a move (finished), not a create.
        observer = InotifyObserver(generate_full_events=True)
        handler = _Events(self)
        for directory in self._directories:
            observer.schedule(handler, directory, recursive=self._options.recursive)
        observer.daemon = True
        observer.start()
        self._observer = observer
        self._thread = threading.Thread(target=self._run, name="watch", daemon=True)
        self._thread.start()
        logger.info(
            "watching %s (%s, patterns %s, settle %g s, rescan every %g s, state %s)",
            ", ".join(self._directories),
            "recursive" if self._options.recursive else "not recursive",
            " ".join(self._options.patterns),
            self._options.settle_seconds,
            self._options.rescan_interval,
            self._options.state_file,
        )
        listener.on_assign([PARTITION])

    def poll(self, timeout: float) -> Record | None:
        self._state.polled()
        if self._thread is not None and not self._thread.is_alive() and not self._stop.is_set():
            raise SourceError("the directory watcher thread died (see the log above)")
        self._publish_status()
        if self._paused:
            return None
        try:
            return self._ready.get(timeout=timeout) if timeout > 0 else self._ready.get_nowait()
        except queue.Empty:
            return None

    def pause(self) -> None:
        self._paused = True

    def resume(self) -> None:
        self._paused = False

    def commit(self, offsets: Mapping[TopicPartition, int]) -> dict[TopicPartition, int]:
        """Durable already: each version's end is recorded by ``finished`` as it happens."""
        return dict(offsets)

    def finished(self, record: Record, label: str) -> None:
        """The daemon is done with ``record``: its dataset exists or its dead letter is stored.

        A dry run records nothing, so a later real run still ingests the file.
        """
        with self._lock:
            path = self._in_flight.pop(record.offset, None) if record.tp == PARTITION else None
            self._in_flight_paths.discard(path or "")
        if path is None or label == "dry_run":
            return
        try:
            self._db.finish(
                record.offset, "dead_lettered" if label == "dead_lettered" else "ingested", label
            )
        except WatchStateError as exc:  # stop (exit 1): unrecorded, the file is tried again
            raise SourceError(str(exc)) from None

    def close(self) -> None:
        self._stop.set()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=10)
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._db.close()

    # -- observer thread ------------------------------------------------------------------------

    def on_event(self, event: FileSystemEvent) -> None:
        """One inotify event: a matching file becomes (or stays) a candidate."""
        self.events += 1
        metrics.WATCH_EVENTS.labels(event.event_type).inc()
        now = time.monotonic()
        with self._lock:
            if isinstance(event, FileSystemMovedEvent):
                self._candidates.pop(_text(event.src_path), None)
                self._note(_text(event.dest_path), now, closed=True)
            elif event.event_type == "deleted":
                self._candidates.pop(_text(event.src_path), None)
            elif isinstance(event, FileClosedEvent):
                self._note(_text(event.src_path), now, closed=True)
            elif event.event_type in ("created", "modified"):
                self._note(_text(event.src_path), now, closed=False)

    def _note(self, path: str, now: float, closed: bool) -> None:
        if not self._matches(path):
            return
        stat = _stat(path)
        candidate = self._candidates.get(path)
        if candidate is None:
            self._candidates[path] = _Candidate(path, "inotify", now, closed, stat)
            return
        candidate.origin = "inotify"  # inotify saw it after all: not counted as missed
        candidate.changed_at, candidate.closed, candidate.stat = now, closed, stat

    # -- watcher thread -------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if time.monotonic() >= self._next_rescan:
                    self._rescan()
                self._settle()
            except WatchStateError:
                logger.exception("the watch state database failed")
                return
            except Exception:  # a bug here must not silently stop the watching
                logger.exception("the directory watcher failed; retrying")
            self._stop.wait(_TICK)

    def _rescan(self) -> None:
        """Walk every directory; matching versions not in the database become candidates."""
        started = time.monotonic()
        origin = "startup" if self._first_scan else "rescan"
        known = self._db.known()
        added = 0
        for path in self._walk():
            stat = _stat(path)
            if stat is None or FileVersion(path, *stat) in known:
                continue
            with self._lock:
                waiting = self._candidates.get(path)
                if waiting is not None:
                    self._presume_closed(waiting, stat, started)
                    continue
                if path in self._in_flight_paths:
                    continue
                self._candidates[path] = _Candidate(path, origin, time.monotonic(), True, stat)
            added += 1
        self._first_scan = False
        self._last_rescan = time.monotonic()
        self._next_rescan = self._last_rescan + self._options.rescan_interval
        metrics.WATCH_RESCANS.inc()
        logger.log(
            logging.INFO if added else logging.DEBUG,
            "%s scan: %d new file version(s) in %.2f s",
            origin,
            added,
            self._last_rescan - started,
        )

    def _presume_closed(self, candidate: _Candidate, stat: tuple[int, int], now: float) -> None:
        """A file inotify saw change but never saw closed, unchanged for the settle time, counts as
        closed like a file only a rescan saw: an overflow can drop the close event after the
        create (the HDF5 open check still waits for a writer that holds the file)."""
        if candidate.closed:
            return
        if candidate.stat != stat:  # changed since inotify's last word: look again next rescan
            candidate.stat, candidate.changed_at = stat, now
        elif now - candidate.changed_at >= self._options.settle_seconds:
            candidate.closed = True

    def _walk(self) -> Iterator[str]:
        for directory in self._directories:
            if self._options.recursive:
                for root, _dirs, files in os.walk(directory):
                    for name in files:
                        if self._matches(name):
                            yield os.path.join(root, name)
                continue
            try:
                entries = list(os.scandir(directory))
            except OSError as exc:
                logger.warning("cannot list %s: %s", directory, exc)
                continue
            for entry in entries:
                if entry.is_file() and self._matches(entry.name):
                    yield entry.path

    def _settle(self) -> None:
        """Hand over every candidate that is finished now."""
        now = time.monotonic()
        with self._lock:
            due = [c for c in self._candidates.values() if self._may_be_due(c, now)]
        for candidate in due:
            version = self._settled(candidate, now)
            if version is not None:
                self._hand_over(candidate, version)

    def _may_be_due(self, candidate: _Candidate, now: float) -> bool:
        return (
            candidate.closed
            and now - candidate.changed_at >= self._options.settle_seconds
            and candidate.path not in self._in_flight_paths  # one version of a file at a time
        )

    def _settled(self, candidate: _Candidate, now: float) -> FileVersion | None:
        """The finished version of ``candidate``, or None (changed, gone, locked, known)."""
        stat = _stat(candidate.path)
        if stat is None:
            with self._lock:
                self._candidates.pop(candidate.path, None)
            return None
        if stat != candidate.stat:
            # Changed without an event (network file system, lost event): wait a full settle.
            with self._lock:
                candidate.stat, candidate.changed_at = stat, now
            if self._options.settle_seconds > 0:
                return None
        version = FileVersion(candidate.path, *stat)
        if self._db.state_of(version) is not None:
            with self._lock:
                self._candidates.pop(candidate.path, None)
            return None
        try:
            self._probe(Path(candidate.path))
        except FileNotReady as exc:
            logger.debug("%s settled but %s; waiting", candidate.path, exc.detail)
            with self._lock:
                candidate.changed_at = now
            return None
        except NexusError:
            pass  # not HDF5 at all: the pipeline dead-letters it with the reason
        after = _stat(candidate.path)
        if after != stat:
            # Its writer wrote and let go while the lock was probed: the version above is stale.
            with self._lock:
                candidate.stat, candidate.changed_at = after, now
            return None
        return version

    def _hand_over(self, candidate: _Candidate, version: FileVersion) -> None:
        earlier = self._db.earlier_versions(version.path)
        seq = self._db.seen(version)
        with self._lock:
            if self._candidates.get(candidate.path) is candidate:
                del self._candidates[candidate.path]
            self._in_flight[seq] = version.path
            self._in_flight_paths.add(version.path)
        if earlier:
            last = earlier[-1]
            logger.warning(
                "%s was rewritten (size %d → %d): ingesting the new version; the exists-checks "
                "decide whether it is the earlier dataset (%s) or a new one",
                version.path,
                last.version.size,
                version.size,
                last.outcome,
            )
        if candidate.origin == "rescan":
            self.found_by_rescan += 1
            metrics.WATCH_FOUND_BY_RESCAN.inc()
            logger.info("%s: found by a rescan, inotify missed it", version.path)
        logger.debug(
            "%s finished writing (%s): handed over as #%d", version.path, candidate.origin, seq
        )
        self._ready.put(record_of(seq, version))

    def _resume_unfinished(self) -> None:
        """Versions a previous run handed over but did not finish: again, if still on disk."""
        again = 0
        for row in self._db.unfinished():
            try:
                st = os.stat(row.version.path)
                current = FileVersion(row.version.path, st.st_size, st.st_mtime_ns)
            except OSError:
                current = None
            if current != row.version:
                self._db.gone(row.seq)  # a rewrite is found by the start-up scan
                continue
            self._in_flight[row.seq] = row.version.path
            self._in_flight_paths.add(row.version.path)
            self._ready.put(record_of(row.seq, row.version))
            again += 1
        if again:
            logger.info(
                "%d file(s) handed over before the last stop were not finished: again", again
            )

    # -- helpers --------------------------------------------------------------------------------

    def _matches(self, path: str) -> bool:
        name = os.path.basename(path)
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self._options.patterns)

    def _publish_status(self) -> None:
        with self._lock:
            waiting, in_flight = len(self._candidates), len(self._in_flight)
        observer = self._observer
        self._state.set_watch(
            WatchStatus(
                directories=tuple(self._directories),
                observer_alive=observer is not None and observer.is_alive(),
                waiting_to_settle=waiting,
                queued=self._ready.qsize(),
                handed_over=in_flight,
                last_rescan_monotonic=self._last_rescan,
                rescan_interval=self._options.rescan_interval,
                events=self.events,
                found_by_rescan=self.found_by_rescan,
            )
        )


def _probe_hdf5(path: Path) -> None:
    """Open and close ``path`` with h5py: FileNotReady while the writer still holds its lock."""
    with open_nexus(path):
        pass


def _stat(path: str) -> tuple[int, int] | None:
    """(size, mtime_ns), or None when the file is gone."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def _text(path: bytes | str) -> str:
    return os.fsdecode(path)
