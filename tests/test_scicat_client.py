"""SciCatClient against the SciCat stand-in: URLs, auth, retries, typed errors, metrics."""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from scicat_ingestor.config import ConfigError, SciCatOptions, Secret, build
from scicat_ingestor.ops.metrics import REGISTRY
from scicat_ingestor.scicat import (
    SciCatClient,
    SciCatConflict,
    SciCatError,
    SciCatRejected,
    SciCatUnavailable,
)
from scicat_ingestor.testing.scicat_standin import SciCatStandIn

pytestmark = pytest.mark.integration

DATASET: dict[str, Any] = {
    "pid": "20.500.12269/client-test-1",
    "type": "raw",
    "datasetName": "client test",
    "principalInvestigator": "Pia Investigator",
    "creationLocation": "ESS:CODA",
    "owner": "Pia Investigator",
    "ownerEmail": "pia@example.org",
    "contactEmail": "pia@example.org",
    "sourceFolder": "/data/coda",
    "creationTime": "2024-10-28T09:06:41+00:00",
    "ownerGroup": "ess_proposal_443503",
    "accessGroups": ["ess"],
    "scientificMetadata": {"job_id": {"value": "job-1", "type": "string", "unit": ""}},
}


def _client(standin: SciCatStandIn, **options: Any) -> SciCatClient:
    data = {"host": standin.url, "token": standin.token, "timeout": 2, "backoff_factor": 0.01}
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
    scicat_standin.fail_next(2, 503, "datasets")
    assert client.create_dataset(DATASET)["pid"] == DATASET["pid"]
    assert _requests(scicat_standin, "POST /datasets 503") == 2
    assert len(scicat_standin.datasets) == 1


def test_persistent_503_is_unavailable(scicat_standin: SciCatStandIn) -> None:
    client = _client(scicat_standin, max_retries=1)
    scicat_standin.fail_next(5, 503, "proposals")
    with pytest.raises(SciCatUnavailable, match=r"GET proposals/443503 → 503"):
        client.get_json("proposals/443503")
    assert _requests(scicat_standin, "GET /proposals/{pid} 503") == 2


def test_other_4xx_is_not_retried(client: SciCatClient, scicat_standin: SciCatStandIn) -> None:
    scicat_standin.fail_next(1, 400, "datasets")
    with pytest.raises(SciCatRejected) as info:
        client.create_dataset(DATASET)
    assert not isinstance(info.value, SciCatUnavailable)
    assert _requests(scicat_standin, "POST /datasets") == 1
    assert client.create_dataset(DATASET)["pid"] == DATASET["pid"]


def test_retried_dataset_post_that_was_committed_gives_conflict(
    client: SciCatClient, scicat_standin: SciCatStandIn
) -> None:
    """The backend stored it but the 502 hid that: the retry answers 409 ('exists')."""
    scicat_standin.fail_next(1, 502, "datasets", commit=True)
    with pytest.raises(SciCatConflict):
        client.create_dataset(DATASET)
    assert list(scicat_standin.datasets) == [DATASET["pid"]]


def test_origdatablock_post_is_not_retried_after_a_500(
    client: SciCatClient, scicat_standin: SciCatStandIn
) -> None:
    """A 500 may come after the write: repeating the POST could duplicate the datablock."""
    client.create_dataset(DATASET)
    scicat_standin.fail_next(1, 500, "origdatablocks", commit=True)
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
    scicat_standin.stop_answering()
    try:
        with pytest.raises(SciCatUnavailable, match="timed out") as info:
            client.get_dataset("20.500.12269/x")
        assert info.value.status is None
        assert "no answer" in str(info.value)
    finally:
        scicat_standin.resume()
    assert client.get_dataset("20.500.12269/x") is None


def test_connection_refused_is_unavailable(scicat_standin: SciCatStandIn) -> None:
    client = _client(scicat_standin, max_retries=0)
    scicat_standin.stop_answering(refuse=True)
    try:
        with pytest.raises(SciCatUnavailable, match="connection refused"):
            client.find_datasets({"pid": "x"})
    finally:
        scicat_standin.resume()


def test_static_token_401_is_rejected(scicat_standin: SciCatStandIn) -> None:
    client = _client(scicat_standin, token="wrong")
    with pytest.raises(SciCatRejected, match="→ 401"):
        client.get_dataset("20.500.12269/x")


def test_login_and_renewal_after_401(
    scicat_standin: SciCatStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client = _client(scicat_standin, token="", username="ingestor", password="pwd")
    assert client.get_dataset("20.500.12269/x") is None
    assert _requests(scicat_standin, "POST /auth/login 201") == 1
    scicat_standin.expire_tokens()

    errors: list[BaseException] = []

    def work() -> None:
        try:
            assert client.get_json("proposals/443503")["proposalId"] == "443503"
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    # one renewal shared by all threads, not one login per thread
    assert _requests(scicat_standin, "POST /auth/login 201") == 2
    assert "pwd" not in caplog.text
    assert "Bearer" not in caplog.text


def test_wrong_password_is_rejected(scicat_standin: SciCatStandIn) -> None:
    client = _client(scicat_standin, token="", username="ingestor", password="nope")
    with pytest.raises(SciCatRejected, match=r"SciCat POST auth/login → 401"):
        client.get_dataset("20.500.12269/x")


def test_healthy(scicat_standin: SciCatStandIn) -> None:
    client = _client(scicat_standin, token="", max_retries=0)
    assert client.healthy()
    scicat_standin.fail_next(1, 503, "health")
    assert not client.healthy()
    assert client.healthy()


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


class _EchoHandler(BaseHTTPRequestHandler):
    """A misbehaving backend/proxy that quotes the request's credentials in its error."""

    def do_GET(self) -> None:
        self._echo()

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self._echo(self.rfile.read(length).decode())

    def _echo(self, body: str = "") -> None:
        text = f"bad request; you sent {self.headers.get('Authorization')} {body} " + "x" * 490
        payload = json.dumps({"statusCode": 400, "message": text}).encode()
        self.send_response(400)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def echo_server() -> Any:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _EchoHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/api/v3"
    server.shutdown()
    server.server_close()


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
