"""The benchmark reads each file's time from the daemon's log line: its pattern must match the
line the real pipeline writes through the real text formatter (it once silently matched none)."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pytest

from bench.log_lines import file_lines
from helpers.pipeline import PID, MakePipeline, ingest
from scicat_ingestor.ops.logcontext import ContextFilter
from scicat_ingestor.ops.logs import TextFormatter


@pytest.mark.integration
def test_the_bench_reads_the_pipelines_line_for_a_created_and_an_existing_file(
    make_pipeline: MakePipeline, coda: Path
) -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(TextFormatter("SFI"))
    handler.addFilter(ContextFilter())
    logger = logging.getLogger("scicat_ingestor.pipeline")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        pipeline = make_pipeline()
        ingest(pipeline, coda, job_id="job-7")
        ingest(pipeline, coda, job_id="job-7")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    lines = file_lines(out.getvalue())
    assert [(line.file, line.outcome, line.pid) for line in lines] == [
        (str(coda), "created", PID),
        (str(coda), "existed", PID),
    ]
    assert all(0 < line.seconds < 60 for line in lines)
