"""Consumer settings and start-up failures: what the daemon asks of librdkafka, when it refuses."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from scicat_ingestor.commands.run import run_daemon
from scicat_ingestor.config.model import IngestorConfig, KafkaOptions, build
from scicat_ingestor.ops.state import ServiceState
from scicat_ingestor.sources.kafka import KafkaSource, consumer_settings

SASL = {
    "bootstrap_servers": "127.0.0.1:1",
    "security_protocol": "SASL_SSL",
    "sasl_username": "ingestor",
    "sasl_password": "hunter2-secret",
    "ssl_ca_location": "/etc/ca.pem",
}


def test_upstream_keys_become_librdkafka_settings_and_commits_are_manual() -> None:
    settings = consumer_settings(build(KafkaOptions, SASL, "test"))
    assert settings["group.id"] == "GROUP_ID"
    assert settings["sasl.mechanism"] == "SCRAM-SHA-256"
    assert settings["sasl.password"] == "hunter2-secret"
    assert settings["ssl.ca.location"] == "/etc/ca.pem"
    assert settings["auto.offset.reset"] == "earliest"
    assert settings["enable.auto.commit"] is False
    assert settings["enable.auto.offset.store"] is False


def test_empty_values_and_unused_security_settings_are_left_out() -> None:
    options = build(
        KafkaOptions, {"security_protocol": "plaintext", "sasl_mechanism": "", "group_id": "g"}, "t"
    )
    settings = consumer_settings(options)
    assert not any(key.startswith(("sasl.", "ssl.")) for key in settings)


def test_consumer_config_is_merged_last_but_cannot_turn_auto_commit_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    passthrough = {"session.timeout.ms": 6000, "enable.auto.commit": True, "group.id": "other"}
    options = build(KafkaOptions, {**SASL, "consumer_config": passthrough}, "test")
    with caplog.at_level(logging.WARNING, logger="scicat_ingestor.source"):
        settings = consumer_settings(options)
    assert settings["session.timeout.ms"] == 6000
    assert settings["group.id"] == "other"
    assert settings["enable.auto.commit"] is False
    (warning,) = caplog.records
    assert "enable.auto.commit" in warning.getMessage()


def test_group_instance_id_turns_static_membership_on_and_empty_leaves_it_off() -> None:
    static = consumer_settings(build(KafkaOptions, {**SASL, "group_instance_id": "host-a"}, "t"))
    assert static["group.instance.id"] == "host-a"
    assert "group.instance.id" not in consumer_settings(build(KafkaOptions, SASL, "t"))


def test_reconnect_backoff_is_1_s_unless_consumer_config_says_otherwise() -> None:
    # librdkafka's 100 ms does not grow on refused or failed SASL/TLS handshakes: a tight loop.
    assert consumer_settings(build(KafkaOptions, SASL, "t"))["reconnect.backoff.ms"] == 1000
    asked = {**SASL, "consumer_config": {"reconnect.backoff.ms": 250}}
    assert consumer_settings(build(KafkaOptions, asked, "t"))["reconnect.backoff.ms"] == 250


def test_the_logged_consumer_settings_mask_the_password(caplog: pytest.LogCaptureFixture) -> None:
    options = build(KafkaOptions, {**SASL, "security_protocol": "SASL_PLAINTEXT"}, "test")
    with caplog.at_level(logging.INFO, logger="scicat_ingestor.source"):
        KafkaSource(options, ServiceState()).close()
    assert "sasl.username': 'ingestor'" in caplog.text
    assert "'sasl.password': '****'" in caplog.text
    assert "hunter2" not in caplog.text


def test_invalid_schemas_refuse_to_start_with_exit_2(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = build(
        IngestorConfig,
        {"ingestion": {"schemas_directory": str(tmp_path / "none")}, "kafka": SASL},
        "test",
    )
    with caplog.at_level(logging.ERROR, logger="scicat_ingestor.daemon"):
        assert run_daemon(config) == 2
    assert "schema directory not found" in caplog.text


def test_unusable_consumer_settings_refuse_to_start_with_exit_2(
    data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = build(
        IngestorConfig,
        {
            "ingestion": {"schemas_directory": str(data_dir / "schemas")},
            "kafka": SASL,  # the CA file does not exist
            "health_check": {"enabled": False},
        },
        "test",
    )
    with caplog.at_level(logging.ERROR, logger="scicat_ingestor.daemon"):
        assert run_daemon(config) == 2
    assert "invalid Kafka consumer configuration" in caplog.text
    assert "ssl.ca.location" in caplog.text


def test_an_unusable_dead_letter_file_refuses_to_start_with_exit_2(
    data_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    config = build(
        IngestorConfig,
        {
            "ingestion": {
                "schemas_directory": str(data_dir / "schemas"),
                "dead_letter": {"file": str(tmp_path / "a-file" / "dead.jsonl")},
            },
            "health_check": {"enabled": False},
        },
        "test",
    )
    with caplog.at_level(logging.ERROR, logger="scicat_ingestor.daemon"):
        assert run_daemon(config) == 2
    (error,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert error.startswith("ingestion.dead_letter.file: cannot open ")
    assert "a-file/dead.jsonl" in error


def test_an_empty_schemas_directory_without_fallback_refuses_to_start_with_exit_2(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """It started and reported ready; every file would then have been dead-lettered."""
    (tmp_path / "schemas").mkdir()
    (tmp_path / "schemas" / "README.md").write_text("schemas go here")
    config = build(
        IngestorConfig,
        {
            "ingestion": {"schemas_directory": str(tmp_path / "schemas")},
            "kafka": SASL,
            "health_check": {"enabled": False},
        },
        "test",
    )
    with caplog.at_level(logging.ERROR, logger="scicat_ingestor.daemon"):
        assert run_daemon(config) == 2
    (error,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert error.startswith("ingestion.schemas_directory: no schema files in ")
