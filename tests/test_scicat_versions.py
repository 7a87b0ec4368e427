"""The daemon's main paths on each supported SciCat: backend 4.5 with API v3, 5 with v3, 5 with v4.

The daemon process (``python -m scicat_ingestor run``) against the real broker and the stand-in
playing each backend (``scicat_ingestor/testing/scicat/profiles.py``): a new file, its redelivery,
the run's sample, the thumbnail, a token that expires, and auth outages (a wrong password, an
expired token in ``scicat.token_file``) that must not cost a file. Only what differs between the
versions is parametrized; the paths themselves are tested in detail elsewhere (test_daemon*.py,
test_samples.py, test_thumbnail_pipeline.py). Each outage test prints its resume time.
"""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from helpers.daemon_kit import SAMPLES_ON, LiveKit, ready_body
from helpers.standin import LOGIN, expired_token, linked_samples, log_in, logins
from helpers.versions import VERSIONS
from helpers.wait import wait_until
from scicat_ingestor.testing.broker import free_port
from scicat_ingestor.testing.filewriter import SAMPLE_FILES, FakeFileWriter, WrittenFile
from scicat_ingestor.testing.nexus_plots import write_plot_file
from scicat_ingestor.testing.scicat import SciCatStandIn

pytestmark = [pytest.mark.integration, pytest.mark.broker]  # the kit uses kafka_broker

RESUME = 10.0  # seconds: the most an auth outage may delay files after it is fixed


@pytest.fixture
def kit(live_kit: LiveKit) -> LiveKit:
    """A ``LiveKit``: its own schema directory, daemon processes per test."""
    return live_kit


def start(kit: LiveKit, topic: str, api_version: int, overrides: Mapping[str, Any]) -> int:
    """The daemon with samples, thumbnails and /ready on; returns the health port."""
    port = free_port()
    kit.daemon(
        topic,
        {
            **SAMPLES_ON,
            "ingestion.thumbnail.enabled": True,
            "scicat.api_version": api_version,
            "health_check.enabled": True,
            "health_check.port": port,
            **overrides,
        },
    )
    return port


def plot_writer(kit: LiveKit, topic: str) -> FakeFileWriter:
    """A file-writer whose files have a default plot (so each dataset gets a thumbnail)."""
    template = write_plot_file(
        kit.tmp_path / "templates" / SAMPLE_FILES[0].name, "line_1d", SAMPLE_FILES[0]
    )
    writer = FakeFileWriter(kit.broker.bootstrap, topic, kit.tmp_path / "data", [template])
    kit.writers.append(writer)
    return writer


def assert_ingested_once(kit: LiveKit, files: list[WrittenFile]) -> None:
    """One dataset, one origdatablock and one thumbnail per file, each dataset's size and file
    count its block's; one sample."""
    kit.assert_each_file_once(files)
    standin = kit.standin
    assert len(standin.samples) == 1
    blocks = {block["datasetId"]: block for block in standin.origdatablocks}
    for pid, dataset in standin.datasets.items():
        block = blocks[pid]
        counted = (dataset["size"], dataset["numberOfFiles"])
        assert counted == (block["size"], len(block["dataFileList"])), pid
        assert len(standin.attachments.get(pid, [])) == 1, pid


