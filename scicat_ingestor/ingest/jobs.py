"""SciCat jobs after ingestion (a schema's ``jobs:``: archive, embargo): each created once per
dataset and job type, and never at the cost of the dataset.

Once per dataset and type, across redeliveries, restarts and several daemons: every attempt first
looks the job up (``GET v4/jobs?filter=`` by ``jobParams.datasetList.pid`` and ``type``; v3 by
``datasetList.pid``); the server picks a job's id, so a look-up is the only way to know. After an
answer that leaves open whether SciCat created it (a timeout, a 500), the next attempt looks again
before it posts. Two daemons that look at the same moment could still both post; the per-file
hold in the pipeline and Kafka's one-consumer-per-partition make that a rebalance-time race only.

A job's failure leaves the file's outcome as it is (the dataset exists): server errors are retried
with backoff for ``JobRetry.seconds`` (the worker waits meanwhile, so it is bounded), a 4xx is
given up at once; a given-up job is logged as one WARNING, counted, and written to the dead-letter
file (``ingestion.dead_letter.file``) as a job letter that ``replay`` re-submits.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass

from scicat_ingestor.ingest.letters import append_letter, job_letter
from scicat_ingestor.ingest.retry import backoff_delay
from scicat_ingestor.ops.metrics import JOBS
from scicat_ingestor.ops.turns import TURNS
from scicat_ingestor.schema.jobs import JobDraft, JobFailure
from scicat_ingestor.scicat import SciCatClient, SciCatRejected, SciCatUnavailable

logger = logging.getLogger("scicat_ingestor.jobs")


@dataclass(frozen=True)
class JobRetry:
    """Server errors (5xx, no answer, refused credentials) are retried for ``seconds``, waiting
    ``initial_delay`` doubling up to ``max_delay`` between attempts, then the job is given up.

    60 s outlasts a backend restart while a worker, which waits meanwhile, is not held for long:
    the bound is checked between attempts, so one attempt's own request timeouts may add to it.
    """

    seconds: float = 60.0
    initial_delay: float = 1.0
    max_delay: float = 15.0


DEFAULT_JOB_RETRY = JobRetry()


@dataclass(frozen=True)
class JobResult:
    """How one job ended: ``outcome`` is the metric's label, ``reason`` why it was given up."""

    outcome: str
    reason: str = ""


class JobSubmitter:
    """Creates the rendered jobs of one dataset; thread-safe (it keeps no state per job)."""

    def __init__(
        self,
        client: SciCatClient,
        letters_file: str | None,
        retry: JobRetry = DEFAULT_JOB_RETRY,
    ) -> None:
        """``letters_file``: where given-up jobs are recorded ('' = only in the log line,
        None = the caller keeps the letter: ``replay``)."""
        self._client = client
        self._letters_file = letters_file
        self._retry = retry

    def submit_all(
        self, drafts: Iterable[JobDraft], failures: Iterable[JobFailure], file_name: str
    ) -> None:
        """Every job of the dataset in schema order; those that cannot be rendered only warn."""
        for failure in failures:
            JOBS.labels(failure.type, "invalid").inc()
            logger.warning(
                "Job %s not created: a value cannot be rendered: %s", failure.name, failure.error
            )
        for draft in drafts:
            self.submit(draft, file_name)

    def submit(self, draft: JobDraft, file_name: str) -> JobResult:
        """Create the job unless it exists (retried within the bound, given up after)."""
        deadline = time.monotonic() + self._retry.seconds
        failures = 0
        while True:
            try:
                outcome = self._once(draft)
            except SciCatRejected as err:
                return self._give_up(draft, file_name, "rejected", str(err))
            except SciCatUnavailable as err:
                failures += 1
                delay = backoff_delay(failures, self._retry.initial_delay, self._retry.max_delay)
                if time.monotonic() + delay > deadline:
                    why = f"{err} (given up: retried for at most {self._retry.seconds:g} s)"
                    return self._give_up(draft, file_name, "unavailable", why)
                logger.info(
                    "Job %s of dataset %s: %s; trying again in %.1f s",
                    draft.name,
                    draft.dataset_pid,
                    err,
                    delay,
                )
                with TURNS.paused():
                    time.sleep(delay)
                continue
            JOBS.labels(draft.type, outcome).inc()
            return JobResult(outcome)

    def _once(self, draft: JobDraft) -> str:
        """One look-up, then (if none) one POST: ``exists`` or ``created``."""
        found = self._client.find_jobs(draft.dataset_pid, draft.type)
        if found:
            logger.debug(
                "Job %s of dataset %s exists already: %s",
                draft.name,
                draft.dataset_pid,
                found[0].get("id") or found[0].get("_id"),
            )
            return "exists"
        created = self._client.create_job(draft.body)
        logger.info(
            "Job %s (type %s) created for dataset %s: id %s, %s",
            draft.name,
            draft.type,
            draft.dataset_pid,
            created.get("id") or created.get("_id") or "?",
            created.get("statusCode") or created.get("jobStatusMessage") or "no status",
        )
        return "created"

    def _give_up(self, draft: JobDraft, file_name: str, outcome: str, reason: str) -> JobResult:
        """One WARNING, the metric and the job letter (where it went is part of the line)."""
        JOBS.labels(draft.type, outcome).inc()
        letter = job_letter(file_name, reason, draft.dataset_pid, draft.name, draft.body)
        if self._letters_file is None:
            where = "the caller keeps the job letter"
        elif not self._letters_file:
            where = (
                "no dead-letter file configured (ingestion.dead_letter.file), the job letter: "
                + json.dumps(letter, ensure_ascii=False)
            )
        else:
            error = append_letter(self._letters_file, letter)
            where = f"recorded for replay in {self._letters_file}"
            if error is not None:
                where = f"NOT recorded for replay: {error}; the job: {json.dumps(draft.body)}"
        logger.warning(
            "Job %s (type %s) of dataset %s not created (%s): %s; %s",
            draft.name,
            draft.type,
            draft.dataset_pid,
            outcome,
            reason,
            where,
        )
        return JobResult(outcome, reason)
