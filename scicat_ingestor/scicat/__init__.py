"""The SciCat client package: ``client`` (the methods callers use), ``routes`` (v3/v4 routes and
bodies, one table), ``credentials`` (tokens; what a 401/403 means), ``permissions`` (why a
refusal is this record's), ``http`` (transport, retries), ``errors``, ``lookups`` (SC cache)."""

from scicat_ingestor.scicat.client import SciCatClient
from scicat_ingestor.scicat.credentials import renew_after
from scicat_ingestor.scicat.errors import (
    SciCatAuthRefused,
    SciCatConflict,
    SciCatError,
    SciCatForbidden,
    SciCatRejected,
    SciCatUnavailable,
)
from scicat_ingestor.scicat.lookups import LookupCache

__all__ = [
    "LookupCache",
    "SciCatAuthRefused",
    "SciCatClient",
    "SciCatConflict",
    "SciCatError",
    "SciCatForbidden",
    "SciCatRejected",
    "SciCatUnavailable",
    "renew_after",
]
