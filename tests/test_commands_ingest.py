"""The ``ingest`` subcommand: path expansion, file-open retries, summary, exit code, metrics."""

from __future__ import annotations

import io
import json
import logging
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from helpers.commands import ingest_config, totals
from scicat_ingestor.commands.cli import parse_command_line
from scicat_ingestor.commands.ingest import discover, ingest_command
from scicat_ingestor.commands.jobs import RunEnd, open_pipeline, run_jobs
from scicat_ingestor.commands.progress import RunState
from scicat_ingestor.commands.replay import replay_command
from scicat_ingestor.commands.summary import Ending, FileResult, Tally, write_text
from scicat_ingestor.ingest.outcome import Created, DryRun, Existed, Outcome, Permanent, Transient
from scicat_ingestor.ingest.pipeline import Job
from scicat_ingestor.ops.metrics import REGISTRY
from scicat_ingestor.testing.scicat import SciCatStandIn

CODA_PID = "20.500.12269/f22acb1c-950b-11ef-a3ef-fa163e9aae0a"


# ---- pure pieces ---------------------------------------------------------------------------


def test_discover_paths(tmp_path: Path) -> None:
    (tmp_path / "a" / "deep").mkdir(parents=True)
    for name in ("a/1.hdf", "a/deep/2.nxs", "a/deep/3.H5", "a/notes.txt", "b.hdf"):
        (tmp_path / name).write_bytes(b"")
    found = list(
        discover(
            [
                str(tmp_path / "a"),  # directory: recursive, NeXus suffixes only
                str(tmp_path / "*.hdf"),  # glob
                str(tmp_path / "a" / "1.hdf"),  # duplicate
                str(tmp_path / "later.hdf"),  # not there (yet): still tried
                str(tmp_path / "none-*.nxs"),  # glob matching nothing
            ]
        )
    )
    files = [f for f in found if isinstance(f, str)]
    empty = [f for f in found if isinstance(f, FileResult)]
    assert files == [
        str(tmp_path / "a" / "1.hdf"),
        str(tmp_path / "a" / "deep" / "2.nxs"),
        str(tmp_path / "a" / "deep" / "3.H5"),
        str(tmp_path / "b.hdf"),
        str(tmp_path / "later.hdf"),
    ]
    assert empty == [
        FileResult(
            str(tmp_path / "none-*.nxs"), Permanent(f"{tmp_path}/none-*.nxs: no NeXus files found")
        )
    ]


def test_relative_paths_become_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert list(discover(["x.hdf"])) == [str(tmp_path / "x.hdf")]


def test_summary_lists_the_failed_files_and_the_totals() -> None:
    tally = Tally()
    for result in (
        FileResult("/d/1.hdf", Created("p1", "b1")),
        FileResult("/d/2.hdf", Existed("p2", repaired=True)),
        FileResult("/d/3.hdf", DryRun("p3")),
        FileResult("/d/4.hdf", Permanent("/d/4.hdf: not an HDF5 file")),
        FileResult("/d/5.hdf", Transient("locked", cause="file")),
    ):
        tally.add(result)
    out = io.StringIO()
    write_text(tally, out, "5 file(s)")
    lines = out.getvalue().splitlines()
    assert lines[:3] == [
        "not ingested:",
        "  failed_permanent\t/d/4.hdf: not an HDF5 file",
        "  failed_transient\t/d/5.hdf: locked",
    ]
    assert re.fullmatch(
        r"5 file\(s\) in \d+\.\d s: 1 created, 1 existed, 1 dry run, 2 failed", lines[3]
    )
    assert len(lines) == 4


def test_summary_lists_failures_up_to_the_limit_and_names_the_report() -> None:
    tally = Tally(limit=2)
    for n in range(5):
        tally.add(FileResult(f"/d/{n}.hdf", Permanent("bad")))
    out = io.StringIO()
    write_text(tally, out, "5 file(s)", Ending(interrupted=True, not_done=7, report="r.jsonl"))
    lines = out.getvalue().splitlines()
    assert lines[1:4] == [
        "  failed_permanent\t/d/0.hdf: bad",
        "  failed_permanent\t/d/1.hdf: bad",
        "  … and 3 more, see r.jsonl",
    ]
    assert lines[5].startswith("interrupted: 7 file(s) not done; run the same command again")
    assert len(tally.problems) == 2  # memory stays bounded whatever the number of failures


