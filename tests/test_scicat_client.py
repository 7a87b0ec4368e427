"""SciCatClient against the SciCat stand-in: URLs, auth, retries, typed errors, metrics."""

from __future__ import annotations

import json
import logging
import os
import shutil
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from helpers.http import EchoHandler, ProxyHandler, clear_proxy_environment, serving
from helpers.standin import DATASET
from scicat_ingestor.config.model import ConfigError, SciCatOptions, Secret, build
from scicat_ingestor.ops.metrics import REGISTRY
from scicat_ingestor.scicat import (
    SciCatAuthRefused,
    SciCatClient,
    SciCatConflict,
    SciCatError,
    SciCatForbidden,
    SciCatRejected,
    SciCatUnavailable,
)
from scicat_ingestor.scicat.credentials import renew_after
from scicat_ingestor.testing.scicat import Account, SciCatStandIn

pytestmark = pytest.mark.integration


def _client(standin: SciCatStandIn, **options: Any) -> SciCatClient:
    data = {
        "host": standin.url,
        "token": standin.token,
        "timeout": 2,
        "backoff_factor": 0.01,
        "api_version": 3,  # API v4: test_scicat_v4
    }
    return SciCatClient(build(SciCatOptions, {**data, **options}, "test"))


@pytest.fixture
def client(scicat_standin: SciCatStandIn) -> Any:
    c = _client(scicat_standin)
    yield c
    c.close()


def _requests(standin: SciCatStandIn, route: str) -> int:
    return sum(n for key, n in standin.stats()["requests"].items() if key.startswith(route))


def test_create_get_find_and_origdatablocks(
    client: SciCatClient, scicat_standin: SciCatStandIn
) -> None:
    created = client.create_dataset(DATASET)
    pid = created["pid"]
    assert pid == DATASET["pid"]
    got = client.get_dataset(pid)  # the '/' in the pid is sent as %2F
    assert got is not None and got["datasetName"] == "client test"
    assert client.get_dataset("20.500.12269/unknown") is None
    found = client.find_datasets({"scientificMetadata.job_id.value": "job-1"})
    assert [d["pid"] for d in found] == [pid]
    assert client.find_datasets({"scientificMetadata.job_id.value": "other"}) == []
    assert client.origdatablocks_of(pid) == []
    block = client.create_origdatablock(
        {
            "datasetId": pid,
            "size": 3,
            "dataFileList": [{"path": "f.hdf", "size": 3, "time": "2024-01-01T00:00:00.000Z"}],
        }
    )
    assert block["_id"]
    assert [b["_id"] for b in client.origdatablocks_of(pid)] == [block["_id"]]


def test_get_json_maps_endpoint_names(scicat_standin: SciCatStandIn) -> None:
    client = _client(scicat_standin, api_endpoints={"proposals": "/proposals/"})
    proposal = client.get_json("proposals/443503")
    assert proposal["pi_firstname"] == "Pia"
    odin = client.get_json(
        "instruments?filter=%7B%22where%22%3A%7B%22name%22%3A%7B%22ilike%22%3A%22odin%22%7D%7D%7D"
    )
    assert [i["name"] for i in odin] == ["odin"]
    assert client.get_json(scicat_standin.url + "/proposals/876380")["pi_lastname"] == "Mirsky"


def test_get_json_refuses_to_send_credentials_elsewhere(client: SciCatClient) -> None:
    for url in ("http://evil.example.org/api/v3/proposals/1", "http://127.0.0.1.evil/x"):
        with pytest.raises(SciCatRejected, match="refusing to send credentials outside"):
            client.get_json(url)


def test_error_message_names_method_endpoint_status_and_scicat_text(client: SciCatClient) -> None:
    with pytest.raises(SciCatRejected) as info:
        client.create_dataset({**DATASET, "pid": "20.500.12269/bad", "bogus": 1})
    err = info.value
    assert (err.status, err.endpoint) == (400, "datasets")
    # class-validator's nested error objects are flattened to their texts
    assert str(err) == "SciCat POST datasets → 400: property bogus should not exist"
    with pytest.raises(SciCatRejected) as info:
        client.create_origdatablock({"datasetId": "x", "size": 1, "dataFileList": [{"path": 1}]})
    assert str(info.value).startswith(
        "SciCat POST origdatablocks → 400: dataFileList.0.path must be a string; "
    )
    with pytest.raises(SciCatRejected, match=r"SciCat GET proposals/nope → 404: "):
        client.get_json("proposals/nope")


