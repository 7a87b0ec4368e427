"""The bad-file zoo: broken, hostile and odd files, each with the outcome it must have.

Part 1 runs every specimen through ``Pipeline.ingest`` (real h5py, real schema engine, the
SciCat stand-in): ingested, retried (``Transient``, cause ``file``) or refused (``Permanent``) with
a reason naming what is wrong. Part 2 sends a subset through the daemon as a separate process
with the real broker: refused files end in the dead-letter file with their reason, files that
become readable within the retry budget are ingested, files that never do are dead-lettered, and
the daemon is alive after all of them.
"""

from __future__ import annotations

import fcntl
import json
import os
import pickle
import select
import shutil
import signal
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from confluent_kafka import Producer

from scicat_ingestor.config.model import IngestorConfig, SciCatOptions, build
from scicat_ingestor.ingest.outcome import (
    Created,
    DryRun,
    Existed,
    Outcome,
    Permanent,
    Skipped,
    Transient,
)
from scicat_ingestor.ingest.pipeline import Job, Pipeline
from scicat_ingestor.schema.loader import load_schemas
from scicat_ingestor.scicat import SciCatClient
from scicat_ingestor.testing.brokers import HarnessBroker
from scicat_ingestor.testing.daemon_process import DaemonProcess, daemon_config, write_config
from scicat_ingestor.testing.filewriter import SAMPLE_FILES, wrdn_message, write_nexus_copy
from scicat_ingestor.testing.scicat import SciCatStandIn

TEMPLATE = next(p for p in SAMPLE_FILES if p.name == "small-coda.hdf")
SCHEMA = Path(__file__).parent / "data" / "schemas" / "small-coda.imsc.yml"
HUNDRED_MB = 100 * 1024 * 1024
NOBODY = 65534
LOCKING = os.environ.get("HDF5_USE_FILE_LOCKING", "").upper() != "FALSE"


# ------------------------------------------------------------------------------------------------
# Specimens: each builds its file under the data root and returns the path the message names
# ------------------------------------------------------------------------------------------------


def _copy(root: Path, name: str = "small-coda-zoo.hdf") -> Path:
    """A valid NeXus file (fresh uuid, so a fresh dataset) at ``<root>/raw/<name>``."""
    path = root / "raw" / name
    write_nexus_copy(TEMPLATE, path)
    return path


def _edited(root: Path, name: str, edit: Callable[[h5py.File], None]) -> Path:
    path = _copy(root, name)
    with h5py.File(path, "r+") as nexus:
        edit(nexus)
    return path


def _replace(dataset: str, value: Any) -> Callable[[h5py.File], None]:
    def edit(nexus: h5py.File) -> None:
        del nexus[dataset]
        nexus[dataset] = value

    return edit


def missing(root: Path) -> str:
    return str(root / "raw" / "small-coda-never-written.hdf")


def zero_bytes(root: Path) -> str:
    path = root / "raw" / "small-coda-empty.hdf"
    path.touch()
    return str(path)


def not_hdf5(root: Path) -> str:
    path = root / "raw" / "small-coda-text.hdf"
    path.write_text("this is a text file, not HDF5\n" * 100)
    return str(path)


def truncated(root: Path) -> str:
    path = _copy(root, "small-coda-truncated.hdf")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return str(path)


def without_entry(root: Path) -> str:
    path = root / "raw" / "small-coda-no-entry.hdf"
    with h5py.File(path, "w") as nexus:
        nexus["/instrument/name"] = "odin"
    return str(path)


def schema_path_missing(root: Path) -> str:
    return str(_edited(root, "small-coda-no-title.hdf", lambda n: n.__delitem__("/entry/title")))


def string_100mb_fixed(root: Path) -> str:
    big = np.bytes_(b"x" * HUNDRED_MB)
    return str(_edited(root, "small-coda-big-fixed.hdf", _replace("/entry/title", big)))


def string_100mb_variable(root: Path) -> str:
    big = "x" * HUNDRED_MB  # h5py stores a Python str as a variable-length string
    return str(_edited(root, "small-coda-big-vlen.hdf", _replace("/entry/title", big)))


def number_as_text(root: Path) -> str:
    return str(_edited(root, "small-coda-number-title.hdf", _replace("/entry/title", 42)))


