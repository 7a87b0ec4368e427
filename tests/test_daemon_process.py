"""The daemon as a real process (``python -m scicat_ingestor run``): kill -9, SIGTERM, two members.

What must hold whatever happens to the process: every announced file ends up as exactly one dataset
with one origdatablock; nothing is lost and nothing is duplicated.
"""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.daemon_kit import ProcessKit, announce_round_robin, make_kit, new_group
from helpers.wait import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.broker]  # kit uses kafka_broker


# A bound of 32 files in flight (4 workers + 28 queued) instead of 8: fewer pause/resume rounds,
# each of which costs ~0.8 s before Tansu's next fetch arrives.
WIDE = {"ingestion.queue_size": 28}


@pytest.fixture
def kit(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ProcessKit]:
    base = make_kit(request, tmp_path)
    made = ProcessKit(**vars(base))
    made.processes = []
    yield made
    for process in made.processes:
        process.kill()


def test_slow_first_message_holds_the_commit_and_is_redelivered_after_kill_9(
    kit: ProcessKit,
) -> None:
    topic, group = kit.make_topic(1), new_group()
    writer = kit.writer(topic)
    files = writer.write(10)
    slow = files[0]
    kit.standin.faults.delay(3, match=slow.entry_uuid)  # each of its requests is answered 3 s late
    writer.announce(files)
    daemon = kit.daemon(topic, group, overrides={"scicat.timeout": 10})

    wait_until(lambda: len(kit.standin.origdatablocks) == 9, "the nine fast files")
    assert kit.committed(group, topic, 1) == [0]  # held at the slow one
    daemon.kill()
    kit.standin.faults.delay(0, match=slow.entry_uuid)

    daemon.start()
    kit.wait_committed(group, topic, [10])
    daemon.terminate()
    assert daemon.wait(30) == 0
    kit.assert_each_file_once(files)


def test_kill_9_at_random_moments_loses_and_duplicates_nothing(kit: ProcessKit) -> None:
    topic, group = kit.make_topic(4), new_group()
    writer = kit.writer(topic)
    files = writer.write(160)
    announce_round_robin(writer, files, 4)
    seed = random.randrange(1 << 32)
    rng = random.Random(seed)
    daemon = kit.daemon(topic, group, overrides=WIDE)  # more in flight at each kill
    for threshold in sorted(rng.sample(range(10, 150), 3)):
        kit.wait_datasets(threshold)
        time.sleep(rng.uniform(0, 0.3))
        daemon.kill()
        daemon.start()

    kit.wait_committed(group, topic, [40] * 4)
    daemon.terminate()
    assert daemon.wait(30) == 0, f"seed {seed}"
    kit.assert_each_file_once(files)
    assert kit.dead_letters() == []


def test_sigterm_drains_exits_0_and_restart_loses_nothing(kit: ProcessKit) -> None:
    topic, group = kit.make_topic(2), new_group()
    writer = kit.writer(topic)
    files = writer.write(60)
    announce_round_robin(writer, files, 2)
    grace = 10.0
    daemon = kit.daemon(topic, group, overrides={"ingestion.drain_grace_period": grace, **WIDE})

    kit.wait_datasets(20)
    daemon.terminate()
    assert daemon.wait(grace + 5) == 0
    assert "stopped after draining" in daemon.log_text()

    daemon.start()
    kit.wait_committed(group, topic, [30, 30])
    daemon.signal(signal.SIGINT)
    assert daemon.wait(grace + 5) == 0
    kit.assert_each_file_once(files)


def test_a_second_signal_exits_at_once_and_the_work_is_redelivered(kit: ProcessKit) -> None:
    topic, group = kit.make_topic(1), new_group()
    writer = kit.writer(topic)
    files = writer.write(3)
    kit.standin.faults.stop_answering()  # ingestion hangs in its first SciCat request
    writer.announce(files)
    overrides = {"ingestion.drain_grace_period": 60, "scicat.timeout": 60}
    daemon = kit.daemon(topic, group, overrides=overrides)
    # two connections: the start-up credentials probe's and the first file's
    wait_until(lambda: kit.standin.stats()["connections"] > 1, "a file's request to SciCat")

    daemon.terminate()
    daemon.wait_for_log("stopping, draining up to 60 s", timeout=10)
    daemon.terminate()
    assert daemon.wait(10) == 128 + signal.SIGTERM
    assert "SIGTERM again: exiting now" in daemon.log_text()
    assert kit.committed(group, topic, 1) == [0]  # held at the first, unfinished message

    kit.standin.faults.resume()
    daemon.start()
    kit.wait_committed(group, topic, [3])
    kit.assert_each_file_once(files)


def test_two_members_share_partitions_and_the_survivor_finishes(kit: ProcessKit) -> None:
    topic, group = kit.make_topic(4), new_group()
    writer = kit.writer(topic)
    files = writer.write(80)
    first = kit.daemon(topic, group, name="a", overrides=WIDE)
    second = kit.daemon(topic, group, name="b", overrides=WIDE)
    announce_round_robin(writer, files, 4)

    wait_until(
        lambda: "created" in first.log_text() and "created" in second.log_text(),
        "both members ingesting",
    )
    first.kill()
    kit.wait_committed(group, topic, [20] * 4)
    second.terminate()
    assert second.wait(30) == 0
    kit.assert_each_file_once(files)
