"""Hostile configuration and schemas, and the security defaults.

A schema is configuration written by instrument scientists and copied around; a config file may be
edited by anyone with shell access. Neither may make the ingestor hand its SciCat token to another
host, run code while loading YAML, hang on a pathological selector or variable, or print a secret.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import h5py
import pytest
import requests
import yaml
from confluent_kafka import Producer

from scicat_ingestor.config.model import (
    ConfigError,
    IngestorConfig,
    SciCatOptions,
    Secret,
    build,
    config_warnings,
    load_config,
)
from scicat_ingestor.daemon.deadletters import DeadLetter, DeadLetters, FileSink
from scicat_ingestor.ingest.outcome import Created, Permanent
from scicat_ingestor.ingest.pipeline import Job, Pipeline
from scicat_ingestor.schema.loader import SchemaError, load_schema_file, load_schemas
from scicat_ingestor.scicat import SciCatClient, SciCatRejected
from scicat_ingestor.sources.base import Record
from scicat_ingestor.testing.broker import free_port
from scicat_ingestor.testing.brokers import HarnessBroker
from scicat_ingestor.testing.daemon_process import DaemonProcess, daemon_config, write_config
from scicat_ingestor.testing.filewriter import SAMPLE_FILES, wrdn_message, write_nexus_copy
from scicat_ingestor.testing.scicat import SciCatStandIn

TOKEN = "tok-7f3a9c1e-very-secret"
SASL_PASSWORD = "sasl-pw-0xdeadbeef"
SCHEMA = Path(__file__).parent / "data" / "schemas" / "small-coda.imsc.yml"
NEXUS = next(p for p in SAMPLE_FILES if p.name == "small-coda.hdf")
HEALTH_PAGES = ("/health", "/ready", "/metrics")


@dataclass
class Recorder:
    """A loopback HTTP server that records every request's path and Authorization header."""

    server: ThreadingHTTPServer
    seen: list[tuple[str, str | None]] = field(default_factory=list)
    redirect_to: str = ""
    echo_credentials: bool = False  # answer 400 quoting the Authorization header back

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}/"


@pytest.fixture
def recorders() -> Iterator[tuple[Recorder, Recorder]]:
    """Two servers: 'scicat' (our configured host) and 'elsewhere' (must never see our token)."""
    made: list[Recorder] = []
    for _ in range(2):
        recorder = Recorder(ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler))
        recorder.server.RequestHandlerClass = _handler_for(recorder)
        threading.Thread(
            target=recorder.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        ).start()
        made.append(recorder)
    yield made[0], made[1]
    for recorder in made:
        recorder.server.shutdown()
        recorder.server.server_close()


def _handler_for(recorder: Recorder) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            recorder.seen.append((self.path, self.headers.get("Authorization")))
            if recorder.redirect_to:
                self.send_response(302)
                self.send_header("Location", recorder.redirect_to + self.path.lstrip("/"))
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            answer: dict[str, object] = {"pi_firstname": "Ada"}
            status = 200
            if recorder.echo_credentials:
                status = 400
                auth = self.headers.get("Authorization")
                answer = {"statusCode": 400, "message": f"rejected header Authorization: {auth}"}
            body = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


def _client(scicat: Recorder) -> SciCatClient:
    return SciCatClient(
        SciCatOptions(host=scicat.url + "api/v3", token=Secret(TOKEN), timeout=5, max_retries=0)
    )


# ------------------------------------------------------------------------------------------------
# SC variables: credentials go to the configured SciCat only
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "template",
    [
        "{other}proposals/1",  # plain absolute URL to another server
        "HTTP://{other_hostport}/proposals/1",  # scheme in capitals
        "  {other}proposals/1",  # leading blanks (urlsplit strips them)
        "ht\ttp://{other_hostport}/proposals/1",  # a tab inside the scheme (urlsplit removes it)
        "http://{scicat_hostport}@{other_hostport}/proposals/1",  # SciCat's host as userinfo
        "http://{scicat_hostport}/api/v3@{other_hostport}/x",  # SciCat's base as userinfo
        "https://{other_hostport}/proposals/1",
    ],
)
def test_sc_url_to_another_host_is_refused_without_contact(
    recorders: tuple[Recorder, Recorder], template: str
) -> None:
    scicat, other = recorders
    client = _client(scicat)
    url = template.format(
        other=other.url,
        other_hostport=other.url.removeprefix("http://").rstrip("/"),
        scicat_hostport=scicat.url.removeprefix("http://").rstrip("/"),
    )
    try:
        with pytest.raises(SciCatRejected) as err:
            client.get_json(url)
    finally:
        client.close()
    assert "refusing to send credentials" in str(err.value)
    assert other.seen == []
    assert TOKEN not in str(err.value)


