"""The daemon against a stand-in that treats credentials like the real SciCat backend.

Real broker (Tansu), real HTTP stand-in, the real pipeline and client. What the real backend does
is recorded in ``tests/data/scicat-real-backend-behaviour.md``: expired or revoked tokens get 403
(never 401), a dataset search 200 ``[]``; idle keep-alive connections are closed after 5 s.
Each test prints the figures docs/reliability.md quotes (logins, dead letters, resume time).
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from helpers.daemon_kit import Kit, RunningDaemon, make_kit
from helpers.standin import LOGIN, logins
from helpers.wait import wait_until
from scicat_ingestor.config.model import HealthCheckOptions
from scicat_ingestor.ops.health import HealthServer
from scicat_ingestor.testing.daemon_process import DaemonProcess, write_config
from scicat_ingestor.testing.scicat import Account

pytestmark = [pytest.mark.integration, pytest.mark.broker]  # the kit uses kafka_broker

REJECTED = 6.0  # seconds SciCat refuses every credential in the mid-run test


@pytest.fixture
def auth_kit(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., Kit]]:
    """A Kit whose stand-in is started with the given arguments (token lifetime, accounts)."""
    kits: list[Kit] = []

    def build(**standin: Any) -> Kit:
        factory = request.getfixturevalue("scicat_standin_factory")
        kit = dataclasses.replace(make_kit(request, tmp_path), standin=factory(**standin))
        kits.append(kit)
        return kit

    yield build
    for kit in kits:
        for running in kit.running:
            if running.code is None:
                running.stop()


def done(kit: Kit) -> int:
    return len(kit.standin.origdatablocks)


@pytest.fixture
def ready_of() -> Iterator[Callable[[RunningDaemon], HealthServer]]:
    """/ready of a running daemon, fed by its client's credential state."""
    servers: list[HealthServer] = []

    def start(running: RunningDaemon) -> HealthServer:
        client = running.client
        options = HealthCheckOptions(host="127.0.0.1", port=0)
        server = HealthServer(
            options,
            running.state,
            client.healthy,
            credentials=client.credentials,
            check_interval=0.5,
        )
        servers.append(server.start())
        return server

    yield start
    for server in servers:
        server.stop()


def test_short_token_lifetime_is_renewed_before_expiry(auth_kit: Callable[..., Kit]) -> None:
    kit = auth_kit(token_lifetime=3.0)
    topic = kit.make_topic(1)
    config = kit.config(topic, overrides=LOGIN)
    writer = kit.writer(topic)
    files = writer.write(40)
    running = kit.start(config)
    started = time.monotonic()
    for written in files:  # 40 files over ~15 s
        writer.announce([written])
        time.sleep(0.375)
    wait_until(lambda: done(kit) >= 40, "40 origdatablocks")
    elapsed = time.monotonic() - started
    assert running.stop() == 0

    kit.assert_each_file_once(files)
    assert kit.dead_letters() == []
    count = logins(kit.standin)
    refused = sum(n for k, n in kit.standin.stats()["requests"].items() if k.endswith(" 403"))
    print(f"\n[figures] 3 s tokens: {count} logins in {elapsed:.1f} s, {refused} refusals")
    # renewed at 2.4 s of each 3 s lifetime, once for all 4 workers: not one per request
    assert elapsed / 3.0 <= count <= elapsed / 2.0 + 2
    assert refused == 0  # never sent an expired token


def test_credentials_rejected_mid_run_pause_and_resume(
    auth_kit: Callable[..., Kit], ready_of: Callable[[RunningDaemon], HealthServer]
) -> None:
    kit = auth_kit()
    topic = kit.make_topic(1)
    config = kit.config(topic, overrides=LOGIN)
    writer = kit.writer(topic)
    files = writer.write(40)
    running = kit.start(config)
    ready = ready_of(running)
    writer.announce(files[:20])
    wait_until(lambda: done(kit) >= 20, "the first 20 files")

    kit.standin.faults.reject_credentials(REJECTED)  # logins 401, every token 403
    kit.standin.faults.expire_tokens()
    ends = time.monotonic() + REJECTED
    writer.announce(files[20:])
    # Paused alone is not enough: a burst can fill the bound before the first refusal is seen.
    wait_until(
        lambda: running.state.snapshot().paused and not running.client.credentials.ok,
        "intake paused by the auth outage",
    )
    answer = requests.get(ready.url + "/ready", timeout=5)
    assert answer.status_code == 503
    detail = answer.json()["checks"]["scicat_credentials"]["detail"]
    assert detail.startswith("SciCat refuses our credentials (HTTP 403 on ")
    assert "login as 'ingestor' failed: 401" in detail
    while time.monotonic() < ends - 1:  # nothing may happen while the rejection lasts
        group = config.kafka.group_id
        assert kit.committed(group, topic, 1)[0] <= 20  # nothing committed past waiting work
        assert done(kit) == 20
        assert kit.dead_letters() == []
        time.sleep(0.5)

    wait_until(lambda: time.monotonic() >= ends, "the end of the rejection")
    wait_until(lambda: done(kit) >= 40, "everything after the outage", timeout=30)
    resumed_in = time.monotonic() - ends
    kit.wait_committed(config.kafka.group_id, topic, [40])
    assert running.stop() == 0

    kit.assert_each_file_once(files)
    assert kit.dead_letters() == []
    assert running.daemon.totals.retries["scicat-auth"] > 0
    refused = logins(kit.standin, 401)
    print(
        f"\n[figures] credentials rejected {REJECTED:g} s: {refused} refused logins, "
        f"0 dead letters, all 40 done {resumed_in:.1f} s after they work again"
    )
    assert resumed_in <= 10.0
    assert requests.get(ready.url + "/ready", timeout=5).json()["checks"]["scicat_credentials"][
        "ok"
    ]


