"""Logging per the ``logging.*`` keys: stdout (text or JSON lines), file, syslog and Graylog (GELF).

Every handler carries two filters: ``ContextFilter`` (job id, file, dataset pid, outcome of the
file being worked on) and a redaction filter that replaces every secret with ``****`` in the
message, its arguments, exception tracebacks and extra fields *before* any sink formats the record,
so no sink can leak a token or password whatever is logged and at whatever level. Text lines escape
line breaks in messages and context (``\\n``), so untrusted file names cannot forge log lines.

Differences from the ESS ingestor (spec §7), all deliberate:
- stdout is always on (upstream printed nothing without ``verbose``); ``verbose`` makes stdout show
  DEBUG with file:line (upstream used Rich for this; we do not depend on Rich);
- the file log appends and rotates (upstream truncated it at every start); the name stays upstream's
  ``<base>[_<UTC timestamp>]_.log`` so existing log shippers still find it;
- ``system_log_facility`` is honoured and the syslog address is configurable;
- an empty or non-numeric ``graylog_port`` is a one-line configuration error, not a crash; GELF can
  also go over TCP, and the context fields become GELF additional fields (``_job_id``, ...);
- the ESS ingestor's next form (``graylog_enabled`` + ``graylogs: [{host, port, facility}]``) is
  accepted beside the old one, and every listed target gets every record;
- text timestamps are ISO 8601 with the zone offset; the same warning repeated within a minute is
  held back and shown once a minute as "still: ... (N more times)";
- librdkafka's own lines come through the ``scicat_ingestor.librdkafka`` logger
  (``sources/kafka.py``).
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import logging.handlers
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import graypy

from scicat_ingestor.config.model import ConfigError, LoggingOptions
from scicat_ingestor.config.redact import Redactor
from scicat_ingestor.ops.logcontext import CONTEXT_FIELDS, ContextFilter

PACKAGE_LOGGER = "scicat_ingestor"

# Attributes every LogRecord has; anything else on a record is an ``extra=`` or context field.
_STANDARD_ATTRS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
_REDACTED_MARK = "_secrets_redacted"

_installed: list[logging.Handler] = []


# ------------------------------------------------------------------------------------------------
# Redaction
# ------------------------------------------------------------------------------------------------


class SecretRedactor(logging.Filter):
    """Replaces secrets with ``****`` on the record itself, so every later sink sees it redacted."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets = Redactor()
        self._formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets or getattr(record, _REDACTED_MARK, False):
            return True
        try:
            message = record.getMessage()
        except (TypeError, ValueError) as exc:  # a bad %-format call must not leak or crash
            message = f"{record.msg!r} (log arguments could not be formatted: {exc})"
        record.msg, record.args = self.secrets.redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.secrets.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.secrets.redact(record.stack_info)
        for key, value in list(vars(record).items()):
            if key not in _STANDARD_ATTRS and isinstance(value, str):
                setattr(record, key, self.secrets.redact(value))
        setattr(record, _REDACTED_MARK, True)
        return True


_REDACTOR = SecretRedactor()


def redact_secrets(text: str) -> str:
    """``text`` with every known secret replaced, for output that is no log record (dead
    letters): a reason quoting a request may carry a header value or token."""
    return _REDACTOR.secrets.redact(text)


def add_secret(value: str) -> None:
    """Redact a secret learnt at run time (e.g. the token SciCat returns at login) from now on."""
    _REDACTOR.secrets.add_secret(value)


# ------------------------------------------------------------------------------------------------
# Repeats
# ------------------------------------------------------------------------------------------------

REPEAT_WINDOW = 60.0
_REPEAT_VERDICT = "_repeat_verdict"


