"""The result of ingesting one file; the daemon's commit, retry and dead-letter logic read it.

``Transient`` means "try again later" (SciCat unreachable or 5xx, file not yet readable);
``Permanent`` means retrying cannot help (bad file, schema, 4xx) and the message goes to the
dead-letter sink.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Created:
    """A new dataset and its origdatablock were created."""

    pid: str
    datablock_id: str = ""


@dataclass(frozen=True)
class Existed:
    """The dataset was already there; ``repaired`` when its missing origdatablock was added now."""

    pid: str
    repaired: bool = False


@dataclass(frozen=True)
class DryRun:
    """Everything was computed, nothing was written to SciCat."""

    pid: str


@dataclass(frozen=True)
class Skipped:
    """Deliberately not ingested (e.g. the file-writer reported an error for this job)."""

    reason: str


@dataclass(frozen=True)
class Permanent:
    """Failed in a way retrying cannot fix; ``reason`` names the file/key/response at fault."""

    reason: str


@dataclass(frozen=True)
class Transient:
    """Failed for now. ``cause`` tells the daemon which retry policy applies.

    - ``"file"``: the file is not readable yet (locked, missing); retried on the file-open schedule,
      then dead-lettered.
    - ``"scicat"``: SciCat is unreachable or answered 5xx/429; retried without limit (backpressure),
      never dead-lettered.
    - ``"scicat-auth"``: SciCat refuses our credentials (expired or revoked token, wrong
      password); handled like ``"scicat"`` until they work again, never dead-lettered.
    """

    reason: str
    cause: Literal["file", "scicat", "scicat-auth"]


Outcome = Created | Existed | DryRun | Skipped | Permanent | Transient


def outcome_label(outcome: Outcome) -> str:
    """Short lowercase name used in logs and metrics labels."""
    return {
        Created: "created",
        Existed: "existed",
        DryRun: "dry_run",
        Skipped: "skipped",
        Permanent: "failed_permanent",
        Transient: "failed_transient",
    }[type(outcome)]


def is_failure(outcome: Outcome) -> bool:
    """Whether the file failed (permanently or for now), as opposed to being done."""
    return isinstance(outcome, Permanent | Transient)
