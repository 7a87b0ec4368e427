"""Logging sinks (stdout, file, syslog, GELF) through real sockets and files; the GELF receiver."""

from __future__ import annotations

import dataclasses
import datetime as dt
import gzip
import json
import logging
import os
import re
import socket
import struct
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from scicat_ingestor.config.model import ConfigError, KafkaOptions, LoggingOptions
from scicat_ingestor.ops.logcontext import log_context
from scicat_ingestor.ops.logs import RepeatLimiter, log_file_name, reset_logging, setup_logging
from scicat_ingestor.ops.state import ServiceState
from scicat_ingestor.sources.kafka import KafkaSource
from scicat_ingestor.testing.gelf_receiver import ChunkAssembler, GelfReceiver, decode_payload

log = logging.getLogger("scicat_ingestor.test_logs")


@pytest.fixture(autouse=True)
def _clean_logging() -> Iterator[None]:
    yield
    reset_logging()


def opts(**changes: object) -> LoggingOptions:
    return dataclasses.replace(LoggingOptions(), **changes)  # type: ignore[arg-type]


@pytest.fixture
def udp_socket() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5)
    yield sock
    sock.close()


# --- stdout ---------------------------------------------------------------------------------


def test_stdout_text_has_upstream_format_and_context(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging(opts(log_message_prefix="XYZ"), [])
    with log_context(job_id="j-1", file="/data/a.hdf"):
        log.info("ingesting %s", "a.hdf")
    log.info("no context")
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("XYZ - ")
    assert lines[0].endswith(
        " - scicat_ingestor.test_logs - INFO - ingesting a.hdf [job_id=j-1 file=/data/a.hdf]"
    )
    assert lines[1].endswith(" - INFO - no context")


def test_text_lines_cannot_be_forged(capsys: pytest.CaptureFixture[str]) -> None:
    """A newline in untrusted text (job id, file name) would start a fake log line."""
    setup_logging(opts(), [])
    with log_context(job_id="j\nSFI - forged"):
        log.warning("file %s", "/data/a\nSFI - 2024 - x - CRITICAL - forged\u2028.hdf")
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1
    assert lines[0].endswith(
        "WARNING - file /data/a\\nSFI - 2024 - x - CRITICAL - forged\\u2028.hdf"
        " [job_id=j\\nSFI - forged]"
    )


def test_text_time_is_iso_8601_with_zone(capsys: pytest.CaptureFixture[str]) -> None:
    """Upstream's asctime had no zone: logs from hosts in different zones could not be merged."""
    setup_logging(opts(), [])
    log.info("x")
    stamp = capsys.readouterr().out.split(" - ")[1]
    parsed = dt.datetime.fromisoformat(stamp)
    assert parsed.utcoffset() is not None
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d", stamp), stamp
    assert abs((dt.datetime.now(dt.UTC) - parsed).total_seconds()) < 60


def test_text_does_not_repeat_context_the_message_states(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The per-file line named the path, job id and pid twice (~420 characters)."""
    setup_logging(opts(), [])
    pid = "20.500.12269/0123456789abcdef0123456789abcdef"
    with log_context(job_id="j-1", file="/data/raw/run_0001.hdf", dataset_pid=pid):
        log.info("%s: created, dataset %s, %.3f s", "/data/raw/run_0001.hdf", pid, 1.5)
    line = capsys.readouterr().out.strip()
    assert line.endswith(
        f"INFO - /data/raw/run_0001.hdf: created, dataset {pid}, 1.500 s [job_id=j-1]"
    )
    assert line.count("run_0001") == 1 and line.count(pid) == 1


def test_repeated_warnings_are_held_back_then_counted() -> None:
    """An outage warned every 5 s (the health probe): now the first, then 'still' once a minute."""
    now = [0.0]
    limiter = RepeatLimiter(window=60, clock=lambda: now[0])

    def shown(message: str, level: int = logging.WARNING) -> str | None:
        record = logging.makeLogRecord({"name": "x", "levelno": level, "msg": message})
        return record.getMessage() if limiter.filter(record) else None

    assert shown("SciCat unreachable") == "SciCat unreachable"
    for step in range(1, 12):  # every 5 s for 55 s
        now[0] = step * 5.0
        assert shown("SciCat unreachable") is None
        assert shown(f"/data/f{step}.hdf: failed") is not None  # other lines pass
        assert shown("progress", logging.INFO) == "progress"
    now[0] = 60.0
    assert shown("SciCat unreachable") == "still: SciCat unreachable (12 more times)"
    now[0] = 65.0
    assert shown("SciCat unreachable") is None
    now[0] = 200.0
    assert shown("SciCat unreachable") == "still: SciCat unreachable (2 more times)"
    now[0] = 300.0  # nothing held back since: a new outage, shown as such
    assert shown("SciCat unreachable") == "SciCat unreachable"


def test_repeat_limiter_verdict_is_shared_by_the_sinks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    setup_logging(opts(file_log=True), [])
    for _ in range(3):
        log.warning("broker down")
    assert capsys.readouterr().out.count("broker down") == 1
    assert (tmp_path / "scicat_ingestor_log_.log").read_text().count("broker down") == 1


def test_stdout_json_lines(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging(opts(log_format="json"), [])
    with log_context(job_id="j-2", dataset_pid="pid/1"):
        log.warning("done", extra={"outcome": "created", "duration_s": 0.5})
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("failed")
    first, second = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert first["level"] == "WARNING"
    assert first["logger"] == "scicat_ingestor.test_logs"
    assert first["message"] == "done"
    assert first["prefix"] == "SFI"
    assert first["job_id"] == "j-2"
    assert first["dataset_pid"] == "pid/1"
    assert first["outcome"] == "created"
    assert first["duration_s"] == 0.5
    assert "file" not in first
    assert first["time"].endswith("Z")
    assert "RuntimeError: boom" in second["exception"]


def test_level_filters_and_verbose_shows_debug_with_location(
    capsys: pytest.CaptureFixture[str],
) -> None:
    setup_logging(opts(logging_level="warning"), [])
    log.info("hidden")
    log.warning("shown")
    assert [line.split(" - ")[-1] for line in capsys.readouterr().out.splitlines()] == ["shown"]
    setup_logging(opts(logging_level="INFO", verbose=True), [])
    log.debug("detail")
    out = capsys.readouterr().out
    assert "DEBUG - detail (test_logs.py:" in out


def test_invalid_level_is_one_line_config_error() -> None:
    with pytest.raises(ConfigError) as exc:
        setup_logging(opts(logging_level="LOUD"), [])
    assert str(exc.value) == (
        "logging.logging_level: unknown level 'LOUD'; "
        "use one of DEBUG, INFO, WARNING, ERROR, CRITICAL"
    )


def test_setup_twice_does_not_duplicate_lines(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging(opts(), [])
    setup_logging(opts(), [])
    log.info("once")
    assert capsys.readouterr().out.count("once") == 1
    assert len(logging.getLogger("scicat_ingestor").handlers) == 1


def test_failing_sink_leaves_previous_setup_in_place(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    setup_logging(opts(), [])
    with pytest.raises(
        ConfigError, match=re.escape("logging.file_log_base_name: cannot open log file")
    ):
        setup_logging(opts(file_log=True, file_log_base_name=str(tmp_path / "no" / "x")), [])
    log.info("still logging")
    assert "still logging" in capsys.readouterr().out


# --- file -----------------------------------------------------------------------------------


def test_file_log_name_is_upstreams() -> None:
    when = dt.datetime(2024, 1, 2, 3, 4, 5, 678901, tzinfo=dt.UTC)
    assert log_file_name(opts(file_log_base_name="x/base"), when) == "x/base_.log"
    assert (
        log_file_name(opts(file_log_base_name="base", file_log_timestamp=True), when)
        == "base_20240102030405678901_.log"
    )


def test_file_log_appends_across_restarts(tmp_path: Path) -> None:
    """Upstream opened the file with mode 'w', so each start erased the previous run's log."""
    options = opts(file_log=True, file_log_base_name=str(tmp_path / "ingestor"))
    setup_logging(options, [])
    log.info("first run")
    setup_logging(options, [])
    log.info("second run")
    reset_logging()
    text = (tmp_path / "ingestor_.log").read_text(encoding="utf-8")
    assert "first run" in text
    assert "second run" in text


def test_file_log_rotates(tmp_path: Path) -> None:
    options = opts(
        file_log=True,
        file_log_base_name=str(tmp_path / "rot"),
        file_log_max_bytes=2000,
        file_log_backup_count=2,
        log_format="json",
    )
    setup_logging(options, [])
    for i in range(100):
        log.info("line %03d %s", i, "x" * 40)
    reset_logging()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["rot_.log", "rot_.log.1", "rot_.log.2"]
    assert all((tmp_path / name).stat().st_size <= 2000 for name in files)
    last = (tmp_path / "rot_.log").read_text().splitlines()[-1]
    assert json.loads(last)["message"].startswith("line 099")


# --- syslog ---------------------------------------------------------------------------------


def test_syslog_udp_uses_configured_facility(udp_socket: socket.socket) -> None:
    """Upstream ignored system_log_facility (always LOG_USER): local3 must give PRI 19*8+level."""
    port = udp_socket.getsockname()[1]
    setup_logging(
        opts(system_log=True, system_log_address=f"127.0.0.1:{port}", system_log_facility="local3"),
        [],
    )
    with log_context(job_id="j-9"):
        log.warning("to syslog")
    data = udp_socket.recv(65535).decode()
    assert data.startswith(f"<{19 * 8 + 4}>SFI - ")
    assert "WARNING - to syslog [job_id=j-9]" in data


def test_syslog_unix_datagram_socket(tmp_path: Path) -> None:
    path = tmp_path / "log"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(5)
    try:
        setup_logging(opts(system_log=True, system_log_address=str(path)), [])
        log.error("to the local syslog")
        data = sock.recv(65535).decode()
    finally:
        sock.close()
    assert data.startswith(f"<{2 * 8 + 3}>SFI - ")  # default facility mail (2), ERROR (3)
    assert data.rstrip("\0").endswith("ERROR - to the local syslog")


def test_syslog_errors_are_one_line(tmp_path: Path) -> None:
    cases = {
        str(tmp_path / "missing"): "logging.system_log_address: cannot reach syslog at",
        "nohost": "logging.system_log_address: 'nohost' is neither a socket path nor host:port",
    }
    for address, message in cases.items():
        with pytest.raises(ConfigError, match=re.escape(message)):
            setup_logging(opts(system_log=True, system_log_address=address), [])
    with pytest.raises(ConfigError, match=re.escape("unknown facility 'email'; use one of auth")):
        setup_logging(opts(system_log=True, system_log_facility="email"), [])


# --- Graylog (GELF) -------------------------------------------------------------------------


def test_gelf_udp_compressed_with_context_fields() -> None:
    with GelfReceiver("udp") as receiver:
        setup_logging(
            opts(graylog=True, graylog_host="127.0.0.1", graylog_port=str(receiver.port)), []
        )
        with log_context(job_id="j-3", file="/data/b.hdf", dataset_pid="pid/3"):
            log.info("dataset created", extra={"outcome": "created"})
        message = receiver.wait_for(lambda m: "dataset created" in m["short_message"])
        assert receiver.compressed_messages == 1
    assert message["short_message"].startswith("SFI - ")
    assert message["facility"] == "scicat.ingestor"
    assert message["level"] == 6
    assert message["_logger"] == "scicat_ingestor.test_logs"
    assert message["_job_id"] == "j-3"
    assert message["_file"] == "/data/b.hdf"
    assert message["_dataset_pid"] == "pid/3"
    assert message["_outcome"] == "created"


def test_gelf_udp_large_message_is_chunked_and_reassembled() -> None:
    payload = os.urandom(6000).hex()  # incompressible: far above one 1420-byte chunk
    with GelfReceiver("udp") as receiver:
        setup_logging(opts(graylog=True, graylog_host="127.0.0.1", graylog_port=receiver.port), [])
        log.error("big %s", payload)
        message = receiver.wait_for(lambda m: payload in m["short_message"])
        assert receiver.chunked_messages == 1
    assert message["level"] == 3
    assert "_job_id" not in message  # empty context fields are not sent


def test_gelf_tcp_with_exception() -> None:
    with GelfReceiver("tcp") as receiver:
        setup_logging(
            opts(
                graylog=True,
                graylog_host="127.0.0.1",
                graylog_port=receiver.port,
                graylog_protocol="tcp",
                graylog_facility="ops.test",
            ),
            [],
        )
        try:
            raise KeyError("missing")
        except KeyError:
            with log_context(job_id="j-4"):
                log.exception("could not ingest")
        message = receiver.wait_for(lambda m: "could not ingest" in m["short_message"])
    assert message["facility"] == "ops.test"
    assert message["_job_id"] == "j-4"
    assert "KeyError: 'missing'" in message["full_message"]


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"graylog_host": "", "graylog_port": 12201}, "logging.graylog_host: must be set"),
        (
            {"graylog_host": "h", "graylog_port": ""},
            "logging.graylog_port: must be a port number when logging.graylog is true, found ''",
        ),
        ({"graylog_host": "h", "graylog_port": "gelf"}, "found 'gelf'"),
        ({"graylog_host": "h", "graylog_port": 70000}, "found 70000"),
    ],
)
def test_graylog_bad_target_is_config_error(changes: dict[str, object], error: str) -> None:
    """Upstream crashed with int('') on the default empty port."""
    with pytest.raises(ConfigError, match=re.escape(error)):
        setup_logging(opts(graylog=True, **changes), [])


