"""Masking by rule: header values and secret-named keys are hidden in every output path."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import yaml

from helpers.http import EchoHandler, serving
from scicat_ingestor.commands.cli import main
from scicat_ingestor.config.model import HealthCheckOptions, Secret, load_config, secret_values
from scicat_ingestor.config.redact import REDACTED, is_secret_key, masked_settings
from scicat_ingestor.daemon.deadletters import DeadLetter
from scicat_ingestor.ingest.letters import file_letter
from scicat_ingestor.ops.health import HealthServer
from scicat_ingestor.ops.logs import reset_logging, setup_logging
from scicat_ingestor.ops.state import ServiceState
from scicat_ingestor.scicat import SciCatClient, SciCatRejected
from scicat_ingestor.sources.base import Record

# (section, mapping key, entry name, value): every value here must never be shown.
CASES = [
    ("scicat", "additional_headers", "X-Api-Key", "api-key-1234"),
    ("scicat", "additional_headers", "Cookie", "session=cookie-5678"),
    ("scicat", "additional_headers", "X-Site", "plain-looking-9012"),  # any header value
    ("kafka", "consumer_config", "sasl.oauthbearer.client.secret", "oauth-3456"),
    ("kafka", "consumer_config", "ssl.key.pem", "pem-7890"),
    ("kafka", "consumer_config", "some.api.token", "token-2468"),
]


@pytest.fixture(autouse=True)
def _clean_logging() -> Iterator[None]:
    yield
    reset_logging()


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    data: dict[str, dict[str, dict[str, str]]] = {}
    for section, mapping, name, value in CASES:
        data.setdefault(section, {}).setdefault(mapping, {})[name] = value
    data["kafka"]["consumer_config"]["client.id"] = "shown"
    data["kafka"]["consumer_config"]["ssl.key.location"] = "/etc/k.pem"
    path = tmp_path / "c.yml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("case", CASES, ids=[c[2] for c in CASES])
def test_show_config_masks(
    config_path: Path, capsys: pytest.CaptureFixture[str], case: tuple[str, str, str, str]
) -> None:
    section, mapping, name, value = case
    assert main(["show-config", "-c", str(config_path)]) == 0
    out = capsys.readouterr().out
    assert value not in out
    assert yaml.safe_load(out)[section][mapping][name] == REDACTED


def test_show_config_keeps_what_is_no_secret(
    config_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["show-config", "-c", str(config_path)]) == 0
    consumer = yaml.safe_load(capsys.readouterr().out)["kafka"]["consumer_config"]
    assert consumer["client.id"] == "shown"
    assert consumer["ssl.key.location"] == "/etc/k.pem"  # a path to a key is no secret


@pytest.mark.parametrize("case", CASES, ids=[c[2] for c in CASES])
def test_logs_redact(
    config_path: Path, capsys: pytest.CaptureFixture[str], case: tuple[str, str, str, str]
) -> None:
    _, _, name, value = case
    config = load_config(config_path, environ={})
    setup_logging(config.logging, secret_values(config))
    logging.getLogger("scicat_ingestor.test").warning("request failed with %s=%s", name, value)
    out = capsys.readouterr().out
    assert value not in out
    assert REDACTED in out


@pytest.mark.parametrize(
    ("key", "secret"),
    [
        ("X-Api-Key", True),
        ("Cookie", True),
        ("Proxy-Authorization", True),
        ("sasl.password", True),
        ("ssl.keystore.location", False),
        ("client.id", False),
        ("session.timeout.ms", False),
    ],
)
def test_secret_key_rule(key: str, secret: bool) -> None:
    assert is_secret_key(key) is secret
    assert (masked_settings({key: "v"})[key] == REDACTED) is secret


@pytest.mark.parametrize("case", CASES, ids=[c[2] for c in CASES])
def test_dead_letters_redact(config_path: Path, case: tuple[str, str, str, str]) -> None:
    """A reason quoting a request or setting must not carry the secret into the letter."""
    config = load_config(config_path, environ={})
    setup_logging(config.logging, secret_values(config))
    value = case[3]
    letter = DeadLetter(f"refused with {value}", Record("t", 0, 1, b"v", None), "/d/f.hdf")
    shown = [letter.as_json()["reason"], dict(letter.headers())["reason"]]
    shown.append(file_letter("/d/f.hdf", f"refused with {value}")["reason"])
    assert all(value not in str(text) and REDACTED in str(text) for text in shown), shown


class _QuotesHeaders(EchoHandler):
    """A backend or proxy that quotes every request header in its error (health: 503)."""

    def _echo(self, body: str = "") -> None:
        sent = "; ".join(f"{name}: {value}" for name, value in self.headers.items())
        status = 503 if self.path.endswith("/health") else 400
        self._reply(status, {"statusCode": status, "message": f"you sent {sent} {body}"})


@pytest.fixture
def quoting_scicat(config_path: Path) -> Iterator[SciCatClient]:
    """A client with the table's headers and a token, talking to ``_QuotesHeaders``."""
    config = load_config(config_path, environ={})
    for port in serving(_QuotesHeaders):
        options = dataclasses.replace(
            config.scicat,
            host=f"http://127.0.0.1:{port}/api/v3",
            token=Secret("tok-1357"),
            max_retries=0,
            api_version=3,
        )
        client = SciCatClient(options)
        yield client
        client.close()


HEADER_VALUES = [c[3] for c in CASES if c[1] == "additional_headers"]


def test_scicat_error_texts_mask_quoted_headers(quoting_scicat: SciCatClient) -> None:
    """Error texts reach outcome reasons, ``ingest``'s report and summary, which no log filter
    sees: a header value quoted by SciCat or a proxy was shown in clear (the token was not)."""
    with pytest.raises(SciCatRejected) as info:
        quoting_scicat.get_json("proposals/1")
    text = str(info.value)
    assert "you sent " in text
    for value in [*HEADER_VALUES, "tok-1357"]:
        assert value not in text
    assert text.count(REDACTED) >= len(HEADER_VALUES)


def test_ready_masks_what_scicat_quoted(quoting_scicat: SciCatClient) -> None:
    """``/ready`` names the health URL and SciCat's answer: never a header value in it."""
    state = ServiceState()
    state.polled()
    state.set_broker_connected(True)
    with HealthServer(
        HealthCheckOptions(port=0), state, quoting_scicat.healthy, check_interval=0.1
    ) as server:
        deadline = time.monotonic() + 20
        detail = "not checked yet"
        while detail == "not checked yet" and time.monotonic() < deadline:
            body = requests.get(server.url + "/ready", timeout=10).json()
            detail = body["checks"]["scicat"]["detail"]
            time.sleep(0.05)
        shown = requests.get(server.url + "/ready", timeout=10).text
    assert "answered 503: you sent " in detail
    for value in HEADER_VALUES:
        assert value not in shown