def auth_retries(port: int) -> float:
    """The daemon's ``scicat_ingestor_retries_total{cause="scicat-auth"}`` (its /metrics)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    for line in text.splitlines():
        if line.startswith('scicat_ingestor_retries_total{cause="scicat-auth"} '):
            return float(line.split()[-1])
    return 0.0


def outage_then_fix(
    kit: LiveKit, writer: FakeFileWriter, port: int, fix: Callable[[], None], what: str
) -> WrittenFile:
    """A run start and its file wait through the auth outage (``/ready`` 503, nothing
    dead-lettered) and are ingested within ``RESUME`` seconds once ``fix`` ran."""
    (run,) = writer.write(1)
    writer.announce_run_start([run])
    writer.announce([run])
    wait_until(
        lambda: not ready_body(port)["checks"]["scicat_credentials"]["ok"], "the auth outage"
    )
    wait_until(lambda: auth_retries(port) >= 2, "retries of both")
    assert ready_body(port)["ready"] is False
    assert kit.dead_letters() == []
    assert kit.standin.datasets == {}
    assert kit.standin.samples == []
    # the daemon's first commit pass (the sleep this wait replaced covered it): held at the start
    wait_until(lambda: kit.committed_all(writer.topic) >= 0, "the first commit")
    assert kit.committed_all(writer.topic) == 0

    fix()
    fixed = time.monotonic()
    wait_until(lambda: kit.committed_all(writer.topic) == 2, "both after the fix", 2 * RESUME)
    resumed_in = time.monotonic() - fixed
    print(f"\n[figures] {what}: 0 dead letters, resumed {resumed_in:.1f} s after the fix")
    assert resumed_in <= RESUME
    assert_ingested_once(kit, [run])
    assert kit.dead_letters() == []
    wait_until(lambda: ready_body(port)["ready"], "/ready 200 again", RESUME)
    return run


@VERSIONS
def test_wrong_password_new_file_redelivery_sample_thumbnail_token_expiry(
    kit: LiveKit, scicat_standin: SciCatStandIn, api_version: int
) -> None:
    scicat_standin.token_lifetime = 3.0
    topic = kit.make_topic(1)
    writer = plot_writer(kit, topic)
    # no lookup cache: the first file, looked up in the outage, would keep the second unlinked
    overrides = {**LOGIN, "scicat.password": "wrong", "scicat.lookup_cache_seconds": 0}
    port = start(kit, topic, api_version, overrides)

    def fix() -> None:  # the account's password is set to what the daemon has
        scicat_standin.faults.change_password("ingestor", "wrong")

    what = f"wrong password on {scicat_standin.backend} v{api_version}"
    first = outage_then_fix(kit, writer, port, fix, what)
    writer.announce_run_start([first])  # both redelivered: found, nothing created
    writer.announce([first])
    wait_until(lambda: kit.committed_all(topic) == 4, "the redelivered run start and file")

    time.sleep(scicat_standin.token_lifetime)  # the token is renewed before it is sent again
    second, third = writer.write(2)
    writer.announce([second])
    wait_until(lambda: kit.committed_all(topic) == 5, "the file after the token's lifetime")
    refused = 401 if scicat_standin.profile.session_expired else 403  # 4.5: as anonymous
    before = refusals(scicat_standin, refused)
    scicat_standin.faults.expire_tokens()  # one that dies early: renewed after SciCat refuses it
    writer.announce([third])
    wait_until(lambda: kit.committed_all(topic) == 6, "the file after the token expired")
    assert refusals(scicat_standin, refused) > before

    assert_ingested_once(kit, [first, second, third])
    (sample,) = scicat_standin.samples
    assert linked_samples(kit.dataset_of(second)) == [sample["sampleId"]]  # it existed first
    assert kit.dead_letters() == []
    datasets = scicat_standin.datasets.values()
    assert {dataset["version"] for dataset in datasets} == {str(api_version)}  # the API used
    assert logins(scicat_standin, 401) >= 1
    assert logins(scicat_standin) >= 3


def refusals(standin: SciCatStandIn, status: int) -> int:
    """Answers with ``status`` to anything but a login."""
    counts = standin.stats()["requests"].items()
    return sum(n for key, n in counts if key.endswith(f" {status}") and "auth/login" not in key)


@VERSIONS
def test_an_expired_token_file_waits_until_it_is_rewritten(
    kit: LiveKit, scicat_standin: SciCatStandIn, api_version: int, tmp_path: Path
) -> None:
    token_file = tmp_path / "scicat-token"
    token_file.write_text(expired_token(scicat_standin) + "\n")
    topic = kit.make_topic(1)
    overrides = {"scicat.token": "", "scicat.token_file": str(token_file)}
    port = start(kit, topic, api_version, overrides)

    def fix() -> None:  # the operator writes a fresh token
        token_file.write_text(str(log_in(scicat_standin).json()["access_token"]) + "\n")

    what = f"expired token file on {scicat_standin.backend} v{api_version}"
    outage_then_fix(kit, plot_writer(kit, topic), port, fix, what)
