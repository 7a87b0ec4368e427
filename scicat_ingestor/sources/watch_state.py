"""Durable memory of the watch trigger: which file versions were seen, ingested or dead-lettered.

Watched directories have no offsets, so this SQLite database plays their part: a restart rescans
the tree and ingests only versions the database has not finished, and versions that were handed
to the daemon but not finished before a crash are handed over again. A file version is its
(path, size, mtime_ns); a rewritten file is a new version and so a new dataset (README).

WAL mode with ``synchronous=NORMAL``: a killed process loses no committed transaction; a power cut
may lose the last few, which is harmless here (a lost "ingested" re-ingests as ``Existed`` through
the deterministic pid, a lost "seen" is found again by the start-up rescan). One connection, used
under a lock by the watcher thread and the poll thread.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

SEEN, INGESTED, DEAD_LETTERED, GONE = "seen", "ingested", "dead_lettered", "gone"
Finished = Literal["ingested", "dead_lettered"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS versions (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    path     TEXT    NOT NULL,
    size     INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    state    TEXT    NOT NULL CHECK (state IN ('seen', 'ingested', 'dead_lettered', 'gone')),
    seen_at  REAL    NOT NULL,
    done_at  REAL,
    outcome  TEXT    NOT NULL DEFAULT '',
    UNIQUE (path, size, mtime_ns)
);
CREATE INDEX IF NOT EXISTS versions_state ON versions (state);
"""


class WatchStateError(RuntimeError):
    """The state file cannot be opened or written; names the file."""


@dataclass(frozen=True)
class FileVersion:
    """One version of one file: a rewrite changes the size or the modification time."""

    path: str
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class Row:
    seq: int
    version: FileVersion
    state: str
    outcome: str


class WatchState:
    """The ``versions`` table of ``watch.state_file``; thread-safe."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise WatchStateError(f"watch.state_file {self.path}: {exc}") from None

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def state_of(self, version: FileVersion) -> str | None:
        """The recorded state of exactly this version, or None if never seen."""
        with self._lock:
            row = self._db.execute(
                "SELECT state FROM versions WHERE path=? AND size=? AND mtime_ns=?",
                (version.path, version.size, version.mtime_ns),
            ).fetchone()
        return None if row is None else str(row[0])

    def known(self) -> set[FileVersion]:
        """Every version recorded (any state): what a rescan does not need to look at again."""
        with self._lock:
            rows = self._db.execute("SELECT path, size, mtime_ns FROM versions").fetchall()
        return {FileVersion(str(p), int(s), int(m)) for p, s, m in rows}

    def seen(self, version: FileVersion) -> int:
        """Record ``version`` as handed to the daemon; its sequence number (the record offset).

        A version already recorded as ``gone`` (it vanished, then came back unchanged) is seen
        again under its old number.
        """
        with self._lock, self._write():
            self._db.execute(
                "INSERT INTO versions (path, size, mtime_ns, state, seen_at) VALUES (?,?,?,?,?) "
                "ON CONFLICT (path, size, mtime_ns) DO UPDATE SET state=excluded.state "
                "WHERE state = 'gone'",
                (version.path, version.size, version.mtime_ns, SEEN, time.time()),
            )
            row = self._db.execute(
                "SELECT seq FROM versions WHERE path=? AND size=? AND mtime_ns=?",
                (version.path, version.size, version.mtime_ns),
            ).fetchone()
        return int(row[0])

    def finish(self, seq: int, state: Finished, outcome: str) -> None:
        """The daemon finished version ``seq``: its dataset exists or its dead letter is stored."""
        with self._lock, self._write():
            self._db.execute(
                "UPDATE versions SET state=?, outcome=?, done_at=? WHERE seq=?",
                (state, outcome, time.time(), seq),
            )

    def gone(self, seq: int) -> None:
        """An unfinished version that no longer exists on disk (deleted or rewritten meanwhile)."""
        with self._lock, self._write():
            self._db.execute(
                "UPDATE versions SET state=? WHERE seq=? AND state=?", (GONE, seq, SEEN)
            )

    def unfinished(self) -> list[Row]:
        """Versions handed to the daemon and not finished (a crash or stop came first), in order."""
        return self._rows("WHERE state=? ORDER BY seq", (SEEN,))

    def earlier_versions(self, path: str) -> list[Row]:
        """Finished versions of ``path`` (to say so when a rewritten file is ingested again)."""
        return self._rows(
            "WHERE path=? AND state IN (?, ?) ORDER BY seq", (path, INGESTED, DEAD_LETTERED)
        )

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT state, COUNT(*) FROM versions GROUP BY state")
            return {str(state): int(n) for state, n in rows}

    def _rows(self, where: str, args: tuple[object, ...]) -> list[Row]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT seq, path, size, mtime_ns, state, outcome FROM versions {where}", args
            ).fetchall()
        return [
            Row(int(q), FileVersion(str(p), int(s), int(m)), str(t), str(o))
            for q, p, s, m, t, o in rows
        ]

    def rows(self) -> list[Row]:
        """Every row in sequence order (diagnosis and tests)."""
        return self._rows("ORDER BY seq", ())

    @contextmanager
    def _write(self) -> Iterator[None]:
        """One transaction; an sqlite error becomes a ``WatchStateError`` naming the file."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise WatchStateError(f"watch.state_file {self.path}: {exc}") from None
