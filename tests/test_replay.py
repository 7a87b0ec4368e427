"""Replay re-ingests the files of a dead-letter file once each; letters without one are skipped."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from scicat_ingestor.commands.cli import main
from scicat_ingestor.commands.replay import read_dead_letters, replay_command
from scicat_ingestor.config.model import IngestorConfig, build
from scicat_ingestor.daemon.deadletters import DeadLetter, DeadLetters, FileSink
from scicat_ingestor.ops.logs import reset_logging
from scicat_ingestor.sources.base import Record
from scicat_ingestor.testing.filewriter import (
    SAMPLE_FILES,
    run_start_message,
    wrdn_message,
    write_nexus_copy,
)
from scicat_ingestor.testing.scicat import SciCatStandIn


@pytest.fixture(autouse=True)
def _clean_logging() -> Iterator[None]:
    yield
    reset_logging()


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
    report, still = tmp_path / "report.jsonl", tmp_path / "still.jsonl"
    status = replay_command(config, str(dead), out, report=str(report), still_failing=str(still))
    assert status == 1
    assert "1 existed" in out.getvalue()
    assert f"  failed_transient\t{dead}:4 {missing}: file not found\n" in out.getvalue()
    assert f"1 letter(s) still to replay written to {still}\n" in out.getvalue()
    reported = [json.loads(line) for line in report.read_text().splitlines()]
    assert sorted(r["outcome"] for r in reported) == ["existed", "failed_transient", "skipped"]
    # the letter that failed again, with its new reason, replayable as it is
    [again] = [json.loads(line) for line in still.read_text().splitlines()]
    assert again["file_name"] == str(missing) and again["source_offset"] == RECORD.offset
    assert again["reason"] == f"{missing}: file not found"
    out = io.StringIO()
    assert replay_command(config, str(still), out) == 1
    assert "1 dead letter(s), 1 file(s)" in out.getvalue()


def test_replay_refuses_to_overwrite_its_source(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dead = tmp_path / "dead.jsonl"
    dead.write_text("")
    assert replay_command(IngestorConfig(), str(dead), still_failing=str(dead)) == 2
    assert "must not be the dead-letter file itself" in capsys.readouterr().err
    assert dead.exists()


def test_replay_takes_report_and_still_failing_on_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Its summary said 'use --report FILE', but 'replay --report' was refused."""
    dead = tmp_path / "dead.jsonl"
    dead.write_text("garbage\n")
    report, still = tmp_path / "r.jsonl", tmp_path / "s.jsonl"
    config = tmp_path / "c.yml"
    config.write_text("scicat:\n  host: http://127.0.0.1:9\n")
    args = ["replay", "-c", str(config), "--report", str(report), "--still-failing", str(still)]
    args.append(str(dead))
    assert main(args) == 0
    assert json.loads(report.read_text())["outcome"] == "skipped"
    assert still.read_text() == ""  # garbage cannot be replayed: not carried on


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
    ((_, verdict, _),) = read_dead_letters(iter([line]), "dead.jsonl")
    assert verdict == (
        "a run-start (pl72) message: replay ingests files; re-announce the run instead"
    )