def test_discovery_is_lazy(tmp_path: Path) -> None:
    """The first file comes before the walk has seen the rest of the tree."""
    for n in range(3):
        (tmp_path / f"d{n}").mkdir()
        (tmp_path / f"d{n}" / "x.hdf").write_bytes(b"")
    found = discover([str(tmp_path)])
    assert next(found) == str(tmp_path / "d0" / "x.hdf")
    (tmp_path / "d2" / "late.hdf").write_bytes(b"")  # appears after the walk started
    assert str(tmp_path / "d2" / "late.hdf") in list(found)


def test_a_directory_inside_an_earlier_one_adds_nothing_twice(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ("a/1.hdf", "a/b/2.hdf", "a/b/notes.txt"):
        (tmp_path / name).write_bytes(b"")
    found = list(
        discover([str(tmp_path / "a"), str(tmp_path / "a" / "b"), str(tmp_path / "a/b/*")])
    )
    assert found == [
        str(tmp_path / "a" / "1.hdf"),
        str(tmp_path / "a" / "b" / "2.hdf"),
        str(tmp_path / "a/b/notes.txt"),
    ]


def test_run_state_shows_scanning_retries_and_outages() -> None:
    state = RunState(Tally())
    state.scanned(1000, finished=False)
    assert (state.total, state.scanning_text()) == (None, "scanning… 1000 found")
    state.scanned(1234, finished=True)
    assert (state.total, state.scanning_text()) == (1234, "")

    state.retrying("/d/1.hdf", 5.0)
    assert re.fullmatch(r"1 file\(s\) not ready, next try in [45] s", state.status_text())
    state.finished("/d/2.hdf", Transient("SciCat at http://x unreachable", cause="scicat"))
    assert state.status_text().startswith("SciCat unavailable: SciCat at http://x unreachable; 1 ")
    state.finished("/d/1.hdf", Created("p"))  # a success ends the outage, the file its wait
    assert state.status_text() == ""


# ---- through the stand-in ------------------------------------------------------------------


def _files_counted(outcome: str) -> float:
    value = REGISTRY.get_sample_value("scicat_ingestor_files_total", {"outcome": outcome})
    return value or 0.0


@pytest.mark.integration
def test_ingest_a_directory_then_again(
    tree: Path, scicat_standin: SciCatStandIn, capsys: pytest.CaptureFixture[str]
) -> None:
    config = ingest_config(tree, scicat_standin)
    created_before = _files_counted("created")
    assert ingest_command(config, [str(tree / "data")], workers=2) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1  # nothing failed: the totals line alone
    assert totals(out) == "2 file(s): 2 created, 0 existed, 0 dry run, 0 failed"
    assert len(scicat_standin.datasets) == 2
    assert len(scicat_standin.origdatablocks) == 2
    assert _files_counted("created") - created_before == 2

    assert ingest_command(config, [str(tree / "data" / "*" / "raw" / "*.hdf")], workers=2) == 0
    assert totals(capsys.readouterr().out) == "2 file(s): 0 created, 2 existed, 0 dry run, 0 failed"
    assert len(scicat_standin.datasets) == 2


@pytest.mark.integration
def test_any_failure_gives_exit_1_with_the_reason(
    tree: Path, scicat_standin: SciCatStandIn, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tree / "data" / "coda" / "raw" / "small-coda-broken.hdf"
    bad.write_text("not HDF5")
    config = ingest_config(tree, scicat_standin)
    assert ingest_command(config, [str(bad), str(tree / "data" / "ymir")], workers=2) == 1
    out = capsys.readouterr().out
    assert f"  failed_permanent\t{bad}: not an HDF5 file" in out
    assert totals(out) == "2 file(s): 1 created, 0 existed, 0 dry run, 1 failed"


@pytest.mark.integration
def test_report_has_one_json_line_per_file_and_json_prints_the_summary(
    tree: Path, scicat_standin: SciCatStandIn, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tree / "data" / "coda" / "raw" / "small-coda-broken.hdf"
    bad.write_text("not HDF5")
    report = tree / "report.jsonl"
    config = ingest_config(tree, scicat_standin)
    status = ingest_command(
        config, [str(tree / "data"), str(tree / "none-*")], 2, report=str(report), as_json=True
    )
    assert status == 1
    lines = [json.loads(line) for line in report.read_text().splitlines()]
    by_path = {line["path"]: line for line in lines}
    assert len(lines) == len(by_path) == 4
    coda = by_path[f"{tree}/data/coda/raw/small-coda.hdf"]
    assert (coda["outcome"], coda["pid"], coda["reason"]) == ("created", CODA_PID, None)
    assert coda["seconds"] > 0
    assert by_path[str(bad)]["outcome"] == "failed_permanent"
    assert by_path[str(bad)]["reason"].startswith(f"{bad}: not an HDF5 file")
    assert by_path[str(tree / "none-*")]["reason"] == f"{tree}/none-*: no NeXus files found"

    summary = json.loads(capsys.readouterr().out)
    assert summary["files"] == 4
    assert (summary["created"], summary["existed"], summary["failed"]) == (2, 0, 2)
    assert (summary["interrupted"], summary["not_done"], summary["report"]) == (
        False,
        0,
        str(report),
    )
    assert {f["path"] for f in summary["not_ingested"]} == {str(bad), str(tree / "none-*")}


@pytest.mark.integration
def test_missing_file_fails_after_the_retry_schedule(
    tree: Path, scicat_standin: SciCatStandIn, capsys: pytest.CaptureFixture[str]
) -> None:
    config = ingest_config(
        tree, scicat_standin, data_file_open_max_tries=2, data_file_open_retry_delay=[0]
    )
    retries = REGISTRY.get_sample_value("scicat_ingestor_retries_total", {"cause": "file"}) or 0
    missing = tree / "data" / "coda" / "raw" / "small-coda-later.hdf"
    assert ingest_command(config, [str(missing)], workers=1) == 1
    assert f"  failed_transient\t{missing}: file not found\n" in capsys.readouterr().out
    after = REGISTRY.get_sample_value("scicat_ingestor_retries_total", {"cause": "file"})
    assert after == retries + 2


_WRITER = """
import sys, h5py
f = h5py.File(sys.argv[1], "a")  # write access: HDF5 locks the file against readers
print("locked", flush=True)
sys.stdin.readline()
f.close()
"""


@pytest.mark.integration
def test_file_locked_by_its_writer_is_ingested_once_released(
    tree: Path,
    scicat_standin: SciCatStandIn,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tree / "data" / "coda" / "raw" / "small-coda.hdf"
    writer = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert writer.stdin is not None and writer.stdout is not None
    try:
        assert writer.stdout.readline().strip() == "locked"
        config = ingest_config(
            tree, scicat_standin, data_file_open_max_tries=100, data_file_open_retry_delay=[0.1]
        )
        result: list[int] = []
        batch = threading.Thread(
            target=lambda: result.append(ingest_command(config, [str(path)], 1))
        )
        caplog.set_level("INFO", logger="scicat_ingestor.commands")
        batch.start()
        deadline = time.monotonic() + 30
        while "not ready" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.02)
        assert "locked by another process" in caplog.text
        assert scicat_standin.datasets == {}
    finally:
        writer.stdin.write("\n")
        writer.stdin.close()
        writer.wait(timeout=30)
    batch.join(timeout=60)
    assert result == [0]
    assert list(scicat_standin.datasets) == [CODA_PID]
    assert totals(capsys.readouterr().out).startswith("1 file(s): 1 created")


@pytest.mark.integration
def test_the_drain_after_a_stop_is_bounded(tree: Path, scicat_standin: SciCatStandIn) -> None:
    """Files still running when the drain time is over are reported, not waited for."""
    scicat_standin.faults.delay(5.0, "origdatablocks")
    config = ingest_config(tree, scicat_standin)
    stop = threading.Event()
    done: list[Outcome] = []
    files = [f"{tree}/data/coda/raw/small-coda.hdf", f"{tree}/data/ymir/raw/small-ymir.hdf"]
    with open_pipeline(config) as pipeline:
        threading.Timer(0.5, stop.set).start()
        started = time.monotonic()
        end = run_jobs(
            pipeline,
            [Job(f) for f in files],
            workers=1,
            delays=[],
            stop=stop,
            on_done=lambda _job, outcome, _s: done.append(outcome),
            drain_seconds=0.3,
        )
        assert time.monotonic() - started < 3
    assert end == RunEnd(interrupted=True, abandoned=1)
    assert done == []  # the second file was queued, never started


@pytest.mark.integration
def test_refused_credentials_exit_1_before_any_file_is_touched(
    tree: Path,
    scicat_standin: SciCatStandIn,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = ingest_config(tree, scicat_standin)
    scicat_standin.faults.set_token("rotated")  # ours is revoked
    caplog.set_level(logging.INFO)
    assert ingest_command(config, [str(tree / "data")], workers=2) == 1
    # It logged the daemon's ERROR "...: files wait (intake paused ...) until SciCat accepts
    # them again; set a valid scicat.token and restart ..." on top of its own line.
    scicat = [r for r in caplog.records if r.name.startswith("scicat_ingestor.scicat")]
    assert [r.getMessage() for r in scicat if r.levelno >= logging.WARNING] == []
    shown = capsys.readouterr()
    assert re.fullmatch(
        r"error: nothing was ingested: SciCat refuses our credentials \(static token "
        r"\(scicat\.token\): GET users/my/self → 401[^\n]*\); set a valid scicat\.token\n",
        shown.err,
    ), shown.err
    assert totals(shown.out) == "0 file(s): 0 created, 0 existed, 0 dry run, 0 failed"
    assert not list(tree.rglob("ingestor"))  # no side file written
    routes = {key.rsplit(" ", 1)[0] for key in scicat_standin.stats()["requests"]}
    assert len(routes) == 1 and routes <= {"GET /auth/whoami", "GET /users/my/self"}  # the probe


@pytest.mark.integration
def test_ingest_failures_become_dead_letters_that_replay_takes(
    tree: Path,
    scicat_standin: SciCatStandIn,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """ingest failures left nothing to replay."""
    config = ingest_config(tree, scicat_standin, data_file_open_max_tries=0)
    broken = tree / "data" / "coda" / "raw" / "small-coda-broken.hdf"
    broken.write_bytes(b"not HDF5")
    letters = tree / "failed.jsonl"
    status = ingest_command(
        config, [str(tree / "data" / "coda")], workers=1, dead_letters=str(letters)
    )
    assert status == 1
    [letter] = [json.loads(line) for line in letters.read_text().splitlines()]
    assert letter["file_name"] == str(broken)
    assert letter["reason"].startswith(f"{broken}: ")
    assert letter["value"] is None and letter["source_topic"] is None
    # the per-file line names the path once, then outcome, seconds and the reason
    pipeline_lines = [r for r in caplog.records if r.name == "scicat_ingestor.pipeline"]
    [line] = [r.getMessage() for r in pipeline_lines if r.levelno == logging.WARNING]
    assert re.fullmatch(
        rf"{re.escape(str(broken))}: failed_permanent, \d+\.\d{{3}} s: not an HDF5 file .*", line
    ), line
    shutil.copy(tree / "data" / "coda" / "raw" / "small-coda.hdf", broken)  # fixed meanwhile
    capsys.readouterr()
    assert replay_command(config, str(letters)) == 0
    assert "1 dead letter(s), 1 file(s) in " in capsys.readouterr().out


SAMPLE_CONFIG = Path(__file__).parents[1] / "config" / "config.sample.yml"


def test_the_sample_configs_override_examples_take_no_file_argument() -> None:
    """It suggested ``--ingestion.dry-run true``: ``true`` was then a file to ingest."""
    header = SAMPLE_CONFIG.read_text(encoding="utf-8").split("\nid:")[0]
    text = " ".join(line.lstrip("# ") for line in header.splitlines())
    listed = re.search(r"overridden on the command line: (.*?)\.\s", text)
    assert listed, header
    examples = [example.split() for example in listed.group(1).split(", ")]
    for example in examples:
        args = parse_command_line(["ingest", "-c", str(SAMPLE_CONFIG), *example, "f.hdf"])
        assert args.paths == ["f.hdf"], example
    assert ["--ingestion.dry-run"] in examples
