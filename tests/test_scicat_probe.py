"""The credentials probe (``GET users/my/self``) cannot be fooled, and never kills its thread.

Backends 4.5 and 5 answer a garbage, revoked or old-secret token like no token: 403 on writes and
reads, 200 ``[]`` on v3 searches, and ``GET auth/whoami`` 200 with an empty body. Only
``users/my/self`` answers such a token 401; a SciCat without that route leaves the probe
inconclusive (one WARNING, a refusal is then the record's problem, as before the probe).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from helpers.commands import ingest_config, totals
from helpers.http import clear_proxy_environment, serving
from helpers.standin import DATASET
from scicat_ingestor.commands.ingest import ingest_command
from scicat_ingestor.config.model import SciCatOptions, Secret, build
from scicat_ingestor.scicat import SciCatAuthRefused, SciCatClient, SciCatForbidden
from scicat_ingestor.testing.scicat import SciCatStandIn

pytestmark = pytest.mark.integration

BACKENDS = ["4.5", "5"]
# A SciCat without the probe (the routes the client before asked: whoami, then users/my/self).
NO_PROBE_ROUTES = ("auth/whoami", "users/my/self")


def _client(standin: SciCatStandIn, **options: Any) -> SciCatClient:
    data = {"host": standin.url, "token": standin.token, "timeout": 2, "backoff_factor": 0.01}
    return SciCatClient(build(SciCatOptions, {**data, **options}, "test"))


def _requests(standin: SciCatStandIn, route: str) -> int:
    return sum(n for key, n in standin.stats()["requests"].items() if key.startswith(route))


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_garbage_static_token_is_an_auth_outage_not_a_permission_problem(
    scicat_standin_factory: Callable[..., SciCatStandIn], backend: str
) -> None:
    """Before: whoami's 200 ``null`` counted as "accepted", so the 403 became a permission
    verdict on the file (dead-lettered)."""
    standin = scicat_standin_factory(backend=backend)
    client = _client(standin, token="garbage-token", api_version=3)
    assert not client.check_credentials()
    with pytest.raises(SciCatAuthRefused) as info:
        client.create_dataset(DATASET)
    assert "GET users/my/self → 401" in str(info.value)
    assert not client.credentials.ok
    assert _requests(standin, "GET /auth/whoami") == 0
    assert not standin.datasets


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_wrong_token_file_is_an_auth_outage(
    scicat_standin_factory: Callable[..., SciCatStandIn], backend: str, tmp_path: Path
) -> None:
    standin = scicat_standin_factory(backend=backend)
    token_file = tmp_path / "token"
    token_file.write_text("an-old-token\n")
    client = _client(standin, token="", token_file=str(token_file), api_version=3)
    assert not client.check_credentials()
    with pytest.raises(SciCatAuthRefused, match=f"token from {token_file}: GET users/my/self"):
        client.get_json("proposals/443503")
    token_file.write_text(standin.token)
    client.credentials.recheck()  # /ready's checker
    assert client.credentials.ok
    assert client.get_json("proposals/443503")["proposalId"] == "443503"


class _SelfHandler(BaseHTTPRequestHandler):
    """A SciCat whose ``users/my/self`` answers 200 with ``answer``, everything else 403."""

    answer = b"null"

    def do_GET(self) -> None:
        status, body = (200, self.answer) if self.path.endswith("/users/my/self") else (403, b"")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.mark.parametrize("answer", [b"null", b"", b"{}", b'{"username": ""}', b"[]"])
def test_a_200_without_a_username_is_not_accepted(
    answer: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    clear_proxy_environment(monkeypatch)
    _SelfHandler.answer = answer
    for port in serving(_SelfHandler):
        options = SciCatOptions(
            host=f"http://127.0.0.1:{port}/api/v3", token=Secret("t"), api_version=3
        )
        client = SciCatClient(options)
        assert not client.check_credentials()
        with pytest.raises(SciCatAuthRefused, match=r"GET users/my/self → 200 without a username"):
            client.get_json("proposals/1")
        client.close()


def test_without_the_probe_route_one_warning_and_refusals_are_the_records(
    scicat_standin_factory: Callable[..., SciCatStandIn], caplog: pytest.LogCaptureFixture
) -> None:
    standin = scicat_standin_factory()
    for route in NO_PROBE_ROUTES:
        standin.faults.remove_route(route)
    client = _client(standin, token="garbage-token", api_version=3)
    assert client.check_credentials()  # cannot tell: not a refusal
    for _ in range(2):
        with pytest.raises(SciCatForbidden):  # as before the probe existed
            client.get_json("proposals/443503")
    client.credentials.recheck()
    assert client.credentials.ok
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [w.getMessage() for w in warnings if "users/my/self" in w.getMessage()] == [
        "SciCat has no GET users/my/self (404): credentials cannot be checked; a refused "
        "request counts as a permission problem of its record"
    ]
    assert _requests(standin, "unrouted 404") == 1  # users/my/self once, then remembered
    assert not [r for r in caplog.records if r.exc_info]


def test_ingest_without_the_probe_route_ingests_with_one_warning(
    tree: Path,
    scicat_standin: SciCatStandIn,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Before: ``SciCatRejected ... users/my/self → 404`` ended ``ingest`` with a traceback."""
    for route in NO_PROBE_ROUTES:
        scicat_standin.faults.remove_route(route)
    config = ingest_config(tree, scicat_standin)
    assert ingest_command(config, [str(tree / "data")], workers=2) == 0
    assert totals(capsys.readouterr().out) == (
        "2 file(s): 2 created, 0 existed, 0 dry run, 0 failed"
    )
    probe = [r for r in caplog.records if "users/my/self" in r.getMessage()]
    assert [r.levelno for r in probe] == [logging.WARNING]
    assert not [r for r in caplog.records if r.exc_info]