def test_conflict_is_typed(client: SciCatClient) -> None:
    client.create_dataset(DATASET)
    with pytest.raises(SciCatConflict) as info:
        client.create_dataset(DATASET)
    assert info.value.status == 409


def test_503_is_retried_then_succeeds(client: SciCatClient, scicat_standin: SciCatStandIn) -> None:
    scicat_standin.faults.fail_next(2, 503, "datasets")
    assert client.create_dataset(DATASET)["pid"] == DATASET["pid"]
    assert _requests(scicat_standin, "POST /datasets 503") == 2
    assert len(scicat_standin.datasets) == 1


def test_persistent_503_is_unavailable(scicat_standin: SciCatStandIn) -> None:
    client = _client(scicat_standin, max_retries=1)
    scicat_standin.faults.fail_next(5, 503, "proposals")
    with pytest.raises(SciCatUnavailable, match=r"GET proposals/443503 → 503"):
        client.get_json("proposals/443503")
    assert _requests(scicat_standin, "GET /proposals/{pid} 503") == 2


def test_other_4xx_is_not_retried(client: SciCatClient, scicat_standin: SciCatStandIn) -> None:
    scicat_standin.faults.fail_next(1, 400, "datasets")
    with pytest.raises(SciCatRejected) as info:
        client.create_dataset(DATASET)
    assert not isinstance(info.value, SciCatUnavailable)
    assert _requests(scicat_standin, "POST /datasets") == 1
    assert client.create_dataset(DATASET)["pid"] == DATASET["pid"]


def test_retried_dataset_post_that_was_committed_gives_conflict(
    client: SciCatClient, scicat_standin: SciCatStandIn
) -> None:
    """The backend stored it but the 502 hid that: the retry answers 409 ('exists')."""
    scicat_standin.faults.fail_next(1, 502, "datasets", commit=True)
    with pytest.raises(SciCatConflict):
        client.create_dataset(DATASET)
    assert list(scicat_standin.datasets) == [DATASET["pid"]]


def test_origdatablock_post_is_not_retried_after_a_500(
    client: SciCatClient, scicat_standin: SciCatStandIn
) -> None:
    """A 500 may come after the write: repeating the POST could duplicate the datablock."""
    client.create_dataset(DATASET)
    scicat_standin.faults.fail_next(1, 500, "origdatablocks", commit=True)
    block = {
        "datasetId": DATASET["pid"],
        "size": 1,
        "dataFileList": [{"path": "f", "size": 1, "time": "2024-01-01T00:00:00.000Z"}],
    }
    with pytest.raises(SciCatUnavailable, match="→ 500"):
        client.create_origdatablock(block)
    assert len(scicat_standin.origdatablocks) == 1


def test_timeout_is_unavailable(scicat_standin: SciCatStandIn) -> None:
    client = _client(scicat_standin, timeout=0.3, max_retries=1)
    scicat_standin.faults.stop_answering()
    try:
        with pytest.raises(SciCatUnavailable) as info:
            client.get_dataset("20.500.12269/x")
        assert info.value.status is None
        where = scicat_standin.url.split("/")[2]
        assert info.value.message == (
            f"timed out: {where} gave no answer within 0.3 s (scicat.timeout)"
        )
    finally:
        scicat_standin.faults.resume()
    assert client.get_dataset("20.500.12269/x") is None


def test_connection_refused_is_unavailable(scicat_standin: SciCatStandIn) -> None:
    client = _client(scicat_standin, max_retries=0)
    scicat_standin.faults.stop_answering(refuse=True)
    try:
        with pytest.raises(SciCatUnavailable) as info:
            client.find_datasets({"pid": "x"})
    finally:
        scicat_standin.faults.resume()
    where = scicat_standin.url.split("/")[2]
    assert info.value.message == f"connection refused by {where} (nothing listens there)"


