"""SciCat jobs through the daemon: the real broker, redelivered messages and a restart that
reads the topic again still leave one job per dataset and schema job."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.daemon_kit import Kit, make_kit, new_group
from helpers.jobs import ARCHIVE, EXAMPLE, jobs_of

pytestmark = [pytest.mark.integration, pytest.mark.broker]  # kit uses kafka_broker


@pytest.fixture
def kit(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Kit]:
    """test_daemon's kit with the upstream schemas, small-coda's with two jobs."""
    made = make_kit(request, tmp_path)
    schemas = tmp_path / "schemas"
    shutil.copytree(made.schemas, schemas)
    text = EXAMPLE.read_text().replace("\njobs:\n", "\njobs:\n" + ARCHIVE)
    (schemas / EXAMPLE.name).write_text(text)
    made.schemas = schemas
    yield made
    for running in made.running:
        if running.code is None:
            running.stop()


def test_one_job_per_dataset_and_schema_job_across_duplicates_and_a_restart(kit: Kit) -> None:
    topic = kit.make_topic(1)
    writer = kit.writer(topic)
    files = writer.write(4)  # small-coda (with jobs), small-ymir (without), twice
    writer.announce(files)
    writer.announce(files)  # every message twice
    for _ in range(2):  # a second daemon (a new group) reads the topic again: a restart
        config = kit.config(topic, new_group())
        running = kit.start(config)
        kit.wait_committed(config.kafka.group_id, topic, [8])
        assert running.stop() == 0
    kit.assert_each_file_once(files)
    assert kit.dead_letters() == []
    pids = {pid.rsplit("/", 1)[-1]: pid for pid in kit.standin.datasets}
    for written in files:
        types = [job["type"] for job in jobs_of(kit.standin, pids[written.entry_uuid])]
        coda = "small-coda" in written.path.name
        assert types == (["archive", "embargo_period"] if coda else []), written.path.name
