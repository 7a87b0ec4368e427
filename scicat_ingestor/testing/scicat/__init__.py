"""A SciCat v3 backend stand-in: an in-memory HTTP server for tests, the demo and the benchmark.

One module per job: ``validation`` (request bodies against the real OpenAPI document),
``filters`` (``?filter=``), ``server`` (HTTP plumbing), ``backend`` (the in-memory store and its
endpoints: :class:`SciCatStandIn`), ``faults`` (fault injection, also over ``/_standin/``),
``accounts``, ``messages`` (request/reply types), ``fixtures`` (pytest plugin), ``__main__`` (CLI).
"""

from scicat_ingestor.testing.scicat.accounts import DEFAULT_ACCOUNTS, Account
from scicat_ingestor.testing.scicat.backend import DEFAULT_TOKEN, SciCatStandIn
from scicat_ingestor.testing.scicat.filters import FilterError, apply_filter
from scicat_ingestor.testing.scicat.validation import (
    DTO_ORIGDATABLOCK,
    DTO_RAW_DATASET,
    load_validators,
)

__all__ = [
    "DEFAULT_ACCOUNTS",
    "DEFAULT_TOKEN",
    "DTO_ORIGDATABLOCK",
    "DTO_RAW_DATASET",
    "Account",
    "FilterError",
    "SciCatStandIn",
    "apply_filter",
    "load_validators",
]