class RepeatLimiter(logging.Filter):
    """The same warning again within a minute is held back, then shown once with a count.

    An outage makes periodic checks (the health probe, every 5 s) warn the same line over and
    over; after the first line, one "still: ..." line a minute says it goes on and how often.
    Lines naming different files differ, so per-file warnings are never held back. Runs after
    redaction; one verdict per record, shared by all sinks.
    """

    def __init__(self, window: float = REPEAT_WINDOW, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self.window = window
        self._clock = clock
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, int, str], list[float]] = {}  # key → [shown at, held back]

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        verdict = getattr(record, _REPEAT_VERDICT, None)
        if verdict is None:
            verdict = self._decide(record)
            setattr(record, _REPEAT_VERDICT, verdict)
        return bool(verdict)

    def _decide(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.levelno, record.getMessage())
        now = self._clock()
        with self._lock:
            seen = self._seen.get(key)
            if seen is None or (now - seen[0] >= self.window and not seen[1]):
                self._prune(now)
                self._seen[key] = [now, 0]
                return True
            if now - seen[0] < self.window:
                seen[1] += 1
                return False
            held, seen[0], seen[1] = int(seen[1]), now, 0
        record.msg = f"still: {key[2]} ({held + 1} more times)"
        record.args = None
        return True

    def clear(self) -> None:
        with self._lock:
            self._seen.clear()

    def _prune(self, now: float) -> None:
        if len(self._seen) > 1000:
            stale = [k for k, (at, _) in self._seen.items() if now - at >= 2 * self.window]
            for k in stale:
                del self._seen[k]


_REPEATS = RepeatLimiter()


# ------------------------------------------------------------------------------------------------
# Formatters
# ------------------------------------------------------------------------------------------------


# Every character str.splitlines() breaks at, shown escaped in text lines.
_LINE_BREAKS = str.maketrans(
    {c: ascii(c)[1:-1] for c in "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"}
)


def _context_of(record: logging.LogRecord) -> dict[str, str]:
    return {name: str(v) for name in CONTEXT_FIELDS if (v := getattr(record, name, ""))}


class TextFormatter(logging.Formatter):
    """Upstream's ``<prefix> - time - logger - LEVEL - message`` plus ``[job_id=... file=...]``.

    The time is ISO 8601 with the zone offset (upstream's had no zone); context fields the
    message already states (the file, the dataset pid) are not repeated in the brackets.
    """

    def __init__(self, prefix: str, verbose: bool = False) -> None:
        where = " (%(filename)s:%(lineno)d)" if verbose else ""
        escaped = prefix.replace("%", "%%")
        super().__init__(f"{escaped} - %(asctime)s - %(name)s - %(levelname)s - %(message)s{where}")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        local = dt.datetime.fromtimestamp(record.created).astimezone()
        return local.isoformat(timespec="milliseconds")

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - stdlib name
        text = super().formatMessage(record)
        context = {k: v for k, v in _context_of(record).items() if v not in record.message}
        if context:
            text += " [" + " ".join(f"{k}={v}" for k, v in context.items()) + "]"
        # One record, one line (tracebacks follow on their own lines): a file name or job id
        # containing a newline cannot forge log lines.
        return text.translate(_LINE_BREAKS)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC ISO 8601), level, logger, message, context and extras."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def format(self, record: logging.LogRecord) -> str:
        created = dt.datetime.fromtimestamp(record.created, tz=dt.UTC)
        entry: dict[str, Any] = {
            "time": created.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "prefix": self.prefix,
            "message": record.getMessage(),
        }
        entry.update(_context_of(record))
        for key, value in vars(record).items():
            extra = key not in _STANDARD_ATTRS and key not in CONTEXT_FIELDS
            if extra and key not in entry and not key.startswith("_"):
                entry[key] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        return json.dumps(entry, default=str, ensure_ascii=False)


# ------------------------------------------------------------------------------------------------
# Handlers
# ------------------------------------------------------------------------------------------------


class StdoutHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stdout`` is at emit time (survives stdout being replaced)."""

    def __init__(self) -> None:
        super().__init__(sys.stdout)

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stdout  # called with the handler lock held
        super().emit(record)


class _ContextFieldsOnly:
    """GELF additional fields: the context and ``extra=`` fields, without the empty ones."""

    @staticmethod
    def _add_extra_fields(gelf_dict: dict[str, Any], record: logging.LogRecord) -> None:
        for key, value in vars(record).items():
            if key in _STANDARD_ATTRS or key.startswith("_") or key == "id":
                continue
            if value is None or value == "":
                continue
            gelf_dict[f"_{key}"] = value


class GelfUdpHandler(_ContextFieldsOnly, graypy.GELFUDPHandler):  # type: ignore[misc]
    """GELF over UDP (zlib-compressed, chunked above 1420 bytes)."""


class GelfTcpHandler(_ContextFieldsOnly, graypy.GELFTCPHandler):  # type: ignore[misc]
    """GELF over TCP (NUL-framed; GELF TCP does not allow compression)."""


def log_file_name(options: LoggingOptions, now: dt.datetime | None = None) -> str:
    """Upstream's name: ``"_".join([base, <UTC %Y%m%d%H%M%S%f if file_log_timestamp>, ".log"])``."""
    parts = [options.file_log_base_name]
    if options.file_log_timestamp:
        parts.append((now or dt.datetime.now(dt.UTC)).strftime("%Y%m%d%H%M%S%f"))
    parts.append(".log")
    return "_".join(parts)


