"""The long-running service: source poll loop → bounded thread pool → ``Pipeline`` → commit.

One thread (the poll thread) owns the source, the offset tracker and all bookkeeping; workers only
run ``Pipeline.ingest`` and hand the outcome back through a queue. The loop never blocks on work
or on a dead-letter sink:

- **Backpressure**: at most ``max_offline_ingestors + queue_size`` files are in flight (running,
  queued, waiting to retry or waiting for their dead letter). At the bound, while SciCat is
  failing and while dead letters cannot be stored, all assigned partitions are paused and
  ``poll()`` keeps being called, so the group membership stays alive.
- **At-least-once**: an offset is committed only when every message before it finished
  (ingested, skipped, or dead-lettered *and the letter stored*). A crash re-delivers unfinished
  work; the pipeline's exists-check turns a re-delivered file into ``Existed``, not a second
  dataset.
- **Retries** wait in a timer heap checked every loop pass: a file that is not readable yet
  follows the upstream open-retry schedule and is then dead-lettered; a SciCat outage (including
  refused credentials) and a dead-letter sink outage are retried with capped exponential backoff
  for as long as they last; SciCat outages are never dead-lettered.
- **Rebalance and shutdown** give running work ``drain_grace_period`` seconds to finish, commit
  what finished and leave the rest to be re-delivered. Letters are written only for messages of
  partitions the daemon still owns, so each message gets at most one letter from its owner.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import os
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

from scicat_ingestor.config.model import IngestorConfig
from scicat_ingestor.daemon.deadletters import DeadLetter, DeadLetters
from scicat_ingestor.ingest.outcome import (
    Created,
    Existed,
    Outcome,
    Permanent,
    Transient,
    outcome_label,
)
from scicat_ingestor.ingest.pipeline import Job
from scicat_ingestor.ingest.retry import backoff_delay, file_retry_delays
from scicat_ingestor.ingest.samples import SampleJob
from scicat_ingestor.ops import metrics
from scicat_ingestor.ops.exitcodes import EXIT_FAILURE, EXIT_OK
from scicat_ingestor.ops.logcontext import log_context
from scicat_ingestor.ops.state import ServiceState
from scicat_ingestor.ops.status import StatusRecorder
from scicat_ingestor.sources.base import Record, Source, SourceError
from scicat_ingestor.sources.offsets import OffsetTracker, TopicPartition
from scicat_ingestor.sources.triage import Poison, RunStart, Skip, WritingFinished, triage, vet

logger = logging.getLogger("scicat_ingestor.daemon")

_POLL_TIMEOUT = 0.1  # seconds; also the latency of handling finished work while not paused
_SINK_ERROR_LOG_INTERVAL = 60.0  # seconds between ERROR lines while letters cannot be stored


class Ingestor(Protocol):
    """What the daemon needs from the pipeline: one thread-safe attempt per call."""

    def ingest(self, job: Job) -> Outcome: ...


@dataclass(eq=False)
class _Work:
    """One file in flight, and every message (original and duplicates) waiting for it."""

    key: str
    job: Job
    messages: list[Record]
    started: float  # the daemon's clock at the start, for the status page's seconds
    future: Future[None] | None = None
    file_failures: int = 0
    scicat_failures: int = 0
    abandoned: bool = False
    letter: _Letter | None = None  # set once the file was given up on

    def partitions(self) -> set[TopicPartition]:
        return {record.tp for record in self.messages}


@dataclass(eq=False)
class _Letter:
    """A dead letter on its way to the sinks; its messages finish only once it is stored."""

    reason: str
    work: _Work | None  # the file given up on (its messages finish with it), or None for poison
    poison: Record | None = None
    failures: int = 0
    sending: bool = False  # handed to the sinks, no answer yet
    dropped: bool = False  # its messages are no longer ours: late answers are ignored

    def messages(self) -> list[Record]:
        if self.work is not None:
            return self.work.messages
        return [self.poison] if self.poison is not None else []

    def build(self) -> DeadLetter:
        """The letter, naming the first message still owned (not one of a revoked partition)."""
        record = self.messages()[0]
        if self.work is None:
            return DeadLetter(self.reason, record)
        return DeadLetter(self.reason, record, self.work.job.file_path, self.work.job.job_id)


@dataclass
class RunTotals:
    """What one run did (logged at shutdown; read by tests and the benchmark)."""

    messages: Counter[str] = field(default_factory=Counter)
    files: Counter[str] = field(default_factory=Counter)
    samples: Counter[str] = field(default_factory=Counter)
    retries: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    peak_in_flight: int = 0
    letters_stored: int = 0
    letter_failures: int = 0


class Daemon:
    """Consumes ``source`` and ingests every announced file through ``pipeline``."""

    def __init__(
        self,
        config: IngestorConfig,
        pipeline: Ingestor,
        dead_letters: DeadLetters,
        source: Source,
        state: ServiceState | None = None,
        *,
        samples: Ingestor | None = None,
        recorder: StatusRecorder | None = None,
        clock: Callable[[], float] = time.monotonic,
        executor: Executor | None = None,
        poll_timeout: float = _POLL_TIMEOUT,
    ) -> None:
        """``samples``: ingests ``pl72`` run starts (``SampleJob``); None skips them.
        ``recorder``: the status page's history of files and dead letters.
        ``clock`` (monotonic seconds) times retries, commits and grace periods, ``executor`` runs
        the attempts (shut down by ``run``; by default a pool of ``max_offline_ingestors``
        threads) and ``poll_timeout`` is how long an idle loop pass waits for a message or a
        finished attempt: tests swap them to drive the daemon without waiting on the wall clock."""
        ingestion = config.ingestion
        self._recorder = recorder or StatusRecorder()
        self._samples = samples
        self._config = config
        self._pipeline = pipeline
        self._dead_letters = dead_letters
        self._source = source
        self._state = state or ServiceState()
        self._workers = max(ingestion.max_offline_ingestors, 1)
        self.bound = self._workers + max(ingestion.queue_size, 0)
        # Resume at half the bound, not just below it: each pause/resume drops and re-fetches
        # prefetched data, so fewer, longer pauses keep the workers fed (bench: +31 % files/s).
        self._resume_at = self.bound // 2
        self._file_delays = file_retry_delays(ingestion.file_handling)
        self._grace = max(ingestion.drain_grace_period, 0.0)
        self._commit_interval = max(config.kafka.commit_interval, 0.0)
        self._clock = clock
        self._poll_timeout = poll_timeout
        self._executor = executor or ThreadPoolExecutor(self._workers, thread_name_prefix="ingest")
        self._results: queue.SimpleQueue[tuple[_Work, Outcome]] = queue.SimpleQueue()
        self._tracker = OffsetTracker()
        self._work: dict[str, _Work] = {}
        self._letters: set[_Letter] = set()  # not stored yet (sending or waiting to retry)
        self._retries: list[tuple[float, int, _Work | _Letter]] = []
        self._sequence = itertools.count()
        self._active_lock = threading.Lock()
        self._active = 0
        self._stop = threading.Event()
        self._stop_reason = ""
        self._stop_deadline = math.inf  # the grace period counts from the stop request
        self._stopping = False
        self._scicat_failing = False
        self._sink_error = ""
        self._sink_error_logged = -math.inf
        self.totals = RunTotals()

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
        self._stop_deadline = self._clock() + self._grace
        self._stop.set()

    def run(self) -> int:
        """Run until ``request_stop``; 0 after a clean drain, 1 if the source failed fatally."""
        try:
            self._source.start(self)
            if self._config.ingestion.dry_run:
                logger.warning("dry run: nothing is written to SciCat and no offset is committed")
            next_commit = self._clock() + self._commit_interval
            while not self._stop.is_set():
                self._loop_once()
                if self._clock() >= next_commit:
                    self._commit()
                    next_commit = self._clock() + self._commit_interval
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

    def _loop_once(self) -> None:
        """One loop pass: start due retries, apply finished work and letters, flow control, poll."""
        self._dispatch_due_retries()
        self._pump()
        self._flow_control()
        if self._source.paused:
            # Nothing is fetched while paused; poll(0) serves callbacks, then wait for workers.
            record = self._source.poll(0)
            if record is None:
                self._apply_results(wait=self._poll_timeout)
        else:
            record = self._source.poll(self._poll_timeout)
        if record is not None:
            self._accept(record)

    def _pump(self, wait: float = 0.0) -> None:
        """Apply the sinks' confirmations and the workers' outcomes (waiting up to ``wait``)."""
        self._dead_letters.poll()
        self._apply_results(wait)

    def _accept(self, record: Record) -> None:
        self._tracker.add(record.tp, record.offset)
        if record.announcement is None:
            verdict = triage(record.value, run_start=self._samples is not None)
        else:  # the source announced the file itself: nothing to decode
            verdict = vet(record.announcement)
        kind = _KINDS.get(type(verdict)) or type(verdict).__name__.lower()
        metrics.MESSAGES.labels(record.topic, kind).inc()
        self.totals.messages[kind] += 1
        if isinstance(verdict, Skip):
            logger.debug("skipped %s[%d]@%d: %s", *_where(record), verdict.reason)
            self._tracker.done(record.tp, record.offset)
        elif isinstance(verdict, Poison):
            self._send_letter(_Letter(verdict.reason, None, record))
        else:
            self._start(record, verdict)

    def _start(self, record: Record, message: WritingFinished | RunStart) -> None:
        key = os.path.normpath(message.file_name)
        if isinstance(message, RunStart):  # a run's sample and its dataset are separate work
            key = f"pl72:{key}"
        existing = self._work.get(key)
        if existing is not None:
            existing.messages.append(record)
            self.totals.duplicates += 1
            logger.info(
                "%s is already being ingested; message %s[%d]@%d completes with it",
                message.file_name,
                *_where(record),
            )
            return
        kind = SampleJob if isinstance(message, RunStart) else Job
        job = kind(message.file_name, message.job_id, message.as_dict())
        work = _Work(key, job, [record], self._clock())
        self._work[key] = work
        self.totals.peak_in_flight = max(self.totals.peak_in_flight, self._in_flight())
        self._submit(work)

    def _submit(self, work: _Work) -> None:
        work.future = self._executor.submit(self._attempt, work)

    def _attempt(self, work: _Work) -> None:
        """Worker thread: one attempt; the outcome goes back to the poll thread."""
        with self._active_lock:
            self._active += 1
        try:
            samples = self._samples if isinstance(work.job, SampleJob) else None
            outcome = (samples or self._pipeline).ingest(work.job)
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
                pid = outcome.pid if isinstance(outcome, Created | Existed) else ""
                self._finish(work, outcome_label(outcome), pid)

    def _give_up(self, work: _Work, reason: str) -> None:
        """Dead-letter the file; it stays in flight (its messages unfinished) until stored."""
        work.letter = _Letter(reason, work)
        self._send_letter(work.letter)

    def _finish(self, work: _Work, label: str, pid: str = "") -> None:
        if isinstance(work.job, SampleJob):
            metrics.SAMPLES.labels(label).inc()
            self.totals.samples[label] += 1
        else:
            metrics.FILES.labels(label).inc()
            self.totals.files[label] += 1
            seconds = self._clock() - work.started
            self._recorder.file_finished(work.job.file_path, label, seconds, pid)
        del self._work[work.key]
        for record in work.messages:
            self._tracker.done(record.tp, record.offset)
            self._source.finished(record, label)

    # -- dead letters ---------------------------------------------------------------------------

    def _send_letter(self, letter: _Letter) -> None:
        self._letters.add(letter)
        letter.sending = True
        self._dead_letters.send(letter.build(), lambda error: self._letter_answered(letter, error))

    def _letter_answered(self, letter: _Letter, error: str | None) -> None:
        """A sink confirmation, applied on the poll thread (from ``DeadLetters.poll``)."""
        letter.sending = False
        if letter.dropped:
            return
        if error is None:
            self._letters.discard(letter)
            self.totals.letters_stored += 1
            work = letter.work
            where = "{}[{}]@{}".format(*_where(letter.messages()[0]))
            subject = work.job.file_path if work is not None else where
            self._recorder.dead_letter(subject, letter.reason)
            if letter.work is not None:
                self._finish(letter.work, "dead_lettered")
            elif letter.poison is not None:
                self._tracker.done(letter.poison.tp, letter.poison.offset)
                self._source.finished(letter.poison, "dead_lettered")
            if self._sink_error:
                self._sink_recovered()
            return
        self.totals.letter_failures += 1
        if self._stopping:
            self._drop_letter(letter)
            return
        letter.failures += 1
        self._sink_failed(error)
        delay = backoff_delay(
            letter.failures,
            self._config.ingestion.retry_initial_delay,
            self._config.ingestion.retry_max_delay,
        )
        heapq.heappush(self._retries, (self._clock() + delay, next(self._sequence), letter))

    def _sink_failed(self, error: str) -> None:
        now = self._clock()
        if not self._sink_error or now - self._sink_error_logged >= _SINK_ERROR_LOG_INTERVAL:
            self._sink_error_logged = now
            logger.error(
                "dead letters cannot be stored (%d waiting; their offsets are not committed, "
                "intake paused, retrying): %s",
                len(self._letters),
                error,
            )
        if error != self._sink_error:
            self._sink_error = error
            self._state.set_dead_letter_error(error)
        metrics.DEAD_LETTER_SINK_FAILING.set(1)

    def _sink_recovered(self) -> None:
        """A letter was stored: letters waiting out a sink backoff are retried now."""
        logger.warning("dead letters are stored again (%d waiting)", len(self._letters))
        self._clear_sink_error()
        self._retry_now(lambda item: isinstance(item, _Letter))

    def _clear_sink_error(self) -> None:
        self._sink_error = ""
        self._state.set_dead_letter_error("")
        metrics.DEAD_LETTER_SINK_FAILING.set(0)

    def _drop_letter(self, letter: _Letter) -> None:
        """Give up on storing ``letter``: its messages stay unfinished (redelivered)."""
        letter.dropped = True
        self._letters.discard(letter)
        if letter.work is not None and not letter.work.abandoned:
            self._abandon(letter.work)
        if self._sink_error and not self._letters:
            # Nothing waits for the sink any more (revoked, lost): the outage no longer holds
            # intake; the next letter finds out whether the sink works.
            logger.info("no dead letter waits for the failing sink any more: taking messages")
            self._clear_sink_error()

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
        else:  # "scicat" or "scicat-auth": an outage, retried for as long as it lasts
            work.scicat_failures += 1
            ingestion = self._config.ingestion
            delay = backoff_delay(
                work.scicat_failures, ingestion.retry_initial_delay, ingestion.retry_max_delay
            )
            attempt = work.scicat_failures + 1
        metrics.RETRIES.labels(outcome.cause).inc()
        self.totals.retries[outcome.cause] += 1
        logger.info(
            "retrying %s in %.1f s (attempt %d, %s not ready: %s)",
            work.job.file_path,
            delay,
            attempt,
            outcome.cause,
            outcome.reason,
        )
        heapq.heappush(self._retries, (self._clock() + delay, next(self._sequence), work))

    def _dispatch_due_retries(self) -> None:
        now = self._clock()
        while self._retries and self._retries[0][0] <= now:
            _, _, item = heapq.heappop(self._retries)
            if isinstance(item, _Letter):
                if not item.dropped:
                    self._send_letter(item)
            elif not item.abandoned:
                self._submit(item)

    def _scicat_answered(self) -> None:
        """SciCat works again: files waiting out a SciCat backoff are retried now, not later."""
        self._retry_now(lambda item: isinstance(item, _Work) and item.scicat_failures > 0)

    def _retry_now(self, which: Callable[[_Work | _Letter], bool]) -> None:
        now = self._clock()
        self._retries = [
            (now if which(item) else due, seq, item) for due, seq, item in self._retries
        ]
        heapq.heapify(self._retries)

    def _abandon(self, work: _Work) -> None:
        """Drop ``work`` without finishing its messages: they stay uncommitted (redelivered)."""
        work.abandoned = True
        if self._work.get(work.key) is work:
            del self._work[work.key]
        if work.future is not None:
            work.future.cancel()
        if work.letter is not None and not work.letter.dropped:
            self._drop_letter(work.letter)

    # -- flow control ---------------------------------------------------------------------------

    def _in_flight(self) -> int:
        """Files in flight plus poison messages whose letter is not stored yet."""
        return len(self._work) + sum(1 for letter in self._letters if letter.work is None)

    def _flow_control(self) -> None:
        in_flight = self._in_flight()
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
        outage = failing or bool(self._sink_error)
        if self._source.paused:
            if not outage and in_flight <= self._resume_at:
                self._set_paused(False, in_flight)
        elif outage or in_flight >= self.bound:
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
        deadline = self._clock() + self._grace
        # Wait for attempts still running and letters handed to a sink (a finished or
        # retry-waiting one has neither a future nor an unanswered letter).
        while any(w.future is not None and not w.abandoned for w in waiting) or any(
            letter.sending and letter.messages()[0].tp in revoked for letter in self._letters
        ):
            if self._clock() >= min(deadline, self._stop_deadline):
                break
            self._pump(wait=self._poll_timeout)
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
        """Detach ``partitions`` from in-flight work and letters; return the running work.

        Work that also serves messages of partitions we keep carries on (its letter, if any, will
        name a message we keep). Queued and retry-waiting work is dropped at once (running it now
        could race the new owner); running work is dropped only with ``cancel_running``; so are
        letters handed to a sink and not answered yet.
        """
        running = []
        for work in list(self._work.values()):
            if not work.partitions() & partitions:
                continue
            kept = [record for record in work.messages if record.tp not in partitions]
            if kept:
                work.messages = kept
            elif work.future is not None and work.future.running() and not cancel_running:
                running.append(work)
            elif work.letter is not None and work.letter.sending and not cancel_running:
                continue  # on_revoke waits for the sink's answer
            else:
                self._abandon(work)
        for letter in list(self._letters):
            poison = letter.poison
            ours = poison is None or poison.tp not in partitions
            if not ours and (cancel_running or not letter.sending):
                self._drop_letter(letter)
        return running

    def _forget(self, partitions: set[TopicPartition]) -> None:
        for tp in partitions:
            self._tracker.forget(tp)
        self._state.set_assignment(len(self._tracker))

    def _shutdown(self) -> None:
        self._stopping = True
        self._state.set_stopping()
        for _, _, item in self._retries:
            if isinstance(item, _Letter):
                self._drop_letter(item)
            else:
                self._abandon(item)
        self._retries.clear()
        if not self._source.paused:
            self._set_paused(True, self._in_flight())
        started = self._clock()
        while (self._work or self._letters) and self._clock() < self._stop_deadline:
            if self._source.poll(0) is None:  # keeps the membership; partitions are paused
                self._pump(wait=self._poll_timeout)
            else:
                self._pump()
        left = list(self._work.values())
        for work in left:
            self._abandon(work)
        for letter in list(self._letters):
            self._drop_letter(letter)
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._commit()
        self._source.close()
        self._commit_finished_log(self._clock() - started, len(left))

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


_KINDS: dict[type, str] = {WritingFinished: "wrdn", RunStart: "pl72"}


def _where(record: Record) -> tuple[str, int, int]:
    return record.topic, record.partition, record.offset


def _names(partitions: Sequence[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in partitions) or "nothing"
