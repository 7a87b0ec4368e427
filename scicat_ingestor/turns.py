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
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class Turns:
    """The process-wide turn; re-entrant per thread, a no-op for threads that do not hold it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._local = threading.local()

    def _depth(self) -> int:
        return getattr(self._local, "depth", 0)

    def held(self) -> bool:
        """Whether this thread holds the turn."""
        return self._depth() > 0

    @contextmanager
    def hold(self) -> Iterator[None]:
        depth = self._depth()
        if depth == 0:
            self._lock.acquire()
        self._local.depth = depth + 1
        try:
            yield
        finally:
            self._local.depth = depth
            if depth == 0:
                self._lock.release()

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Give the turn away while this thread waits (if it holds one), take it back after."""
        depth = self._depth()
        if depth == 0:
            yield
            return
        self._local.depth = 0
        self._lock.release()
        try:
            yield
        finally:
            self._lock.acquire()
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


TURNS = Turns()
