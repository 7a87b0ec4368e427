"""What the status page shows about the past: the last files, the last dead letters and an hour of
outcome counts, recorded by the daemon's poll thread and read by the health server's threads.

Memory is bounded whatever the run length: two fixed-length deques and a ring of per-minute
counters (one slot per minute of the last hour, each a counter over the bounded set of outcome
labels). File names and reasons are untrusted and can be long, so each is cut to
``MAX_TEXT`` characters when recorded.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

DEFAULT_RECENT = 50
BUCKET_SECONDS = 60
HISTORY_BUCKETS = 60  # one hour of one-minute buckets
MAX_TEXT = 2000


@dataclass(frozen=True)
class FileRecord:
    """One finished file, as the page lists it."""

    at: float  # epoch seconds
    file: str
    outcome: str  # the FILES metric's label (created, existed, dead_lettered, ...)
    seconds: float  # from its first message to its outcome (retries included)
    pid: str = ""  # the dataset, for created and existed files


@dataclass(frozen=True)
class LetterRecord:
    """One stored dead letter: what it is about (file, or topic[partition]@offset) and why."""

    at: float
    subject: str
    reason: str


@dataclass(frozen=True)
class SourceInfo:
    """The configuration the page names (no secrets: the frontend URL carries no credentials)."""

    trigger: str = "kafka"
    topics: tuple[str, ...] = ()
    frontend_url: str = ""

    def dataset_url(self, pid: str) -> str:
        """The dataset's page in the SciCat frontend (its ``/datasets/<pid>`` route), or ""."""
        if not self.frontend_url or not pid:
            return ""
        return f"{self.frontend_url.rstrip('/')}/datasets/{quote(pid, safe='')}"


class StatusRecorder:
    """Thread-safe ring buffers of recent files, dead letters and per-minute outcome counts."""

    def __init__(
        self,
        recent: int = DEFAULT_RECENT,
        *,
        bucket_seconds: int = BUCKET_SECONDS,
        buckets: int = HISTORY_BUCKETS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.bucket_seconds = bucket_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._files: deque[FileRecord] = deque(maxlen=recent)
        self._letters: deque[LetterRecord] = deque(maxlen=recent)
        # slot i holds bucket number n (epoch // bucket_seconds) with n % len == i
        self._numbers: list[int] = [-1] * buckets
        self._counts: list[Counter[str]] = [Counter() for _ in range(buckets)]
        self._totals: Counter[str] = Counter()

    def file_finished(self, file: str, outcome: str, seconds: float, pid: str = "") -> None:
        now = self._clock()
        record = FileRecord(now, _cut(file), outcome, round(seconds, 3), _cut(pid))
        with self._lock:
            self._files.append(record)
            self._totals[outcome] += 1
            self._bucket(now)[outcome] += 1

    def dead_letter(self, subject: str, reason: str) -> None:
        record = LetterRecord(self._clock(), _cut(subject), _cut(reason))
        with self._lock:
            self._letters.append(record)

    def view(self, source: SourceInfo) -> dict[str, Any]:
        """The recorded part of ``/status.json``: newest first; history oldest first."""
        now = self._clock()
        with self._lock:
            files = list(self._files)
            letters = list(self._letters)
            totals = dict(self._totals)
            history = self._history(now)
        return {
            "files": [_file_json(record, source) for record in reversed(files)],
            "dead_letters": [
                {"at": _iso(r.at), "subject": r.subject, "reason": r.reason}
                for r in reversed(letters)
            ],
            "totals": totals,
            "history": history,
        }

    def _bucket(self, now: float) -> Counter[str]:
        number = int(now // self.bucket_seconds)
        slot = number % len(self._numbers)
        if self._numbers[slot] != number:  # an older hour's minute: reuse the slot
            self._numbers[slot] = number
            self._counts[slot] = Counter()
        return self._counts[slot]

    def _history(self, now: float) -> dict[str, Any]:
        size = len(self._numbers)
        last = int(now // self.bucket_seconds)
        first = last - size + 1
        counts: list[Counter[str]] = []
        for number in range(first, last + 1):
            slot = number % size
            counts.append(self._counts[slot] if self._numbers[slot] == number else Counter())
        outcomes = sorted({label for bucket in counts for label in bucket})
        return {
            "bucket_seconds": self.bucket_seconds,
            "start": _iso(first * self.bucket_seconds),
            "outcomes": {label: [bucket[label] for bucket in counts] for label in outcomes},
            "files_per_second": [
                round(sum(bucket.values()) / self.bucket_seconds, 3) for bucket in counts
            ],
        }


def _file_json(record: FileRecord, source: SourceInfo) -> dict[str, Any]:
    linked = record.outcome in ("created", "existed")
    return {
        "at": _iso(record.at),
        "file": record.file,
        "outcome": record.outcome,
        "seconds": record.seconds,
        "pid": record.pid,
        "url": source.dataset_url(record.pid) if linked else "",
    }


def _cut(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")
