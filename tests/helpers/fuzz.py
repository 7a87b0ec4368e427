"""Hypothesis settings for the fuzz tests: modest in ``make test``, many more under ``make chaos``.

The profile is chosen by ``SCICAT_FUZZ_PROFILE`` (``fuzz`` by default, ``chaos`` from
``bench.chaos``). The fuzz tests decorate themselves with ``FUZZ`` instead of loading a global
profile, so other hypothesis tests in the suite keep their own settings.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

_COMMON: dict[str, object] = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
    "print_blob": True,
}
settings.register_profile("fuzz", max_examples=150, **_COMMON)  # type: ignore[arg-type]
settings.register_profile("chaos", max_examples=2000, **_COMMON)  # type: ignore[arg-type]

PROFILE = os.environ.get("SCICAT_FUZZ_PROFILE", "fuzz")
FUZZ = settings.get_profile(PROFILE)
