"""The ``replay`` subcommand: re-ingest the files recorded in a dead-letter JSON-lines file.

Letters without a file (tombstones, garbage) are reported as skipped: replay cannot help them.
A file dead-lettered several times is ingested once. ``--still-failing FILE`` closes the loop:
the letters whose file failed again (or was not reached) are written there, with the new reason,
ready for the next replay, so a dead-letter file can be worked down instead of only growing.
The letters of ``ingest --dead-letters`` have the same form. A job letter (``kind: scicat_job``,
a SciCat job given up after its dataset was created) is re-submitted, not re-ingested: the job is
looked up first, so a job created meanwhile is not created twice.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

from scicat_ingestor.commands.jobs import abandon_if_running, ctrl_c_stops, open_pipeline, run_jobs
from scicat_ingestor.commands.summary import (
    Ending,
    FileResult,
    Tally,
    report_file,
    report_line,
    write_text,
)
from scicat_ingestor.config.model import IngestorConfig
from scicat_ingestor.ingest.jobs import JobResult, JobSubmitter
from scicat_ingestor.ingest.letters import JOB_KIND, file_letter
from scicat_ingestor.ingest.outcome import (
    Created,
    Existed,
    Outcome,
    Permanent,
    Skipped,
    Transient,
    is_failure,
    outcome_label,
)
from scicat_ingestor.ingest.pipeline import Job
from scicat_ingestor.ingest.retry import file_retry_delays
from scicat_ingestor.ops.exitcodes import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE
from scicat_ingestor.ops.metrics import FILES
from scicat_ingestor.schema.jobs import JobDraft
from scicat_ingestor.scicat import SciCatClient
from scicat_ingestor.sources.triage import RunStart, WritingFinished, triage

Letter = dict[str, Any]


def read_dead_letters(
    lines: Iterator[str], source: str
) -> Iterator[tuple[str, Job | str, Letter | None]]:
    """(``file:line``, a Job or why the line cannot be replayed, the letter) per non-empty line."""
    for number, line in enumerate(lines, start=1):
        where = f"{source}:{number}"
        if not line.strip():
            continue
        try:
            letter = json.loads(line)
        except ValueError as exc:
            yield where, f"not JSON: {exc}", None
            continue
        if not isinstance(letter, dict):
            yield where, "not a JSON object", None
            continue
        yield where, _job_of(letter), letter


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


def replay_command(
    config: IngestorConfig,
    source: str,
    out: TextIO | None = None,
    *,
    report: str = "",
    still_failing: str = "",
) -> int:
    """Re-ingest the files of a dead-letter JSON-lines file; summary on stdout; 1 if any failed.

    ``report`` gets one JSON line per letter's outcome (as ``ingest --report``); ``still_failing``
    gets the letters still to replay. Ctrl-C stops taking files (exit 130).
    """
    out = out or sys.stdout
    if still_failing and _same_file(still_failing, source):
        print(
            f"error: --still-failing {still_failing}: must not be the dead-letter file itself "
            "(the daemon may append to it meanwhile); write a new file",
            file=sys.stderr,
        )
        return EXIT_USAGE
    try:
        with open(source, encoding="utf-8") as lines:
            entries = list(read_dead_letters(lines, source))
    except OSError as exc:
        print(f"error: {source}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_FAILURE
    tally = Tally()
    jobs: dict[str, _Replay] = {}
    scicat_jobs: list[_JobReplay] = []
    with report_file(report) as report_out:

        def record(result: FileResult) -> None:
            _record(tally, result)
            if report_out is not None:
                report_out.write(report_line(result))

        for where, entry, letter in entries:
            if letter is not None and letter.get("kind") == JOB_KIND:
                draft = _job_draft(letter)
                if isinstance(draft, str):
                    record(FileResult("", Skipped(f"not replayable: {draft}"), where=where))
                else:
                    scicat_jobs.append(_JobReplay(where, draft, letter))
            elif isinstance(entry, str):
                record(FileResult("", Skipped(f"not replayable: {entry}"), where=where))
            else:
                jobs.setdefault(os.path.normpath(entry.file_path), _Replay(where, entry, letter))
        skipped = tally.done
        interrupted = _ingest_all(config, list(jobs.values()), record)
        if not interrupted:
            _submit_all(config, scicat_jobs, record)
    heading = f"{len(entries)} dead letter(s), {len(jobs)} file(s)"
    if scicat_jobs:
        heading += f", {len(scicat_jobs)} SciCat job(s)"
    not_done = len(jobs) + len(scicat_jobs) - (tally.done - skipped)
    write_text(tally, out, heading, Ending(interrupted, not_done, report))
    if still_failing:
        _write_still_failing(still_failing, jobs.values(), scicat_jobs, out)
    if interrupted:
        return EXIT_INTERRUPTED
    return EXIT_FAILURE if tally.failed else EXIT_OK


@dataclass
class _Replay:
    """One file to replay, its first letter, and the outcome once it is known."""

    where: str
    job: Job
    letter: Letter | None
    outcome: Outcome | None = None


@dataclass
class _JobReplay:
    """One SciCat job to re-submit, its letter, and the outcome once it is known."""

    where: str
    draft: JobDraft
    letter: Letter
    outcome: Outcome | None = None


def _job_draft(letter: Mapping[str, Any]) -> JobDraft | str:
    """The job of a job letter, or why it cannot be re-submitted."""
    job = letter.get("scicat_job")
    body = job.get("body") if isinstance(job, Mapping) else None
    if not isinstance(job, Mapping) or not isinstance(body, Mapping):
        return "a job letter without its job (scicat_job.body)"
    pid, kind = job.get("dataset_pid"), body.get("type")
    if not isinstance(pid, str) or not pid or not isinstance(kind, str) or not kind:
        return "a job letter without dataset_pid or type"
    return JobDraft(str(job.get("name") or kind), kind, pid, dict(body))


def _submit_all(
    config: IngestorConfig, replays: Sequence[_JobReplay], record: Callable[[FileResult], None]
) -> None:
    """Re-submit the job letters one by one (each looked up first), recording each outcome."""
    if not replays:
        return
    client = SciCatClient(config.scicat)
    try:
        submitter = JobSubmitter(client, None)
        for item in replays:
            name = str(item.letter.get("file_name") or "")
            result = submitter.submit(item.draft, name)
            outcome = _job_outcome(item.draft, result)
            item.outcome = outcome
            record(FileResult(name, outcome, where=item.where))
    finally:
        client.close()


def _job_outcome(draft: JobDraft, result: JobResult) -> Outcome:
    """A job's result as the outcome the summary counts (its dataset is the 'file')."""
    if result.outcome == "created":
        return Created(draft.dataset_pid)
    if result.outcome == "exists":
        return Existed(draft.dataset_pid)
    reason = f"job {draft.name} of dataset {draft.dataset_pid}: {result.reason}"
    return Permanent(reason) if result.outcome == "rejected" else Transient(reason, "scicat")


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


