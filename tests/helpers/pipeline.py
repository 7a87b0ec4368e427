"""The pipeline in tests: small-coda's dataset pid and one file through a pipeline."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from scicat_ingestor.ingest.outcome import Outcome
from scicat_ingestor.ingest.pipeline import Job, Pipeline

PID = "20.500.12269/f22acb1c-950b-11ef-a3ef-fa163e9aae0a"  # from small-coda.hdf's job id

# The ``make_pipeline`` fixture (helpers.fixtures): keyword sections of the config → Pipeline.
MakePipeline = Callable[..., Pipeline]


def ingest(pipeline: Pipeline, path: Path | str, **job: Any) -> Outcome:
    """One attempt at one file, as the daemon makes it."""
    return pipeline.ingest(Job(str(path), **job))
