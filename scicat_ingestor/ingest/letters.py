"""The JSON-lines form of a dead letter: written by the daemon's file sink, by ``ingest`` and
for given-up SciCat jobs; read back by ``replay``. Kept apart from the sinks so ingestion can
record a letter without depending on the daemon."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from scicat_ingestor.ops.logs import redact_secrets


def file_letter(file_name: str, reason: str, job_id: str = "") -> dict[str, Any]:
    """A letter in the JSON-lines form for a file that came from no Kafka message (``ingest``),
    so ``replay`` takes failures of the daemon and of ``ingest`` alike."""
    return {
        "reason": redact_secrets(reason),
        "source_topic": None,
        "source_partition": None,
        "source_offset": None,
        "dead_lettered_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "value": None,
        "file_name": file_name,
        "job_id": job_id,
    }


# ``kind`` of a letter that holds a SciCat job to re-submit (``scicat_jobs``), not a message
JOB_KIND = "scicat_job"


def job_letter(
    file_name: str, reason: str, dataset_pid: str, name: str, body: Mapping[str, Any]
) -> dict[str, Any]:
    """A letter for a SciCat job given up after its dataset was created: the file letter's
    fields plus ``kind`` and the job (``replay`` re-submits it instead of re-ingesting the file)."""
    letter = file_letter(file_name, reason)
    letter["kind"] = JOB_KIND
    letter["scicat_job"] = {"dataset_pid": dataset_pid, "name": name, "body": dict(body)}
    return letter


def append_letter(path: str | Path, letter: Mapping[str, Any]) -> str | None:
    """Append one letter (JSON-lines) and fsync it; None when stored, else why not (one line).

    The file is opened per letter in append mode, so the daemon's file sink and the pipeline's job
    letters (``scicat_jobs``) may both write to ``ingestion.dead_letter.file``."""
    line = json.dumps(letter, ensure_ascii=False) + "\n"
    try:
        with Path(path).open("a", encoding="utf-8") as out:
            out.write(line)
            out.flush()
            os.fsync(out.fileno())
    except OSError as exc:
        return f"{path}: {exc.strerror or exc}"
    return None
