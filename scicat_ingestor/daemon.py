"""The long-running service: Kafka poll loop → bounded thread pool → ``Pipeline`` → commit.

One thread (the poll thread) owns the consumer, the offset tracker and all bookkeeping; workers only
run ``Pipeline.ingest`` and hand the outcome back through a queue. The loop never blocks on work:

- **Backpressure**: at most ``max_offline_ingestors + queue_size`` files are in flight (running,
  queued or waiting to retry). At the bound, and while SciCat is failing, all assigned partitions
  are paused and ``poll()`` keeps being called, so the group membership stays alive.
- **At-least-once**: an offset is committed only when every message before it finished
  (ingested, skipped or dead-lettered). A crash re-delivers unfinished work; the pipeline's
  exists-check turns a re-delivered file into ``Existed``, not a second dataset.
- **Retries** wait in a timer heap checked every loop turn: a file that is not readable yet
  follows the upstream open-retry schedule and is then dead-lettered; a SciCat outage is retried
  with capped exponential backoff for as long as it lasts and never dead-lettered.
- **Rebalance and shutdown** give running work ``drain_grace_period`` seconds to finish, commit
  what finished and leave the rest to be re-delivered.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import os
import queue
import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import FrameType
from typing import Protocol

from .config import ConfigError, IngestorConfig
from .deadletter import DeadLetter, DeadLetterError, DeadLetters
from .logcontext import log_context
from .offsets import OffsetTracker, TopicPartition
from .ops import metrics
from .ops.health import HealthServer, HealthServerError
from .outcome import Outcome, Permanent, Transient, outcome_label
from .pipeline import Job, Pipeline, file_retry_delays
from .schema.loader import SchemaError, load_schemas
from .scicat import SciCatClient
from .source import KafkaSource, Record, SourceError
from .state import ServiceState
from .triage import Poison, Skip, WritingFinished, triage

logger = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG = 0, 1, 2
_POLL_TIMEOUT = 0.1  # seconds; also the latency of handling finished work while not paused
_RETRY_JITTER = 0.2  # ± fraction, so files failing together do not retry in lock-step


class Ingestor(Protocol):
    """What the daemon needs from the pipeline: one thread-safe attempt per call."""

    def ingest(self, job: Job) -> Outcome: ...


@dataclass(eq=False)
class _Work:
    """One file in flight, and every message (original and duplicates) waiting for it."""

    key: str
    job: Job
    record: Record
    messages: list[tuple[TopicPartition, int]]
    future: Future[None] | None = None
    file_failures: int = 0
    scicat_failures: int = 0
    abandoned: bool = False

    def partitions(self) -> set[TopicPartition]:
        return {tp for tp, _ in self.messages}


@dataclass
class RunTotals:
    """What one run did (logged at shutdown; read by tests and the benchmark)."""

    messages: Counter[str] = field(default_factory=Counter)
    files: Counter[str] = field(default_factory=Counter)
    retries: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    peak_in_flight: int = 0


class Daemon:
    """Consumes ``config.kafka.topics`` and ingests every announced file through ``pipeline``."""

    def __init__(
        self,
        config: IngestorConfig,
        pipeline: Ingestor,
        dead_letters: DeadLetters,
        state: ServiceState | None = None,
    ) -> None:
        ingestion = config.ingestion
        self._config = config
        self._pipeline = pipeline
        self._dead_letters = dead_letters
        self._state = state or ServiceState()
        self._workers = max(ingestion.max_offline_ingestors, 1)
        self.bound = self._workers + max(ingestion.queue_size, 0)
        # Resume at half the bound, not just below it: each pause/resume drops and re-fetches
        # prefetched data, so fewer, longer pauses keep the workers fed (bench: +31 % files/s).
        self._resume_at = self.bound // 2
        self._file_delays = file_retry_delays(ingestion.file_handling)
        self._grace = max(ingestion.drain_grace_period, 0.0)
        self._commit_interval = max(config.kafka.commit_interval, 0.0)
        self._executor = ThreadPoolExecutor(self._workers, thread_name_prefix="ingest")
        self._results: queue.SimpleQueue[tuple[_Work, Outcome]] = queue.SimpleQueue()
        self._tracker = OffsetTracker()
        self._work: dict[str, _Work] = {}
        self._retries: list[tuple[float, int, _Work]] = []
        self._sequence = itertools.count()
        self._active_lock = threading.Lock()
        self._active = 0
        self._stop = threading.Event()
        self._stop_reason = ""
        self._stop_deadline = math.inf  # the grace period counts from the stop request
        self._stopping = False
        self._scicat_failing = False
        self.totals = RunTotals()
        self._source = KafkaSource(config.kafka, self, self._state)

    # -- public control -------------------------------------------------------------------------

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    @property
    def busy_workers(self) -> int:
        """Ingestion attempts running now (after ``run()`` returned: ones past the grace period)."""
        with self._active_lock:
            return self._active

    def request_stop(self, reason: str = "stop requested") -> None:
        """Ask the loop to stop taking work and drain (thread- and signal-safe)."""
        if self._stop.is_set():
            return
        self._stop_reason = reason
        self._stop_deadline = time.monotonic() + self._grace
        self._stop.set()

    def run(self) -> int:
        """Run until ``request_stop``; 0 after a clean drain, 1 if Kafka failed fatally."""
        try:
            self._source.start()
            if self._config.ingestion.dry_run:
                logger.warning("dry run: nothing is written to SciCat and no offset is committed")
            next_commit = time.monotonic() + self._commit_interval
            while not self._stop.is_set():
                self._turn()
                if time.monotonic() >= next_commit:
                    self._commit()
                    next_commit = time.monotonic() + self._commit_interval
            logger.info("%s: stopping, draining up to %g s", self._stop_reason, self._grace)
            self._shutdown()
        except SourceError as exc:
            logger.error("%s", exc)
            for work in list(self._work.values()):
                self._abandon(work)
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._source.close()
            return EXIT_FAILURE
        return EXIT_OK

    # -- the loop -------------------------------------------------------------------------------

    def _turn(self) -> None:
        """One loop turn: start due retries, apply finished work, flow control, poll once."""
        self._dispatch_due_retries()
        self._apply_results()
        self._flow_control()
        if self._source.paused:
            # Nothing is fetched while paused; poll(0) serves callbacks, then wait for workers.
            record = self._source.poll(0)
            if record is None:
                self._apply_results(wait=_POLL_TIMEOUT)
        else:
            record = self._source.poll(_POLL_TIMEOUT)
        if record is not None:
            self._accept(record)

    def _accept(self, record: Record) -> None:
        self._tracker.add(record.tp, record.offset)
        verdict = triage(record.value)
        kind = "wrdn" if isinstance(verdict, WritingFinished) else type(verdict).__name__.lower()
        metrics.MESSAGES.labels(record.topic, kind).inc()
        self.totals.messages[kind] += 1
        if isinstance(verdict, Skip):
            logger.debug("skipped %s[%d]@%d: %s", *_where(record), verdict.reason)
            self._tracker.done(record.tp, record.offset)
        elif isinstance(verdict, Poison):
            self._dead_letters.send(DeadLetter(verdict.reason, record))
            self._tracker.done(record.tp, record.offset)
        else:
            self._start(record, verdict)

    def _start(self, record: Record, message: WritingFinished) -> None:
        key = os.path.normpath(message.file_name)
        existing = self._work.get(key)
        if existing is not None:
            existing.messages.append((record.tp, record.offset))
            self.totals.duplicates += 1
            logger.info(
                "%s is already being ingested; message %s[%d]@%d completes with it",
                message.file_name,
                *_where(record),
            )
            return
        job = Job(message.file_name, message.job_id, message.as_dict())
        work = _Work(key, job, record, [(record.tp, record.offset)])
        self._work[key] = work
        self.totals.peak_in_flight = max(self.totals.peak_in_flight, len(self._work))
        self._submit(work)

    def _submit(self, work: _Work) -> None:
        work.future = self._executor.submit(self._attempt, work)

    def _attempt(self, work: _Work) -> None:
        """Worker thread: one attempt; the outcome goes back to the poll thread."""
        with self._active_lock:
            self._active += 1
        try:
            outcome = self._pipeline.ingest(work.job)
        except Exception as exc:  # a pipeline bug must not lose the message or the worker
            logger.exception("ingesting %s raised", work.job.file_path)
            outcome = Permanent(f"internal error: {type(exc).__name__}: {exc}")
        finally:
            with self._active_lock:
                self._active -= 1
        self._results.put((work, outcome))

    def _apply_results(self, wait: float = 0.0) -> None:
        """Handle every finished attempt; with ``wait``, block that long for the first one."""
        try:
            item = self._results.get(timeout=wait) if wait > 0 else self._results.get_nowait()
        except queue.Empty:
            return
        while True:
            self._handle(*item)
            try:
                item = self._results.get_nowait()
            except queue.Empty:
                return

    def _handle(self, work: _Work, outcome: Outcome) -> None:
        if work.abandoned:
            logger.debug("%s finished after being given up: %s", work.job.file_path, outcome)
            return
        work.future = None
        with log_context(job_id=work.job.job_id, file=work.job.file_path):
            if isinstance(outcome, Transient):
                self._retry_or_give_up(work, outcome)
                return
            if work.scicat_failures:
                self._scicat_answered()
            if isinstance(outcome, Permanent):
                self._give_up(work, outcome.reason)
            else:
                self._finish(work, outcome_label(outcome))

    def _give_up(self, work: _Work, reason: str) -> None:
        """Dead-letter the file's first message and finish all of them."""
        letter = DeadLetter(reason, work.record, work.job.file_path, work.job.job_id)
        self._finish(
            work, "dead_lettered" if self._dead_letters.send(letter) else "failed_permanent"
        )

    def _finish(self, work: _Work, label: str) -> None:
        metrics.FILES.labels(label).inc()
        self.totals.files[label] += 1
        del self._work[work.key]
        for tp, offset in work.messages:
            self._tracker.done(tp, offset)

    # -- retries --------------------------------------------------------------------------------

    def _retry_or_give_up(self, work: _Work, outcome: Transient) -> None:
        if self._stopping:
            self._abandon(work)
            return
        if outcome.cause == "file":
            work.scicat_failures = 0
            work.file_failures += 1
            if work.file_failures > len(self._file_delays):
                attempts = work.file_failures
                self._give_up(
                    work, f"file not readable after {attempts} attempts: {outcome.reason}"
                )
                return
            delay = self._file_delays[work.file_failures - 1]
            attempt = work.file_failures + 1
        else:
            work.scicat_failures += 1
            ingestion = self._config.ingestion
            delay = scicat_retry_delay(
                work.scicat_failures, ingestion.retry_initial_delay, ingestion.retry_max_delay
            )
            attempt = work.scicat_failures + 1
        metrics.RETRIES.labels(outcome.cause).inc()
        self.totals.retries[outcome.cause] += 1
        logger.info(
            "retrying %s in %.1f s (attempt %d, %s not ready)",
            work.job.file_path,
            delay,
            attempt,
            outcome.cause,
        )
        heapq.heappush(self._retries, (time.monotonic() + delay, next(self._sequence), work))

    def _dispatch_due_retries(self) -> None:
        now = time.monotonic()
        while self._retries and self._retries[0][0] <= now:
            _, _, work = heapq.heappop(self._retries)
            if not work.abandoned:
                self._submit(work)

    def _scicat_answered(self) -> None:
        """SciCat works again: files waiting out a SciCat backoff are retried now, not later."""
        waiting = [entry for entry in self._retries if entry[2].scicat_failures]
        if not waiting:
            return
        now = time.monotonic()
        others = [entry for entry in self._retries if not entry[2].scicat_failures]
        self._retries = others + [(now, seq, work) for _, seq, work in waiting]
        heapq.heapify(self._retries)

    def _abandon(self, work: _Work) -> None:
        """Drop ``work`` without finishing its messages: they stay uncommitted (redelivered)."""
        work.abandoned = True
        if self._work.get(work.key) is work:
            del self._work[work.key]
        if work.future is not None:
            work.future.cancel()

    # -- flow control ---------------------------------------------------------------------------

    def _flow_control(self) -> None:
        in_flight = len(self._work)
        metrics.IN_FLIGHT.set(in_flight)
        self._state.set_in_flight(in_flight)
        failing = any(work.scicat_failures for work in self._work.values())
        if failing != self._scicat_failing:
            self._scicat_failing = failing
            self._state.set_scicat_failing(failing)
            if failing:
                logger.warning("SciCat is failing: not taking new messages until it answers again")
            else:
                logger.info("SciCat answers again: taking new messages")
        if self._source.paused:
            if not failing and in_flight <= self._resume_at:
                self._set_paused(False, in_flight)
        elif failing or in_flight >= self.bound:
            self._set_paused(True, in_flight)

    def _set_paused(self, paused: bool, in_flight: int) -> None:
        if paused:
            self._source.pause()
        else:
            self._source.resume()
        metrics.PAUSED.set(int(paused))
        self._state.set_paused(paused)
        logger.debug(
            "%s consumption (%d in flight, bound %d)",
            "paused" if paused else "resumed",
            in_flight,
            self.bound,
        )

    # -- commits, rebalances, shutdown ----------------------------------------------------------

    def _commit(self, only: set[TopicPartition] | None = None) -> None:
        if self._config.ingestion.dry_run:
            return
        offsets = self._tracker.committable()
        if only is not None:
            offsets = {tp: o for tp, o in offsets.items() if tp in only}
        self._tracker.mark_committed(self._source.commit(offsets))

    def on_assign(self, partitions: Sequence[TopicPartition]) -> None:
        for tp in partitions:
            self._tracker.assign(tp)
        self._state.set_assignment(len(self._tracker))
        logger.info("assigned %s", _names(partitions))

    def on_revoke(self, partitions: Sequence[TopicPartition]) -> None:
        """Finish (within the grace period) and commit what we have of the partitions going away."""
        revoked = set(partitions)
        logger.info("revoking %s", _names(partitions))
        waiting = self._release(revoked, cancel_running=False)
        deadline = time.monotonic() + self._grace
        # Wait for attempts still running (a finished or retry-waiting work has no future).
        while any(w.future is not None and not w.abandoned for w in waiting):
            if time.monotonic() >= min(deadline, self._stop_deadline):
                break
            self._apply_results(wait=_POLL_TIMEOUT)
        self._commit(only=revoked)
        self._release(revoked, cancel_running=True)
        self._forget(revoked)

    def on_lost(self, partitions: Sequence[TopicPartition]) -> None:
        """Another member owns them already: drop their work, no commit is possible."""
        lost = set(partitions)
        logger.warning(
            "lost %s (their unfinished messages will be redelivered)", _names(partitions)
        )
        self._release(lost, cancel_running=True)
        self._forget(lost)

    def _release(self, partitions: set[TopicPartition], cancel_running: bool) -> list[_Work]:
        """Detach ``partitions`` from in-flight work; return the running work to wait for.

        Work that also serves messages of partitions we keep carries on. Queued and retry-waiting
        work is dropped at once (running it now could race the new owner); running work is
        dropped only with ``cancel_running``.
        """
        running = []
        for work in list(self._work.values()):
            if not work.partitions() & partitions:
                continue
            kept = [(tp, o) for tp, o in work.messages if tp not in partitions]
            if kept:
                work.messages = kept
            elif work.future is not None and work.future.running() and not cancel_running:
                running.append(work)
            else:
                self._abandon(work)
        return running

    def _forget(self, partitions: set[TopicPartition]) -> None:
        for tp in partitions:
            self._tracker.forget(tp)
        self._state.set_assignment(len(self._tracker))

    def _shutdown(self) -> None:
        self._stopping = True
        self._state.set_stopping()
        for _, _, work in self._retries:
            self._abandon(work)
        self._retries.clear()
        if not self._source.paused:
            self._set_paused(True, len(self._work))
        started = time.monotonic()
        while self._work and time.monotonic() < self._stop_deadline:
            if self._source.poll(0) is None:  # keeps the membership; partitions are paused
                self._apply_results(wait=_POLL_TIMEOUT)
            else:
                self._apply_results()
        left = list(self._work.values())
        for work in left:
            self._abandon(work)
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._commit()
        self._source.close()
        self._commit_finished_log(time.monotonic() - started, len(left))

    def _commit_finished_log(self, drained_in: float, left: int) -> None:
        totals = self.totals
        logger.info(
            "stopped after draining %.2f s (%d file(s) left for redelivery): messages %s, "
            "files %s, retries %s, duplicates %d, peak in flight %d of %d",
            drained_in,
            left,
            dict(totals.messages),
            dict(totals.files),
            dict(totals.retries),
            totals.duplicates,
            totals.peak_in_flight,
            self.bound,
        )


