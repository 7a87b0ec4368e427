"""The ``ingest`` subcommand: ingest files, directories or globs now (backfill, one-off runs).

Files go through the same ``Pipeline`` as the daemon, on a thread pool. A file that is not ready yet
(still locked by its writer, not there yet) is re-opened on the upstream schedule
(``data_file_open_max_tries`` / ``data_file_open_retry_delay``); every other failure is final.
"""

from __future__ import annotations

import glob
import logging
import os
import sys
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from .config import IngestorConfig
from .ops.metrics import FILES, RETRIES
from .outcome import (
    Created,
    DryRun,
    Existed,
    Outcome,
    Permanent,
    Transient,
    is_failure,
    outcome_label,
)
from .pipeline import Job, Pipeline, file_retry_delays
from .schema.loader import load_schemas
from .scicat import SciCatClient

logger = logging.getLogger("scicat_ingestor.batch")

NEXUS_SUFFIXES = (".hdf", ".h5", ".nxs")
EXIT_OK = 0
EXIT_FAILED = 1


@dataclass(frozen=True)
class FileResult:
    """The final outcome of one path (after file-open retries)."""

    path: str
    outcome: Outcome


def expand_paths(paths: Sequence[str]) -> tuple[list[str], list[FileResult]]:
    """Files to ingest (absolute, de-duplicated, in order) and failures for empty patterns.

    A directory contributes its NeXus files (``*.hdf``, ``*.h5``, ``*.nxs``, recursively); a
    pattern with ``*``, ``?`` or ``[`` is a glob (``**`` recurses); anything else is one file, even
    if it does not exist yet (it then gets the file-not-ready retries).
    """
    files: dict[str, None] = {}
    empty: list[FileResult] = []
    for given in paths:
        found = list(_expand_one(given))
        if not found:
            empty.append(FileResult(given, Permanent(f"{given}: no NeXus files found")))
        files.update(dict.fromkeys(os.path.abspath(f) for f in found))
    return list(files), empty


def _expand_one(given: str) -> Iterator[str]:
    if os.path.isdir(given):
        yield from sorted(
            str(p)
            for p in Path(given).rglob("*")
            if p.suffix.lower() in NEXUS_SUFFIXES and p.is_file()
        )
    elif glob.has_magic(given):
        for match in sorted(glob.glob(given, recursive=True)):
            if os.path.isdir(match):
                yield from _expand_one(match)
            else:
                yield match
    else:
        yield given


class _Progress:
    """A one-line counter on stderr, redrawn in place; only when stderr is a terminal."""

    def __init__(self, total: int, stream: TextIO) -> None:
        self._total = total
        self._stream = stream
        self._enabled = stream.isatty()
        self._done = 0
        self._failed = 0
        self._lock = threading.Lock()

    def update(self, outcome: Outcome) -> None:
        with self._lock:
            self._done += 1
            self._failed += is_failure(outcome)
            if self._enabled:
                self._stream.write(
                    f"\r{self._done}/{self._total} files done, {self._failed} failed"
                )
                self._stream.flush()

    def finish(self) -> None:
        if self._enabled and self._done:
            self._stream.write("\n")
            self._stream.flush()


def ingest_with_file_retries(
    pipeline: Pipeline, job: Job, delays: Sequence[float], stop: threading.Event
) -> Outcome:
    """``pipeline.ingest`` re-run while the file is not ready, waiting ``delays`` in turn."""
    outcome = pipeline.ingest(job)
    for attempt, delay in enumerate(delays, start=2):
        if not (isinstance(outcome, Transient) and outcome.cause == "file"):
            break
        logger.info(
            "%s not ready (%s); attempt %d in %.1f s", job.file_path, outcome.reason, attempt, delay
        )
        RETRIES.labels("file").inc()
        if stop.wait(delay):
            break
        outcome = pipeline.ingest(job)
    return outcome


@contextmanager
def open_pipeline(config: IngestorConfig) -> Iterator[Pipeline]:
    """The configured schemas and SciCat client as a Pipeline; the client is closed afterwards."""
    ingestion = config.ingestion
    schemas = load_schemas(ingestion.schemas_directory, ingestion.fallback_schema_file_path)
    client = SciCatClient(config.scicat)
    try:
        yield Pipeline(config, schemas, client)
    finally:
        client.close()


def ingest_command(config: IngestorConfig, paths: Sequence[str], workers: int) -> int:
    """Ingest ``paths`` with ``workers`` threads; print a summary; 0 if none failed, else 1."""
    with open_pipeline(config) as pipeline:
        files, results = expand_paths(paths)
        results += _run(
            pipeline, files, max(workers, 1), file_retry_delays(config.ingestion.file_handling)
        )
    for result in results:
        FILES.labels(outcome_label(result.outcome)).inc()
    print_summary(results, sys.stdout)
    failed = any(is_failure(r.outcome) for r in results)
    return EXIT_FAILED if failed else EXIT_OK


def _run(
    pipeline: Pipeline, files: Sequence[str], workers: int, delays: Sequence[float]
) -> list[FileResult]:
    progress = _Progress(len(files), sys.stderr)
    stop = threading.Event()
    results: dict[str, Outcome] = {}
    executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ingest")
    try:
        futures = {
            executor.submit(ingest_with_file_retries, pipeline, Job(path), delays, stop): path
            for path in files
        }
        for future in as_completed(futures):
            outcome = future.result()
            results[futures[future]] = outcome
            progress.update(outcome)
    except BaseException:
        stop.set()  # ends retry waits; running attempts finish, queued ones are dropped
        executor.shutdown(wait=False, cancel_futures=True)
        raise
    finally:
        executor.shutdown(wait=True)
        progress.finish()
    return [FileResult(path, results[path]) for path in files]


def print_summary(results: Sequence[FileResult], out: TextIO) -> None:
    """One line per file (outcome, path, pid or reason), then the totals."""
    for r in results:
        o = r.outcome
        if isinstance(o, Created):
            detail = f"{o.pid} (origdatablock {o.datablock_id})"
        elif isinstance(o, Existed):
            detail = o.pid + (" (origdatablock added)" if o.repaired else "")
        elif isinstance(o, DryRun):
            detail = o.pid
        else:
            detail = getattr(o, "reason", "")
        out.write(f"{outcome_label(o)}\t{r.path}\t{detail}\n")
    counts = {"created": 0, "existed": 0, "dry run": 0, "failed": 0}
    for r in results:
        if isinstance(r.outcome, Created):
            counts["created"] += 1
        elif isinstance(r.outcome, Existed):
            counts["existed"] += 1
        elif isinstance(r.outcome, DryRun):
            counts["dry run"] += 1
        elif is_failure(r.outcome):
            counts["failed"] += 1
    totals = ", ".join(f"{n} {name}" for name, n in counts.items())
    out.write(f"{len(results)} file(s): {totals}\n")