def test_sc_relative_url_goes_to_scicat_with_token(recorders: tuple[Recorder, Recorder]) -> None:
    """The control case: the same recorder does see our token when it *is* SciCat."""
    scicat, other = recorders
    client = _client(scicat)
    try:
        assert client.get_json("//" + other.url.removeprefix("http://") + "x") == {
            "pi_firstname": "Ada"
        }
        assert client.get_json("proposals/1")["pi_firstname"] == "Ada"
    finally:
        client.close()
    assert other.seen == []
    assert [auth for _, auth in scicat.seen] == [f"Bearer {TOKEN}"] * 2


def test_redirect_from_scicat_to_another_host_drops_the_token(
    recorders: tuple[Recorder, Recorder],
) -> None:
    """A (compromised or misconfigured) SciCat redirecting elsewhere must not forward our token."""
    scicat, other = recorders
    scicat.redirect_to = other.url
    client = _client(scicat)
    try:
        client.get_json("proposals/1")
    finally:
        client.close()
    assert scicat.seen and scicat.seen[0][1] == f"Bearer {TOKEN}"
    assert other.seen, "the redirect was expected to be followed"
    assert all(auth is None for _, auth in other.seen)


# ------------------------------------------------------------------------------------------------
# YAML is loaded safely
# ------------------------------------------------------------------------------------------------


def test_config_with_python_tag_is_a_clean_error_and_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "c.yml"
    path.write_text(f'id: !!python/object/apply:os.system ["touch {marker}"]\n')
    with pytest.raises(ConfigError) as err:
        load_config(path, environ={})
    message = str(err.value)
    assert "\n" not in message
    assert str(path) in message
    assert not marker.exists()


@pytest.mark.parametrize(
    "tagged",
    [
        '!!python/object/apply:os.system ["touch {marker}"]',
        "!!python/name:os.system",
        '!!python/object/new:subprocess.Popen [["touch", "{marker}"]]',
    ],
)
def test_schema_with_python_tag_is_a_clean_error_and_runs_nothing(
    tmp_path: Path, tagged: str
) -> None:
    marker = tmp_path / "pwned"
    doc = SCHEMA.read_text().replace("order: 110", "order: " + tagged.format(marker=marker))
    path = tmp_path / "evil.imsc.yml"
    path.write_text(doc)
    with pytest.raises(SchemaError) as err:
        load_schema_file(path)
    assert str(err.value).startswith(f"{path}: ") and "\n" not in str(err.value)
    assert not marker.exists()


@pytest.mark.parametrize(
    "content", [b"[" * 5000 + b"]" * 5000, b"id: \xff\xfe\n"], ids=["deep", "bad-utf8"]
)
def test_config_that_is_not_yaml_text_is_a_config_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "c.yml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as err:
        load_config(path, environ={})
    assert str(err.value).startswith(f"{path}: ") and "\n" not in str(err.value)


# ------------------------------------------------------------------------------------------------
# Security defaults
# ------------------------------------------------------------------------------------------------


def test_tls_verification_is_on_by_default_and_off_only_with_a_warning(tmp_path: Path) -> None:
    assert IngestorConfig().scicat.verify is True
    assert not any("verify" in w for w in config_warnings(IngestorConfig()))
    path = tmp_path / "c.yml"
    path.write_text("scicat:\n  verify: false\n")
    config = load_config(path, environ={})
    assert config.scicat.verify is False
    assert any("NOT verified" in w for w in config_warnings(config))


def test_health_server_binds_loopback_by_default() -> None:
    """Upstream's sample binds 0.0.0.0; our default only serves this host (see the daemon test)."""
    assert IngestorConfig().health_check.host == "127.0.0.1"


# ------------------------------------------------------------------------------------------------
# Hostile schemas and files through the pipeline
# ------------------------------------------------------------------------------------------------


