"""Masking by rule: header values and secret-named keys are hidden in every output path."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from scicat_ingestor.cli import main
from scicat_ingestor.config import load_config, secret_values
from scicat_ingestor.deadletter import DeadLetter, file_letter
from scicat_ingestor.ops.logs import reset_logging, setup_logging
from scicat_ingestor.redact import REDACTED, is_secret_key, masked_settings
from scicat_ingestor.source import Record

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