def nan_as_number(root: Path) -> str:
    nan = _replace("/entry/entry_identifier", np.nan)
    return str(_edited(root, "small-coda-nan-run.hdf", nan))


def invalid_utf8(root: Path) -> str:
    bad = _replace("/entry/title", np.bytes_(b"\xff\xfe title"))
    return str(_edited(root, "small-coda-bad-utf8.hdf", bad))


def non_ascii_name(root: Path) -> str:
    return str(_copy(root, "small-coda-Søren-Ærø-測定-🧪.hdf"))


def long_path(root: Path) -> str:
    folder = root / "raw"
    while len(str(folder)) < 3500:  # PATH_MAX is 4096; each component at most NAME_MAX (255)
        folder /= "d" * 200
    path = folder / "small-coda-long.hdf"
    write_nexus_copy(TEMPLATE, path)
    return str(path)


def too_long_path(root: Path) -> str:
    return str(root / "raw" / "/".join(["e" * 250] * 20) / "small-coda.hdf")


def directory(root: Path) -> str:
    path = root / "raw" / "small-coda-dir.hdf"
    path.mkdir()
    return str(path)


def fifo(root: Path) -> str:
    path = root / "raw" / "small-coda-fifo.hdf"
    os.mkfifo(path)
    return str(path)


def symlink_loop(root: Path) -> str:
    a, b = root / "raw" / "small-coda-loop-a.hdf", root / "raw" / "small-coda-loop-b.hdf"
    a.symlink_to(b)
    b.symlink_to(a)
    return str(a)


def symlink_escaping(root: Path) -> str:
    outside = root.parent / "elsewhere" / "small-coda-secret.hdf"
    write_nexus_copy(TEMPLATE, outside)
    link = root / "raw" / "small-coda-link.hdf"
    link.symlink_to(outside)
    return str(link)


def dotdot(root: Path) -> str:
    outside = root.parent / "elsewhere" / "small-coda-dotdot.hdf"
    write_nexus_copy(TEMPLATE, outside)
    return f"{root}/raw/../../elsewhere/small-coda-dotdot.hdf"


def outside_roots(root: Path) -> str:
    return str(_edited(root.parent / "other", "small-coda-other.hdf", lambda n: None))


def relative(root: Path) -> str:
    _copy(root, "small-coda-relative.hdf")
    return "raw/small-coda-relative.hdf"


@dataclass(frozen=True)
class Expect:
    """The outcome a specimen must have: its type and words its reason must contain."""

    kind: type[Created | Permanent | Transient]
    reason: tuple[str, ...] = ()


ZOO: list[Any] = [
    pytest.param(missing, Expect(Transient, ("file not found",)), id="missing-file"),
    pytest.param(zero_bytes, Expect(Permanent, ("not an HDF5 file",)), id="zero-bytes"),
    pytest.param(not_hdf5, Expect(Permanent, ("not an HDF5 file",)), id="not-hdf5"),
    pytest.param(truncated, Expect(Permanent, ("truncated",)), id="truncated-hdf5"),
    pytest.param(
        without_entry,
        Expect(Permanent, ("mandatory dataset fields empty", "/entry/title: no such dataset")),
        id="hdf5-without-entry",
    ),
    pytest.param(
        schema_path_missing,
        Expect(Permanent, ("datasetName", "/entry/title: no such dataset")),
        id="schema-path-missing",
    ),
    pytest.param(
        string_100mb_fixed,
        Expect(Permanent, ("/entry/title", "max_read_bytes")),
        id="100MB-fixed-string-for-a-scalar",
    ),
    pytest.param(
        string_100mb_variable,
        Expect(Permanent, ("/entry/title", "max_read_bytes")),
        id="100MB-vlen-string-for-a-scalar",
    ),
    pytest.param(number_as_text, Expect(Created), id="number-where-text-expected"),
    pytest.param(nan_as_number, Expect(Created), id="nan-where-number-expected"),
    pytest.param(
        invalid_utf8, Expect(Permanent, ("/entry/title", "not valid UTF-8")), id="invalid-utf8"
    ),
    pytest.param(non_ascii_name, Expect(Created), id="non-ascii-file-name"),
    pytest.param(long_path, Expect(Created), id="3500-char-path"),
    pytest.param(too_long_path, Expect(Permanent, ("File name too long",)), id="over-PATH_MAX"),
    pytest.param(directory, Expect(Permanent, ("directory",)), id="directory"),
    pytest.param(symlink_loop, Expect(Permanent, ("ymlink loop",)), id="symlink-loop"),
    pytest.param(
        symlink_escaping, Expect(Permanent, ("symlink leads outside",)), id="symlink-escape"
    ),
    pytest.param(dotdot, Expect(Permanent, ("'..' leads outside",)), id="dotdot-traversal"),
    pytest.param(outside_roots, Expect(Permanent, ("outside the data roots",)), id="outside-roots"),
    pytest.param(relative, Expect(Permanent, ("not an absolute path",)), id="relative-path"),
]