def test_static_token_revoked_then_rotated_in_the_token_file(auth_kit: Callable[..., Kit]) -> None:
    kit = auth_kit()
    token_file = kit.tmp_path / "scicat-token"
    token_file.write_text(kit.standin.token + "\n")
    topic = kit.make_topic(1)
    overrides = {"scicat.token": "", "scicat.token_file": str(token_file)}
    config = kit.config(topic, overrides=overrides)
    writer = kit.writer(topic)
    files = writer.write(20)
    running = kit.start(config)
    writer.announce(files[:10])
    wait_until(lambda: done(kit) >= 10, "the first 10 files")

    kit.standin.faults.set_token("rotated-token")  # the old token is refused from now on
    writer.announce(files[10:])
    wait_until(lambda: running.state.snapshot().scicat_failing, "the auth outage")
    assert not running.client.credentials.ok
    retried = running.daemon.totals.retries["scicat-auth"]
    wait_until(
        lambda: running.daemon.totals.retries["scicat-auth"] >= retried + 4,
        "four more retries with the revoked token",
    )
    assert done(kit) == 10
    assert kit.dead_letters() == []
    assert kit.committed(config.kafka.group_id, topic, 1)[0] <= 10

    token_file.write_text("rotated-token\n")  # the operator rotates the mounted secret
    rotated = time.monotonic()
    wait_until(lambda: done(kit) >= 20, "everything after the rotation", timeout=30)
    resumed_in = time.monotonic() - rotated
    assert running.stop() == 0

    kit.assert_each_file_once(files)
    assert kit.dead_letters() == []
    print(f"\n[figures] token rotated via token_file: all 20 done {resumed_in:.1f} s later")
    assert resumed_in <= 10.0


def test_account_that_may_create_but_not_read_never_duplicates(
    auth_kit: Callable[..., Kit],
) -> None:
    """The redelivered file's POST meets 409 (no GET by pid first), then its origdatablocks
    cannot be read: a verdict naming the account and the fix, no second dataset or block."""
    reader = Account("pwd", groups=("ingestor",), admin=False, may_create=True)
    kit = auth_kit(accounts={"ingestor": reader})
    topic = kit.make_topic(1)
    overrides: dict[str, Any] = {**LOGIN}
    overrides["scicat.api_version"] = 3  # v4 refuses such an account the block (ADMIN_GROUPS)
    config = kit.config(topic, overrides=overrides)
    writer = kit.writer(topic)
    [written] = writer.write(1)
    running = kit.start(config)
    writer.announce([written])
    kit.wait_committed(config.kafka.group_id, topic, [1])
    writer.announce([written])  # redelivered (e.g. after a crash)
    wait_until(lambda: len(kit.dead_letters()) == 1, "the redelivered file's verdict")
    kit.wait_committed(config.kafka.group_id, topic, [2])
    assert running.stop() == 0

    assert len(kit.standin.datasets) == 1
    assert len(kit.standin.origdatablocks) == 1
    [letter] = kit.dead_letters()
    reason = "account 'ingestor' may not read the origdatablocks of dataset 20.500.12269/"
    assert reason in letter["reason"]
    assert "add it to ADMIN_GROUPS or to the dataset's accessGroups" in letter["reason"]
    assert running.daemon.totals.retries == Counter()


def test_stale_keep_alive_connection_is_no_outage(auth_kit: Callable[..., Kit]) -> None:
    kit = auth_kit(idle_timeout=1.0)  # the real backend's is 5 s; the length does not matter
    topic = kit.make_topic(1)
    config = kit.config(topic, overrides={"ingestion.max_offline_ingestors": 1})
    writer = kit.writer(topic)
    files = writer.write(2)
    running = kit.start(config)
    writer.announce(files[:1])
    wait_until(lambda: done(kit) >= 1, "the first file")
    time.sleep(1.5)  # every connection of the worker is now idle for longer than the timeout
    started = time.monotonic()
    writer.announce(files[1:])
    wait_until(lambda: done(kit) >= 2, "the file after the idle time")
    took = time.monotonic() - started
    assert running.stop() == 0

    kit.assert_each_file_once(files)
    assert kit.standin.stats()["idle_closed"] >= 1
    assert running.daemon.totals.retries == Counter()  # no retry wait, no outage state
    assert kit.dead_letters() == []
    print(f"\n[figures] after 1.5 s idle (timeout 1 s): created in {took:.2f} s, no retry")


def test_run_with_refused_credentials_says_so_and_waits(
    auth_kit: Callable[..., Kit], tmp_path: Path
) -> None:
    kit = auth_kit()
    topic = kit.make_topic(1)
    data = kit.config_data(topic, overrides={"scicat.token": "revoked-long-ago"})
    config = write_config(tmp_path / "config.yml", data)
    with DaemonProcess(config, tmp_path / "daemon.log") as daemon:
        daemon.wait_for_log(
            r"ERROR.*SciCat refuses our credentials \(static token \(scicat.token\): "
            r"GET users/my/self → 401\)",
            timeout=30,
        )
        assert daemon.running  # it waits for working credentials instead of exiting
        daemon.terminate()
        assert daemon.wait(30) == 0
    assert "revoked-long-ago" not in daemon.log_text()