def test_the_probe_thread_survives_any_answer(
    scicat_standin_factory: Callable[..., SciCatStandIn],
) -> None:
    """The daemon runs ``check_credentials`` in a thread of its own, and /ready's checker runs
    ``recheck``: neither may die of an answer (here 400 to the probe)."""
    standin = scicat_standin_factory()
    standin.faults.remove_route("auth/whoami")
    standin.faults.fail_next(10, 400, "users/my/self")
    client = _client(standin, api_version=3)
    died: list[BaseException] = []

    def run() -> None:
        try:
            assert client.check_credentials()
            client.credentials.recheck()
        except BaseException as exc:  # pragma: no cover - reported below
            died.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(10)
    assert died == []


class _HeadersHandler(BaseHTTPRequestHandler):
    seen: list[str | None] = []

    def do_GET(self) -> None:
        self.seen.append(self.headers.get("Authorization"))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: Any) -> None:
        pass


def test_health_is_asked_without_the_token(monkeypatch: pytest.MonkeyPatch) -> None:
    """v5 answers an expired token 401 even on ``GET health``."""
    clear_proxy_environment(monkeypatch)
    _HeadersHandler.seen = []
    for port in serving(_HeadersHandler):
        client = SciCatClient(
            SciCatOptions(host=f"http://127.0.0.1:{port}/api/v3", token=Secret("tok"))
        )
        assert client.healthy()
        client.close()
    assert _HeadersHandler.seen == [None]


def test_health_stays_up_with_an_expired_login_on_backend_5(
    scicat_standin_factory: Callable[..., SciCatStandIn],
) -> None:
    standin = scicat_standin_factory(backend="5")
    client = _client(standin, token="", username="ingestor", password="pwd", api_version=3)
    assert client.get_json("proposals/443503")
    standin.faults.expire_tokens()
    assert client.healthy()
    assert _requests(standin, "GET /health 200") == 1
    assert client.get_json("proposals/443503")  # 401 SESSION_EXPIRED: renewed and repeated
    assert _requests(standin, "GET /proposals/{pid} 401") == 1
    assert _requests(standin, "POST /auth/login 201") == 2
