"""The ``replay`` subcommand: re-ingest the files recorded in a dead-letter JSON-lines file.

Letters without a file (tombstones, garbage) are reported as skipped: replay cannot help them.
A file dead-lettered several times is ingested once.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, TextIO

from scicat_ingestor.commands.jobs import abandon_if_running, ctrl_c_stops, open_pipeline, run_jobs
from scicat_ingestor.commands.summary import Ending, FileResult, Tally, write_text
from scicat_ingestor.config import IngestorConfig
from scicat_ingestor.exitcodes import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK
from scicat_ingestor.ops.metrics import FILES
from scicat_ingestor.outcome import Outcome, Skipped, outcome_label
from scicat_ingestor.pipeline import Job
from scicat_ingestor.retry import file_retry_delays
from scicat_ingestor.triage import RunStart, WritingFinished, triage


def read_dead_letters(lines: Iterator[str], source: str) -> Iterator[tuple[str, Job | str]]:
    """(``file:line``, a Job or the reason the line cannot be replayed) for each non-empty line."""
    for number, line in enumerate(lines, start=1):
        where = f"{source}:{number}"
        if not line.strip():
            continue
        try:
            letter = json.loads(line)
        except ValueError as exc:
            yield where, f"not JSON: {exc}"
            continue
        if not isinstance(letter, Mapping):
            yield where, "not a JSON object"
            continue
        yield where, _job_of(letter)


def _job_of(letter: Mapping[str, Any]) -> Job | str:
    """Rebuild the ingestion job from the original message (or the recorded file name)."""
    decoded: WritingFinished | None = None
    value = letter.get("value")
    if isinstance(value, str):
        try:
            verdict = triage(base64.b64decode(value, validate=True), run_start=True)
        except binascii.Error:
            return "value is not base64"
        if isinstance(verdict, RunStart):  # its file_name is the run's file, not a dataset job
            return "a run-start (pl72) message: replay ingests files; re-announce the run instead"
        if isinstance(verdict, WritingFinished):
            decoded = verdict
    if decoded is not None:
        return Job(decoded.file_name, decoded.job_id, decoded.as_dict())
    file_name = letter.get("file_name")
    if isinstance(file_name, str) and file_name:
        return Job(file_name, str(letter.get("job_id") or ""))
    return f"no file to ingest ({letter.get('reason', 'no reason recorded')})"


def replay_command(config: IngestorConfig, source: str, out: TextIO | None = None) -> int:
    """Re-ingest the files of a dead-letter JSON-lines file; summary on stdout; 1 if any failed.

    Letters without a file (tombstones, garbage) are reported as skipped: replay cannot help them.
    A file dead-lettered several times is ingested once. Ctrl-C stops taking files (exit 130).
    """
    out = out or sys.stdout
    try:
        with open(source, encoding="utf-8") as lines:
            entries = list(read_dead_letters(lines, source))
    except OSError as exc:
        print(f"error: {source}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_FAILURE
    tally = Tally()
    jobs: dict[str, tuple[str, Job]] = {}
    for where, entry in entries:
        if isinstance(entry, str):
            _record(tally, FileResult("", Skipped(f"not replayable: {entry}"), where=where))
        else:
            jobs.setdefault(os.path.normpath(entry.file_path), (where, entry))
    skipped = tally.done
    interrupted = _ingest_all(config, list(jobs.values()), tally)
    heading = f"{len(entries)} dead letter(s), {len(jobs)} file(s)"
    not_done = len(jobs) - (tally.done - skipped)
    write_text(tally, out, heading, Ending(interrupted, not_done))
    if interrupted:
        return EXIT_INTERRUPTED
    return EXIT_FAILURE if tally.failed else EXIT_OK


def _ingest_all(config: IngestorConfig, jobs: Sequence[tuple[str, Job]], tally: Tally) -> bool:
    """Ingest the jobs into ``tally``; True if Ctrl-C stopped the replay."""
    if not jobs:
        return False
    where_of = {id(job): where for where, job in jobs}
    stop = threading.Event()

    def done(job: Job, outcome: Outcome, seconds: float) -> None:
        _record(tally, FileResult(job.file_path, outcome, seconds, where=where_of[id(job)]))

    with ctrl_c_stops(stop), open_pipeline(config) as pipeline:
        end = run_jobs(
            pipeline,
            [job for _, job in jobs],
            workers=config.ingestion.max_offline_ingestors,
            delays=file_retry_delays(config.ingestion.file_handling),
            stop=stop,
            on_done=done,
        )
    abandon_if_running(end)
    return end.interrupted


def _record(tally: Tally, result: FileResult) -> None:
    tally.add(result)
    FILES.labels(outcome_label(result.outcome)).inc()
