"""The retry schedules: file-open (upstream), and the outage backoff (doubles, capped, jittered)."""

from __future__ import annotations

import pytest

from scicat_ingestor.config.model import FileHandlingOptions
from scicat_ingestor.ingest.retry import backoff_delay, file_retry_delays


@pytest.mark.parametrize(
    ("tries", "delays", "expected"),
    [
        (3, (), [3.0, 3.0, 3.0]),  # empty → 3 s each
        (4, (1, 2), [1.0, 2.0, 2.0, 2.0]),  # short → padded with the last value
        (2, (1, 2, 5, 7), [1.0, 2.0]),  # long → cut (upstream used it all)
        (3, (-1, 500, 0.5), [0.0, 120.0, 0.5]),  # clamped to [0, 120]
        (0, (5,), []),  # no retries
    ],
)
def test_file_retry_delays(tries: int, delays: tuple[float, ...], expected: list[float]) -> None:
    fh = FileHandlingOptions(data_file_open_max_tries=tries, data_file_open_retry_delay=delays)
    assert file_retry_delays(fh) == expected


@pytest.mark.parametrize(("failures", "base"), [(1, 1.0), (2, 2.0), (3, 4.0), (5, 16.0)])
def test_backoff_doubles_with_jitter(failures: int, base: float) -> None:
    delays = {backoff_delay(failures, 1.0, 60.0) for _ in range(50)}
    assert all(0.8 * base <= d <= 1.2 * base for d in delays)
    assert len(delays) > 1


def test_backoff_never_exceeds_the_cap_even_after_days_of_failures() -> None:
    assert backoff_delay(7, 1.0, 60.0) <= 60.0
    assert backoff_delay(100_000, 1.0, 60.0) <= 60.0


def test_retries_at_the_cap_are_spread_not_in_lock_step() -> None:
    delays = [backoff_delay(100, 1.0, 60.0) for _ in range(200)]
    assert all(40.0 <= d <= 60.0 for d in delays)
    assert max(delays) - min(delays) > 10.0  # clipped at the cap they would all be 60.0
