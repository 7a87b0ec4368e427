"""The watch trigger end to end: ``scicat-ingestor run`` on real directories and the SciCat
stand-in, no Kafka. Every finished file becomes exactly one dataset, never before its writer
closed it, whatever happens to the process; a bad file becomes a dead letter with its reason.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from helpers.wait import wait_until
from scicat_ingestor.sources.watch_state import WatchState
from scicat_ingestor.testing.broker import free_port
from scicat_ingestor.testing.daemon_process import DaemonProcess, daemon_config, write_config
from scicat_ingestor.testing.dirwriter import DirectoryWriter, DirFile
from scicat_ingestor.testing.scicat import SciCatStandIn

pytestmark = pytest.mark.integration

WAIT = 120.0
RESCANS = "scicat_ingestor_watch_rescans_total"


class WatchKit:
    def __init__(self, tmp_path: Path, standin: SciCatStandIn, schemas: Path) -> None:
        self.tmp_path = tmp_path
        self.standin = standin
        self.schemas = schemas
        self.data = tmp_path / "data"
        self.data.mkdir()
        self.dead_file = tmp_path / "dead-letters.jsonl"
        self.state_file = tmp_path / "state" / "watch.sqlite"
        self.processes: list[DaemonProcess] = []
        self.health_port = free_port()

    def config_data(self, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
        return daemon_config(
            bootstrap="127.0.0.1:9",  # never contacted in watch mode
            topics=["unused"],
            group_id="unused",
            scicat_url=self.standin.url,
            scicat_token=self.standin.token,
            schemas_directory=self.schemas,
            overrides={
                "ingestion.trigger": "watch",
                "ingestion.dead_letter.file": str(self.dead_file),
                "ingestion.file_handling.ingestor_files_directory": str(self.tmp_path / "side"),
                "ingestion.file_handling.file_path_type": "absolute",
                "watch.directories": [str(self.data)],
                "watch.state_file": str(self.state_file),
                "watch.settle_seconds": 1.0,
                "watch.rescan_interval": 1.0,
                "health_check.enabled": True,
                "health_check.port": self.health_port,
                **(overrides or {}),
            },
        )

    def daemon(self, overrides: Mapping[str, Any] | None = None) -> DaemonProcess:
        config = write_config(self.tmp_path / "watch.yml", self.config_data(overrides))
        process = DaemonProcess(config, self.tmp_path / "daemon.log")
        process.start()
        process.wait_for_log(r"watching ", 30)
        self.processes.append(process)
        return process

    def blocks_by_uuid(self) -> dict[str, list[dict[str, Any]]]:
        """origdatablocks by the entry uuid at the end of their dataset pid."""
        found: dict[str, list[dict[str, Any]]] = {}
        for block in self.standin.origdatablocks:
            found.setdefault(str(block["datasetId"]).rsplit("/", 1)[-1], []).append(block)
        return found

    def wait_blocks(self, count: int, timeout: float = WAIT) -> None:
        wait_until(lambda: len(self.standin.origdatablocks) >= count, f"{count} blocks", timeout)

    def rescans_pass(self, daemon: DaemonProcess, count: int = 3) -> None:
        """Wait for ``count`` more rescans: a version a rescan finds is handed over once it
        stayed unchanged for the settle time (1 s, one rescan interval), so by the third a
        duplicate (or a file looked at again) would have been ingested."""
        target = metric(self, daemon, RESCANS) + count
        wait_until(lambda: metric(self, daemon, RESCANS) >= target, f"{count} more rescans")

    def assert_each_file_once(self, files: list[DirFile]) -> None:
        datasets = self.standin.datasets
        uuids = sorted(pid.rsplit("/", 1)[-1] for pid in datasets)
        assert uuids == sorted(f.entry_uuid for f in files)
        blocks = [block["datasetId"] for block in self.standin.origdatablocks]
        assert sorted(blocks) == sorted(datasets)


@pytest.fixture
def kit(tmp_path: Path, scicat_standin: SciCatStandIn, data_dir: Path) -> Iterator[WatchKit]:
    made = WatchKit(tmp_path, scicat_standin, data_dir / "schemas")
    yield made
    for process in made.processes:
        process.kill()


def blake2b(path: Path) -> str:
    return hashlib.blake2b(path.read_bytes()).hexdigest()


def test_concurrent_writers_each_file_once_never_before_close(kit: WatchKit) -> None:
    daemon = kit.daemon()
    writer = DirectoryWriter(kit.data, writers=8)
    files = writer.write(200, slow_every=10, hold=3.0)  # 20 writers hold the HDF5 lock 3 s
    kit.wait_blocks(200)
    kit.rescans_pass(daemon)  # no duplicate comes
    kit.assert_each_file_once(files)
    by_uuid = kit.blocks_by_uuid()
    for written in files:
        (block,) = by_uuid[written.entry_uuid]
        entry = block["dataFileList"][0]
        # Ingested before the close, the list would hold an earlier size/checksum of the file.
        assert entry["path"] == str(written.path)
        assert entry["size"] == written.path.stat().st_size
        assert entry["chk"] == blake2b(written.path)
    daemon.terminate()
    assert daemon.wait(30) == 0
    assert WatchState(kit.state_file).counts() == {"ingested": 200}


def test_kill_9_with_files_arriving_while_down_each_file_once(kit: WatchKit) -> None:
    daemon = kit.daemon()
    writer = DirectoryWriter(kit.data, writers=4)
    files: list[DirFile] = []
    lock = threading.Lock()

    def keep_writing() -> None:
        for _ in range(15):
            batch = writer.write(20, prefix="k")
            with lock:
                files.extend(batch)
            time.sleep(0.2)

    background = threading.Thread(target=keep_writing)
    background.start()
    wait_until(lambda: len(kit.standin.origdatablocks) >= 60, "some files ingested")
    daemon.kill()  # mid-run: files in flight, settling and being written
    down_at = len(kit.standin.origdatablocks)
    with lock:
        written_at = len(files)
    wait_until(
        lambda: len(files) >= written_at + 40 or not background.is_alive(),
        "files written while it is down",
    )
    assert len(files) > written_at  # some arrived while it was down
    daemon.start()
    background.join()
    assert len(files) == 300
    kit.wait_blocks(300)
    kit.rescans_pass(daemon)  # no duplicate comes
    kit.assert_each_file_once(files)
    assert down_at < 300
    daemon.terminate()
    assert daemon.wait(30) == 0
    assert WatchState(kit.state_file).counts() == {"ingested": 300}


@pytest.fixture
def small_inotify_queue() -> Iterator[int]:
    """``fs.inotify.max_queued_events`` lowered to 64 (root only), restored afterwards."""
    knob = Path("/proc/sys/fs/inotify/max_queued_events")
    try:
        before = knob.read_text().strip()
        knob.write_text("64\n")
    except OSError as exc:
        pytest.skip(f"cannot lower {knob} ({exc.strerror}): needs root")
    try:
        yield 64
    finally:
        knob.write_text(before + "\n")


def test_inotify_overflow_rescan_finds_the_missed_files(
    kit: WatchKit, small_inotify_queue: int
) -> None:
    daemon = kit.daemon({"ingestion.max_offline_ingestors": 2})
    # Stop the observer thread reading (SIGSTOP the whole daemon) while a burst is written: the
    # kernel queue (64 events) overflows and drops the rest.
    os.kill(daemon.pid, 19)
    try:
        files = DirectoryWriter(kit.data, writers=4).write(120, prefix="burst")
    finally:
        os.kill(daemon.pid, 18)
    kit.wait_blocks(120)
    kit.rescans_pass(daemon)  # no duplicate comes
    kit.assert_each_file_once(files)
    daemon.wait_for_log(r"Inotify queue overflowed", 10)
    missed = metric(kit, daemon, "scicat_ingestor_watch_found_by_rescan_total")
    assert 0 < missed <= 120
    assert f'found_by_rescan": {int(missed)}' in ready_body(kit, daemon)


def metric(kit: WatchKit, daemon: DaemonProcess, name: str) -> float:
    text = http_get(kit, daemon, "/metrics")
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def ready_body(kit: WatchKit, daemon: DaemonProcess) -> str:
    return http_get(kit, daemon, "/ready")


def http_get(kit: WatchKit, daemon: DaemonProcess, path: str) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{kit.health_port}{path}", timeout=5) as r:
            return str(r.read().decode())
    except urllib.error.HTTPError as exc:  # /ready may answer 503
        return str(exc.read().decode())


def test_bad_file_is_dead_lettered_with_its_reason_and_replayable(kit: WatchKit) -> None:
    daemon = kit.daemon()
    bad = kit.data / "broken-small-coda.nxs"
    bad.write_bytes(b"not HDF5 at all" * 100)
    good = DirectoryWriter(kit.data).write(3)
    kit.wait_blocks(3)
    wait_until(lambda: kit.dead_file.exists() and kit.dead_file.read_text().strip() != "", "letter")
    (letter,) = [json.loads(line) for line in kit.dead_file.read_text().splitlines()]
    assert letter["file_name"] == str(bad)
    assert "not an HDF5 file" in letter["reason"]
    assert letter["source_topic"] == "watch"
    daemon.terminate()
    assert daemon.wait(30) == 0
    assert WatchState(kit.state_file).counts() == {"ingested": 3, "dead_lettered": 1}
    kit.assert_each_file_once(good)

    # replay reads the watch-mode letter like a Kafka one: the file is tried again.
    config = kit.tmp_path / "watch.yml"
    replay = subprocess.run(
        [sys.executable, "-m", "scicat_ingestor", "replay", "-c", str(config), str(kit.dead_file)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert replay.returncode == 1, replay.stdout + replay.stderr
    assert str(bad) in replay.stdout
    assert "not an HDF5 file" in replay.stdout


def test_restart_does_not_reingest_and_a_rewrite_follows_the_pid(kit: WatchKit) -> None:
    daemon = kit.daemon()
    files = DirectoryWriter(kit.data).write(5)
    kit.wait_blocks(5)
    daemon.terminate()
    assert daemon.wait(30) == 0
    requests_before = len(kit.standin.requests_log)

    # rewrite one file in place: same entry uuid, so the schema's pid is the same → Existed
    rewritten = files[0].path
    data = rewritten.read_bytes()
    rewritten.write_bytes(data + b"\0" * 16)
    daemon.start()
    daemon.wait_for_log(r"was rewritten", 30)
    daemon.wait_for_log(rf"{rewritten.name}: existed", 30)
    kit.rescans_pass(daemon)  # nothing else is looked at
    posts = [r for r in kit.standin.requests_log[requests_before:] if r[0] == "POST"]
    assert posts == []
    kit.assert_each_file_once(files)
    daemon.terminate()
    assert daemon.wait(30) == 0
    counts = WatchState(kit.state_file).counts()
    assert counts == {"ingested": 6}


def test_a_rewrite_with_generated_pids_is_a_new_dataset(kit: WatchKit) -> None:
    """Without an identity in the file (no metadata exists-check), each version is a dataset."""
    daemon = kit.daemon(
        {
            "dataset.generate_dataset_pid": True,
            "ingestion.check_if_dataset_exists_by_metadata": False,
        }
    )
    (written,) = DirectoryWriter(kit.data).write(1)
    kit.wait_blocks(1)
    written.path.write_bytes(written.path.read_bytes() + b"\0" * 16)
    kit.wait_blocks(2)
    assert len(kit.standin.datasets) == 2  # one per version: the pid is seeded by the version
    daemon.terminate()
    assert daemon.wait(30) == 0
    assert WatchState(kit.state_file).counts() == {"ingested": 2}


def test_a_missing_watch_directory_is_a_config_error(kit: WatchKit) -> None:
    data = kit.config_data({"watch.directories": [str(kit.tmp_path / "nope")]})
    config = write_config(kit.tmp_path / "bad.yml", data)
    run = subprocess.run(
        [sys.executable, "-m", "scicat_ingestor", "run", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 2
    assert (
        f"watch.directories: {kit.tmp_path / 'nope'} is not a directory" in run.stderr + run.stdout
    )


def test_a_scicat_outage_pauses_and_every_file_lands_once_after_it(kit: WatchKit) -> None:
    daemon = kit.daemon({"scicat.timeout": 1})  # each unanswered request fails after 1 s
    kit.standin.faults.stop_answering()
    files = DirectoryWriter(kit.data).write(20)
    daemon.wait_for_log(r"SciCat is failing", 60)
    assert kit.standin.origdatablocks == []
    kit.standin.faults.resume()
    kit.wait_blocks(20)
    kit.rescans_pass(daemon)  # no duplicate comes
    kit.assert_each_file_once(files)
    daemon.terminate()
    assert daemon.wait(30) == 0
    assert WatchState(kit.state_file).counts() == {"ingested": 20}
