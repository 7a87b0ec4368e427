"""A SciCat backend stand-in (4.5 with API v3, or 5 with API v3 and v4): an in-memory HTTP server
for tests, the demo and the benchmark, held to the scenarios recorded from the real servers.

One module per job: ``profiles`` (what differs between the backend versions), ``validation``
(request bodies against the real OpenAPI documents), ``filters`` (``?filter=``), ``server`` (HTTP
plumbing), ``routing`` (the route entry type), ``backend`` (the in-memory store, auth and the v3
endpoints: :class:`SciCatStandIn`), ``v4`` (backend 5's API v4 and jobs), ``shapes`` (documents
as v3 and v4 show them), ``faults`` (fault injection: ``standin.faults``, also over
``/_standin/``), ``accounts``, ``messages`` (request/reply types), ``fixtures`` (pytest plugin),
``conformance`` (the recorded scenarios against the stand-in), ``__main__`` (CLI).
"""

from scicat_ingestor.testing.scicat.accounts import DEFAULT_ACCOUNTS, Account
from scicat_ingestor.testing.scicat.backend import DEFAULT_TOKEN, SciCatStandIn
from scicat_ingestor.testing.scicat.filters import FilterError, apply_filter
from scicat_ingestor.testing.scicat.profiles import BACKENDS, DEFAULT_BACKEND
from scicat_ingestor.testing.scicat.validation import (
    DTO_ORIGDATABLOCK,
    DTO_RAW_DATASET,
    load_validators,
)

__all__ = [
    "BACKENDS",
    "DEFAULT_ACCOUNTS",
    "DEFAULT_BACKEND",
    "DEFAULT_TOKEN",
    "DTO_ORIGDATABLOCK",
    "DTO_RAW_DATASET",
    "Account",
    "FilterError",
    "SciCatStandIn",
    "apply_filter",
    "load_validators",
]
