"""Running one-off ingestion jobs (``ingest``, ``replay``) on a thread pool, Ctrl-C included.

Jobs are pulled from an iterator only as workers free up (a window of twice the pool size), so a
backfill of a million files never holds a million futures. A file that is not ready yet (still
locked by its writer, not there yet) is re-opened on the upstream schedule; every other outcome is
final. The first Ctrl-C stops taking jobs and ends retry waits, lets running files finish (for at
most ``drain_seconds``) and reports what was not done; the second exits at once.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType

from scicat_ingestor.config.model import IngestorConfig
from scicat_ingestor.ingest.outcome import Outcome, Transient
from scicat_ingestor.ingest.pipeline import Job, Pipeline
from scicat_ingestor.ops.exitcodes import EXIT_INTERRUPTED
from scicat_ingestor.ops.metrics import RETRIES
from scicat_ingestor.ops.turns import TURNS
from scicat_ingestor.schema.loader import load_schemas
from scicat_ingestor.scicat import SciCatClient

logger = logging.getLogger("scicat_ingestor.commands")

TICK_SECONDS = 0.2
DRAIN_SECONDS = 60.0

# (job, reason it is not ready, seconds until the next attempt); called from worker threads.
OnRetry = Callable[[Job, str, float], None]


def ingest_with_file_retries(
    pipeline: Pipeline,
    job: Job,
    delays: Sequence[float],
    stop: threading.Event,
    on_retry: OnRetry | None = None,
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
        if on_retry is not None:
            on_retry(job, outcome.reason, delay)
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
    turns = TURNS.configured(
        enabled=ingestion.worker_turns, warn_after=ingestion.worker_turn_warn_seconds
    )
    try:
        with turns:
            yield Pipeline(config, schemas, client)
    finally:
        client.close()


@contextmanager
def ctrl_c_stops(stop: threading.Event) -> Iterator[None]:
    """First SIGINT sets ``stop``; the second ends the process at once (exit 130).

    Only the main thread can own signal handlers; elsewhere (tests calling a command from a
    thread) this does nothing and SIGINT keeps its usual meaning.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            os.write(2, b"\ninterrupted again: exiting now\n")
            os._exit(EXIT_INTERRUPTED)
        stop.set()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@dataclass(frozen=True)
class RunEnd:
    """Whether the run was stopped, and how many jobs were still running when the drain ran out."""

    interrupted: bool
    abandoned: int


def run_jobs(
    pipeline: Pipeline,
    jobs: Iterable[Job],
    *,
    workers: int,
    delays: Sequence[float],
    stop: threading.Event,
    on_done: Callable[[Job, Outcome, float], None],
    on_tick: Callable[[], None] = lambda: None,
    on_retry: OnRetry | None = None,
    drain_seconds: float = DRAIN_SECONDS,
) -> RunEnd:
    """Ingest ``jobs`` on ``workers`` threads, calling ``on_done`` (in this thread) per result.

    ``on_tick`` runs at least every ``TICK_SECONDS`` (progress display). When ``stop`` is set the
    queued jobs are dropped and the running ones get ``drain_seconds`` to finish.
    """

    def attempt(job: Job) -> tuple[Outcome, float]:
        started = time.perf_counter()
        outcome = ingest_with_file_retries(pipeline, job, delays, stop, on_retry)
        return outcome, time.perf_counter() - started

    window = 2 * max(workers, 1)
    pending: dict[Future[tuple[Outcome, float]], Job] = {}
    source = iter(jobs)
    drain_until: float | None = None
    pool = ThreadPoolExecutor(max_workers=max(workers, 1), thread_name_prefix="ingest")
    interrupted = False
    try:
        while True:
            while not stop.is_set() and len(pending) < window:
                job = next(source, None)
                if job is None:
                    break
                pending[pool.submit(attempt, job)] = job
            if stop.is_set() and drain_until is None:
                drain_until = time.monotonic() + drain_seconds
                for queued in [f for f in pending if f.cancel()]:
                    del pending[queued]
                if pending:
                    logger.warning(
                        "interrupted: finishing %d running file(s) (at most %.0f s); "
                        "Ctrl-C again to exit now",
                        len(pending),
                        drain_seconds,
                    )
            if not pending or (drain_until is not None and time.monotonic() > drain_until):
                break
            finished, _ = wait(pending, timeout=TICK_SECONDS, return_when=FIRST_COMPLETED)
            for future in finished:
                job = pending.pop(future)
                outcome, seconds = future.result()
                on_done(job, outcome, seconds)
            on_tick()
        interrupted = drain_until is not None
    finally:
        stop.set()  # a failure here (or in on_done) must not leave retry waits behind
        pool.shutdown(wait=not pending, cancel_futures=True)
    return RunEnd(interrupted, len(pending))


def abandon_if_running(end: RunEnd) -> None:
    """Files still running after the drain time: exit 130 now instead of waiting for them."""
    if not end.abandoned:
        return
    logger.error(
        "interrupted: %d file(s) still running after the drain time; exiting", end.abandoned
    )
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(EXIT_INTERRUPTED)
