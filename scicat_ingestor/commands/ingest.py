"""The ``ingest`` subcommand: ingest files, directories or globs now (backfill, one-off runs).

Files go through the same ``Pipeline`` as the daemon, on a thread pool (``commands.jobs``). Paths
are discovered lazily, so a tree of a million files starts at once with flat memory; a second walk
counts them meanwhile, for the total and the time left. Rerunning the same command resumes a
backfill: datasets already in SciCat are reported as ``existed`` and not created again.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from typing import TextIO

from scicat_ingestor.commands.jobs import abandon_if_running, ctrl_c_stops, open_pipeline, run_jobs
from scicat_ingestor.commands.progress import SUMMARY_EVERY_SECONDS, RunState, display
from scicat_ingestor.commands.summary import (
    Ending,
    FileResult,
    Tally,
    report_file,
    report_line,
    write_json,
    write_text,
)
from scicat_ingestor.config.model import IngestorConfig
from scicat_ingestor.ingest.letters import file_letter
from scicat_ingestor.ingest.outcome import Outcome, Permanent, is_failure, outcome_label
from scicat_ingestor.ingest.pipeline import Job
from scicat_ingestor.ingest.retry import file_retry_delays
from scicat_ingestor.ops.exitcodes import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK
from scicat_ingestor.ops.metrics import FILES

logger = logging.getLogger("scicat_ingestor.commands.ingest")

NEXUS_SUFFIXES = (".hdf", ".h5", ".nxs")


def discover(
    paths: Sequence[str], stop: threading.Event | None = None
) -> Iterator[str | FileResult]:
    """Files to ingest (absolute, in order, each once), and a failure for each empty pattern.

    A directory contributes its NeXus files (``*.hdf``, ``*.h5``, ``*.nxs``, recursively, each
    directory's files sorted, then its subdirectories); a pattern with ``*``, ``?`` or ``[`` is a
    glob (``**`` recurses); anything else is one file, even if it does not exist yet (it then gets
    the file-not-ready retries). Memory stays flat for directories: a walked file is known as seen
    because an earlier directory covers it; only files named or globbed one by one are remembered.
    """
    covered: list[str] = []  # directories already walked, with a trailing separator
    named: set[str] = set()
    for given in paths:
        found = False
        for item in sorted(glob.glob(given, recursive=True)) if glob.has_magic(given) else [given]:
            if os.path.isdir(item):
                root = os.path.join(os.path.abspath(item), "")
                for path in _walk(root, stop):
                    found = True
                    if not _under(path, covered) and path not in named:
                        yield path
                covered.append(root)
            else:
                found = True
                path = os.path.abspath(item)
                walked = path.lower().endswith(NEXUS_SUFFIXES) and _under(path, covered)
                if not walked and path not in named:
                    named.add(path)
                    yield path
        if not found:
            yield FileResult(given, Permanent(f"{given}: no NeXus files found"))


def _under(path: str, roots: Sequence[str]) -> bool:
    return any(path.startswith(root) for root in roots)


def _walk(root: str, stop: threading.Event | None) -> Iterator[str]:
    for top, dirs, files in os.walk(root):
        if stop is not None and stop.is_set():
            return
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(top, name)
            if name.lower().endswith(NEXUS_SUFFIXES) and os.path.isfile(path):
                yield path


def _count(paths: Sequence[str], state: RunState, stop: threading.Event) -> None:
    """Walk ``paths`` once more, only counting, so the bar gets a total and a time left."""
    found = 0
    for _ in discover(paths, stop):  # files and empty patterns: both are results in the end
        if stop.is_set():
            return
        found += 1
        if found % 1000 == 0:
            state.scanned(found, finished=False)
    state.scanned(found, finished=True)


def ingest_command(
    config: IngestorConfig,
    paths: Sequence[str],
    workers: int,
    *,
    report: str = "",
    dead_letters: str = "",
    as_json: bool = False,
    verbose: bool = False,
    summary_every: float = SUMMARY_EVERY_SECONDS,
) -> int:
    """Ingest ``paths`` with ``workers`` threads; print a summary; exit 0, 1 (failures) or 130.

    ``report`` names a file that gets one JSON line per file; ``dead_letters`` one that gets a
    dead letter per failed file (the daemon's JSON-lines form, so ``replay`` takes it);
    ``as_json`` prints the summary as JSON instead of text. Ctrl-C stops taking files (see
    ``commands.jobs``).
    """
    tally = Tally()
    state = RunState(tally)
    stop = threading.Event()
    with ExitStack() as stack:
        stack.enter_context(ctrl_c_stops(stop))
        report_out = stack.enter_context(report_file(report))
        letters_out = stack.enter_context(report_file(dead_letters))
        shown = stack.enter_context(display(state, verbose, summary_every))
        pipeline = stack.enter_context(open_pipeline(config))
        credentials = pipeline.client.credentials
        credentials.ends_run()  # nothing waits for SciCat here: no daemon "files wait" ERROR
        if not pipeline.client.check_credentials():
            return _refused(credentials.refusal(), tally, as_json)  # no file touched
        counter = threading.Thread(
            target=_count, args=(paths, state, stop), name="ingest-count", daemon=True
        )
        counter.start()

        def record(result: FileResult) -> None:
            tally.add(result)
            state.finished(result.path, result.outcome)
            FILES.labels(outcome_label(result.outcome)).inc()
            if report_out is not None:
                report_out.write(report_line(result))
            if letters_out is not None and is_failure(result.outcome):
                letter = file_letter(result.path, result.reason)
                letters_out.write(json.dumps(letter, ensure_ascii=False) + "\n")

        def jobs() -> Iterator[Job]:
            for item in discover(paths, stop):
                if isinstance(item, FileResult):
                    record(item)
                else:
                    yield Job(item)

        def done(job: Job, outcome: Outcome, seconds: float) -> None:
            record(FileResult(job.file_path, outcome, seconds))
            shown.update()

        end = run_jobs(
            pipeline,
            jobs(),
            workers=workers,
            delays=file_retry_delays(config.ingestion.file_handling),
            stop=stop,
            on_done=done,
            on_tick=shown.update,
            on_retry=lambda job, _reason, delay: state.retrying(job.file_path, delay),
        )
        if not end.interrupted:  # all discovered: the total is what was done
            state.scanned(tally.done, finished=True)
    total = state.total
    ending = Ending(
        interrupted=end.interrupted,
        not_done=None if total is None else total - tally.done,
        report=report,
    )
    _print_summary(tally, ending, as_json, sys.stdout)
    abandon_if_running(end)
    if end.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_FAILURE if tally.failed else EXIT_OK


def _refused(refusal: str, tally: Tally, as_json: bool) -> int:
    """SciCat refuses the credentials: one line with the cause and the fix, then the summary."""
    print(f"error: nothing was ingested: {refusal}", file=sys.stderr)
    _print_summary(tally, Ending(), as_json, sys.stdout)
    return EXIT_FAILURE


def _print_summary(tally: Tally, ending: Ending, as_json: bool, out: TextIO) -> None:
    if as_json:
        write_json(tally, out, ending)
    else:
        write_text(tally, out, f"{tally.done} file(s)", ending)
    out.flush()
