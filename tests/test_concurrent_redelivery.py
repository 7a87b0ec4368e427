"""The same file announced five times to ten workers: one dataset, one origdatablock.

With the pid known the dataset is POSTed without a look first, so a repeat learns that it exists
from SciCat's 409 (or from the metadata search, when it runs). One daemon's workers take turns
per file (``Pipeline``'s hold, and the daemon drops a message whose file is in flight): the 409s
here come from attempts that follow each other, never from two POSTs of one process at once.
"""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from helpers.daemon_kit import Kit
from helpers.pipeline import PID, MakePipeline, ingest
from scicat_ingestor.ingest.outcome import Created, Existed
from scicat_ingestor.testing.scicat import SciCatStandIn

pytestmark = pytest.mark.integration

WORKERS = 10
ANNOUNCED = 5
_SEARCH = "check_if_dataset_exists_by_metadata_when_pid_known"


@pytest.mark.parametrize("search", [False, True], ids=["search-off", "search-on"])
def test_same_file_five_times_to_ten_workers(
    make_pipeline: MakePipeline, coda: Path, scicat_standin: SciCatStandIn, search: bool
) -> None:
    pipeline = make_pipeline(ingestion={_SEARCH: search})
    scicat_standin.faults.delay(0.1, "datasets")  # every attempt is in flight at once
    with ThreadPoolExecutor(WORKERS) as pool:
        outcomes = list(pool.map(lambda _: ingest(pipeline, coda), range(ANNOUNCED)))
    assert Counter(type(o) for o in outcomes) == {Created: 1, Existed: ANNOUNCED - 1}
    assert all(o.pid == PID for o in outcomes if isinstance(o, Created | Existed))
    assert list(scicat_standin.datasets) == [PID]
    assert [b["datasetId"] for b in scicat_standin.origdatablocks] == [PID]
    requests = scicat_standin.stats()["requests"]
    conflicts = requests.get("POST /datasets 409", 0)
    # search off: every repeat POSTs and reads the 409 as "exists"; on: the search finds it
    assert conflicts == (0 if search else ANNOUNCED - 1)
    assert requests["POST /origdatablocks 201"] == 1


@pytest.mark.broker
def test_daemon_same_file_five_times_to_ten_workers(kit: Kit) -> None:
    topic = kit.make_topic(1)
    overrides = {"ingestion.max_offline_ingestors": WORKERS, f"ingestion.{_SEARCH}": False}
    config = kit.config(topic, overrides=overrides)
    writer = kit.writer(topic)
    [written] = writer.write(1)
    kit.standin.faults.delay(0.1, "datasets")
    for _ in range(ANNOUNCED):
        writer.announce([written])
    running = kit.start(config)
    kit.wait_committed(config.kafka.group_id, topic, [ANNOUNCED])
    assert running.stop() == 0
    kit.assert_each_file_once([written])
    assert kit.dead_letters() == []
    requests = kit.standin.stats()["requests"]
    conflicts, dropped = requests.get("POST /datasets 409", 0), running.daemon.totals.duplicates
    # each announcement either met the 409 or was dropped while its file was in flight
    assert conflicts + dropped == ANNOUNCED - 1
    print(f"\n[figures] 5 announcements: 1 created, {conflicts} met 409, {dropped} dropped")