# --- the GELF receiver itself -----------------------------------------------------------------


def _gelf(short: str) -> bytes:
    return json.dumps({"version": "1.1", "host": "h", "short_message": short}).encode()


def test_receiver_decodes_plain_zlib_gzip_and_out_of_order_chunks() -> None:
    with GelfReceiver("udp") as receiver:
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        target = ("127.0.0.1", receiver.port)
        sender.sendto(_gelf("plain"), target)
        sender.sendto(zlib.compress(_gelf("zlib")), target)
        sender.sendto(gzip.compress(_gelf("gzip")), target)
        body = gzip.compress(_gelf("chunked " + "y" * 3000))
        parts = [body[i : i + 500] for i in range(0, len(body), 500)]
        header = b"\x1e\x0f" + struct.pack("Q", 42)
        for seq in reversed(range(len(parts))):
            sender.sendto(header + bytes([seq, len(parts)]) + parts[seq], target)
        sender.sendto(b"not gelf", target)
        sender.close()
        receiver.wait_for(lambda m: m["short_message"].startswith("chunked"))
        shorts = [m["short_message"][:7] for m in receiver.messages()]
        errors = receiver.errors
    assert sorted(shorts) == ["chunked", "gzip", "plain", "zlib"]
    assert len(errors) == 1