def parse_level(name: str) -> int:
    """'info' / 'DEBUG' ... → logging level; ConfigError naming the key otherwise."""
    level = logging.getLevelNamesMapping().get(name.strip().upper())
    if level is None:
        valid = ", ".join(["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"])
        raise ConfigError(f"logging.logging_level: unknown level {name!r}; use one of {valid}")
    return level


def parse_syslog_address(text: str) -> str | tuple[str, int]:
    """A socket path (contains '/') or ``host:port`` (UDP) → the SysLogHandler address."""
    if "/" in text:
        return text
    host, sep, port = text.rpartition(":")
    if sep and host and port.isdigit() and 0 < int(port) < 65536:
        return host.strip("[]"), int(port)
    raise ConfigError(
        f"logging.system_log_address: {text!r} is neither a socket path nor host:port"
    )


def parse_facility(name: str) -> int:
    facilities = logging.handlers.SysLogHandler.facility_names
    if name.lower() not in facilities:
        raise ConfigError(
            f"logging.system_log_facility: unknown facility {name!r}; "
            f"use one of {', '.join(sorted(facilities))}"
        )
    return facilities[name.lower()]


@dataclass(frozen=True)
class GelfTarget:
    host: str
    port: int
    facility: str


_GELF_KEYS = ("host", "port", "facility")


def graylog_targets(options: LoggingOptions) -> list[GelfTarget]:
    """Every GELF target: upstream's ``graylog`` + ``graylog_host/port/facility`` and the ESS
    ingestor's next form, ``graylog_enabled`` + ``graylogs: [{host, port, facility}, ...]``.

    Raises ConfigError naming the key (``logging.graylogs[1].port``) for an unusable entry.
    """
    targets = []
    if options.graylog:
        host, port = parse_graylog_target(options)
        targets.append(GelfTarget(host, port, options.graylog_facility))
    if options.graylog_enabled:
        if not options.graylogs:
            raise ConfigError("logging.graylogs: must list a target when graylog_enabled is true")
        for index, entry in enumerate(options.graylogs):
            targets.append(_gelf_entry(f"logging.graylogs[{index}]", entry, options))
    return targets


def _gelf_entry(key: str, entry: Mapping[str, Any], options: LoggingOptions) -> GelfTarget:
    unknown = sorted(set(entry) - set(_GELF_KEYS))
    if unknown:
        raise ConfigError(f"{key}: unknown key {unknown[0]!r}; valid keys: {', '.join(_GELF_KEYS)}")
    host = str(entry.get("host", "")).strip()
    if not host:
        raise ConfigError(f"{key}.host: must be set")
    port = _port(entry.get("port", ""))
    if port is None:
        raise ConfigError(f"{key}.port: must be a port number, found {entry.get('port')!r}")
    return GelfTarget(host, port, str(entry.get("facility", options.graylog_facility)))


def _port(value: object) -> int | None:
    text = str(value).strip()
    return int(text) if text.isdigit() and 0 < int(text) < 65536 else None


def parse_graylog_target(options: LoggingOptions) -> tuple[str, int]:
    host = options.graylog_host.strip()
    if not host:
        raise ConfigError("logging.graylog_host: must be set when logging.graylog is true")
    port = _port(options.graylog_port)
    if port is None:
        raise ConfigError(
            f"logging.graylog_port: must be a port number when logging.graylog is true, "
            f"found {options.graylog_port!r}"
        )
    return host, port


