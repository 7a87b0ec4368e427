"""No secret (SciCat token and password, SASL password) in any log sink, /ready, printed config."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Literal
from urllib.parse import quote

import pytest
import requests
import yaml

from scicat_ingestor.commands.cli import main
from scicat_ingestor.config.model import (
    HealthCheckOptions,
    LoggingOptions,
    dump_yaml,
    load_config,
    secret_values,
)
from scicat_ingestor.config.redact import REDACTED
from scicat_ingestor.ops.health import HealthServer
from scicat_ingestor.ops.logcontext import log_context
from scicat_ingestor.ops.logs import add_secret, reset_logging, setup_logging
from scicat_ingestor.ops.state import ServiceState
from scicat_ingestor.scicat import SciCatClient, SciCatError
from scicat_ingestor.testing.gelf_receiver import GelfReceiver
from scicat_ingestor.testing.scicat import SciCatStandIn

TOKEN = "tok-9f8e7d6c5b4a"
SCICAT_PASSWORD = "p@ss w/rd'\"\\x"  # quotes, backslash, space and '/': escaped/encoded forms too
SASL_PASSWORD = "sasl-Secret-42"
SECRETS = (TOKEN, SCICAT_PASSWORD, SASL_PASSWORD)
# Every form a secret may be printed in: raw, repr()-escaped (%r, tracebacks), URL-encoded.
FORMS = {
    form for secret in SECRETS for form in (secret, repr(secret)[1:-1], quote(secret, safe=""))
}
LEVELS = (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL)

log = logging.getLogger("scicat_ingestor.test_secrets")


@pytest.fixture(autouse=True)
def _clean_logging() -> Iterator[None]:
    yield
    reset_logging()


def assert_clean(text: str, where: str) -> None:
    leaked = sorted(form for form in FORMS if form in text)
    assert not leaked, f"{where} leaks {leaked}"


def config_file(tmp_path: Path, **logging_keys: object) -> Path:
    path = tmp_path / "config.yml"
    data = {
        "kafka": {"sasl_password": SASL_PASSWORD, "security_protocol": "sasl_plaintext"},
        "scicat": {"token": TOKEN, "username": "ingestor", "password": SCICAT_PASSWORD},
        "logging": {"logging_level": "DEBUG", **logging_keys},
    }
    path.write_text(yaml.safe_dump(data))
    return path


def log_everything() -> None:
    """Secrets in messages, arguments, %r, f-strings, extras, context, exceptions, every level."""
    for level in LEVELS:
        log.log(level, "token %s password %r sasl %s", TOKEN, SCICAT_PASSWORD, SASL_PASSWORD)
        log.log(level, f"inline {TOKEN} {SCICAT_PASSWORD} {SASL_PASSWORD}")
        log.log(level, "mapping %(t)s", {"t": TOKEN})
        log.log(level, "extra", extra={"header": f"Bearer {TOKEN}", "outcome": SASL_PASSWORD})
        with log_context(job_id=TOKEN, file=f"/data/{SCICAT_PASSWORD}"):
            log.log(level, "in context")
        log.log(level, "url %s", f"https://h/login?password={quote(SCICAT_PASSWORD)}")
        try:
            raise ValueError(f"login failed for {SCICAT_PASSWORD!r} with token {TOKEN}")
        except ValueError:
            log.log(level, "with traceback", exc_info=True)
    log.info("bad format %s %s", TOKEN)  # noqa: PLE1206 - a broken call must not leak or crash


def test_no_secret_in_any_sink_at_any_level(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = load_config(config_file(tmp_path), environ={})
    assert sorted(secret_values(config)) == sorted(SECRETS)
    outputs: dict[str, str] = {}
    runs: tuple[tuple[Literal["text", "json"], Literal["udp", "tcp"]], ...] = (
        ("text", "udp"),
        ("json", "tcp"),
    )
    for fmt, protocol in runs:
        syslog = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        syslog.bind(("127.0.0.1", 0))
        syslog.settimeout(0.5)
        with GelfReceiver(protocol) as gelf:
            options = LoggingOptions(
                logging_level="DEBUG",
                verbose=True,
                log_format=fmt,
                file_log=True,
                file_log_base_name=str(tmp_path / fmt),
                system_log=True,
                system_log_address=f"127.0.0.1:{syslog.getsockname()[1]}",
                graylog=True,
                graylog_host="127.0.0.1",
                graylog_port=gelf.port,
                graylog_protocol=protocol,
            )
            setup_logging(options, secret_values(config))
            log_everything()
            log.critical("last line")
            gelf.wait_for(lambda m: "last line" in m["short_message"])
            outputs[f"GELF {protocol}"] = "\n".join(map(str, gelf.messages()))
            assert not gelf.errors
        datagrams: list[bytes] = []
        while b"last line" not in (datagrams[-1] if datagrams else b""):
            datagrams.append(syslog.recv(65535))
        syslog.close()
        reset_logging()
        outputs[f"syslog ({fmt} run)"] = b"\n".join(datagrams).decode()
        outputs[f"stdout {fmt}"] = capsys.readouterr().out
        outputs[f"file {fmt}"] = (tmp_path / f"{fmt}_.log").read_text(encoding="utf-8")
    for where, text in outputs.items():
        assert_clean(text, where)
        # Everything was logged, redacted: 5 levels of 'token %s ...' and tracebacks arrived.
        assert text.count(f"token {REDACTED}") >= len(LEVELS), where
        assert "ValueError: login failed for" in text, where
        assert "bad format" in text, where


def test_secret_learnt_at_run_time_is_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging(LoggingOptions(), [TOKEN])
    add_secret("jwt-from-login-123")
    log.warning("renewed token jwt-from-login-123, old %s", TOKEN)
    out = capsys.readouterr().out
    assert "jwt-from-login-123" not in out
    assert TOKEN not in out
    assert f"renewed token {REDACTED}, old {REDACTED}" in out


@pytest.mark.integration
def test_scicat_client_at_debug_and_ready_do_not_leak(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The real client logs in (password), is refused, retried, fails; then /ready is fetched."""
    log_path = tmp_path / "client"
    config = load_config(
        config_file(tmp_path, file_log=True, file_log_base_name=str(log_path)), environ={}
    )
    setup_logging(config.logging, secret_values(config))
    with SciCatStandIn(token=TOKEN, accounts={"ingestor": SCICAT_PASSWORD}) as standin:
        options = {"host": standin.url, "timeout": 5.0, "max_retries": 1, "backoff_factor": 0.01}
        with_token = load_config(
            config_file(tmp_path), {f"scicat.{k}": v for k, v in options.items()}, environ={}
        )
        client = SciCatClient(with_token.scicat)
        login = load_config(
            config_file(tmp_path),
            {**{f"scicat.{k}": v for k, v in options.items()}, "scicat.token": ""},
            environ={},
        )
        login_client = SciCatClient(login.scicat)
        assert login_client.get_dataset("20.500.12269/none") is None  # logs in first
        standin.faults.fail_next(5, 503)
        with pytest.raises(SciCatError) as failure:
            client.get_dataset("20.500.12269/none")
        log.error("SciCat failed: %s", failure.value)
        state = ServiceState()
        state.polled()
        state.set_broker_connected(True)
        with HealthServer(
            HealthCheckOptions(port=0), state, client.healthy, [str(tmp_path)], check_interval=0.1
        ) as server:
            bodies = [requests.get(server.url + p, timeout=10).text for p in ("/ready", "/health")]
        standin.stop()
        assert not client.healthy()
        client.close()
        login_client.close()
    reset_logging()
    for body in bodies:
        assert_clean(body, "HTTP endpoint")
    assert_clean(capsys.readouterr().out, "stdout")
    assert_clean((tmp_path / "client_.log").read_text(), "file log")