def test_chunk_assembler_drops_incomplete_messages_after_timeout() -> None:
    now = [0.0]
    assembler = ChunkAssembler(clock=lambda: now[0])
    header = b"\x1e\x0f" + struct.pack("Q", 7)
    assert assembler.feed(header + bytes([0, 2]) + b"a") is None
    now[0] = 6.0
    assert assembler.feed(header + bytes([1, 2]) + b"b") is None  # first part expired
    assert assembler.feed(header + bytes([0, 2]) + b"a") == b"ab"
    with pytest.raises(ValueError, match=re.escape("out of range")):
        assembler.feed(header + bytes([3, 2]))


def test_decode_payload_rejects_non_gelf() -> None:
    with pytest.raises(ValueError, match=re.escape("lacks host, short_message")):
        decode_payload(b'{"version": "1.1"}')
    with pytest.raises(ValueError, match=re.escape("not an object")):
        decode_payload(b"[1]")


def test_librdkafka_lines_go_through_logging(
    capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """librdkafka printed its own '%3|...|FAIL|' lines to stderr, bypassing format and sinks."""
    options = KafkaOptions(bootstrap_servers="127.0.0.1:1", security_protocol="plaintext")
    source = KafkaSource(options, ServiceState())
    try:
        with caplog.at_level(logging.DEBUG, logger="scicat_ingestor.librdkafka"):
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not _librdkafka_records(caplog):
                source.poll(0.2)
    finally:
        source.close()
    records = _librdkafka_records(caplog)
    assert records, "no librdkafka line reached logging"
    assert all(r.levelno <= logging.WARNING for r in records)
    assert any("127.0.0.1:1" in r.getMessage() for r in records)
    assert not re.search(r"^%\d\|", capfd.readouterr().err, re.M)


def _librdkafka_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "scicat_ingestor.librdkafka"]


