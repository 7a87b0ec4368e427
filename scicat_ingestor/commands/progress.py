"""What ``ingest`` shows while it runs: a bar on a terminal, periodic summary lines elsewhere.

On an interactive terminal (stdout and stderr both ttys) a tqdm bar on stderr shows files done /
total, rate, time left, the outcome counts and the current retry or outage state. Log records are
written above the bar (tqdm clears the bar line, writes the record, redraws), so nothing tears it,
and the per-file INFO lines are hidden unless ``verbose``; WARNING and above always show.
Anywhere else (CI, cron, ``| tee``) there is no bar and no control character: the log lines stay as
they are, plus one INFO summary line every ``every`` seconds.

tqdm rather than rich: one small dependency-free package whose single-line ``\\r`` redraw works on
any terminal and leaves a plain last line in scrollback, with rate smoothing and ``tqdm.write`` for
printing above the bar; rich's multi-line live region (cursor-up sequences) is more than one bar
needs and brings three more packages.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol, TextIO

from tqdm import tqdm

from scicat_ingestor.commands.summary import Tally
from scicat_ingestor.ingest.outcome import Outcome, Transient, is_failure
from scicat_ingestor.ops.logs import PACKAGE_LOGGER, StdoutHandler

logger = logging.getLogger("scicat_ingestor.commands.progress")

SUMMARY_EVERY_SECONDS = 30.0
_REFRESH_SECONDS = 0.5  # redraw this often anyway: elapsed time, rate and time left move
_REDRAW_SECONDS = 0.1  # at most this often on results: a fast backfill must not spend on redraws
_REASON_WIDTH = 60


def on_terminal() -> bool:
    """Whether a bar can be drawn without tearing: both output streams are one interactive tty."""
    return sys.stdout.isatty() and sys.stderr.isatty()


class RunState:
    """Counts, the total once the scan is done, and what is being waited for; thread-safe."""

    def __init__(self, tally: Tally) -> None:
        self.tally = tally
        self._lock = threading.Lock()
        self._total: int | None = None
        self._scanned = 0
        self._waiting: dict[str, float] = {}  # file → monotonic time of its next attempt
        self._outage = ""

    def scanned(self, found: int, finished: bool) -> None:
        with self._lock:
            self._scanned = found
            if finished:
                self._total = found

    def retrying(self, path: str, delay: float) -> None:
        with self._lock:
            self._waiting[path] = time.monotonic() + delay

    def finished(self, path: str, outcome: Outcome) -> None:
        with self._lock:
            self._waiting.pop(path, None)
            if isinstance(outcome, Transient) and outcome.cause == "scicat":
                self._outage = outcome.reason
            elif not is_failure(outcome):
                self._outage = ""

    @property
    def total(self) -> int | None:
        with self._lock:
            # files may appear between the count and the ingestion: never show done > total
            return None if self._total is None else max(self._total, self.tally.done)

    def scanning_text(self) -> str:
        with self._lock:
            if self._total is not None:
                return ""
            return f"scanning… {self._scanned} found" if self._scanned else "scanning…"

    def status_text(self) -> str:
        """``SciCat unavailable: …`` and/or ``2 file(s) not ready, next try in 3 s``."""
        with self._lock:
            parts = []
            if self._outage:
                parts.append(f"SciCat unavailable: {_shorten(self._outage)}")
            if self._waiting:
                next_in = max(min(self._waiting.values()) - time.monotonic(), 0.0)
                parts.append(f"{len(self._waiting)} file(s) not ready, next try in {next_in:.0f} s")
            return "; ".join(parts)


def _shorten(text: str) -> str:
    return text if len(text) <= _REASON_WIDTH else text[: _REASON_WIDTH - 1] + "…"


class Display(Protocol):
    def update(self) -> None: ...

    def close(self) -> None: ...


class Bar:
    """The tqdm bar (stderr), redrawn on every result and at least every half second."""

    def __init__(self, state: RunState) -> None:
        self._state = state
        self._bar = tqdm(
            total=None,
            unit=" files",
            desc="ingest",
            file=sys.stderr,
            dynamic_ncols=True,
            mininterval=_REFRESH_SECONDS,
            ascii=not _utf8(sys.stderr),
        )
        self._last = 0.0

    def update(self) -> None:
        state, bar = self._state, self._bar
        done = state.tally.done
        total, scanning = state.total, state.scanning_text()
        now = time.monotonic()
        changed = done != bar.n or total != bar.total
        if now - self._last < (_REDRAW_SECONDS if changed else _REFRESH_SECONDS):
            return
        self._last = now
        bar.total = total
        bar.set_description_str(f"ingest {scanning}".strip(), refresh=False)
        status = state.status_text()
        counts = state.tally.counts_text()
        bar.set_postfix_str(f"{counts}{' | ' + status if status else ''}", refresh=False)
        bar.update(done - bar.n)
        bar.refresh()

    def close(self) -> None:
        self._last = float("-inf")  # the final state, whatever the throttle says
        self.update()
        self._bar.close()


def _utf8(stream: TextIO) -> bool:
    return (getattr(stream, "encoding", "") or "").lower().replace("-", "") == "utf8"


class SummaryLines:
    """No bar: one INFO line with the counts, rate and time left every ``every`` seconds."""

    def __init__(self, state: RunState, every: float) -> None:
        self._state = state
        self._every = every
        self._next = time.monotonic() + every

    def update(self) -> None:
        if time.monotonic() < self._next:
            return
        self._next = time.monotonic() + self._every
        tally, total = self._state.tally, self._state.total
        done, elapsed = tally.done, tally.elapsed()
        rate = done / elapsed if elapsed > 0 else 0.0
        of = f"/{total}" if total is not None else f" ({self._state.scanning_text()})"
        left = ""
        if total is not None and rate > 0:
            left = f", about {_duration((total - done) / rate)} left"
        status = self._state.status_text()
        logger.info(
            "progress: %d%s files, %.1f files/s%s: %s%s",
            done,
            of,
            rate,
            left,
            tally.counts_text(),
            f"; {status}" if status else "",
        )

    def close(self) -> None:
        """Nothing to tear down: the summary follows."""


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


class _AboveBar:
    """A stdout stand-in that writes whole lines with ``tqdm.write`` (bar cleared, then redrawn)."""

    def __init__(self, target: TextIO) -> None:
        self._target = target
        self._partial = ""
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        with self._lock:
            lines = (self._partial + text).split("\n")
            self._partial = lines.pop()
            for line in lines:
                tqdm.write(line, file=self._target)
            self._target.flush()
        return len(text)

    def flush(self) -> None:
        with self._lock:
            if self._partial:
                tqdm.write(self._partial, file=self._target)
                self._partial = ""
            self._target.flush()

    def isatty(self) -> bool:
        return True


@contextmanager
def display(
    state: RunState, verbose: bool, every: float = SUMMARY_EVERY_SECONDS
) -> Iterator[Display]:
    """The bar with logs routed above it on a terminal, summary lines otherwise."""
    if not on_terminal():
        lines = SummaryLines(state, every)
        yield lines
        lines.close()
        return
    handlers = [
        h for h in logging.getLogger(PACKAGE_LOGGER).handlers if isinstance(h, StdoutHandler)
    ]
    levels = [h.level for h in handlers]
    if not verbose:
        for handler in handlers:
            handler.setLevel(max(handler.level, logging.WARNING))
    real_stdout = sys.stdout
    bar = Bar(state)
    # To the bar's own stream: tqdm clears a bar only for writes to its stream (or sys.std*).
    sys.stdout = _AboveBar(sys.stderr)
    try:
        yield bar
    finally:
        sys.stdout.flush()
        sys.stdout = real_stdout
        bar.close()
        for handler, level in zip(handlers, levels, strict=True):
            handler.setLevel(level)
