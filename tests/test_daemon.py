"""The daemon in-process against the real broker and the SciCat stand-in.

Each test runs ``Daemon.run`` in a thread with the real ``Pipeline`` (or, where the pipeline's
behaviour is not the point, a small real ``Ingestor`` class) and checks what reached SciCat, what
went to the dead-letter file and which offsets were committed.
"""

from __future__ import annotations

import base64
import contextlib
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import requests
from streaming_data_types import serialise_f144

from helpers.daemon_kit import Kit, announce_round_robin, new_group
from helpers.wait import WAIT, wait_until
from scicat_ingestor.config.model import HealthCheckOptions, KafkaOptions, build
from scicat_ingestor.daemon.deadletters import DeadLetters, KafkaSink
from scicat_ingestor.ingest.outcome import Created, Outcome
from scicat_ingestor.ingest.pipeline import Job
from scicat_ingestor.ops.health import HealthServer
from scicat_ingestor.ops.state import ServiceState
from scicat_ingestor.testing.broker import BrokerError, consumer_test_config, read_messages
from scicat_ingestor.testing.brokers import HarnessBroker
from scicat_ingestor.testing.filewriter import WrittenFile, wrdn_message

pytestmark = [pytest.mark.integration, pytest.mark.broker]  # kit uses kafka_broker


# A bound of 32 files in flight (4 workers + 28 queued): enough pauses at 100 files, and fewer of
# them; each resume costs ~0.8 s before Tansu's next fetch arrives.
WIDE = {"ingestion.queue_size": 28}


def test_every_file_ingested_once_and_offsets_committed_to_the_end(kit: Kit) -> None:
    topic = kit.make_topic(4)
    config = kit.config(topic, overrides=WIDE)
    writer = kit.writer(topic)
    files = writer.write(100)  # 25 a partition, more than the bound of 32
    announce_round_robin(writer, files, 4)
    running = kit.start(config)

    wait_until(lambda: len(kit.standin.origdatablocks) >= 100, "100 origdatablocks")
    kit.wait_committed(config.kafka.group_id, topic, [25] * 4)
    assert running.stop() == 0
    kit.assert_each_file_once(files)
    assert kit.dead_letters() == []
    assert running.daemon.totals.peak_in_flight <= running.daemon.bound


