"""Workers take turns running Python and give the turn away whenever they wait (``turns.py``).

Each waiting test holds the turn in one thread and checks that another thread can take it while
the first still waits: a wait that kept the turn would hold up every other worker (or deadlock).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import h5py
import pytest
from prometheus_client import CollectorRegistry, Histogram

from helpers.http import ProxyHandler, clear_proxy_environment, serving
from scicat_ingestor.commands.jobs import open_pipeline
from scicat_ingestor.config.model import IngestorConfig, SciCatOptions, Secret, build
from scicat_ingestor.ingest.files import checksum
from scicat_ingestor.ops.turns import TURNS, WARN_AFTER_SECONDS, WATCH_INTERVAL_SECONDS, Turns
from scicat_ingestor.schema.nexus import open_nexus
from scicat_ingestor.scicat import SciCatClient, SciCatUnavailable
from scicat_ingestor.testing.scicat import Account, SciCatStandIn

WAIT = 5.0  # seconds a step that should happen may take
BLOCKED = 0.3  # seconds a step that should not happen is given
SLOW = 2.0  # seconds SciCat takes to answer when it is slow


def _taken(turns: Turns = TURNS) -> threading.Event:
    """Another worker taking the turn: the event is set once it has held it and let go."""
    done = threading.Event()

    def run() -> None:
        with turns.hold():
            done.set()

    threading.Thread(target=run, daemon=True).start()
    return done


def _in_turn(
    step: Callable[[], Any], turns: Turns = TURNS
) -> tuple[threading.Event, dict[str, Any]]:
    """``step`` run in a thread that holds the turn; the event is set when it has finished."""
    finished = threading.Event()
    result: dict[str, Any] = {}

    def run() -> None:
        with turns.hold():
            try:
                result["value"] = step()
            except Exception as err:  # handed to the test, which asserts on it
                result["error"] = err
        finished.set()

    threading.Thread(target=run, daemon=True).start()
    return finished, result


def _until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for the condition"
        time.sleep(0.01)


def _client(standin: SciCatStandIn, **options: Any) -> SciCatClient:
    data = {"host": standin.url, "token": standin.token, "timeout": 5, "backoff_factor": 0.01}
    data["api_version"] = 3  # the faults below name v3 routes
    return SciCatClient(build(SciCatOptions, {**data, **options}, "test"))


# ---- the turn itself and h5py ----------------------------------------------------------------


def _nexus(path: Path) -> Path:
    with h5py.File(path, "w") as h5:
        h5["entry/title"] = "turns"
    return path


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    return _nexus(tmp_path / "a.nxs"), _nexus(tmp_path / "b.nxs")


def test_a_second_thread_waits_until_the_first_closes_its_file(files: tuple[Path, Path]) -> None:
    first, _ = files
    with open_nexus(first):
        taken = _taken()
        assert not taken.wait(BLOCKED)
    assert taken.wait(WAIT)


def test_a_paused_turn_lets_another_thread_run(files: tuple[Path, Path]) -> None:
    first, _ = files
    with open_nexus(first) as reader:
        with TURNS.paused():
            assert _taken().wait(WAIT)
        # the turn is ours again: the file is still open and readable, others wait
        assert reader.read_text("entry/title") == "turns"
        later = _taken()
        assert not later.wait(BLOCKED)
    assert later.wait(WAIT)


def test_turns_are_reentrant_within_a_thread(files: tuple[Path, Path]) -> None:
    first, second = files
    with TURNS.hold(), open_nexus(first):
        with open_nexus(second) as inner:  # a second file in the same thread: no deadlock
            assert inner.read_text("entry/title") == "turns"
        taken = _taken()
        assert not taken.wait(BLOCKED)  # closing the inner file kept the outer turn
        with TURNS.paused():
            assert taken.wait(WAIT)
    assert not TURNS.held()


# ---- waits that give the turn away -------------------------------------------------------------


def _waits_without_the_turn(fast: Callable[[], Any], slow: Callable[[], Any]) -> dict[str, Any]:
    """``fast``, then ``slow``, in a thread that holds the turn (``fast`` makes that thread's
    connection beforehand); another thread must get the turn while ``slow`` still waits."""
    connected = threading.Event()

    def slow_after_fast() -> Any:
        fast()
        connected.set()
        return slow()

    finished, result = _in_turn(slow_after_fast)
    assert connected.wait(WAIT)
    assert _taken().wait(WAIT), "no other worker could run while one waited for an answer"
    assert not finished.is_set()
    assert finished.wait(WAIT + SLOW)
    return result


@pytest.mark.integration
def test_waiting_for_scicat_gives_the_turn_away(scicat_standin: SciCatStandIn) -> None:
    client = _client(scicat_standin)
    scicat_standin.faults.delay(SLOW, "slow-answer")
    try:
        result = _waits_without_the_turn(
            lambda: client.get_dataset("20.500.12269/fast"),
            lambda: client.get_dataset("20.500.12269/slow-answer"),
        )
        assert result == {"value": None}  # the answer (404) still arrived and was read
    finally:
        client.close()


class _SlowProxy(ProxyHandler):
    """The client tests' proxy, answering paths with "slow" after ``SLOW`` seconds, and keeping
    connections alive so that the slow request reuses the fast one's connection."""

    protocol_version = "HTTP/1.1"
    seen: list[str] = []  # its own record, not the client tests' proxy's

    def do_GET(self) -> None:  # noqa: N802 - http.server's name (the parent is another module's)
        if "slow" in self.path:
            time.sleep(SLOW)
        super().do_GET()