def _file_handler(options: LoggingOptions) -> logging.Handler:
    name = log_file_name(options)
    # backupCount 0 would make the stdlib reopen the file at every record once it is full.
    max_bytes = options.file_log_max_bytes if options.file_log_backup_count > 0 else 0
    try:
        return logging.handlers.RotatingFileHandler(
            name,
            mode="a",
            maxBytes=max_bytes,
            backupCount=options.file_log_backup_count,
            encoding="utf-8",
        )
    except OSError as exc:
        raise ConfigError(
            f"logging.file_log_base_name: cannot open log file {name}: {exc.strerror or exc}"
        ) from None


def _syslog_handler(options: LoggingOptions) -> logging.Handler:
    address = parse_syslog_address(options.system_log_address)
    facility = parse_facility(options.system_log_facility)
    try:
        if isinstance(address, str):
            _probe_unix_socket(address)
        return logging.handlers.SysLogHandler(address=address, facility=facility)
    except OSError as exc:
        raise ConfigError(
            f"logging.system_log_address: cannot reach syslog at {options.system_log_address}: "
            f"{exc.strerror or exc}"
        ) from None


def _probe_unix_socket(path: str) -> None:
    """Raise OSError unless a syslog daemon listens at ``path``.

    The stdlib handler ignores a missing socket at start and then prints a traceback for every
    record; a wrong path is a configuration mistake better reported once, at start.
    """
    errors: list[OSError] = []
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_UNIX, kind) as sock:
            try:
                sock.connect(path)
            except OSError as exc:
                errors.append(exc)
                continue
            return
    raise errors[0]


def _graylog_handler(options: LoggingOptions, target: GelfTarget) -> logging.Handler:
    cls = GelfTcpHandler if options.graylog_protocol == "tcp" else GelfUdpHandler
    handler: logging.Handler = cls(target.host, target.port, facility=target.facility)
    return handler


def build_handlers(options: LoggingOptions) -> list[logging.Handler]:
    """The configured sinks, formatted but without filters or levels (see ``setup_logging``).

    All or nothing: when one sink cannot be opened, the ones already opened are closed.
    """
    text = TextFormatter(options.log_message_prefix)
    main = JsonFormatter(options.log_message_prefix) if options.log_format == "json" else text
    stdout = StdoutHandler()
    stdout.setFormatter(
        main
        if options.log_format == "json"
        else TextFormatter(options.log_message_prefix, verbose=options.verbose)
    )
    handlers: list[logging.Handler] = [stdout]
    sinks: list[tuple[Callable[[], logging.Handler], logging.Formatter]] = []
    if options.file_log:
        sinks.append((lambda: _file_handler(options), main))
    if options.system_log:
        sinks.append((lambda: _syslog_handler(options), text))
    for target in graylog_targets(options):
        sinks.append((functools.partial(_graylog_handler, options, target), text))
    try:
        for make, formatter in sinks:
            handlers.append(make())
            handlers[-1].setFormatter(formatter)
    except BaseException:
        for handler in handlers:
            handler.close()
        raise
    return handlers


def setup_logging(options: LoggingOptions, secrets: Sequence[str]) -> None:
    """Configure the ``scicat_ingestor`` logger; calling it again replaces the previous setup.

    Raises ConfigError (one line naming the key) for an unknown level or facility, an empty Graylog
    host or port, or a log file / syslog socket that cannot be opened.
    """
    level = parse_level(options.logging_level)
    new_handlers = build_handlers(options)
    _REDACTOR.secrets.set_secrets(secrets)
    reset_logging()
    logger = logging.getLogger(PACKAGE_LOGGER)
    stdout_level = logging.DEBUG if options.verbose else level
    for handler in new_handlers:
        handler.setLevel(stdout_level if isinstance(handler, StdoutHandler) else level)
        handler.addFilter(ContextFilter())
        handler.addFilter(_REDACTOR)
        handler.addFilter(_REPEATS)
        logger.addHandler(handler)
        _installed.append(handler)
    logger.setLevel(min(level, stdout_level))
    # Our handlers are the whole output: a root handler added by a library must not duplicate
    # (unredacted) what we log.
    logger.propagate = False


def reset_logging() -> None:
    """Remove and close the handlers ``setup_logging`` installed (tests, re-configuration)."""
    logger = logging.getLogger(PACKAGE_LOGGER)
    _REPEATS.clear()
    while _installed:
        handler = _installed.pop()
        logger.removeHandler(handler)
        handler.close()
    logger.propagate = True
    logger.setLevel(logging.NOTSET)
