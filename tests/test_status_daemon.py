"""``/status.json`` of a daemon process (``scicat_ingestor run``) on the broker and the stand-in:
the daemon feeds the page's recorder (files, outcomes, dead letters of files and of unreadable
messages) and the page names the source's offsets. The browser tier (tests/browser) checks the
rendered page; this one needs no browser.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
import requests

from helpers.daemon_kit import make_kit, new_group
from helpers.wait import wait_until
from scicat_ingestor.testing.broker import free_port
from scicat_ingestor.testing.daemon_process import DaemonProcess, write_config
from scicat_ingestor.testing.filewriter import WrittenFile

pytestmark = [pytest.mark.integration, pytest.mark.broker]

FRONTEND = "https://scicat.example"


def test_status_json_of_a_running_daemon(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    kit = make_kit(request, tmp_path)
    topic = kit.make_topic(1)
    writer = kit.writer(topic)
    port = free_port()
    overrides = {
        "health_check.enabled": True,
        "health_check.host": "127.0.0.1",
        "health_check.port": port,
        "scicat.frontend_url": FRONTEND,
    }
    config = write_config(tmp_path / "d.yml", kit.config_data(topic, new_group(), overrides))
    with DaemonProcess(config, tmp_path / "log") as daemon:
        daemon.wait_for_log(r"assigned .*\[0\]", timeout=60)
        files = writer.write_and_announce(2)
        broken = tmp_path / "data" / "broken.hdf"
        broken.write_bytes(b"not HDF5")
        job = str(uuid.uuid4())
        writer.announce([WrittenFile(broken, job, job)])
        writer.produce_raw(b"not a flatbuffer")

        def status() -> dict[str, Any]:
            answer = requests.get(f"http://127.0.0.1:{port}/status.json", timeout=10)
            body: dict[str, Any] = answer.json()
            return body

        wait_until(lambda: len(status()["dead_letters"]) == 2, "two dead letters on the page")

        def committed() -> list[tuple[str, int, int | None]]:
            rows = status()["source"]["partitions"]
            return [(row["topic"], row["partition"], row["committed"]) for row in rows]

        wait_until(lambda: committed() == [(topic, 0, 4)], "all 4 messages committed")
        body = status()
        daemon.terminate()
        assert daemon.wait(30) == 0

    assert body["state"]["name"] == "running"
    assert body["trigger"] == "kafka"
    assert body["source"]["topics"] == [topic]
    by_file = {record["file"]: record for record in body["files"]}
    assert set(by_file) == {str(f.path) for f in files} | {str(broken)}
    for written in files:
        record = by_file[str(written.path)]
        assert record["outcome"] == "created"
        assert record["pid"].endswith(written.entry_uuid)
        assert record["url"] == f"{FRONTEND}/datasets/{record['pid'].replace('/', '%2F')}"
        assert 0 < record["seconds"] < 30
    assert by_file[str(broken)]["outcome"] == "dead_lettered"
    assert by_file[str(broken)]["url"] == ""
    subjects = {letter["subject"] for letter in body["dead_letters"]}
    assert subjects == {str(broken), f"{topic}[0]@3"}
    assert body["totals"] == {"created": 2, "dead_lettered": 1}
    assert sum(body["history"]["outcomes"]["created"]) == 2
