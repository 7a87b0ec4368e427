"""What the benchmark reads from the daemon's log: its one line per finished file. Kept apart
from the stack (psutil, Kafka) so that ``make test`` checks the pattern against the real line."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class FileLine:
    """What the daemon's line for one finished file says."""

    file: str
    outcome: str
    pid: str
    seconds: float


# The pipeline's one INFO line per file: "<file>: created, dataset <pid>, 0.123 s", then the log
# context's facts the line does not state, e.g. " [job_id=...]".
DONE_LINE = re.compile(
    r"INFO - (.+): (created|existed), dataset (\S+), ([0-9.]+) s(?: \[[^]]*\])?$", re.MULTILINE
)


def file_lines(log_text: str) -> list[FileLine]:
    """Every file a daemon's log says was created or existed, in order."""
    return [FileLine(f, o, pid, float(s)) for f, o, pid, s in DONE_LINE.findall(log_text)]
