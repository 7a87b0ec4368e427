"""``ingest`` / ``replay`` as a user sees them: a bar in a pseudo-terminal, plain output elsewhere.

Also Ctrl-C. Each test runs the real command line in a child process against the SciCat stand-in.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from scicat_ingestor.commands.ingest import ingest_command
from scicat_ingestor.config.model import IngestorConfig, build
from scicat_ingestor.testing.filewriter import SAMPLE_FILES, write_nexus_copy
from scicat_ingestor.testing.scicat import SciCatStandIn
from scicat_ingestor.testing.terminal import run_in_pty, screen

pytestmark = pytest.mark.integration

FILES = 8
# Anything a terminal would act on, other than line feed and tab.
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
BAR_PART = re.compile(r"\d+/\d+ \[|files/s|^ingest")  # what only the bar shows
LOG_LINE = re.compile(
    r"^SFI - \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d - scicat_ingestor\.[\w.]+ - "
)


def _tree(tmp_path: Path, data_dir: Path, broken: bool = True) -> Path:
    raw = tmp_path / "data" / "raw"
    for n in range(FILES):
        write_nexus_copy(SAMPLE_FILES[0], raw / f"run-{n:02d}-small-coda.hdf")
    if broken:
        (raw / "run-99-small-coda.hdf").write_text("not HDF5")
    schemas = tmp_path / "schemas"
    schemas.mkdir()
    (schemas / "small-coda.imsc.yml").write_bytes(
        (data_dir / "schemas" / "small-coda.imsc.yml").read_bytes()
    )
    return tmp_path


def _settings(tree: Path, standin: SciCatStandIn, **file_handling: Any) -> dict[str, Any]:
    return {
        "scicat": {"host": standin.url, "token": standin.token, "timeout": 10},
        "ingestion": {
            "schemas_directory": str(tree / "schemas"),
            "file_handling": {"data_directory": str(tree / "data"), **file_handling},
        },
    }


def _config_file(tree: Path, standin: SciCatStandIn, **file_handling: Any) -> Path:
    path = tree / "config.yml"
    path.write_text(yaml.safe_dump(_settings(tree, standin, **file_handling)))
    return path


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "scicat_ingestor", *args]


def _wait_for(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_terminal_shows_one_bar_updated_in_place_logs_above_it_then_the_summary(
    tmp_path: Path, data_dir: Path, scicat_standin: SciCatStandIn
) -> None:
    tree = _tree(tmp_path, data_dir)
    scicat_standin.faults.delay(0.3, "origdatablocks")  # a few bar updates, not one
    config = _config_file(tree, scicat_standin)
    run = run_in_pty(_command("ingest", "-c", str(config), "-w", "2", str(tree / "data")))
    status, raw = run.exit_code, run.output
    shown = screen(raw)
    assert status == 1, raw  # the broken file

    bars = [line for line in shown if line.startswith("ingest")]
    assert len(bars) == 1, shown  # one line, redrawn in place
    assert re.search(rf"{FILES + 1}/{FILES + 1} \[", bars[0])
    assert f"{FILES} created, 0 existed, 0 dry run, 1 failed" in bars[0]
    redraws = {part.strip() for part in raw.split("\r") if part.startswith("ingest")}
    assert len(redraws) >= 3  # drawn again as files finish

    logs = [line for line in shown if line.startswith("SFI")]
    assert logs, shown  # the broken file's WARNING is shown ...
    for line in logs:  # ... whole, on its own line, and no INFO per file without -v
        assert LOG_LINE.match(line) and " - WARNING - " in line, line
        assert not BAR_PART.search(line), line
    assert shown.index(bars[0]) > max(shown.index(line) for line in logs)

    broken = tree / "data" / "raw" / "run-99-small-coda.hdf"
    assert shown[-3:-1] == [
        "not ingested:",
        f"  failed_permanent\t{broken}: not an HDF5 file (file signature not found)",
    ]
    assert re.fullmatch(
        rf"{FILES + 1} file\(s\) in \d+\.\d s: {FILES} created, 0 existed, 0 dry run, 1 failed",
        shown[-1],
    )


def test_verbose_terminal_shows_each_files_info_line_above_the_bar(
    tmp_path: Path, data_dir: Path, scicat_standin: SciCatStandIn
) -> None:
    tree = _tree(tmp_path, data_dir, broken=False)
    config = _config_file(tree, scicat_standin)
    argv = _command("ingest", "-c", str(config), "-v", str(tree / "data"))
    run = run_in_pty(argv)
    status, raw = run.exit_code, run.output
    shown = screen(raw)
    assert status == 0, raw
    created = [line for line in shown if " - INFO - " in line and ": created, dataset " in line]
    assert len(created) == FILES
    assert all(LOG_LINE.match(line) for line in created)
    assert len([line for line in shown if line.startswith("ingest")]) == 1


def test_without_a_terminal_there_is_no_bar_and_no_control_character(
    tmp_path: Path, data_dir: Path, scicat_standin: SciCatStandIn
) -> None:
    tree = _tree(tmp_path, data_dir)
    config = _config_file(tree, scicat_standin)
    argv = _command("ingest", "-c", str(config), str(tree / "data"))
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 1
    for stream in (result.stdout, result.stderr):
        assert not CONTROL.search(stream), stream
    # plain log lines as before: one per file
    assert result.stdout.count(": created, dataset ") == FILES
    assert "files/s" not in result.stderr


def test_without_a_terminal_a_progress_line_is_logged_every_interval(
    tmp_path: Path,
    data_dir: Path,
    scicat_standin: SciCatStandIn,
    caplog: pytest.LogCaptureFixture,
) -> None:
    tree = _tree(tmp_path, data_dir, broken=False)
    scicat_standin.faults.delay(0.2, "origdatablocks")
    config = build(IngestorConfig, _settings(tree, scicat_standin), "test")
    caplog.set_level("INFO", logger="scicat_ingestor.commands")
    assert ingest_command(config, [str(tree / "data")], 1, summary_every=0.1) == 0
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("progress:")]
    assert len(lines) >= 3
    assert re.fullmatch(
        rf"progress: \d/{FILES} files, \d+\.\d files/s, about \d+m\d\ds left: "
        r"\d created, 0 existed, 0 dry run, 0 failed",
        lines[-1],
    )


def test_ctrl_c_finishes_the_running_files_prints_the_summary_and_exits_130(
    tmp_path: Path, data_dir: Path, scicat_standin: SciCatStandIn
) -> None:
    tree = _tree(tmp_path, data_dir, broken=False)
    scicat_standin.faults.delay(1.0, "origdatablocks")  # files are mid-way when Ctrl-C comes
    config = _config_file(tree, scicat_standin)
    report = tree / "report.jsonl"
    argv = _command(
        "ingest", "-c", str(config), "-w", "2", "--report", str(report), str(tree / "data")
    )
    child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: len(scicat_standin.datasets) >= 1)
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=60)
    assert child.returncode == 130, err

    lines = [json.loads(line) for line in report.read_text().splitlines()]
    done = len(lines)
    assert 1 <= done < FILES
    assert {line["outcome"] for line in lines} == {"created"}
    # every file that had started was finished: each dataset has its origdatablock
    assert len(scicat_standin.datasets) == len(scicat_standin.origdatablocks) == done
    assert re.search(rf"^{done} file\(s\) in \d+\.\d s: {done} created", out, re.M), out
    assert f"interrupted: {FILES - done} file(s) not done; run the same command again" in out
    assert re.search(r"WARNING - interrupted: finishing [12] running file\(s\)", out), out
    assert not CONTROL.search(out + err)

    # rerunning resumes: what was done is skipped, the rest is created
    scicat_standin.faults.delay(0, "origdatablocks")
    rerun = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{done} existed" in rerun.stdout.splitlines()[-1]
    assert len(scicat_standin.datasets) == FILES


def test_second_ctrl_c_exits_at_once(
    tmp_path: Path, data_dir: Path, scicat_standin: SciCatStandIn
) -> None:
    tree = _tree(tmp_path, data_dir, broken=False)
    scicat_standin.faults.delay(30.0, "origdatablocks")
    config = _config_file(tree, scicat_standin)
    argv = _command("ingest", "-c", str(config), str(tree / "data"))
    child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: len(scicat_standin.datasets) >= 1)
    child.send_signal(signal.SIGINT)
    time.sleep(0.5)
    started = time.monotonic()
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=60)
    assert child.returncode == 130
    assert time.monotonic() - started < 10  # not the 30 s the running file would take
    assert "interrupted again: exiting now" in err


def test_ctrl_c_ends_replays_retry_waits(
    tmp_path: Path, data_dir: Path, scicat_standin: SciCatStandIn
) -> None:
    tree = _tree(tmp_path, data_dir, broken=False)
    missing = tree / "data" / "raw" / "later-small-coda.hdf"
    dead = tree / "dead.jsonl"
    dead.write_text(json.dumps({"reason": "x", "file_name": str(missing), "job_id": "j"}) + "\n")
    config = _config_file(
        tree, scicat_standin, data_file_open_max_tries=10, data_file_open_retry_delay=[60]
    )
    child = subprocess.Popen(
        _command("replay", "-c", str(config), str(dead)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    seen = ""
    while "not ready" not in seen:  # the first retry wait (60 s) has begun
        line = child.stdout.readline()
        assert line, "replay ended before its first retry"
        seen += line
    started = time.monotonic()
    child.send_signal(signal.SIGINT)
    out, _ = child.communicate(timeout=30)
    assert child.returncode == 130
    assert time.monotonic() - started < 10
    assert f"failed_transient\t{dead}:1 {missing}: file not found" in out
    assert "interrupted: 0 file(s) not done" in out