def _schema(tmp_path: Path, edit: Callable[[dict[str, Any]], None]) -> Path:
    """A copy of the small-coda example schema, edited, alone in a schemas directory."""
    doc = yaml.safe_load(SCHEMA.read_text())
    edit(doc)
    directory = tmp_path / "schemas"
    directory.mkdir(exist_ok=True)
    (directory / "hostile.imsc.yml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return directory


def _prepend_variable(doc: dict[str, Any], name: str, spec: dict[str, Any]) -> None:
    doc["variables"] = {name: spec, **doc["variables"]}


def _pipeline(scicat_url: str, token: str, schemas: Path, root: Path) -> Pipeline:
    data = {
        "scicat": {"host": scicat_url, "token": token, "timeout": 5, "max_retries": 0},
        "ingestion": {
            "schemas_directory": str(schemas),
            "file_handling": {"data_directory": str(root)},
        },
    }
    config = build(IngestorConfig, data, "hostile")
    return Pipeline(config, load_schemas(schemas), SciCatClient(config.scicat))


def _nexus_with(root: Path, extra: dict[str, Any]) -> Path:
    path = root / "raw" / "small-coda-hostile.hdf"
    write_nexus_copy(NEXUS, path)
    with h5py.File(path, "r+") as nexus:
        for dataset, value in extra.items():
            if dataset in nexus:
                del nexus[dataset]
            nexus[dataset] = value
    return path


@pytest.mark.integration
def test_sc_urls_from_the_schema_or_the_file_never_carry_our_token_elsewhere(
    tmp_path: Path, recorders: tuple[Recorder, Recorder], scicat_standin: SciCatStandIn
) -> None:
    """A schema author writes an absolute URL; a NeXus file supplies one through a variable."""
    _, other = recorders

    def edit(doc: dict[str, Any]) -> None:
        _prepend_variable(
            doc, "url_in_file", {"source": "NXS", "path": "/entry/url", "value_type": "string"}
        )
        doc["variables"]["pi_email"]["url"] = "<url_in_file>"
        doc["variables"]["pi_firstname"]["url"] = other.url + "proposals/<proposal_id>"
        doc["variables"]["pi_lastname"]["url"] = "HTTP://" + other.url[7:] + "x"

    root = tmp_path / "data"
    path = _nexus_with(root, {"/entry/url": other.url + "steal?from=nexus"})
    pipeline = _pipeline(scicat_standin.url, scicat_standin.token, _schema(tmp_path, edit), root)
    outcome = pipeline.ingest(Job(str(path), "job-hostile"))
    assert other.seen == []
    assert isinstance(outcome, Permanent)  # ownerEmail and principalInvestigator are missing
    assert "refusing to send credentials" in outcome.reason
    assert scicat_standin.datasets == {}


@pytest.mark.integration
def test_variable_recursion_terminates(
    tmp_path: Path, scicat_standin: SciCatStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    """Self- and mutual references fail cleanly; text from the file is never expanded again."""

    def edit(doc: dict[str, Any]) -> None:
        variables = doc["variables"]
        variables["loop_a"] = {"source": "VALUE", "value": "<loop_b>", "value_type": "string"}
        variables["loop_b"] = {"source": "VALUE", "value": "<loop_a>", "value_type": "string"}
        variables["myself"] = {"source": "VALUE", "value": "x<myself>", "value_type": "string"}
        variables["echo"] = {
            "source": "VALUE",
            "value": "<dataset_name>|<dataset_name>",
            "value_type": "string",
        }
        doc["schema"]["echo"] = {
            "field_type": "scientific_metadata",
            "machine_name": "echo",
            "value": "<echo>",
            "type": "string",
        }
        doc["schema"]["loop"] = {
            "field_type": "scientific_metadata",
            "machine_name": "loop",
            "value": "<loop_a><myself>",
            "type": "string",
        }

    root = tmp_path / "data"
    # The title (dataset_name) itself looks like a reference to the variable that copies it.
    path = _nexus_with(root, {"/entry/title": "<echo><loop_a>"})
    with caplog.at_level(logging.WARNING):
        schemas = _schema(tmp_path, edit)
        pipeline = _pipeline(scicat_standin.url, scicat_standin.token, schemas, root)
    assert any("<loop_b> is not defined before" in r.getMessage() for r in caplog.records)
    outcome = pipeline.ingest(Job(str(path), "job-recursion"))
    assert isinstance(outcome, Created), outcome
    metadata = scicat_standin.datasets[outcome.pid]["scientificMetadata"]
    assert metadata["echo"]["value"] == "<echo><loop_a>|<echo><loop_a>"
    assert "loop" not in metadata
    assert scicat_standin.datasets[outcome.pid]["datasetName"] == "<echo><loop_a>"


@pytest.mark.integration
def test_selector_on_a_10k_character_path(tmp_path: Path, scicat_standin: SciCatStandIn) -> None:
    """A 10,000-character selector operand loads and selects; other schemas are unaffected."""
    operand = "small-coda" + "x" * 10_000

    def edit(doc: dict[str, Any]) -> None:
        doc["selector"] = {
            "or": [f"filename:contains:{operand}", f"nexusfile:starts_with:/{operand}"]
        }

    root = tmp_path / "data"
    path = _nexus_with(root, {})
    pipeline = _pipeline(scicat_standin.url, scicat_standin.token, _schema(tmp_path, edit), root)
    outcome = pipeline.ingest(Job(str(path), "job-long-selector"))
    assert isinstance(outcome, Permanent) and "no metadata schema matches" in outcome.reason
    schemas = load_schemas(tmp_path / "schemas")
    assert schemas.select("/data/" + operand + ".hdf") is not None
    assert schemas.select("/data/" + "small-coda" + "x" * 9_999 + "y.hdf") is None


@pytest.mark.integration
def test_token_echoed_by_scicat_is_not_kept_in_dead_letters(
    tmp_path: Path, recorders: tuple[Recorder, Recorder]
) -> None:
    scicat, _ = recorders
    scicat.echo_credentials = True
    root = tmp_path / "data"
    path = _nexus_with(root, {})
    pipeline = _pipeline(scicat.url + "api/v3", TOKEN, _schema(tmp_path, lambda d: None), root)
    outcome = pipeline.ingest(Job(str(path), "job-echo"))
    assert isinstance(outcome, Permanent)
    assert scicat.seen, "SciCat was expected to be asked (and to echo the token)"
    dead_file = tmp_path / "dead.jsonl"
    record = Record("topic", 0, 7, b"value")
    assert (
        DeadLetters([FileSink(str(dead_file))]).store(DeadLetter(outcome.reason, record, str(path)))
        is None
    )
    assert TOKEN not in dead_file.read_text()
    assert TOKEN not in outcome.reason


# ------------------------------------------------------------------------------------------------
# The running daemon: warning at start, nothing secret anywhere, health on loopback only
# ------------------------------------------------------------------------------------------------


def _listening_addresses(port: int) -> set[str]:
    """Local addresses with a TCP listener on ``port`` (from /proc/net/tcp and tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as rows:
            next(rows)
            for row in rows:
                local, _, state = row.split()[1:4]
                address, _, hex_port = local.partition(":")
                if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                    found.add(address)
    return found


@pytest.mark.integration
def test_daemon_security_defaults(
    tmp_path: Path,
    kafka_broker: HarnessBroker,
    make_topic: Callable[..., str],
    scicat_standin_factory: Callable[..., SciCatStandIn],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    standin = scicat_standin_factory(token=TOKEN)
    monkeypatch.setenv("SCICAT_TOKEN", TOKEN)  # the token comes from the environment
    topic = make_topic(1)
    root = tmp_path / "data"
    good = _nexus_with(root, {})
    bad = root / "raw" / "small-coda-not-hdf5.hdf"
    bad.write_text("not HDF5")
    dead_file = tmp_path / "dead.jsonl"
    health_port = free_port()
    config = daemon_config(
        bootstrap=kafka_broker.bootstrap,
        topics=[topic],
        group_id=f"hostile-{uuid.uuid4().hex[:8]}",
        scicat_url=standin.url,
        scicat_token="",
        schemas_directory=_schema(tmp_path, lambda d: None),
        overrides={
            "scicat.verify": False,
            "kafka.sasl_password": SASL_PASSWORD,
            "health_check.enabled": True,
            "health_check.port": health_port,
            "ingestion.file_handling.data_directory": str(root),
            "ingestion.dead_letter.file": str(dead_file),
        },
    )
    assert "host" not in config["health_check"]  # the default is what is tested
    daemon = DaemonProcess(write_config(tmp_path / "config.yml", config), tmp_path / "daemon.log")
    producer = Producer({"bootstrap.servers": kafka_broker.bootstrap})
    with daemon:
        daemon.wait_for_log("Health endpoint listening", timeout=60)
        daemon.wait_for_log("assigned", timeout=60)
        for path in (bad, good):
            producer.produce(topic, wrdn_message(str(path), f"job-{path.stem}"))
        assert producer.flush(10) == 0
        daemon.wait_for_log(r"small-coda-hostile\.hdf: created", timeout=60)
        daemon.wait_for_log("dead-lettered", timeout=60)
        base = f"http://127.0.0.1:{health_port}"
        pages = {name: requests.get(base + name, timeout=5).text for name in HEALTH_PAGES}
        listening = _listening_addresses(health_port)
        daemon.terminate()
        assert daemon.wait(30) == 0
    log = daemon.log_text()
    assert "scicat.verify is false: TLS certificates of SciCat are NOT verified" in log
    assert listening == {"0100007F"}, listening  # 127.0.0.1 only, no IPv6/any-address listener
    assert json.loads(pages["/ready"])["ready"] is True
    places = {"log": log, "dead letters": dead_file.read_text(), **pages}
    for place, text in places.items():
        for secret in (TOKEN, SASL_PASSWORD):
            assert secret not in text, f"{secret!r} in {place}"
