"""Workers take turns running Python: one at a time per process, handing over only while waiting.

With the GIL only one thread runs Python anyway. Left to itself, CPython hands the GIL over at
every system call (a socket send, a poll, a log write), so ten busy workers switched threads
108-121 times per file, ≈ 21 µs of CPU each across this machine's cores: ≈ 2.4 ms of the ≈ 8 ms
a file cost. Holding a turn for a whole ingest and giving it away only while waiting (for SciCat's
answer, a checksum computed in C, a retry's back-off, a lock) cut that to 26-36 switches per file
and costs no parallelism: the waits still overlap (bench: 10 workers 1.37x one worker, where they
had been slower). h5py runs every call under one process-wide lock too, so whole-file turns also
keep that lock uncontended.

The rule that keeps this free of deadlocks: a thread that holds the turn never blocks on anything
another thread needs the turn to release. Locks that may be held across a wait are taken with
``take_lock`` (waits without the turn); every other wait goes through ``paused()``.

A wait that forgets the rule stalls every worker and shows nothing, so it is made visible: each
stretch a turn is held without a pause is timed (``scicat_ingestor_turn_hold_seconds``), and a
watchdog thread logs a WARNING with the holder's stack when a stretch runs past a threshold.
``ingestion.worker_turns: false`` switches turns off: ``hold`` and ``paused`` do nothing and
``take_lock`` is a plain acquire, so workers interleave under the GIL alone.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NamedTuple

from prometheus_client import Histogram

from scicat_ingestor.ops.metrics import TURN_HOLD_SECONDS

logger = logging.getLogger("scicat_ingestor.turns")

WARN_AFTER_SECONDS = 0.25  # the default of ingestion.worker_turn_warn_seconds
WATCH_INTERVAL_SECONDS = 0.1  # how often the watchdog looks: a stall is seen within this


class _Stretch(NamedTuple):
    """Who holds the turn and since when (monotonic) without a pause; a new one per take."""

    thread: int
    since: float


class Turns:
    """The process-wide turn; re-entrant per thread, a no-op for threads that do not hold it."""

    def __init__(self, hold_seconds: Histogram = TURN_HOLD_SECONDS) -> None:
        """``hold_seconds``: where each stretch without a pause is observed."""
        self._hold_seconds = hold_seconds
        self._lock = threading.Lock()
        self._local = threading.local()
        self._enabled = True
        self._stretch: _Stretch | None = None  # written by the holder only, read by the watchdog

    def _depth(self) -> int:
        return getattr(self._local, "depth", 0)

    def held(self) -> bool:
        """Whether this thread holds the turn."""
        return self._depth() > 0

    def _take(self) -> None:
        self._lock.acquire()
        self._stretch = _Stretch(threading.get_ident(), time.monotonic())

    def _give(self) -> None:
        """Observed before the release: only the holder observes, so workers never contend for
        the histogram's own lock."""
        stretch, self._stretch = self._stretch, None
        if stretch is not None:
            self._hold_seconds.observe(time.monotonic() - stretch.since)
        self._lock.release()

    @contextmanager
    def hold(self) -> Iterator[None]:
        """The turn for the block. Switched off, only threads already holding one count depth,
        so a switch while a turn is held never releases a lock that was not taken."""
        depth = self._depth()
        if depth == 0 and not self._enabled:
            yield
            return
        if depth == 0:
            self._take()
        self._local.depth = depth + 1
        try:
            yield
        finally:
            self._local.depth = depth
            if depth == 0:
                self._give()

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Give the turn away while this thread waits (if it holds one), take it back after."""
        depth = self._depth()
        if depth == 0:
            yield
            return
        self._local.depth = 0
        self._give()
        try:
            yield
        finally:
            self._take()
            self._local.depth = depth

    def take_lock(self, lock: threading.Lock, blocking: bool = True) -> bool:
        """``lock.acquire(blocking)``, waiting without the turn when the lock is busy: its holder
        may be waiting for SciCat and need the turn back before it can release the lock."""
        if lock.acquire(blocking=False):
            return True
        if not blocking:
            return False
        with self.paused():
            return lock.acquire()

    @contextmanager
    def configured(self, *, enabled: bool, warn_after: float) -> Iterator[None]:
        """Turns on or off for the block (a command's run), watched when on; restored after."""
        previous, self._enabled = self._enabled, enabled
        stop = threading.Event()
        watchdog = threading.Thread(
            target=self._watch, args=(warn_after, stop), name="turn-watchdog", daemon=True
        )
        if enabled:
            watchdog.start()
        try:
            yield
        finally:
            stop.set()
            if watchdog.is_alive():
                watchdog.join()
            self._enabled = previous

    def _watch(self, warn_after: float, stop: threading.Event) -> None:
        """Look at the current stretch every ``WATCH_INTERVAL_SECONDS``; one warning each."""
        warned: _Stretch | None = None
        while not stop.wait(min(WATCH_INTERVAL_SECONDS, warn_after)):
            stretch = self._stretch
            if stretch is None or stretch is warned:
                continue
            held = time.monotonic() - stretch.since
            if held >= warn_after:
                warned = stretch
                self._warn(stretch, held)

    def _warn(self, stretch: _Stretch, held: float) -> None:
        """The holder's stack where it is now: the call that keeps every other worker waiting."""
        frame = sys._current_frames().get(stretch.thread)
        if frame is None or self._stretch is not stretch:  # given away meanwhile: stack moved on
            return
        stack = "".join(traceback.format_stack(frame)).rstrip()
        names = {thread.ident: thread.name for thread in threading.enumerate()}
        logger.warning(
            "thread %s has held the worker turn for %.2f s without a pause, and every other "
            "worker waits: a blocking call outside TURNS.paused() (ops/turns.py), or the machine "
            "is short of CPU. Its stack:\n%s",
            names.get(stretch.thread, stretch.thread),
            held,
            stack,
        )


TURNS = Turns()