@pytest.fixture
def slow_proxy(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    clear_proxy_environment(monkeypatch)
    for port in serving(_SlowProxy):
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{port}")
        yield


def test_waiting_for_scicat_through_a_proxy_gives_the_turn_away(slow_proxy: None) -> None:
    options = SciCatOptions(host="http://scicat.invalid/api/v3", token=Secret("t"), max_retries=0)
    client = SciCatClient(options)
    try:
        result = _waits_without_the_turn(
            lambda: client.get_json("proposals/fast"), lambda: client.get_json("proposals/slow")
        )
        assert result == {"value": {"via": "proxy"}}
    finally:
        client.close()


@pytest.mark.integration
def test_a_retry_back_off_gives_the_turn_away(scicat_standin: SciCatStandIn) -> None:
    # urllib3 repeats a first failure at once and backs off from the second: 2 x 0.5 x SLOW
    client = _client(scicat_standin, backoff_factor=SLOW / 2, max_retries=2)
    scicat_standin.faults.fail_next(2, 503, "datasets")
    try:
        finished, result = _in_turn(lambda: client.get_dataset("20.500.12269/after-503s"))
        _until(lambda: scicat_standin.stats()["requests"].get("GET /datasets/{pid} 503") == 2)
        assert _taken().wait(WAIT), "no other worker could run during a retry's back-off"
        assert not finished.is_set()
        assert finished.wait(WAIT + 2 * SLOW)
        assert result == {"value": None}
    finally:
        client.close()


@pytest.mark.integration
def test_a_silent_scicat_still_times_out_in_a_turn(scicat_standin: SciCatStandIn) -> None:
    """The wait without the turn keeps the read timeout (it is not the socket's any more)."""
    client = _client(scicat_standin, timeout=0.3, max_retries=0)
    scicat_standin.faults.delay(3 * SLOW, "silent")
    try:
        started = time.monotonic()
        with TURNS.hold(), pytest.raises(SciCatUnavailable, match="timed out"):
            client.get_dataset("20.500.12269/silent")
        assert time.monotonic() - started < SLOW  # the timeout ended it, not the answer
    finally:
        client.close()


@pytest.mark.integration
def test_a_login_in_progress_does_not_deadlock_the_turn(
    scicat_standin_factory: Callable[..., SciCatStandIn],
) -> None:
    """Two workers need the first token: one logs in (waiting for SciCat without the turn), the
    other waits for that login; it must wait without the turn too, or the first never gets it
    back to finish."""
    scicat_standin = scicat_standin_factory(accounts={"ingestor": Account("s3cret")})
    client = _client(scicat_standin, token="", username="ingestor", password="s3cret")
    scicat_standin.faults.delay(SLOW / 4, "auth/login")
    try:
        workers = [_in_turn(lambda: client.get_dataset("20.500.12269/x")) for _ in range(2)]
        for finished, result in workers:
            assert finished.wait(WAIT + SLOW), "a worker waiting for the login held the turn"
            assert result == {"value": None}
        assert scicat_standin.stats()["requests"]["POST /auth/login 201"] == 1
    finally:
        client.close()


def test_a_checksum_gives_the_turn_away(tmp_path: Path) -> None:
    """Hashing runs in C without the GIL; a FIFO makes it wait for its data."""
    fifo = tmp_path / "data.fifo"
    os.mkfifo(fifo)
    writer = os.open(fifo, os.O_RDWR)  # open at both ends: the reader's open does not block
    try:
        finished, result = _in_turn(lambda: checksum(fifo))
        assert _taken().wait(WAIT), "no other worker could run while one hashed a file"
        assert not finished.is_set()
        os.write(writer, b"the data")
    finally:
        os.close(writer)
    assert finished.wait(WAIT)
    assert result == {"value": hashlib.blake2b(b"the data").hexdigest()}


# ---- switched off, and watched -----------------------------------------------------------------


def _holding(turns: Turns, step: Callable[[], Any] = lambda: None) -> threading.Event:
    """A thread holding ``turns`` until the returned event is set, running ``step`` meanwhile."""
    release = threading.Event()

    def run() -> None:
        with turns.hold():
            step()
            release.wait(WAIT)

    threading.Thread(target=run, daemon=True).start()
    return release


def test_switched_off_no_turn_is_held_and_two_threads_run_at_once() -> None:
    with TURNS.configured(enabled=False, warn_after=WARN_AFTER_SECONDS):
        holding = threading.Event()
        release = _holding(TURNS, holding.set)
        assert holding.wait(WAIT)
        with TURNS.hold():
            assert not TURNS.held()
        assert _taken().wait(WAIT), "a thread waited for a turn that should not exist"
        release.set()
    with TURNS.hold():  # switched on again after the block
        later = _taken()
        assert not later.wait(BLOCKED)
    assert later.wait(WAIT)


def test_switching_off_while_a_turn_is_held_lets_the_holder_finish_it() -> None:
    turns = Turns()
    holding = threading.Event()
    release = _holding(turns, holding.set)
    assert holding.wait(WAIT)
    with turns.configured(enabled=False, warn_after=WARN_AFTER_SECONDS):
        release.set()  # its hold ends with turns off: the lock it took is given back
        with turns.hold():
            assert not turns.held()
    assert _taken(turns).wait(WAIT), "the turn taken before the switch was never given back"


class _Warnings(logging.Handler):
    """The turn watchdog's log records; ``first`` is set at the first one."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []
        self.first = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.first.set()


@pytest.fixture
def warnings() -> Iterator[_Warnings]:
    handler = _Warnings()
    logger = logging.getLogger("scicat_ingestor.turns")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


class _Timed:
    """A turn of its own, its holds observed in a histogram of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        buckets = (0.1, WARN_AFTER_SECONDS)
        self.turns = Turns(Histogram("hold", "test", buckets=buckets, registry=self.registry))

    def holds(self, above: float = 0.0) -> float:
        """How many holds were observed, of those longer than ``above`` (a bucket) seconds."""
        count = self.registry.get_sample_value("hold_count") or 0.0
        if not above:
            return count
        return count - (self.registry.get_sample_value("hold_bucket", {"le": str(above)}) or 0.0)


def test_a_turn_held_too_long_is_logged_once_with_the_blocking_stack(
    warnings: _Warnings,
) -> None:
    def blocks_on_a_slow_mount() -> None:
        """What the watchdog is for: a blocking call made in a turn, not in ``paused()``."""
        assert warnings.first.wait(WAIT), "no warning while the turn was held"
        time.sleep(3 * WATCH_INTERVAL_SECONDS)  # still held: the watchdog looks again, silently

    timed = _Timed()
    with timed.turns.configured(enabled=True, warn_after=0.1):
        finished, result = _in_turn(blocks_on_a_slow_mount, timed.turns)
        assert finished.wait(2 * WAIT)
    assert result == {"value": None}
    assert [r.levelno for r in warnings.records] == [logging.WARNING]
    message = warnings.records[0].getMessage()
    assert "has held the worker turn for" in message
    assert "in blocks_on_a_slow_mount" in message  # the stack names the function that blocked
    assert (timed.holds(), timed.holds(above=0.1)) == (1, 1)  # the hold, timed when it ended


def test_a_long_hold_with_pauses_is_timed_stretch_by_stretch_and_not_logged(
    warnings: _Warnings,
) -> None:
    """What counts is the time without a pause: each pause ends one stretch and starts another."""
    timed = _Timed()
    turns = timed.turns
    with turns.configured(enabled=True, warn_after=WARN_AFTER_SECONDS), turns.hold():
        for _ in range(20):  # 0.5 s in all, more than WARN_AFTER_SECONDS
            with turns.paused():
                time.sleep(WARN_AFTER_SECONDS / 10)
    assert (timed.holds(), timed.holds(above=WARN_AFTER_SECONDS)) == (21, 0)
    assert not warnings.records


def test_ingest_and_replay_switch_turns_as_configured(tmp_path: Path) -> None:
    data = {
        "ingestion": {
            "worker_turns": False,
            "schemas_directory": str(tmp_path),
            "fallback_schema_file_path": "ess-fallback",
        },
        "scicat": {"host": "http://127.0.0.1:9/api/v3", "token": "t"},
    }
    with open_pipeline(build(IngestorConfig, data, "test")), TURNS.hold():
        assert not TURNS.held()
    with TURNS.hold():
        assert TURNS.held()