def scicat_retry_delay(failures: int, initial: float, cap: float) -> float:
    """Seconds before retry number ``failures`` while SciCat fails: doubling from ``initial`` up to
    ``cap``, with ±20 % jitter so files that failed together do not retry in lock-step."""
    backoff = initial * 2.0 ** min(failures - 1, 32)  # capped: a long outage must not overflow
    return min(backoff * random.uniform(1 - _RETRY_JITTER, 1 + _RETRY_JITTER), cap)


def _where(record: Record) -> tuple[str, int, int]:
    return record.topic, record.partition, record.offset


def _names(partitions: Sequence[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in partitions) or "nothing"


# ------------------------------------------------------------------------------------------------
# Entry point
# ------------------------------------------------------------------------------------------------


@contextmanager
def _signal_handlers(daemon: Daemon) -> Iterator[None]:
    """SIGTERM/SIGINT drain and stop; a second one exits at once (work is redelivered later)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_signal(signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if daemon.stop_requested:
            os.write(2, f"{name} again: exiting now without draining\n".encode())
            os._exit(128 + signum)
        daemon.request_stop(f"received {name}")

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_daemon(config: IngestorConfig) -> int:
    """The ``run`` subcommand: 0 after a clean stop, 1 on a fatal runtime error, 2 on bad config."""
    ingestion = config.ingestion
    try:
        schemas = load_schemas(ingestion.schemas_directory, ingestion.fallback_schema_file_path)
    except SchemaError as exc:
        logger.error("%s", exc)
        return EXIT_CONFIG
    client = SciCatClient(config.scicat)
    state = ServiceState()
    health: HealthServer | None = None
    dead_letters: DeadLetters | None = None
    try:
        pipeline = Pipeline(config, schemas, client)
        dead_letters = DeadLetters.from_config(ingestion.dead_letter, config.kafka)
        daemon = Daemon(config, pipeline, dead_letters, state)
        if config.health_check.enabled:
            data_roots = ingestion.file_handling.data_roots
            health = HealthServer(
                config.health_check,
                state,
                client.healthy,
                data_roots,
                credentials=client.credentials,
            ).start()
        # Start-up probe, beside the start (never delaying it or the signal handlers): one line
        # if SciCat refuses the credentials; files then wait and /ready says why.
        threading.Thread(target=client.check_credentials, name="scicat-probe", daemon=True).start()
        with _signal_handlers(daemon):
            status = daemon.run()
    except (ConfigError, SourceError, DeadLetterError) as exc:
        logger.error("%s", exc)
        return EXIT_CONFIG
    except HealthServerError as exc:
        logger.error("%s", exc)
        return EXIT_FAILURE
    finally:
        if health is not None:
            health.stop()
        if dead_letters is not None:
            dead_letters.close()
        client.close()
    if daemon.busy_workers:
        # Worker threads would keep the interpreter alive past the grace period; their messages
        # were not committed and will be redelivered.
        logger.warning(
            "%d ingestion(s) still running after the grace period; exiting anyway",
            daemon.busy_workers,
        )
        logging.shutdown()
        os._exit(status)
    return status