def test_refused_static_token_is_an_auth_outage(
    scicat_standin: SciCatStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    """SciCat answers a garbage token like none (403); the probe (users/my/self: 401) says it
    is the credentials."""
    client = _client(scicat_standin, token="wrong")
    assert client.get_dataset("20.500.12269/x") is None  # 404 either way (the table's row)
    with pytest.raises(SciCatAuthRefused) as info:
        client.get_json("proposals/443503")
    assert str(info.value) == (
        "SciCat refuses our credentials (HTTP 403 on GET proposals/443503; "
        "static token (scicat.token): GET users/my/self → 401)"
    )
    assert isinstance(info.value, SciCatUnavailable)  # retried, never a verdict on the file
    assert client.credentials.status() == (False, str(info.value))
    assert _auth_ok() == 0
    [error] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "wrong" not in error.getMessage()


def _auth_ok() -> float | None:
    return REGISTRY.get_sample_value("scicat_ingestor_scicat_auth_ok")


def _in_threads(work: Callable[[], None], count: int) -> list[BaseException]:
    """Run ``work`` in ``count`` threads at once; the exceptions they raised."""
    errors: list[BaseException] = []

    def guarded() -> None:
        try:
            work()
        except BaseException as exc:  # pragma: no cover - reported by the caller
            errors.append(exc)

    threads = [threading.Thread(target=guarded) for _ in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def _login_client(standin: SciCatStandIn, **options: Any) -> SciCatClient:
    return _client(standin, token="", username="ingestor", password="pwd", **options)


def test_token_is_renewed_before_it_expires_once_for_all_threads(
    scicat_standin_factory: Callable[..., SciCatStandIn], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    standin = scicat_standin_factory(token_lifetime=1.0)
    client = _login_client(standin)
    done = time.monotonic() + 2.5

    def work() -> None:
        while time.monotonic() < done:
            assert client.get_json("proposals/443503")["proposalId"] == "443503"
            time.sleep(0.02)

    assert _in_threads(work, 4) == []
    # renewed at 0.8 s of each 1 s lifetime: logins at 0, 0.8, 1.6, 2.4 s; never a refusal
    assert 3 <= _requests(standin, "POST /auth/login 201") <= 4
    assert _requests(standin, "GET /proposals/{pid} 403") == 0
    renewals = [r for r in caplog.records if "renewing before expiry" in r.getMessage()]
    assert len(renewals) == _requests(standin, "POST /auth/login 201") - 1
    assert "token valid 1 s, renewed after 0.8 s" in renewals[0].getMessage()
    assert "pwd" not in caplog.text and "Bearer" not in caplog.text


@pytest.mark.parametrize(("lifetime", "after"), [(3600, 2880), (60, 30), (3, 2.4), (100, 70)])
def test_renewal_time(lifetime: float, after: float) -> None:
    assert renew_after(lifetime) == pytest.approx(after)


@pytest.mark.parametrize(("backend", "refusal"), [("4.5", 403), ("5", 401)])
def test_renewal_after_refusal_one_login_for_all_threads(
    scicat_standin_factory: Callable[..., SciCatStandIn],
    caplog: pytest.LogCaptureFixture,
    backend: str,
    refusal: int,
) -> None:
    """4.5 answers an expired token 403, 5 answers 401 SESSION_EXPIRED: both renew once."""
    caplog.set_level(logging.DEBUG)
    scicat_standin = scicat_standin_factory(backend=backend)
    client = _login_client(scicat_standin)
    assert client.get_dataset("20.500.12269/x") is None
    assert _requests(scicat_standin, "POST /auth/login 201") == 1
    scicat_standin.faults.expire_tokens()

    def work() -> None:
        assert client.get_json("proposals/443503")["proposalId"] == "443503"

    assert _in_threads(work, 4) == []
    # the expired token was refused; one renewal shared by all threads
    assert _requests(scicat_standin, f"GET /proposals/{{pid}} {refusal}") >= 1
    assert _requests(scicat_standin, "POST /auth/login 201") == 2
    assert "pwd" not in caplog.text
    assert "Bearer" not in caplog.text


def test_wrong_password_is_an_auth_outage_without_a_login_storm(
    scicat_standin: SciCatStandIn,
) -> None:
    client = _client(scicat_standin, token="", username="ingestor", password="nope")
    for _ in range(5):
        with pytest.raises(SciCatAuthRefused, match=r"\(login as 'ingestor' failed: 401\)"):
            client.get_dataset("20.500.12269/x")
    assert _requests(scicat_standin, "POST /auth/login 401") == 1  # repeated at most once a second
    assert not client.check_credentials()


def test_credentials_rejected_for_a_while_then_resume(scicat_standin: SciCatStandIn) -> None:
    client = _login_client(scicat_standin)
    assert client.get_json("proposals/443503")
    scicat_standin.faults.reject_credentials(1.0)
    with pytest.raises(SciCatAuthRefused) as info:
        client.get_json("proposals/443503")
    assert str(info.value) == (
        "SciCat refuses our credentials (HTTP 403 on GET proposals/443503; "
        "login as 'ingestor' failed: 401)"
    )
    assert not client.credentials.ok
    time.sleep(1.1)
    client.credentials.recheck()  # what /ready's checker does during the outage
    assert client.credentials.status() == (
        True,
        "SciCat accepts our credentials (account 'ingestor')",
    )
    assert _auth_ok() == 1
    assert client.get_json("proposals/443503")


def test_token_file_is_reread_when_refused_or_changed(
    scicat_standin: SciCatStandIn, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(scicat_standin.token + "\n")
    client = _client(scicat_standin, token="", token_file=str(token_file))
    assert client.get_json("proposals/443503")
    scicat_standin.faults.set_token("rotated-1")  # revoked: refused until the file has the new one
    refused = f"token from {token_file}: GET users/my/self → 401"
    with pytest.raises(SciCatAuthRefused, match=refused):
        client.get_json("proposals/443503")
    token_file.write_text("rotated-1")
    assert client.get_json("proposals/443503")  # no restart
    scicat_standin.faults.set_token("rotated-2")
    os.utime(token_file, ns=(1, 1))  # same size, other mtime: still noticed
    token_file.write_text("rotated-2")
    assert client.get_json("proposals/443503")
    assert _requests(scicat_standin, "GET /proposals/{pid} 403") == 1


def test_token_file_must_be_readable_at_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"scicat.token_file: cannot read .*missing"):
        SciCatClient(
            SciCatOptions(host="http://127.0.0.1:1/api/v3", token_file=str(tmp_path / "missing"))
        )


@pytest.fixture
def reader_standin(scicat_standin_factory: Callable[..., SciCatStandIn]) -> SciCatStandIn:
    """An account that may create datasets but not read other groups' (the table's case)."""
    account = Account("pwd", groups=("ingestor",), admin=False, may_create=True)
    return scicat_standin_factory(accounts={"ingestor": account})


def test_permission_problem_names_account_request_and_fix(
    reader_standin: SciCatStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    client = _login_client(reader_standin)
    client.create_dataset(DATASET)
    for _ in range(3):
        with pytest.raises(SciCatForbidden) as info:
            client.get_dataset(DATASET["pid"])
    assert str(info.value) == (
        "account 'ingestor' may not read dataset 20.500.12269/client-test-1: add it to "
        "ADMIN_GROUPS or to the dataset's accessGroups "
        "(SciCat GET datasets/20.500.12269%2Fclient-test-1 → 403: Unauthorized access)"
    )
    assert isinstance(info.value, SciCatRejected)  # a verdict on this record
    assert client.credentials.ok
    # one renewal, then the recent probe's acceptance skips it: no login per refusal, but a
    # fresh probe each time (the token might have died since)
    assert _requests(reader_standin, "POST /auth/login 201") == 2
    assert _requests(reader_standin, "GET /users/my/self 200") == 3
    with pytest.raises(SciCatForbidden, match="may not read the origdatablocks of dataset"):
        client.origdatablocks_of(DATASET["pid"])
    warnings = [r for r in caplog.records if "cannot read datasets of other groups" in r.message]
    assert len(warnings) == 1


def test_account_without_create_permission(
    scicat_standin_factory: Callable[..., SciCatStandIn],
) -> None:
    account = Account("pwd", groups=("x",), admin=False, may_create=False)
    client = _login_client(scicat_standin_factory(accounts={"ingestor": account}))
    with pytest.raises(SciCatForbidden) as info:
        client.create_dataset(DATASET)
    assert str(info.value).startswith(
        "account 'ingestor' may not create datasets of ownerGroup 'ess_proposal_443503': add it "
        "to CREATE_DATASET_PRIVILEGED_GROUPS (or to that group) (SciCat POST datasets → 403: "
        "Unauthorized to create this dataset)"
    )


def test_start_up_probe(scicat_standin: SciCatStandIn, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    assert _client(scicat_standin).check_credentials()
    assert "SciCat accepts our credentials: account 'ingestor' (static token" in caplog.text
    assert not _client(scicat_standin, token="revoked").check_credentials()
    unreachable = SciCatOptions(host="http://127.0.0.1:1/api/v3", max_retries=0, token=Secret("t"))
    assert SciCatClient(unreachable).check_credentials()  # cannot tell: not a refusal


def test_stale_keep_alive_connection_is_repeated_at_once(
    scicat_standin_factory: Callable[..., SciCatStandIn],
) -> None:
    """The server closed the idle connection as the POST went out: repeated on a fresh one,
    without a retry wait (urllib3 would not repeat an origdatablock POST)."""
    standin = scicat_standin_factory(idle_timeout=0.2)
    client = _client(standin, max_retries=0)
    client.create_dataset(DATASET)
    block = {
        "datasetId": DATASET["pid"],
        "size": 1,
        "dataFileList": [{"path": "f", "size": 1, "time": "2024-01-01T00:00:00.000Z"}],
    }
    client.create_origdatablock(block)  # opens this thread's connection for unsafe POSTs
    time.sleep(0.3)
    started = time.monotonic()
    assert client.create_origdatablock(block)["_id"]
    assert time.monotonic() - started < 0.2
    assert standin.stats()["idle_closed"] == 1
    assert len(standin.origdatablocks) == 2
    assert client.credentials.ok


def test_healthy(scicat_standin: SciCatStandIn) -> None:
    client = _client(scicat_standin, token="", max_retries=0)
    assert client.healthy()
    scicat_standin.faults.fail_next(1, 503, "health")
    answer = client.healthy()
    assert not answer
    assert answer.detail.startswith(
        f"SciCat health endpoint {scicat_standin.url}/health answered 503: "
    )
    assert (
        client.healthy().detail
        == f"SciCat health endpoint {scicat_standin.url}/health answered 200"
    )


def test_health_answer_shows_no_user_info_or_query(scicat_standin: SciCatStandIn) -> None:
    """The URL goes on /ready: a password in it (or a query token) must not."""
    host = scicat_standin.url.replace("http://", "http://user:pw-in-url@")
    client = _client(scicat_standin, host=host, health_endpoint="health?key=k-in-query")
    answer = client.healthy()
    assert "pw-in-url" not in answer.detail and "k-in-query" not in answer.detail
    assert answer.url == f"{scicat_standin.url}/health"


def test_connections_are_reused(client: SciCatClient, scicat_standin: SciCatStandIn) -> None:
    before = scicat_standin.stats()["connections"]
    for _ in range(5):
        client.get_dataset("20.500.12269/x")
    assert scicat_standin.stats()["connections"] - before == 1


def test_requests_are_timed_by_endpoint_and_status(client: SciCatClient) -> None:
    def count() -> float:
        labels = {"endpoint": "datasets/{pid}", "status": "404"}
        value = REGISTRY.get_sample_value(
            "scicat_ingestor_scicat_request_duration_seconds_count", labels
        )
        return value or 0.0

    before = count()
    client.get_dataset("20.500.12269/x")
    assert count() - before == 1


def test_requests_are_counted_by_method_route_and_status(client: SciCatClient) -> None:
    """``scicat_ingestor_scicat_requests_total``: the route template, never the pid."""

    def counted(method: str, endpoint: str, status: str) -> float:
        labels = {"method": method, "endpoint": endpoint, "status": status}
        return REGISTRY.get_sample_value("scicat_ingestor_scicat_requests_total", labels) or 0.0

    expected = [
        ("GET", "datasets/{pid}", "404"),
        ("POST", "datasets", "201"),
        ("POST", "datasets", "409"),
        ("GET", "datasets/{pid}/origdatablocks", "200"),
    ]
    before = [counted(*labels) for labels in expected]
    client.get_dataset(DATASET["pid"])
    client.create_dataset(DATASET)
    with pytest.raises(SciCatConflict):
        client.create_dataset(DATASET)
    client.origdatablocks_of(DATASET["pid"])
    assert [counted(*labels) - b for labels, b in zip(expected, before, strict=True)] == [1] * 4
    endpoints = {
        sample.labels["endpoint"]
        for metric in REGISTRY.collect()
        for sample in metric.samples
        if sample.name == "scicat_ingestor_scicat_requests_total"
    }
    assert not any("20.500" in endpoint for endpoint in endpoints)


@pytest.fixture
def echo_server() -> Iterator[str]:
    for port in serving(EchoHandler):
        yield f"http://127.0.0.1:{port}/api/v3"


def test_secrets_quoted_by_the_server_are_redacted(echo_server: str) -> None:
    """Error texts end up in outcome reasons and dead letters, which are not log-redacted."""
    token_client = SciCatClient(SciCatOptions(host=echo_server, token=Secret("s3cr3t-token")))
    with pytest.raises(SciCatRejected) as info:
        token_client.get_dataset("x")
    assert "s3cr3t-token" not in str(info.value)
    assert "you sent Bearer ****" in str(info.value)
    login_client = SciCatClient(
        SciCatOptions(host=echo_server, username="ingestor", password=Secret("hunter2-pass"))
    )
    with pytest.raises(SciCatRejected) as info:
        login_client.get_dataset("x")
    assert "hunter2-pass" not in str(info.value)
    assert '"password": "****"' in str(info.value)


def test_host_must_be_an_http_url() -> None:
    with pytest.raises(
        ConfigError, match=r"scicat.host: must be an http\(s\):// URL, found 'scicat:3000'"
    ):
        SciCatClient(SciCatOptions(host="scicat:3000"))


def test_error_is_a_scicat_error_with_fields() -> None:
    err = SciCatUnavailable("GET", "datasets", None, "connection refused")
    assert isinstance(err, SciCatError)
    assert str(err) == "SciCat GET datasets → no answer: connection refused"


@pytest.fixture
def proxy(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    clear_proxy_environment(monkeypatch)
    ProxyHandler.seen = []
    for port in serving(ProxyHandler):
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{port}")
        yield ProxyHandler.seen


def test_proxy_from_the_environment_is_used(proxy: list[str]) -> None:
    """Sessions do not read the environment per request; the client reads it once per host."""
    client = SciCatClient(SciCatOptions(host="http://scicat.invalid/api/v3", max_retries=0))
    assert client.get_json("proposals/1") == {"via": "proxy"}
    assert client.get_json("proposals/2") == {"via": "proxy"}
    assert proxy == [
        "http://scicat.invalid/api/v3/proposals/1",
        "http://scicat.invalid/api/v3/proposals/2",
    ]
    client.close()


def test_no_proxy_from_the_environment_is_obeyed(
    proxy: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NO_PROXY", "scicat.invalid")
    client = SciCatClient(SciCatOptions(host="http://scicat.invalid/api/v3", max_retries=0))
    with pytest.raises(SciCatUnavailable):
        client.get_json("proposals/1")
    assert proxy == []
    client.close()


class _StickyHandler(EchoHandler):
    """A load balancer pinning a client with a cookie; records what each request carried."""

    seen: list[dict[str, str | None]] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's name (the parent is another module's)
        self._record("")

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        length = int(self.headers.get("Content-Length") or 0)
        self._record(self.rfile.read(length).decode())

    def _record(self, body: str) -> None:
        names = ("Cookie", "Authorization", "User-Agent", "Content-Type", "X-Facility")
        seen: dict[str, str | None] = {name: self.headers.get(name) for name in names}
        self.seen.append(seen | {"path": self.path, "body": body})
        answer: Any = [] if "?filter=" in self.path else {"pid": "p"}
        payload = json.dumps(answer).encode()
        self.send_response(200)
        if len(self.seen) == 1:
            self.send_header("Set-Cookie", "lb=node-2; Path=/")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


def test_requests_carry_what_session_request_sent() -> None:
    """Requests are prepared without ``Session.request``'s merging: headers, query, JSON body
    and a proxy's cookie must still be what it sent."""
    _StickyHandler.seen = []
    for port in serving(_StickyHandler):
        options = SciCatOptions(
            host=f"http://127.0.0.1:{port}/api/v3",
            token=Secret("tok"),
            additional_headers={"X-Facility": "ess"},
            api_version=3,
        )
        client = SciCatClient(options)
        client.get_json("proposals/a b")
        client.find_datasets({"pid": "x"})
        client.create_dataset({"pid": "x", "size": 1})
        client.close()
    first, second, third = _StickyHandler.seen
    assert first["Cookie"] is None
    assert second["Cookie"] == third["Cookie"] == "lb=node-2"
    for seen in (first, second, third):
        assert seen["Authorization"] == "Bearer tok"
        assert seen["X-Facility"] == "ess"
        assert str(seen["User-Agent"]).startswith("python-requests/")
    assert first["path"] == "/api/v3/proposals/a%20b"
    assert str(second["path"]).startswith("/api/v3/datasets?filter=")
    assert third["Content-Type"] == "application/json"
    assert json.loads(str(third["body"])) == {"pid": "x", "size": 1}


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_a_host_that_does_not_resolve_says_dns(
    scheme: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Not urllib3's pool and connection objects (``_TLSPool(host=…)… NameResolutionError``)."""
    clear_proxy_environment(monkeypatch)
    options = SciCatOptions(host=f"{scheme}://scicat.invalid/api/v3", max_retries=0, api_version=3)
    client = SciCatClient(options)
    with pytest.raises(SciCatUnavailable) as info:
        client.get_json("proposals/1")
    assert str(info.value) == (
        "SciCat GET proposals/1 → no answer: cannot resolve host scicat.invalid (DNS)"
    )
    assert not client.healthy()
    assert "_TLSPool" not in caplog.text and "NameResolutionError" not in caplog.text
    assert "cannot resolve host scicat.invalid (DNS)" in caplog.text
    client.close()


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for localhost (made by the openssl command)."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed")
    where = tmp_path_factory.mktemp("tls")
    cert, key = where / "cert.pem", where / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture
def tls_server(self_signed: tuple[Path, Path]) -> Iterator[int]:
    """A loopback HTTPS server with the self-signed certificate; yields its port."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), EchoHandler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*self_signed)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def _tls_client(host: str) -> SciCatClient:
    return SciCatClient(SciCatOptions(host=host, max_retries=0, api_version=3, timeout=5.0))


def test_an_untrusted_certificate_says_so_in_plain_words(
    tls_server: int, self_signed: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """It said ``TLS error: _TLSPool(host=…): Max retries exceeded … SSLCertVerificationError``."""
    clear_proxy_environment(monkeypatch)
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    client = _tls_client(f"https://localhost:{tls_server}/api/v3")
    answer = client.healthy()
    assert answer.detail == (
        f"SciCat health endpoint https://localhost:{tls_server}/api/v3/health not reachable: "
        f"TLS certificate of localhost:{tls_server} not trusted: self-signed certificate "
        "(a private CA: REQUESTS_CA_BUNDLE=its file)"
    )
    client.close()
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(self_signed[0]))  # trusted, wrong name
    client = _tls_client(f"https://127.0.0.1:{tls_server}/api/v3")
    with pytest.raises(SciCatUnavailable) as info:
        client.get_json("proposals/1")
    assert info.value.message == (
        f"TLS certificate of 127.0.0.1:{tls_server} not trusted: IP address mismatch, "
        "certificate is not valid for '127.0.0.1' (a private CA: REQUESTS_CA_BUNDLE=its file)"
    )
    client.close()


def test_https_to_a_plain_http_server_says_tls_handshake(
    scicat_standin: SciCatStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    clear_proxy_environment(monkeypatch)
    where = scicat_standin.url.split("/")[2]
    client = _tls_client(scicat_standin.url.replace("http://", "https://"))
    with pytest.raises(SciCatUnavailable) as info:
        client.get_json("proposals/1")
    assert info.value.message == (
        f"TLS handshake with {where} failed: wrong version number (is it plain http?)"
    )
    client.close()
