"""The ``ingest`` subcommand: path expansion, file-open retries, summary, exit code, metrics."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from scicat_ingestor.batch import FileResult, _Progress, expand_paths, ingest_command, print_summary
from scicat_ingestor.config import IngestorConfig, build
from scicat_ingestor.ops.metrics import REGISTRY
from scicat_ingestor.outcome import Created, DryRun, Existed, Permanent, Transient
from scicat_ingestor.testing.scicat_standin import SciCatStandIn

CODA_PID = "20.500.12269/f22acb1c-950b-11ef-a3ef-fa163e9aae0a"


# ---- pure pieces ---------------------------------------------------------------------------


def test_expand_paths(tmp_path: Path) -> None:
    (tmp_path / "a" / "deep").mkdir(parents=True)
    for name in ("a/1.hdf", "a/deep/2.nxs", "a/deep/3.H5", "a/notes.txt", "b.hdf"):
        (tmp_path / name).write_bytes(b"")
    files, empty = expand_paths(
        [
            str(tmp_path / "a"),  # directory: recursive, NeXus suffixes only
            str(tmp_path / "*.hdf"),  # glob
            str(tmp_path / "a" / "1.hdf"),  # duplicate
            str(tmp_path / "later.hdf"),  # not there (yet): still tried
            str(tmp_path / "none-*.nxs"),  # glob matching nothing
        ]
    )
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
    assert expand_paths(["x.hdf"])[0] == [str(tmp_path / "x.hdf")]


def test_summary_lists_each_file_and_the_totals() -> None:
    out = io.StringIO()
    print_summary(
        [
            FileResult("/d/1.hdf", Created("p1", "b1")),
            FileResult("/d/2.hdf", Existed("p2", repaired=True)),
            FileResult("/d/3.hdf", DryRun("p3")),
            FileResult("/d/4.hdf", Permanent("/d/4.hdf: not an HDF5 file")),
            FileResult("/d/5.hdf", Transient("/d/5.hdf: locked", cause="file")),
        ],
        out,
    )
    assert out.getvalue().splitlines() == [
        "created\t/d/1.hdf\tp1 (origdatablock b1)",
        "existed\t/d/2.hdf\tp2 (origdatablock added)",
        "dry_run\t/d/3.hdf\tp3",
        "failed_permanent\t/d/4.hdf\t/d/4.hdf: not an HDF5 file",
        "failed_transient\t/d/5.hdf\t/d/5.hdf: locked",
        "5 file(s): 1 created, 1 existed, 1 dry run, 2 failed",
    ]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_only_on_a_terminal() -> None:
    tty, pipe = _Terminal(), io.StringIO()
    for stream in (tty, pipe):
        progress = _Progress(2, stream)
        progress.update(Created("p"))
        progress.update(Permanent("x"))
        progress.finish()
    assert tty.getvalue() == "\r1/2 files done, 0 failed\r2/2 files done, 1 failed\n"
    assert pipe.getvalue() == ""


# ---- through the stand-in ------------------------------------------------------------------


@pytest.fixture
def tree(tmp_path: Path, data_dir: Path) -> Path:
    """<tmp>/data/{coda,ymir}/raw/*.hdf and the two matching upstream schemas."""
    for name in ("coda", "ymir"):
        raw = tmp_path / "data" / name / "raw"
        raw.mkdir(parents=True)
        shutil.copy(data_dir / f"small-{name}.hdf", raw)
    schemas = tmp_path / "schemas"
    schemas.mkdir()
    for name in ("small-coda", "small-ymir"):
        shutil.copy(data_dir / "schemas" / f"{name}.imsc.yml", schemas)
    return tmp_path


def _config(tree: Path, standin: SciCatStandIn, **file_handling: Any) -> IngestorConfig:
    data = {
        "scicat": {"host": standin.url, "token": standin.token, "timeout": 2},
        "ingestion": {
            "schemas_directory": str(tree / "schemas"),
            "file_handling": {"data_directory": str(tree / "data"), **file_handling},
        },
    }
    return build(IngestorConfig, data, "test")


def _files_counted(outcome: str) -> float:
    value = REGISTRY.get_sample_value("scicat_ingestor_files_total", {"outcome": outcome})
    return value or 0.0


@pytest.mark.integration
def test_ingest_a_directory_then_again(
    tree: Path, scicat_standin: SciCatStandIn, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tree, scicat_standin)
    created_before = _files_counted("created")
    assert ingest_command(config, [str(tree / "data")], workers=2) == 0
    out = capsys.readouterr().out
    assert out.endswith("2 file(s): 2 created, 0 existed, 0 dry run, 0 failed\n")
    assert f"created\t{tree}/data/coda/raw/small-coda.hdf\t{CODA_PID} (origdatablock " in out
    assert len(scicat_standin.datasets) == 2
    assert len(scicat_standin.origdatablocks) == 2
    assert _files_counted("created") - created_before == 2

    assert ingest_command(config, [str(tree / "data" / "*" / "raw" / "*.hdf")], workers=2) == 0
    assert capsys.readouterr().out.endswith(
        "2 file(s): 0 created, 2 existed, 0 dry run, 0 failed\n"
    )
    assert len(scicat_standin.datasets) == 2


@pytest.mark.integration
def test_any_failure_gives_exit_1_with_the_reason(
    tree: Path, scicat_standin: SciCatStandIn, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tree / "data" / "coda" / "raw" / "small-coda-broken.hdf"
    bad.write_text("not HDF5")
    config = _config(tree, scicat_standin)
    assert ingest_command(config, [str(bad), str(tree / "data" / "ymir")], workers=2) == 1
    out = capsys.readouterr().out
    assert f"failed_permanent\t{bad}\t{bad}: not an HDF5 file" in out
    assert out.endswith("2 file(s): 1 created, 0 existed, 0 dry run, 1 failed\n")


@pytest.mark.integration
def test_missing_file_fails_after_the_retry_schedule(
    tree: Path, scicat_standin: SciCatStandIn, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(
        tree, scicat_standin, data_file_open_max_tries=2, data_file_open_retry_delay=[0]
    )
    retries = REGISTRY.get_sample_value("scicat_ingestor_retries_total", {"cause": "file"}) or 0
    missing = tree / "data" / "coda" / "raw" / "small-coda-later.hdf"
    assert ingest_command(config, [str(missing)], workers=1) == 1
    assert f"failed_transient\t{missing}\t{missing}: file not found" in capsys.readouterr().out
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
        config = _config(
            tree, scicat_standin, data_file_open_max_tries=100, data_file_open_retry_delay=[0.1]
        )
        result: list[int] = []
        batch = threading.Thread(
            target=lambda: result.append(ingest_command(config, [str(path)], 1))
        )
        caplog.set_level("INFO", logger="scicat_ingestor.batch")
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
    assert "1 file(s): 1 created" in capsys.readouterr().out
