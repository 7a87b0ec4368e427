"""The SciCat-outage backoff: doubles, is capped, jitters, and survives an outage of any length."""

from __future__ import annotations

import pytest

from scicat_ingestor.daemon import scicat_retry_delay


@pytest.mark.parametrize(("failures", "base"), [(1, 1.0), (2, 2.0), (3, 4.0), (5, 16.0)])
def test_delay_doubles_with_jitter(failures: int, base: float) -> None:
    delays = {scicat_retry_delay(failures, 1.0, 60.0) for _ in range(50)}
    assert all(0.8 * base <= d <= 1.2 * base for d in delays)
    assert len(delays) > 1


def test_delay_never_exceeds_the_cap_even_after_days_of_failures() -> None:
    assert scicat_retry_delay(7, 1.0, 60.0) <= 60.0
    assert scicat_retry_delay(100_000, 1.0, 60.0) == 60.0