# ------------------------------------------------------------------------------------------------
# Part 1: through the pipeline
# ------------------------------------------------------------------------------------------------


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """The data root (``ingestion.file_handling.data_directory``)."""
    (tmp_path / "data" / "raw").mkdir(parents=True)
    return tmp_path / "data"


def _schemas_dir(base: Path) -> Path:
    directory = base / "schemas"
    directory.mkdir(exist_ok=True)
    shutil.copy(SCHEMA, directory)
    return directory


def _config(standin: SciCatStandIn, schemas: Path, data_root: Path) -> IngestorConfig:
    data = {
        "scicat": {"host": standin.url, "token": standin.token, "timeout": 5, "max_retries": 0},
        "ingestion": {
            "schemas_directory": str(schemas),
            "file_handling": {"data_directory": str(data_root)},
        },
    }
    return build(IngestorConfig, data, "zoo")


@pytest.fixture
def make_pipeline(
    tmp_path: Path, root: Path, scicat_standin: SciCatStandIn
) -> Iterator[Callable[..., Pipeline]]:
    clients: list[SciCatClient] = []

    def make(client: SciCatClient | None = None) -> Pipeline:
        config = _config(scicat_standin, _schemas_dir(tmp_path), root)
        client = client or SciCatClient(config.scicat)
        clients.append(client)
        return Pipeline(config, load_schemas(config.ingestion.schemas_directory), client)

    yield make
    for client in clients:
        client.close()


def _check(outcome: Outcome, expect: Expect) -> None:
    assert isinstance(outcome, expect.kind), outcome
    if isinstance(outcome, Transient):
        assert outcome.cause == "file", outcome
    reason = getattr(outcome, "reason", "")
    for words in expect.reason:
        assert words in reason, f"{words!r} not in {reason!r}"
    assert "\n" not in reason


@pytest.mark.integration
@pytest.mark.parametrize(("specimen", "expect"), ZOO)
def test_pipeline_outcome(
    specimen: Callable[[Path], str],
    expect: Expect,
    root: Path,
    make_pipeline: Callable[..., Pipeline],
    scicat_standin: SciCatStandIn,
) -> None:
    path = specimen(root)
    outcome = make_pipeline().ingest(Job(path, "job-zoo"))
    _check(outcome, expect)
    datasets = list(scicat_standin.datasets.values())
    if isinstance(outcome, Created):
        assert [d["pid"] for d in datasets] == [outcome.pid]
        assert len(scicat_standin.origdatablocks) == 1
    else:
        assert datasets == [] and scicat_standin.origdatablocks == []


@pytest.mark.integration
def test_number_where_text_expected_is_its_decimal_text(
    root: Path, make_pipeline: Callable[..., Pipeline], scicat_standin: SciCatStandIn
) -> None:
    outcome = make_pipeline().ingest(Job(number_as_text(root), "job"))
    assert isinstance(outcome, Created)
    assert scicat_standin.datasets[outcome.pid]["datasetName"] == "42"


@pytest.mark.integration
def test_nan_is_left_out_not_sent(
    root: Path, make_pipeline: Callable[..., Pipeline], scicat_standin: SciCatStandIn
) -> None:
    """JSON has no NaN: the field is dropped (with a warning), the dataset is still created."""
    outcome = make_pipeline().ingest(Job(nan_as_number(root), "job"))
    assert isinstance(outcome, Created)
    assert "run_number" not in scicat_standin.datasets[outcome.pid]["scientificMetadata"]