def test_printed_config_masks_secrets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = config_file(tmp_path)
    config = load_config(path, environ={})
    assert_clean(dump_yaml(config), "dump_yaml")
    assert_clean(repr(config), "repr(config)")
    assert main(["show-config", "-c", str(path)]) == 0
    shown = capsys.readouterr()
    assert_clean(shown.out + shown.err, "show-config")
    assert shown.out.count(REDACTED) == 3
    # Secrets from the environment are masked the same way.
    env = {"SCICAT_TOKEN": TOKEN, "KAFKA_SASL_PASSWORD": SASL_PASSWORD}
    assert_clean(dump_yaml(load_config(None, environ=env)), "dump_yaml (environment)")


def test_fix_secret_named_settings_are_masked_in_printed_config_and_logs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """show-config printed consumer_config passwords and header tokens in clear text."""
    path = tmp_path / "cfg.yml"
    data = {
        "kafka": {"consumer_config": {"ssl.key.password": SASL_PASSWORD, "client.id": "ing"}},
        "scicat": {"additional_headers": {"Authorization": f"Bearer {TOKEN}"}},
    }
    path.write_text(yaml.safe_dump(data))
    assert main(["show-config", "-c", str(path)]) == 0
    out = capsys.readouterr().out
    assert_clean(out, "show-config")
    shown = yaml.safe_load(out)
    assert shown["kafka"]["consumer_config"] == {"ssl.key.password": REDACTED, "client.id": "ing"}
    assert shown["scicat"]["additional_headers"] == {"Authorization": REDACTED}
    config = load_config(path, environ={})
    assert {SASL_PASSWORD, f"Bearer {TOKEN}"} <= set(secret_values(config))