def test_the_ess_ingestors_next_form_sends_to_every_listed_gelf_target() -> None:
    """logging.graylog_enabled + logging.graylogs: [{host, port, facility}, ...] (several targets),
    beside upstream's graylog + graylog_host/port/facility."""
    with GelfReceiver("udp") as first, GelfReceiver("udp") as second, GelfReceiver("udp") as old:
        options = opts(
            graylog=True,
            graylog_host="127.0.0.1",
            graylog_port=old.port,
            graylog_enabled=True,
            graylogs=(
                {"host": "127.0.0.1", "port": first.port, "facility": "site-a"},
                {"host": "127.0.0.1", "port": str(second.port)},
            ),
        )
        setup_logging(options, [])
        log.warning("to everyone")
        got = [
            receiver.wait_for(lambda m: "to everyone" in m["short_message"])
            for receiver in (first, second, old)
        ]
    assert [m["facility"] for m in got] == ["site-a", "scicat.ingestor", "scicat.ingestor"]


@pytest.mark.parametrize(
    ("graylogs", "error"),
    [
        ((), "logging.graylogs: must list a target when graylog_enabled is true"),
        (({"port": 1},), "logging.graylogs[0].host: must be set"),
        (
            ({"host": "h", "port": 1}, {"host": "h", "port": "x"}),
            "logging.graylogs[1].port: must be a port",
        ),
        (({"host": "h", "port": 1, "prot": "tcp"},), "logging.graylogs[0]: unknown key 'prot'"),
    ],
)
def test_bad_graylogs_entries_are_one_line_naming_the_key(
    graylogs: tuple[dict[str, object], ...], error: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(error)):
        setup_logging(opts(graylog_enabled=True, graylogs=graylogs), [])
