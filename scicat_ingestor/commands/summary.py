"""The end-of-run summary of ``ingest`` and ``replay``: counts, the failed files, what was not done.

One renderer for both commands, as text (people) or JSON (scripts). Only the first ``limit``
failures are kept, so a million-file backfill during an outage does not hold a million reasons in
memory; the full per-file record is the ``--report`` file's job.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TextIO

from scicat_ingestor.ingest.outcome import Outcome, Skipped, is_failure, outcome_label

FAILURES_SHOWN = 20

# Counted and printed in this order; "skipped" only when there are any.
_SHOWN_COUNTS = (
    ("created", "created"),
    ("existed", "existed"),
    ("dry_run", "dry run"),
    ("skipped", "skipped"),
    ("failed", "failed"),
)


@dataclass(frozen=True)
class FileResult:
    """The final outcome of one file (after file-open retries); ``where`` locates its source."""

    path: str
    outcome: Outcome
    seconds: float = 0.0
    where: str = ""

    @property
    def reason(self) -> str:
        return getattr(self.outcome, "reason", "")

    @property
    def pid(self) -> str:
        return getattr(self.outcome, "pid", "")


def _kind(outcome: Outcome) -> str:
    if is_failure(outcome):
        return "failed"
    return "skipped" if isinstance(outcome, Skipped) else outcome_label(outcome)


@dataclass
class Tally:
    """Running counts of a command's results, the first ``limit`` problems and the elapsed time."""

    limit: int = FAILURES_SHOWN
    counts: Counter[str] = field(default_factory=Counter)
    problems: list[FileResult] = field(default_factory=list)
    problem_total: int = 0
    started: float = field(default_factory=time.monotonic)

    def add(self, result: FileResult) -> None:
        kind = _kind(result.outcome)
        self.counts[kind] += 1
        if kind in ("failed", "skipped"):
            self.problem_total += 1
            if len(self.problems) < self.limit:
                self.problems.append(result)

    @property
    def done(self) -> int:
        return sum(self.counts.values())

    @property
    def failed(self) -> int:
        return self.counts["failed"]

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def counts_text(self) -> str:
        """``1 created, 0 existed, 0 dry run, 2 failed`` (skipped only when there are any)."""
        return ", ".join(
            f"{self.counts[key]} {name}"
            for key, name in _SHOWN_COUNTS
            if key != "skipped" or self.counts[key]
        )


@dataclass(frozen=True)
class Ending:
    """How the run ended: interrupted or not, and how many files it did not get to (if known)."""

    interrupted: bool = False
    not_done: int | None = None  # None: unknown (the tree was not scanned to the end)
    report: str = ""  # the --report file, if any


def write_text(tally: Tally, out: TextIO, heading: str, ending: Ending = Ending()) -> None:
    """The failed (and skipped) files up to the limit, then one totals line, then the ending."""
    if tally.problems:
        out.write("not ingested:\n")
        for r in tally.problems:
            where = f"{r.where} " if r.where else ""
            reason = r.reason if r.reason.startswith(r.path) else f"{r.path}: {r.reason}"
            out.write(f"  {outcome_label(r.outcome)}\t{where}{reason}\n")
        more = tally.problem_total - len(tally.problems)
        if more:
            see = f"see {ending.report}" if ending.report else "use --report FILE to keep them all"
            out.write(f"  … and {more} more, {see}\n")
    out.write(f"{heading} in {tally.elapsed():.1f} s: {tally.counts_text()}\n")
    if ending.interrupted:
        left = "some files" if ending.not_done is None else f"{ending.not_done} file(s)"
        out.write(
            f"interrupted: {left} not done; run the same command again to finish "
            "(datasets already in SciCat are skipped)\n"
        )


def as_json(tally: Tally, ending: Ending = Ending()) -> dict[str, Any]:
    """The summary as one JSON object (``--json``)."""
    return {
        "files": tally.done,
        **{key: tally.counts[key] for key, _ in _SHOWN_COUNTS},
        "seconds": round(tally.elapsed(), 3),
        "interrupted": ending.interrupted,
        "not_done": ending.not_done,
        "report": ending.report or None,
        "not_ingested": [
            {"path": r.path, "outcome": outcome_label(r.outcome), "reason": r.reason}
            for r in tally.problems
        ],
        "not_ingested_not_listed": tally.problem_total - len(tally.problems),
    }


def write_json(tally: Tally, out: TextIO, ending: Ending = Ending()) -> None:
    out.write(json.dumps(as_json(tally, ending), ensure_ascii=False) + "\n")


def report_line(result: FileResult) -> str:
    """One ``--report`` line: path, outcome, pid, reason, seconds."""
    entry = {
        "path": result.path,
        "outcome": outcome_label(result.outcome),
        "pid": result.pid or None,
        "reason": result.reason or None,
        "seconds": round(result.seconds, 3),
    }
    return json.dumps(entry, ensure_ascii=False) + "\n"


@contextmanager
def report_file(path: str) -> Iterator[TextIO | None]:
    """The ``--report`` file, line-buffered so a hard exit keeps every finished line."""
    if not path:
        yield None
        return
    with open(path, "w", encoding="utf-8", buffering=1) as out:
        yield out
