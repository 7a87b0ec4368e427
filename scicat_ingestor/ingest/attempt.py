"""One attempt at a job, the same for files and samples: how its errors end it, and its one line.

``classify`` is the one mapping from what an attempt may raise to an outcome — a file not ready
yet or a SciCat outage: try again (with the cause the daemon's retry policy and
``scicat_ingestor_retries_total{cause}`` go by); a refused path, file, input or request: give up —
so a file and a sample in the same situation end the same way. ``attempt`` runs one in the job's
log context, times it, observes the duration and logs one line with outcome and seconds.
Kept out of ``outcome``, which the daemon and the status page read without the SciCat client.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from prometheus_client import Histogram

from scicat_ingestor.ingest.files import PathRefused
from scicat_ingestor.ingest.outcome import Outcome, Permanent, Transient, is_failure, outcome_label
from scicat_ingestor.ops.logcontext import current_context, log_context, update_context
from scicat_ingestor.schema.nexus import FileNotReady, NexusError
from scicat_ingestor.scicat import SciCatAuthRefused, SciCatRejected, SciCatUnavailable

_T = TypeVar("_T")


class Refused(Exception):  # noqa: N818 - a signal, not an error: becomes Permanent(reason)
    """This input cannot be ingested as it is (schema, payload, file list, sample name)."""


def classify(step: Callable[[], _T]) -> _T | Permanent | Transient:
    """Run ``step``, turning every expected failure into an outcome; others propagate (bugs)."""
    try:
        return step()
    except FileNotReady as err:  # before NexusError, its base
        return Transient(str(err), cause="file")
    except SciCatAuthRefused as err:  # before SciCatUnavailable, its base
        return Transient(str(err), cause="scicat-auth")
    except SciCatUnavailable as err:
        return Transient(str(err), cause="scicat")
    except (PathRefused, NexusError, SciCatRejected, Refused) as err:
        return Permanent(str(err))


@dataclass(frozen=True)
class Attempted:
    """One finished attempt, as its line tells it; ``pid``: the dataset's or sample's id."""

    job_id: str
    file: str
    outcome: Outcome
    pid: str
    seconds: float

    @property
    def reason(self) -> str:
        """Why it failed ('' when it did not)."""
        return getattr(self.outcome, "reason", "") if is_failure(self.outcome) else ""


@dataclass(frozen=True)
class Reporting:
    """How one kind of job reports its attempts.

    ``pid_field``: the log-context field that gets the outcome's id ('' = none: a sample's id is
    no dataset pid).
    """

    logger: logging.Logger
    seconds: Histogram
    line: Callable[[Attempted], str]
    pid_field: str = ""


def attempt(reporting: Reporting, job_id: str, file: str, step: Callable[[], Outcome]) -> Outcome:
    """One attempt at ``step`` for ``file``: classified, timed, observed, logged once (WARNING
    when it failed), with the job's log context around all of it."""
    started = time.perf_counter()
    with log_context(job_id=job_id, file=file):
        outcome = classify(step)
        seconds = time.perf_counter() - started
        reporting.seconds.observe(seconds)
        # a failure after the id was known still names it (from the context)
        pid = getattr(outcome, "pid", "") or current_context().get(reporting.pid_field, "")
        update_context(outcome=outcome_label(outcome))
        if reporting.pid_field:
            update_context(**{reporting.pid_field: pid})
        reporting.logger.log(
            logging.WARNING if is_failure(outcome) else logging.INFO,
            "%s",
            reporting.line(Attempted(job_id, file, outcome, pid, seconds)),
            extra={"seconds": round(seconds, 3)},
        )
    return outcome
