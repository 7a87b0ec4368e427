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
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from scicat_ingestor.config import ConfigError, LoggingOptions
from scicat_ingestor.logcontext import log_context
from scicat_ingestor.ops.logs import log_file_name, reset_logging, setup_logging
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