@pytest.mark.integration
def test_non_ascii_name_is_listed_exactly(
    root: Path, make_pipeline: Callable[..., Pipeline], scicat_standin: SciCatStandIn
) -> None:
    path = non_ascii_name(root)
    outcome = make_pipeline().ingest(Job(path, "job"))
    assert isinstance(outcome, Created)
    (block,) = scicat_standin.origdatablocks
    assert block["dataFileList"][0]["path"] == "raw/" + Path(path).name


def _run_in_child(
    work: Callable[[], Outcome], as_nobody: bool = False, timeout: float = 60
) -> Outcome:
    """Run ``work`` in a forked child (optionally as user ``nobody``) and return its outcome.

    A child, because a hang must not take the test process with it: h5py holds the GIL while it
    is blocked in open(2). Forking (not exec) keeps every module loaded, which also matters for
    ``nobody``: the interpreter lives under /root, which nobody may read.
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(read_end)
            if as_nobody:
                os.setgroups([])
                os.setgid(NOBODY)
                os.setuid(NOBODY)
            answer: object = work()
        except BaseException as exc:
            answer = f"child raised {type(exc).__name__}: {exc}"
        with os.fdopen(write_end, "wb") as out:
            out.write(pickle.dumps(answer))
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as answer_pipe:
        ready, _, _ = select.select([answer_pipe], [], [], timeout)
        if not ready:
            os.kill(pid, signal.SIGKILL)
        data = answer_pipe.read() if ready else b""
    os.waitpid(pid, 0)
    if not data:
        pytest.fail(f"the ingestion blocked for {timeout} s (child process killed)")
    answer = pickle.loads(data)
    assert isinstance(answer, Created | Existed | DryRun | Skipped | Permanent | Transient), answer
    return answer


@pytest.mark.integration
def test_fifo_does_not_hang(root: Path, make_pipeline: Callable[..., Pipeline]) -> None:
    """Run in a child: h5py holds the GIL while blocked opening a FIFO, so a regression would
    freeze the whole process (the daemon's poll loop and health endpoint, or this test run)."""
    path = fifo(root)
    pipeline = make_pipeline()
    outcome = _run_in_child(lambda: pipeline.ingest(Job(path)), timeout=10)
    _check(outcome, Expect(Permanent, ("not a regular file",)))


@pytest.mark.integration
def test_permission_denied(scicat_standin: SciCatStandIn) -> None:
    """An unreadable file is refused, not retried. Tests run as root, and root reads every file:
    as root, the ingestion runs in a forked child that has switched to user ``nobody``."""
    base = Path(tempfile.mkdtemp(prefix="zoo-perm-"))  # /tmp/pytest-of-root is 0700
    try:
        base.chmod(0o755)
        data_root = base / "data"
        path = _copy(data_root, "small-coda-secret.hdf")
        for folder in (data_root, data_root / "raw"):
            folder.chmod(0o755)
        path.chmod(0o600)
        config = _config(scicat_standin, _schemas_dir(base), data_root)
        client = SciCatClient(config.scicat)
        pipeline = Pipeline(config, load_schemas(config.ingestion.schemas_directory), client)
        job = Job(str(path), "job-perm")
        try:
            if os.geteuid() == 0:
                outcome = _run_in_child(lambda: pipeline.ingest(job), as_nobody=True)
            else:
                path.chmod(0)
                outcome = pipeline.ingest(job)
        finally:
            client.close()
    finally:
        shutil.rmtree(base)
    _check(outcome, Expect(Permanent, ("permission denied",)))
    assert scicat_standin.datasets == {}


class _DeletesWhileCreating(SciCatClient):
    """Deletes the data file when the pipeline POSTs the dataset.

    That POST comes after the metadata was read and before the file is hashed (a redelivery
    ends at its 409 unread): the moment an operator's clean-up script could remove a file that is
    half-processed.
    """

    def __init__(self, options: SciCatOptions, victim: Path) -> None:
        super().__init__(options)
        self.victim: Path | None = victim

    def create_dataset(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        if self.victim is not None:
            self.victim.unlink()
            self.victim = None
        return super().create_dataset(payload)


@pytest.mark.integration
def test_file_deleted_after_reading_before_hashing(
    root: Path, make_pipeline: Callable[..., Pipeline], scicat_standin: SciCatStandIn
) -> None:
    path = _copy(root, "small-coda-vanishing.hdf")
    options = _config(scicat_standin, root, root).scicat
    pipeline = make_pipeline(_DeletesWhileCreating(options, path))
    outcome = pipeline.ingest(Job(str(path), "job"))
    _check(outcome, Expect(Transient, ("cannot read for the file list",)))
    # created before the file went: it stays without its block (a redelivery would add it)
    assert len(scicat_standin.datasets) == 1
    assert scicat_standin.origdatablocks == []


class _DeletesDuringFetch(SciCatClient):
    """Deletes the data file during the first SC variable's GET, while the file is still open."""

    def __init__(self, options: SciCatOptions, victim: Path) -> None:
        super().__init__(options)
        self.victim: Path | None = victim

    def get_json(self, url: str) -> Any:
        if self.victim is not None:
            self.victim.unlink()
            self.victim = None
        return super().get_json(url)


@pytest.mark.integration
def test_file_deleted_while_its_metadata_is_read(
    root: Path, make_pipeline: Callable[..., Pipeline], scicat_standin: SciCatStandIn
) -> None:
    """The open file is still readable; the stat after closing it must not escape ingest()."""
    path = _copy(root, "small-coda-vanishing-early.hdf")
    options = _config(scicat_standin, root, root).scicat
    pipeline = make_pipeline(_DeletesDuringFetch(options, path))
    outcome = pipeline.ingest(Job(str(path), "job"))
    _check(outcome, Expect(Transient, ("file not found",)))
    assert scicat_standin.datasets == {}


@contextmanager
def _held_by_writer(path: Path) -> Iterator[Callable[[], None]]:
    """Hold the HDF5 writer's lock (flock LOCK_EX, as HDF5 takes it); yields ``release()``."""
    fd = os.open(path, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    released = False

    def release() -> None:
        nonlocal released
        if not released:
            released = True
            os.close(fd)

    try:
        yield release
    finally:
        release()


@pytest.mark.integration
@pytest.mark.skipif(not LOCKING, reason="HDF5 file locking is disabled (HDF5_USE_FILE_LOCKING)")
def test_file_being_written_is_retried_then_ingested(
    root: Path, make_pipeline: Callable[..., Pipeline], scicat_standin: SciCatStandIn
) -> None:
    path = _copy(root, "small-coda-writing.hdf")
    pipeline = make_pipeline()
    with _held_by_writer(path) as release:
        for _ in range(3):  # "never completes": stays transient for as long as it is held
            _check(pipeline.ingest(Job(str(path), "job")), Expect(Transient, ("locked",)))
        assert scicat_standin.datasets == {}
        release()
        outcome = pipeline.ingest(Job(str(path), "job"))
    assert isinstance(outcome, Created)


# ------------------------------------------------------------------------------------------------
# Part 2: through the daemon (separate process, real broker, dead-letter file)
# ------------------------------------------------------------------------------------------------


def _dead_letters(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _wait_for(what: str, check: Callable[[], bool], daemon: DaemonProcess, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert daemon.running, f"daemon died while waiting for {what}:\n{daemon.log_tail()}"
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}; daemon log:\n{daemon.log_tail()}")
        time.sleep(0.1)


# Specimens for the daemon run and the words their dead-letter reason must contain.
DAEMON_REFUSED: dict[str, tuple[Callable[[Path], str], str]] = {
    "zero-bytes": (zero_bytes, "not an HDF5 file"),
    "not-hdf5": (not_hdf5, "not an HDF5 file"),
    "truncated": (truncated, "truncated"),
    "no-entry": (without_entry, "mandatory dataset fields empty"),
    "invalid-utf8": (invalid_utf8, "not valid UTF-8"),
    "directory": (directory, "directory"),
    "fifo": (fifo, "not a regular file"),
    "symlink-loop": (symlink_loop, "ymlink loop"),
    "symlink-escape": (symlink_escaping, "symlink leads outside"),
    "dotdot": (dotdot, "'..' leads outside"),
    "outside-roots": (outside_roots, "outside the data roots"),
    "relative": (relative, "not an absolute path"),
    "missing": (missing, "file not found"),
}


@pytest.mark.integration
@pytest.mark.skipif(not LOCKING, reason="HDF5 file locking is disabled (HDF5_USE_FILE_LOCKING)")
def test_daemon_survives_the_zoo(
    tmp_path: Path,
    root: Path,
    kafka_broker: HarnessBroker,
    make_topic: Callable[..., str],
    scicat_standin: SciCatStandIn,
) -> None:
    topic = make_topic(1)
    dead_file = tmp_path / "dead-letters.jsonl"
    retry_delays = [0.3] * 4
    config = daemon_config(
        bootstrap=kafka_broker.bootstrap,
        topics=[topic],
        group_id=f"zoo-{uuid.uuid4().hex[:8]}",
        scicat_url=scicat_standin.url,
        scicat_token=scicat_standin.token,
        schemas_directory=_schemas_dir(tmp_path),
        overrides={
            "ingestion.file_handling.data_directory": str(root),
            "ingestion.file_handling.data_file_open_max_tries": len(retry_delays),
            "ingestion.file_handling.data_file_open_retry_delay": retry_delays,
            "ingestion.dead_letter.file": str(dead_file),
        },
    )
    refused = {name: (build_(root), words) for name, (build_, words) in DAEMON_REFUSED.items()}
    good = {
        "non-ascii": non_ascii_name(root),
        "number-as-text": number_as_text(root),
        "long-path": long_path(root),
    }
    writing = _copy(root, "small-coda-completes.hdf")
    stuck = _copy(root, "small-coda-never-completes.hdf")
    vanishing = _copy(root, "small-coda-deleted-before-open.hdf")
    producer = Producer({"bootstrap.servers": kafka_broker.bootstrap})

    def announce(path: str, job: str) -> None:
        producer.produce(topic, wrdn_message(path, job))
        assert producer.flush(10) == 0

    daemon = DaemonProcess(write_config(tmp_path / "config.yml", config), tmp_path / "daemon.log")
    with daemon, _held_by_writer(writing) as release_writing, _held_by_writer(stuck):
        daemon.wait_for_log("assigned", timeout=60)
        announce(str(writing), "job-writing")
        for name, (path, _) in refused.items():
            announce(path, f"job-{name}")
        for name, path in good.items():
            announce(path, f"job-{name}")
        announce(str(vanishing), "job-vanishing")
        vanishing.unlink()  # deleted between the message and the open
        announce(str(stuck), "job-stuck")
        producer.produce(topic, b"\x00\x01\x02\x03\xff\xfe\xfd\xfc is not a flatbuffer")
        assert producer.flush(10) == 0

        daemon.wait_for_log(r"retrying .*small-coda-completes\.hdf", timeout=60)
        release_writing()  # the writer finishes within the retry budget
        expected_letters = len(refused) + 3  # + vanishing, stuck, garbage
        _wait_for(
            f"{expected_letters} dead letters",
            lambda: len(_dead_letters(dead_file)) >= expected_letters,
            daemon,
            timeout=90,
        )
        _wait_for(
            "the good files",
            lambda: len(scicat_standin.origdatablocks) >= len(good) + 1,
            daemon,
            timeout=60,
        )
        # Still alive and working after all of it: one more ordinary file.
        last = _copy(root, "small-coda-after-the-zoo.hdf")
        announce(str(last), "job-last")
        _wait_for(
            "the file after the zoo",
            lambda: len(scicat_standin.origdatablocks) >= len(good) + 2,
            daemon,
            timeout=60,
        )
        daemon.terminate()
        assert daemon.wait(30) == 0

    letters = {letter["job_id"] or "garbage": letter for letter in _dead_letters(dead_file)}
    for name, (_, words) in refused.items():
        assert words in letters[f"job-{name}"]["reason"], letters[f"job-{name}"]
    assert "file not found" in letters["job-vanishing"]["reason"]
    stuck_reason = letters["job-stuck"]["reason"]
    assert f"after {len(retry_delays) + 1} attempts" in stuck_reason and "locked" in stuck_reason
    assert "garbage" in letters
    assert len(letters) == len(_dead_letters(dead_file)), "a message was dead-lettered twice"
    # The good files, the one that completed, and the one after the zoo: once each.
    assert len(scicat_standin.datasets) == len(good) + 2 == len(scicat_standin.origdatablocks)