class GatedIngestor:
    """A stand-in pipeline: counts calls per file and holds each call until ``gate`` opens."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.calls: Counter[str] = Counter()
        self._lock = threading.Lock()

    def ingest(self, job: Job) -> Outcome:
        with self._lock:
            self.calls[job.file_path] += 1
        self.gate.wait(WAIT)
        return Created(pid=job.job_id)


def test_backpressure_pauses_at_the_bound_and_duplicates_are_ingested_once(kit: Kit) -> None:
    topic = kit.make_topic(1)
    config = kit.config(
        topic, overrides={"ingestion.max_offline_ingestors": 2, "ingestion.queue_size": 3}
    )
    writer = kit.writer(topic)
    paths = [f"/data/run-{i}.hdf" for i in range(30)]
    writer.produce_raw(wrdn_message(paths[0], "job-0"))
    writer.produce_raw(wrdn_message(paths[0], "job-0"))  # the file-writer said it twice
    for i, path in enumerate(paths[1:], start=1):
        writer.produce_raw(wrdn_message(path, f"job-{i}"))
    ingestor = GatedIngestor()
    running = kit.start(config, ingestor)

    wait_until(lambda: running.state.snapshot().paused, "consumption paused at the bound")
    assert running.state.snapshot().in_flight == running.daemon.bound == 5
    ingestor.gate.set()
    kit.wait_committed(config.kafka.group_id, topic, [31])
    assert running.stop() == 0
    assert ingestor.calls == Counter(paths)  # every file once, the duplicated one too
    assert running.daemon.totals.duplicates == 1
    assert running.daemon.totals.peak_in_flight == 5


def test_poison_is_dead_lettered_and_everything_else_ingested(kit: Kit) -> None:
    topic = kit.make_topic(1)
    config = kit.config(
        topic,
        overrides={
            "ingestion.file_handling.data_file_open_max_tries": 1,
            "ingestion.file_handling.data_file_open_retry_delay": [0.1],
        },
    )
    writer = kit.writer(topic)
    files = writer.write(10)
    not_nexus = kit.tmp_path / "data" / "notes.hdf"
    not_nexus.write_text("not HDF5")
    missing = kit.tmp_path / "data" / "never-written.hdf"
    poison: list[tuple[bytes | None, str]] = [
        (bytes(range(0x80, 0xA0)), "no flatbuffer file identifier"),
        (None, "tombstone"),
        (wrdn_message("/data/x.hdf", "job-t")[:40], "undecodable"),
        (wrdn_message(str(not_nexus), "job-n"), str(not_nexus)),
        (wrdn_message(str(missing), "job-m"), "file not readable after 2 attempts"),
    ]
    skipped = [serialise_f144("temperature", 21.5, 0), wrdn_message("/data/y.hdf", "job-e", True)]
    extra = [value for value, _ in poison] + skipped
    for i, written in enumerate(files):  # interleaved: file, odd message, file, ...
        writer.produce_raw(wrdn_message(str(written.path), written.job_id))
        if i < len(extra):
            writer.produce_raw(extra[i])
    running = kit.start(config)

    kit.wait_committed(config.kafka.group_id, topic, [len(files) + len(extra)])
    assert running.stop() == 0
    kit.assert_each_file_once(files)
    letters = kit.dead_letters()
    assert len(letters) == len(poison)
    for letter, (value, why) in zip(letters, poison, strict=True):
        assert why in letter["reason"] + letter["file_name"]
        assert letter["source_topic"] == topic
        assert letter["value"] == (None if value is None else base64.b64encode(value).decode())
    assert running.daemon.totals.messages == Counter(wrdn=12, poison=3, skip=2)


def test_scicat_outage_pauses_intake_and_loses_nothing(kit: Kit) -> None:
    topic = kit.make_topic(2)
    config = kit.config(topic, overrides={"scicat.timeout": 1, **WIDE})
    writer = kit.writer(topic)
    files = writer.write(60)
    announce_round_robin(writer, files, 2)
    running = kit.start(config)

    kit.wait_datasets(5)
    kit.standin.faults.fail_next(10, 503)  # 503s first, then no answer at all for 4 s
    wait_until(lambda: running.state.snapshot().scicat_failing, "the daemon to notice")
    kit.standin.faults.stop_answering(seconds=4)
    wait_until(lambda: len(kit.standin.origdatablocks) >= 60, "all files after recovery")

    assert running.stop() == 0
    kit.assert_each_file_once(files)
    assert kit.dead_letters() == []
    totals = running.daemon.totals
    assert totals.retries["scicat"] > 0
    assert totals.peak_in_flight <= running.daemon.bound


# -- dead letters that cannot be stored -----------------------------------------------------------


def _write_missing_then_files(kit: Kit, topic: str) -> tuple[Path, list[WrittenFile]]:
    """Offset 0: a file that never appears (dead-lettered after ~1 s of retries); 1-5: good ones."""
    writer = kit.writer(topic)
    files = writer.write(5)
    missing = kit.tmp_path / "data" / "never-written.hdf"
    writer.produce_raw(wrdn_message(str(missing), "job-missing"))
    for written in files:
        writer.produce_raw(wrdn_message(str(written.path), written.job_id))
    return missing, files


_SLOW_MISSING = {
    "ingestion.file_handling.data_file_open_max_tries": 2,
    "ingestion.file_handling.data_file_open_retry_delay": [0.5],
}


def _ready_body(state: ServiceState) -> tuple[int, dict[str, Any]]:
    options = build(HealthCheckOptions, {"port": 0}, "test")
    with HealthServer(options, state, lambda: True) as health:
        answer = requests.get(f"{health.url}/ready", timeout=5)
    return answer.status_code, answer.json()


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_letter_on_a_full_disk_holds_its_offset_until_a_restart_stores_it(kit: Kit) -> None:
    topic = kit.make_topic(1)
    group = new_group()
    missing, files = _write_missing_then_files(kit, topic)
    full = kit.config(topic, group, {"ingestion.dead_letter.file": "/dev/full", **_SLOW_MISSING})
    running = kit.start(full)

    wait_until(lambda: running.state.snapshot().dead_letter_error != "", "the sink failure")
    kit.wait_datasets(5)  # the later files are ingested meanwhile
    status, body = _ready_body(running.state)
    assert status == 503
    detail = body["checks"]["dead_letters"]["detail"]
    assert "ingestion.dead_letter.file: /dev/full: No space left on device" in detail
    assert running.state.snapshot().paused
    running.commits_pass(3)  # the commit stays before the unstored letter
    assert kit.committed(group, topic, 1) == [0]
    assert running.stop() == 0  # it stayed up
    assert running.daemon.totals.letter_failures >= 2  # retried

    working = kit.start(kit.config(topic, group, _SLOW_MISSING))
    kit.wait_committed(group, topic, [6])
    assert working.stop() == 0
    (letter,) = kit.dead_letters()
    assert (letter["source_offset"], letter["file_name"]) == (0, str(missing))
    kit.assert_each_file_once(files)


def test_a_letter_waits_while_the_dead_letter_broker_refuses_writes(
    kit: Kit, spare_broker: HarnessBroker
) -> None:
    topic = kit.make_topic(1)
    group = new_group()
    spare_broker.stop()  # the dead-letter topic's broker refuses writes for a while
    options = build(
        KafkaOptions,
        {"bootstrap_servers": spare_broker.bootstrap, "security_protocol": "plaintext"},
        "test",
    )
    sink = DeadLetters([KafkaSink(options, "dead-letters", delivery_timeout=1.0)])
    missing, files = _write_missing_then_files(kit, topic)
    running = kit.start(kit.config(topic, group, _SLOW_MISSING), dead_letters=sink)

    wait_until(lambda: running.state.snapshot().dead_letter_error != "", "the sink failure")
    kit.wait_datasets(5)
    status, body = _ready_body(running.state)
    assert status == 503
    assert (
        "ingestion.dead_letter.topic: topic dead-letters: "
        in (body["checks"]["dead_letters"]["detail"])
    )
    running.commits_pass(3)
    assert kit.committed(group, topic, 1) == [0]

    spare_broker.start()
    with contextlib.suppress(BrokerError):  # the producer's metadata request may auto-create it
        spare_broker.create_topic("dead-letters")
    kit.wait_committed(group, topic, [6])
    assert running.state.snapshot().dead_letter_error == ""
    assert running.stop() == 0
    reader = consumer_test_config(spare_broker.bootstrap, new_group())
    (letter,) = read_messages(reader, "dead-letters", 1)
    headers = dict(letter.headers() or [])
    assert (headers["source_topic"], headers["source_offset"]) == (topic.encode(), b"0")
    assert str(missing) in headers["reason"].decode()
    with pytest.raises(TimeoutError):  # stored once
        read_messages(
            consumer_test_config(spare_broker.bootstrap, new_group()), "dead-letters", 2, 3
        )
    kit.assert_each_file_once(files)