def _write_still_failing(
    path: str, replays: Iterable[_Replay], job_replays: Iterable[_JobReplay], out: TextIO
) -> None:
    """The letters whose file (or job) failed again or was not reached, with the new reason."""
    count = 0
    with open(path, "w", encoding="utf-8") as target:
        for job in job_replays:
            if job.outcome is not None and not is_failure(job.outcome):
                continue
            reason = getattr(job.outcome, "reason", "") or "not replayed (interrupted)"
            letter = {**job.letter, "reason": reason}
            letter["dead_lettered_at"] = datetime.now(UTC).isoformat(timespec="milliseconds")
            target.write(json.dumps(letter, ensure_ascii=False) + "\n")
            count += 1
        for item in replays:
            if item.outcome is not None and not is_failure(item.outcome):
                continue
            reason = getattr(item.outcome, "reason", "") or "not replayed (interrupted)"
            letter = dict(item.letter or file_letter(item.job.file_path, reason, item.job.job_id))
            letter["reason"] = reason
            letter["dead_lettered_at"] = datetime.now(UTC).isoformat(timespec="milliseconds")
            target.write(json.dumps(letter, ensure_ascii=False) + "\n")
            count += 1
    out.write(f"{count} letter(s) still to replay written to {path}\n")


def _ingest_all(
    config: IngestorConfig, replays: Sequence[_Replay], record: Callable[[FileResult], None]
) -> bool:
    """Ingest the files, recording each outcome; True if Ctrl-C stopped the replay."""
    if not replays:
        return False
    of_job = {id(item.job): item for item in replays}
    stop = threading.Event()

    def done(job: Job, outcome: Outcome, seconds: float) -> None:
        item = of_job[id(job)]
        item.outcome = outcome
        record(FileResult(job.file_path, outcome, seconds, where=item.where))

    with ctrl_c_stops(stop), open_pipeline(config) as pipeline:
        pipeline.client.credentials.ends_run()  # nothing waits for SciCat: no "files wait" ERROR
        end = run_jobs(
            pipeline,
            [item.job for item in replays],
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
