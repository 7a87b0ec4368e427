"""Replay re-ingests the files of a dead-letter file once each; letters without one are skipped."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest

from scicat_ingestor.commands.replay import read_dead_letters, replay_command
from scicat_ingestor.config import IngestorConfig, build
from scicat_ingestor.deadletter import DeadLetter, DeadLetters, FileSink
from scicat_ingestor.source import Record
from scicat_ingestor.testing.filewriter import (
    SAMPLE_FILES,
    run_start_message,
    wrdn_message,
    write_nexus_copy,
)
from scicat_ingestor.testing.scicat import SciCatStandIn

RECORD = Record("wrdn-topic", 2, 41, b"\x00\x01payload", b"key")


def letter(value: bytes | None, file_name: str = "") -> DeadLetter:
    record = Record(RECORD.topic, RECORD.partition, RECORD.offset, value, RECORD.key)
    return DeadLetter("why not", record, file_name, "job-1" if file_name else "")


@pytest.mark.integration
def test_replay_ingests_the_files_and_skips_letters_without_one(
    tmp_path: Path, data_dir: Path, scicat_standin: SciCatStandIn
) -> None:
    nexus = tmp_path / "data" / "run-1-small-coda.hdf"
    uuid = write_nexus_copy(SAMPLE_FILES[0], nexus)
    missing = tmp_path / "data" / "gone-small-coda.hdf"
    dead = tmp_path / "dead.jsonl"
    send = DeadLetters([FileSink(str(dead))]).store
    send(letter(value=wrdn_message(str(nexus), uuid), file_name=str(nexus)))
    send(letter(value=wrdn_message(str(nexus), uuid), file_name=str(nexus)))  # twice
    send(letter(value=None))  # a tombstone: nothing to replay
    config = build(
        IngestorConfig,
        {
            "scicat": {"host": scicat_standin.url, "token": scicat_standin.token},
            "ingestion": {
                "schemas_directory": str(data_dir / "schemas"),
                "file_handling": {"data_file_open_max_tries": 0},
            },
        },
        "test",
    )
    out = io.StringIO()
    assert replay_command(config, str(dead), out) == 0
    assert list(scicat_standin.datasets) == [f"20.500.12269/{uuid}"]
    lines = out.getvalue().splitlines()
    assert lines[:2] == [
        "not ingested:",
        f"  skipped\t{dead}:3 not replayable: no file to ingest (why not)",
    ]
    assert re.fullmatch(
        r"3 dead letter\(s\), 1 file\(s\) in \d+\.\d s: "
        r"1 created, 0 existed, 0 dry run, 1 skipped, 0 failed",
        lines[2],
    )

    send(letter(value=wrdn_message(str(missing), "job-2"), file_name=str(missing)))
    out = io.StringIO()
    assert replay_command(config, str(dead), out) == 1
    assert "1 existed" in out.getvalue()
    assert f"  failed_transient\t{dead}:4 {missing}: file not found\n" in out.getvalue()


def test_replay_of_a_missing_file_is_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert replay_command(IngestorConfig(), str(tmp_path / "nope.jsonl")) == 1
    assert (
        capsys.readouterr().err.strip()
        == f"error: {tmp_path / 'nope.jsonl'}: No such file or directory"
    )


def test_a_dead_lettered_run_start_is_not_replayed_as_a_dataset() -> None:
    line = json.dumps(
        letter(run_start_message("/data/run-1.hdf", "job-1"), "/data/run-1.hdf").as_json()
    )
    ((_, verdict),) = read_dead_letters(iter([line]), "dead.jsonl")
    assert verdict == (
        "a run-start (pl72) message: replay ingests files; re-announce the run instead"
    )
