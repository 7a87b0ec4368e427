"""The schema set in use, reloaded live: on SIGHUP and when a schema file is added, changed or gone.

Instrument scientists edit ``*.imsc.yml`` files while the daemon runs. A reload loads *every* file
again (``loader.load_all``) and swaps the whole set in only when all of them load; a broken edit
keeps the old set, logs one ERROR line per bad file and shows up on ``/ready`` (``schemas``) without
making the service unready. The set is an immutable ``SchemaSet``: a file being ingested took it
once at the start of its attempt (``current()``) and finishes with it, whatever is swapped in
meanwhile.

Change detection is a cheap scan of the directory entries' names, mtimes and sizes (and the fallback
file's) every ``ingestion.schema_reload_interval`` seconds, in a thread of its own, so the poll loop
never waits on the file system. ``request_reload()`` (the SIGHUP handler) wakes that thread at once
and forces a reload even when nothing seems to have changed.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

from scicat_ingestor.ops import metrics
from scicat_ingestor.ops.state import SchemaStatus, ServiceState
from scicat_ingestor.schema.loader import fallback_path, is_schema_file, load_all, log_loaded
from scicat_ingestor.schema.model import SchemaError, SchemaSet

logger = logging.getLogger(__name__)

Fingerprint = tuple[tuple[str, int, int], ...]  # (path, mtime_ns, size) of every schema file


def fingerprint(directory: str | Path, fallback: str = "") -> Fingerprint:
    """What a reload would read, cheaply: names, mtimes and sizes of the schema files."""
    try:
        with os.scandir(directory) as scan:
            paths = [Path(entry.path) for entry in scan if is_schema_file(Path(entry.path))]
    except OSError as exc:  # the directory is gone or unreadable: a state of its own
        return ((f"{directory}: {exc.strerror or exc}", -1, -1),)
    if fallback:
        try:
            paths.append(fallback_path(fallback))
        except SchemaError:
            paths.append(Path(fallback))  # missing: (path, -1, -1) until it appears
    return tuple(sorted(_stat(path) for path in paths))


def _stat(path: Path) -> tuple[str, int, int]:
    try:
        st = path.stat()
    except OSError:
        return (str(path), -1, -1)
    return (str(path), st.st_mtime_ns, st.st_size)


class SchemaRegistry:
    """Holds the current ``SchemaSet``; thread-safe. The first load must succeed (else raises)."""

    def __init__(
        self,
        directory: str | Path,
        fallback: str = "",
        state: ServiceState | None = None,
        interval: float = 0.0,
    ) -> None:
        self._directory = str(directory)
        self._fallback = fallback
        self._state = state
        self._interval = max(interval, 0.0)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._forced = ""  # the reason of a requested reload, "" when none is pending
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._seen = fingerprint(self._directory, fallback)
        schemas, errors = load_all(self._directory, fallback)
        if schemas is None:
            for error in errors[1:]:
                logger.error("%s", error)
            raise SchemaError(errors[0] + (f" (and {len(errors) - 1} more)" if errors[1:] else ""))
        self._current = schemas
        self._status = self._loaded_status(schemas, time.time())
        self._announce(schemas)

    @property
    def status(self) -> SchemaStatus:
        with self._lock:
            return self._status

    def current(self) -> SchemaSet:
        """The set to use for one attempt (take it once, at the start)."""
        with self._lock:
            return self._current

    # -- reloading --------------------------------------------------------------------------

    def reload(self, reason: str) -> bool:
        """Load every file again; swap the set in only if all load. True when swapped."""
        self._seen = fingerprint(self._directory, self._fallback)
        schemas, errors = load_all(self._directory, self._fallback)
        now = time.time()
        if schemas is None:
            metrics.SCHEMA_RELOADS.labels("failed").inc()
            for error in errors:
                logger.error("schema reload (%s) failed, keeping the old set: %s", reason, error)
            with self._lock:
                old = self._status
                self._status = SchemaStatus(
                    old.count, old.newest_mtime, old.loaded_at, "; ".join(errors), now
                )
            self._publish()
            return False
        metrics.SCHEMA_RELOADS.labels("loaded").inc()
        with self._lock:
            self._current = schemas
            self._status = self._loaded_status(schemas, now)
        logger.info("schemas reloaded (%s)", reason)
        self._announce(schemas)
        return True

    def reload_if_changed(self) -> bool | None:
        """Reload when the scan sees a change; None when nothing changed."""
        if fingerprint(self._directory, self._fallback) == self._seen:
            return None
        return self.reload("a schema file changed")

    def request_reload(self, reason: str = "SIGHUP") -> None:
        """Ask the reload thread for a reload now, changed or not (signal-safe: sets flags)."""
        self._forced = reason
        self._wake.set()

    # -- the thread -------------------------------------------------------------------------

    def start(self) -> SchemaRegistry:
        """Start watching: scans every ``interval`` s (0: only ``request_reload``)."""
        self._thread = threading.Thread(target=self._loop, name="schema-reload", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._interval or None)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                forced, self._forced = self._forced, ""
                if forced:
                    self.reload(forced)
                elif self._interval:
                    self.reload_if_changed()
            except Exception:  # a bug here must not end live reloading silently
                logger.exception("schema reload raised; keeping the old set")

    # -- status -----------------------------------------------------------------------------

    def _loaded_status(self, schemas: SchemaSet, now: float) -> SchemaStatus:
        files = [s.file for s in schemas.schemas] + (
            [schemas.fallback.file] if schemas.fallback else []
        )
        mtimes = []
        for file in files:
            try:
                mtimes.append(os.stat(file).st_mtime)
            except OSError:
                continue
        return SchemaStatus(len(schemas.schemas), max(mtimes, default=None), now)

    def _announce(self, schemas: SchemaSet) -> None:
        log_loaded(schemas, self._directory)
        metrics.SCHEMAS_LOADED.set(len(schemas.schemas))
        self._publish()

    def _publish(self) -> None:
        if self._state is not None:
            self._state.set_schemas(self.status)


@contextmanager
def reload_on_sighup(registry: SchemaRegistry) -> Iterator[None]:
    """SIGHUP asks ``registry`` for a reload while the block runs (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_sighup(signum: int, frame: FrameType | None) -> None:
        registry.request_reload("SIGHUP")

    previous = signal.signal(signal.SIGHUP, on_sighup)
    try:
        yield
    finally:
        signal.signal(signal.SIGHUP, previous)
