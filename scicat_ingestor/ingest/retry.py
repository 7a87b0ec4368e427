"""Retry schedules, in one place: the file-open schedule (upstream's) and the outage backoff.

Used by the pipeline's callers (daemon, ``ingest``, ``replay``): a file that is not readable yet is
re-opened on the configured schedule and then given up; an outage (SciCat, the dead-letter sink) is
retried with capped exponential backoff for as long as it lasts.
"""

from __future__ import annotations

import random

from scicat_ingestor.config.model import FileHandlingOptions

DEFAULT_FILE_RETRY_DELAY = 3.0
MAX_FILE_RETRY_DELAY = 120.0
JITTER = 0.2  # ± fraction, so attempts that failed together do not retry in lock-step


def file_retry_delays(fh: FileHandlingOptions) -> list[float]:
    """Seconds to wait before each re-open of a file that is not ready yet (upstream schedule).

    ``data_file_open_max_tries`` is the number of *retries* (upstream counts so: 3 → 4 attempts).
    An empty delay list means 3 s each, a short one is padded with its last value, a long one is
    cut to the number of retries (upstream used it all), and every delay is clamped to [0, 120] s.
    """
    tries = max(fh.data_file_open_max_tries, 0)
    configured = list(fh.data_file_open_retry_delay) or [DEFAULT_FILE_RETRY_DELAY]
    padded = configured + [configured[-1]] * max(tries - len(configured), 0)
    return [min(max(float(d), 0.0), MAX_FILE_RETRY_DELAY) for d in padded[:tries]]


def backoff_delay(failures: int, initial: float, cap: float) -> float:
    """Seconds before retry number ``failures`` of an outage: doubling from ``initial``, ±20 %.

    The jitter window is kept below ``cap`` rather than clipped at it, so retries that reached the
    cap still spread over [0.67, 1] x cap instead of all firing after exactly ``cap`` seconds.
    """
    doubled = initial * 2.0 ** min(failures - 1, 32)  # a long outage must not overflow
    centre = min(doubled, cap / (1 + JITTER))
    return centre * random.uniform(1 - JITTER, 1 + JITTER)
