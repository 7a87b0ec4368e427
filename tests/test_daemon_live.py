"""The daemon process (``python -m scicat_ingestor run``) with live schema reload and samples.

Through the real broker and the SciCat stand-in: a schema edited on disk is used for the next file
without a restart (SIGHUP, and the timed scan); a broken edit keeps the old set, is named in the log
and on ``/ready`` and the next file is still ingested; removing a schema removes its selection. A
``pl72`` run start creates its sample once, is retried while the file is missing and then
dead-lettered, and the run's dataset links the sample.
"""

from __future__ import annotations

import signal
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from helpers.daemon_kit import CODA_SCHEMA, SAMPLES_ON, YMIR_SCHEMA, LiveKit, ready_body
from helpers.standin import linked_samples
from helpers.wait import wait_until
from scicat_ingestor.testing.broker import free_port
from scicat_ingestor.testing.filewriter import WrittenFile

pytestmark = [pytest.mark.integration, pytest.mark.broker]  # the kit uses kafka_broker

VERSION_FIELD = {
    "field_type": "scientific_metadata",
    "machine_name": "schema_version",
    "value": "2",
    "type": "string",
}


@pytest.fixture
def kit(live_kit: LiveKit) -> LiveKit:
    """This module's kit: a ``LiveKit`` (helpers.fixtures)."""
    return live_kit


def add_version_field(path: Path) -> None:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data["schema"]["schema_version"] = VERSION_FIELD
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")


def version(dataset: Mapping[str, Any]) -> Any:
    return dataset["scientificMetadata"].get("schema_version", {}).get("value")


def test_sighup_reloads_an_edited_schema_for_the_next_file(kit: LiveKit) -> None:
    topic = kit.make_topic(1)
    coda = kit.template_writer(topic, 0)
    daemon = kit.daemon(topic, {"ingestion.schema_reload_interval": 0})

    first = coda.write_and_announce(1)[0]
    assert version(kit.dataset_of(first)) is None
    add_version_field(kit.schema_dir / CODA_SCHEMA)
    second = coda.write_and_announce(1)[0]  # interval 0: no scan, the old set still applies
    assert version(kit.dataset_of(second)) is None

    daemon.signal(signal.SIGHUP)
    daemon.wait_for_log(r"schemas reloaded \(SIGHUP\)", timeout=30)
    third = coda.write_and_announce(1)[0]
    assert version(kit.dataset_of(third)) == "2"
    daemon.terminate()
    assert daemon.wait(30) == 0


def test_timed_scan_keeps_the_old_set_on_a_broken_file_and_removes_a_deleted_schema(
    kit: LiveKit,
) -> None:
    topic = kit.make_topic(1)
    coda, ymir = kit.template_writer(topic, 0), kit.template_writer(topic, 1)
    port = free_port()
    daemon = kit.daemon(
        topic,
        {
            "ingestion.schema_reload_interval": 0.2,
            "health_check.enabled": True,
            "health_check.port": port,
        },
    )
    before = ready_body(port)["schemas"]
    assert (before["count"], before["last_error"]) == (2, "")

    # a broken file next to a good edit: nothing of the new set is used
    add_version_field(kit.schema_dir / CODA_SCHEMA)
    broken = kit.schema_dir / "typo.imsc.yml"
    broken.write_text("id: x\nname: [unclosed\n", encoding="utf-8")
    daemon.wait_for_log(rf"failed, keeping the old set: {broken}: ", timeout=30)
    status = ready_body(port)["schemas"]
    assert status["count"] == 2
    assert str(broken) in status["last_error"]
    assert status["last_error_at"] is not None
    kept = coda.write_and_announce(1)[0]
    assert version(kit.dataset_of(kept)) is None

    broken.unlink()
    daemon.wait_for_log("schemas reloaded", timeout=30)
    assert version(kit.dataset_of(coda.write_and_announce(1)[0])) == "2"
    assert ready_body(port)["schemas"]["last_error"] == ""

    (kit.schema_dir / YMIR_SCHEMA).unlink()
    daemon.wait_for_log("schemas reloaded", timeout=30, count=2)
    assert ready_body(port)["schemas"]["count"] == 1
    orphan = ymir.write_and_announce(1)[0]
    wait_until(lambda: len(kit.dead_letters()) == 1, "the ymir file dead-lettered")
    (letter,) = kit.dead_letters()
    assert "no metadata schema matches this file" in letter["reason"]
    assert letter["file_name"] == str(orphan.path)
    assert kit._find(orphan) is None
    daemon.terminate()
    assert daemon.wait(30) == 0


def test_a_run_announced_twice_makes_one_sample_which_its_dataset_links(kit: LiveKit) -> None:
    topic = kit.make_topic(1)
    coda = kit.template_writer(topic, 0)
    daemon = kit.daemon(topic, SAMPLES_ON)
    (run,) = coda.write(1)
    coda.announce_run_start([run])
    coda.announce_run_start([run])  # while the first is in flight, or after it: one sample
    wait_until(lambda: len(kit.standin.samples) == 1, "the sample")
    wait_until(lambda: kit.committed_all(topic) == 2, "both run starts committed")
    coda.announce_run_start([run])  # long after: found by the lookup
    daemon.wait_for_log("sample of .*: existed", timeout=30)
    (sample,) = kit.standin.samples
    assert (sample["description"], sample["proposalId"]) == ("A Sample", "443503")

    coda.announce([run])
    assert linked_samples(kit.dataset_of(run)) == [sample["sampleId"]]
    wait_until(lambda: kit.committed_all(topic) == 4, "all four offsets committed")
    assert len(kit.standin.samples) == 1
    assert kit.dead_letters() == []
    daemon.terminate()
    assert daemon.wait(30) == 0


def test_a_run_start_waits_for_its_file_then_is_dead_lettered_when_it_never_comes(
    kit: LiveKit,
) -> None:
    topic = kit.make_topic(1)
    coda = kit.template_writer(topic, 0)
    daemon = kit.daemon(topic, SAMPLES_ON)
    never = WrittenFile(kit.tmp_path / "data" / "never-small-coda.hdf", "job-x", "job-x")
    coda.announce_run_start([never])
    wait_until(lambda: len(kit.dead_letters()) == 1, "the run start dead-lettered")
    (letter,) = kit.dead_letters()
    assert letter["reason"].startswith("file not readable after 3 attempts")
    assert letter["file_name"] == str(never.path)
    assert daemon.log_text().count("retrying") == 2
    wait_until(lambda: kit.committed_all(topic) == 1, "the offset committed")
    assert kit.standin.samples == []

    late = WrittenFile(kit.tmp_path / "data" / "late-small-coda.hdf", "job-y", "job-y")
    coda.announce_run_start([late])
    daemon.wait_for_log("retrying .*late-small-coda", timeout=30)
    (run,) = coda.write(1)
    run.path.rename(late.path)  # the file-writer creates it after the run start
    wait_until(lambda: len(kit.standin.samples) == 1, "the late file's sample")
    daemon.terminate()
    assert daemon.wait(30) == 0


def test_without_sample_ingestion_a_run_start_is_skipped_and_committed(kit: LiveKit) -> None:
    topic = kit.make_topic(1)
    coda = kit.template_writer(topic, 0)
    daemon = kit.daemon(topic, {})
    (run,) = coda.write(1)
    coda.announce_run_start([run])
    coda.announce([run])
    assert "sampleId" not in kit.dataset_of(run)
    wait_until(lambda: kit.committed_all(topic) == 2, "both offsets committed")
    assert kit.standin.samples == []
    assert kit.dead_letters() == []
    daemon.terminate()
    assert daemon.wait(30) == 0
