"""Configuration: YAML file (ESS-ingestor compatible) → frozen, typed dataclasses.

Every key the ESS ingestor knows is accepted under the same name, so existing files load unchanged.
Unlike upstream, unknown keys at any depth and wrong types are errors that name the dotted key, and
defaults that crash upstream (``scicat.timeout: 0``) are replaced by working ones.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import logging.handlers
import os
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml

from scicat_ingestor.config.fieldtypes import (
    AtLeastOne,
    Bytes,
    Check,
    Count,
    Disallowed,
    FileSuffix,
    Host,
    HostPorts,
    Mismatch,
    PathText,
    Port,
    PositiveSeconds,
    Seconds,
    accept,
    describe,
    is_section,
    one_of,
    url_with_scheme,
)
from scicat_ingestor.config.redact import SECRET_MAPPINGS, is_secret_key, mask, masked_settings
from scicat_ingestor.config.redact import Secret as Secret  # noqa: PLC0414 - re-exported for importers

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration problem; ``str()`` is one line naming the file and the key at fault."""


# Hash algorithms usable as ``chkAlg``: variable-length digests (shake_*) need a length argument.
HASH_ALGORITHMS = tuple(
    sorted(a for a in hashlib.algorithms_guaranteed if not a.startswith("shake"))
)

# Allowed values of the keys that have a fixed set (librdkafka's, Python logging's, hashlib's).
HashAlgorithm = Annotated[str, one_of(*HASH_ALGORITHMS)]
SecurityProtocol = Annotated[
    str, one_of("plaintext", "ssl", "sasl_plaintext", "sasl_ssl", ignore_case=True, unset=True)
]
SaslMechanism = Annotated[
    str,
    one_of(
        "GSSAPI",
        "PLAIN",
        "SCRAM-SHA-256",
        "SCRAM-SHA-512",
        "OAUTHBEARER",
        ignore_case=True,
        unset=True,
    ),
]
OffsetReset = Annotated[
    str,
    one_of("earliest", "latest", "smallest", "largest", "beginning", "end", "error", unset=True),
]
LogLevel = Annotated[
    str, one_of("DEBUG", "INFO", "WARNING", "WARN", "ERROR", "CRITICAL", "FATAL", ignore_case=True)
]
SyslogFacility = Annotated[
    str, one_of(*logging.handlers.SysLogHandler.facility_names, ignore_case=True)
]
HttpUrl = Annotated[str, url_with_scheme("http", "https")]


# --------------------------------------------------------------------------------------------
# The model. Field names are the ESS ingestor's keys; new keys are marked "(new)" in the README.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetOptions:
    allow_dataset_pid: bool = True
    generate_dataset_pid: bool = False
    dataset_pid_prefix: str = "20.500.12269"
    default_instrument_id: str = "ID_OF_FALLBACK_INSTRUMENT"
    default_proposal_id: str = "DEFAULT_PROPOSAL_ID"
    default_owner_group: str = "DEFAULT_OWNER_GROUP"
    default_access_groups: tuple[str, ...] = ("ACCESS_GROUP_1",)


@dataclass(frozen=True)
class FileHandlingOptions:
    compute_file_stats: bool = True
    compute_file_hash: bool = True
    file_hash_algorithm: HashAlgorithm = "blake2b"
    save_file_hash: bool = True
    hash_file_extension: FileSuffix = "b2b"
    ingestor_files_directory: PathText = "../ingestor"
    message_to_file: bool = True
    message_file_extension: FileSuffix = "message.json"
    file_path_type: Literal["relative", "absolute"] = "relative"
    # One data root or a list of them: files outside every root are refused.
    data_directory: PathText | tuple[PathText, ...] = ""
    data_file_open_max_tries: Count = 3
    data_file_open_retry_delay: tuple[Seconds, ...] = ()
    # (new) largest NeXus dataset (bytes) a schema variable may read into memory.
    max_read_bytes: Bytes = 16 * 1024 * 1024
    # (new) chunk size for streaming checksums; large chunks keep hashing near raw hashlib speed.
    hash_chunk_bytes: Bytes = 4 * 1024 * 1024

    @property
    def data_roots(self) -> tuple[str, ...]:
        """Configured data roots as a tuple; empty means 'no restriction configured'."""
        if isinstance(self.data_directory, str):
            return (self.data_directory,) if self.data_directory else ()
        return tuple(d for d in self.data_directory if d)


@dataclass(frozen=True)
class DeadLetterOptions:
    """(new) Where messages that cannot be ingested go, with their reason."""

    topic: str = ""
    file: PathText = ""


@dataclass(frozen=True)
class ThumbnailOptions:
    """(new) A PNG of the file's NeXus default plot, attached to each new dataset.

    Off by default: it reads data (not only metadata) and adds two SciCat requests per file, and
    an upgrade from the ESS ingestor should not change what lands in the catalogue unasked.
    """

    enabled: bool = False
    # Most values read from disk for one picture (whole chunks count): bounds time and memory.
    max_points: AtLeastOne = 1_000_000


@dataclass(frozen=True)
class IngestionOptions:
    dry_run: bool = False
    # Accepted for compatibility; there are no subprocesses here.
    offline_ingestor_executable: tuple[str, ...] = ("scicat_background_ingestor",)
    # The number of worker threads (name kept for compatibility).
    max_offline_ingestors: AtLeastOne = 10
    # Accepted for compatibility; the poll loop never sleeps blindly.
    offline_ingestors_wait_time: Count = 10
    schemas_directory: PathText = "schemas"
    fallback_schema_file_path: PathText = ""
    check_if_dataset_exists_by_pid: bool = True
    check_if_dataset_exists_by_metadata: bool = True
    check_if_dataset_exists_by_metadata_key: str = "job_id"
    # (new) False: no metadata search when the pid is known before the POST (its 409 says it).
    check_if_dataset_exists_by_metadata_when_pid_known: bool = True
    file_handling: FileHandlingOptions = field(default_factory=FileHandlingOptions)
    # (new) messages queued beyond the busy workers before partitions are paused (~2 KB each);
    # large enough that workers stay fed while consumption pauses and resumes.
    queue_size: Count = 100
    # (new) SciCat-outage retry: first delay and cap of the exponential backoff.
    retry_initial_delay: PositiveSeconds = 1.0
    retry_max_delay: PositiveSeconds = 60.0
    # (new) seconds in-flight work may finish after SIGTERM or a partition revoke.
    drain_grace_period: Seconds = 30.0
    dead_letter: DeadLetterOptions = field(default_factory=DeadLetterOptions)
    thumbnail: ThumbnailOptions = field(default_factory=ThumbnailOptions)
    # (new) seconds between scans of the schema files for changes; 0 = reload on SIGHUP only.
    schema_reload_interval: float = 10.0
    # (new) create the run's sample from pl72 run-start messages, read at these NeXus paths.
    sample_ingestion: bool = False
    sample_name_path: str = "/entry/sample/name"
    sample_proposal_id_path: str = "/entry/experiment_identifier"
    # (new) what announces finished files: Kafka ``wrdn`` messages, or watched directories.
    trigger: Literal["kafka", "watch"] = "kafka"
    # (new) workers take turns running Python (ops/turns.py); false: they interleave under the GIL.
    worker_turns: bool = True
    # (new) a turn held this long without a pause is logged (WARNING) with the holder's stack.
    worker_turn_warn_seconds: PositiveSeconds = 0.25


DEFAULT_WATCH_PATTERNS = ("*.nxs", "*.h5", "*.hdf", "*.hdf5", "*.nx5")


@dataclass(frozen=True)
class WatchOptions:
    """(new) ``ingestion.trigger: watch``: directories whose finished files are ingested once."""

    directories: tuple[str, ...] = ()
    # Shell patterns matched against the file name (not the path).
    patterns: tuple[str, ...] = DEFAULT_WATCH_PATTERNS
    recursive: bool = True
    # A file is finished when closed after writing and unchanged for this long (and openable).
    settle_seconds: Seconds = 5.0
    # Seconds between full rescans: the safety net for lost inotify events and network mounts.
    rescan_interval: PositiveSeconds = 60.0
    # SQLite database of the file versions seen, ingested and dead-lettered (required).
    state_file: str = ""


@dataclass(frozen=True)
class KafkaOptions:
    topics: tuple[str, ...] = ("KAFKA_TOPIC_1", "KAFKA_TOPIC_2")
    group_id: str = "GROUP_ID"
    bootstrap_servers: HostPorts = "localhost:9093"
    security_protocol: SecurityProtocol = "sasl_ssl"
    sasl_mechanism: SaslMechanism = "SCRAM-SHA-256"
    sasl_username: str = "USERNAME"
    sasl_password: Secret = field(default_factory=Secret)
    ssl_ca_location: PathText = "FULL_PATH_TO_CERTIFICATE_FILE"
    # Accepted for compatibility: offsets are always committed after ingestion, never before.
    individual_message_commit: bool = True
    enable_auto_commit: bool = True
    auto_offset_reset: OffsetReset = "earliest"
    # (new) any further librdkafka consumer setting, passed through unchanged.
    consumer_config: Mapping[str, str | int | float | bool] = field(default_factory=dict)
    # (new) seconds between offset commits.
    commit_interval: PositiveSeconds = 1.0
    # (new) librdkafka group.instance.id (static membership): unique per daemon, stable across
    # restarts, e.g. the host name; empty = dynamic membership.
    group_instance_id: str = ""


@dataclass(frozen=True)
class LoggingOptions:
    verbose: bool = False
    file_log: bool = False
    file_log_base_name: PathText = "scicat_ingestor_log"
    file_log_timestamp: bool = False
    logging_level: LogLevel = "INFO"
    log_message_prefix: str = "SFI"
    system_log: bool = False
    system_log_facility: SyslogFacility = "mail"
    graylog: bool = False
    graylog_host: str = ""
    graylog_port: Port | str = ""
    graylog_facility: str = "scicat.ingestor"
    # (new) "text" or "json" (one JSON object per line) for stdout and the file log.
    log_format: Literal["text", "json"] = "text"
    # (new) rotate the file log at this size (0 = never) keeping this many old files.
    file_log_max_bytes: Count = 50 * 1024 * 1024
    file_log_backup_count: Count = 5
    # (new) syslog socket path or host:port, and Graylog transport.
    system_log_address: str = "/dev/log"
    graylog_protocol: Literal["udp", "tcp"] = "udp"
    # (the ESS ingestor's next form, accepted beside the one above) several GELF targets,
    # each {host, port, facility}; facility defaults to graylog_facility.
    graylog_enabled: bool = False
    graylogs: tuple[Mapping[str, str | int], ...] = ()


@dataclass(frozen=True)
class ApiEndpoints:
    datasets: str = "datasets"
    proposals: str = "proposals"
    origdatablocks: str = "origdatablocks"
    instruments: str = "instruments"
    samples: str = "samples"


DEFAULT_SCICAT_TIMEOUT = 30.0
# SciCat's API version for datasets, origdatablocks and attachments (everything else is v3).
ApiVersionSetting = Literal["auto"] | Annotated[int, Check("3 or 4", lambda v: v in (3, 4), "3|4")]


@dataclass(frozen=True)
class SciCatOptions:
    host: HttpUrl = "https://scicat.host"
    token: Secret = field(default_factory=Secret)
    additional_headers: Mapping[str, str] = field(default_factory=dict)
    # Seconds; 0 or null (which break upstream) mean the default.
    timeout: Seconds | None = DEFAULT_SCICAT_TIMEOUT
    stream: bool = True
    verify: bool = True
    health_endpoint: str = "health"
    api_endpoints: ApiEndpoints = field(default_factory=ApiEndpoints)
    # (new) functional-account login, used when no token is given.
    username: str = ""
    password: Secret = field(default_factory=Secret)
    # (new) a file holding the static token (a mounted secret); re-read when SciCat refuses the
    # token or the file changes, so the token can be rotated without a restart.
    token_file: str = ""
    # (new) HTTP retries on connection errors, timeouts, 429 and 5xx.
    max_retries: Count = 3
    backoff_factor: Seconds = 0.5
    # (new) seconds a schema's SC lookup answer (proposal, instrument) is reused; 0 = never.
    lookup_cache_seconds: Seconds = 10.0
    # (new) 3, 4, or auto: v4 when SciCat serves /api/v4/datasets (asked once at start).
    api_version: ApiVersionSetting = "auto"
    # (new) the SciCat web frontend; the status page links each dataset there when set.
    frontend_url: HttpUrl | None = None

    @property
    def effective_timeout(self) -> float:
        """The request timeout actually used: never 0 or None."""
        return self.timeout if self.timeout else DEFAULT_SCICAT_TIMEOUT


@dataclass(frozen=True)
class HealthCheckOptions:
    host: Host = "127.0.0.1"
    port: Port = 8080
    # (new) false disables the HTTP endpoint.
    enabled: bool = True
    # (new) /health fails when the poll loop has not polled for this many seconds.
    liveness_timeout: PositiveSeconds = 60.0


@dataclass(frozen=True)
class IngestorConfig:
    """The whole configuration (the union of the ESS online and offline options)."""

    nexus_file: str = ""
    done_writing_message_file: str = ""
    run_start_message_file: str = ""
    config_file: str = ""
    id: str = ""
    dataset: DatasetOptions = field(default_factory=DatasetOptions)
    ingestion: IngestionOptions = field(default_factory=IngestionOptions)
    kafka: KafkaOptions = field(default_factory=KafkaOptions)
    logging: LoggingOptions = field(default_factory=LoggingOptions)
    scicat: SciCatOptions = field(default_factory=SciCatOptions)
    health_check: HealthCheckOptions = field(default_factory=HealthCheckOptions)
    watch: WatchOptions = field(default_factory=WatchOptions)


# Secrets that may come from the environment instead of the file (documented in the README).
SECRET_ENV_VARS: dict[str, tuple[str, ...]] = {
    "SCICAT_TOKEN": ("scicat", "token"),
    "SCICAT_USERNAME": ("scicat", "username"),
    "SCICAT_PASSWORD": ("scicat", "password"),
    "KAFKA_SASL_USERNAME": ("kafka", "sasl_username"),
    "KAFKA_SASL_PASSWORD": ("kafka", "sasl_password"),
}

# Keys whose comma-separated string form is split into a list (as upstream does, but stripped).
_COMMA_LISTS = {"kafka.topics"}


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML (or legacy JSON) config file into a dict; one-line errors for every failure."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{p}: config file not found") from None
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read config file: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: not UTF-8 text (byte {exc.start})") from None
    try:
        data = yaml.safe_load(text)
    except RecursionError:
        raise ConfigError(f"{p}: invalid YAML: nested too deeply") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{p}: invalid YAML{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the top level must be a mapping, found {type(data).__name__}")
    return data


def load_config(
    path: str | Path | None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> IngestorConfig:
    """Load a config file, apply environment secrets and dotted overrides, validate, build.

    Precedence (highest first): dotted ``overrides`` (the command line), environment secrets, file.
    """
    data = _merged(read_config_file(path) if path is not None else {}, path, overrides, environ)
    return build(IngestorConfig, data, str(path) if path is not None else "<defaults>")


def check_config(
    path: str | Path, environ: Mapping[str, str] | None = None, offline: bool = False
) -> tuple[IngestorConfig | None, list[str]]:
    """``validate-config``: the config and *every* problem of the file, one line each.

    Beyond ``load_config``: an empty file is a problem (every key would be a placeholder
    default), and unless ``offline``, so are paths that must exist and do not (``path_problems``;
    checked once the file itself is valid, so a typo does not bury the lines under path noise).
    """
    try:
        raw = read_config_file(path)
    except ConfigError as exc:
        return None, [str(exc)]
    if not raw:
        return None, [f"{path}: empty config file (every key would be its placeholder default)"]
    errors: list[str] = []
    config = build(IngestorConfig, _merged(raw, path, None, environ), str(path), errors=errors)
    if not errors and not offline:
        errors = path_problems(config, str(path))
    return (None if errors else config), errors


def _merged(
    data: dict[str, Any],
    path: str | Path | None,
    overrides: Mapping[str, Any] | None,
    environ: Mapping[str, str] | None,
) -> dict[str, Any]:
    env = os.environ if environ is None else environ
    for var, dotted in SECRET_ENV_VARS.items():
        if env.get(var):
            _set_dotted(data, dotted, env[var])
    for key, value in (overrides or {}).items():
        _set_dotted(data, tuple(key.split(".")), value)
    if path is not None:
        data["config_file"] = str(path)
    return data


# Schema file names (as schema.loader.SUFFIXES; the loader imports config, not the reverse).
_SCHEMA_SUFFIXES = (".imsc.yml", ".imsc.yaml", ".imsc.json")
_PACKAGED_FALLBACK = "ess-fallback"


def path_problems(config: IngestorConfig, source: str) -> list[str]:
    """Paths the configuration needs that do not exist (relative ones from the working directory).

    Checked here rather than at first use: a missing schemas directory or CA file otherwise shows
    up as every file dead-lettered, or as a broker that "cannot be reached".
    """
    ingestion = config.ingestion
    problems = [f"{source}: {p}" for p in _schema_problems(ingestion)]
    for root in ingestion.file_handling.data_roots:
        if not Path(root).is_dir():
            problems.append(
                f"{source}: 'ingestion.file_handling.data_directory': {root}: no such directory"
            )
    kafka = config.kafka
    uses_kafka = ingestion.trigger == "kafka"
    uses_tls = uses_kafka and "ssl" in kafka.security_protocol.lower()
    if uses_tls and kafka.ssl_ca_location and not Path(kafka.ssl_ca_location).is_file():
        problems.append(f"{source}: 'kafka.ssl_ca_location': {kafka.ssl_ca_location}: no such file")
    if config.scicat.token_file and not Path(config.scicat.token_file).is_file():
        problems.append(f"{source}: 'scicat.token_file': {config.scicat.token_file}: no such file")
    return problems


def _schema_problems(ingestion: IngestionOptions) -> list[str]:
    directory = Path(ingestion.schemas_directory)
    fallback = ingestion.fallback_schema_file_path
    problems = []
    if fallback and fallback != _PACKAGED_FALLBACK and not Path(fallback).is_file():
        problems.append(f"'ingestion.fallback_schema_file_path': {fallback}: no such file")
    if not directory.is_dir():
        problems.append(f"'ingestion.schemas_directory': {directory}: no such directory")
    elif not fallback and not any(
        p.name.endswith(_SCHEMA_SUFFIXES) for p in directory.iterdir() if p.is_file()
    ):
        suffixes = ", ".join(f"*{s}" for s in _SCHEMA_SUFFIXES)
        problems.append(
            f"'ingestion.schemas_directory': {directory}: no schema files ({suffixes}) and no "
            "'ingestion.fallback_schema_file_path': every file would be dead-lettered"
        )
    return problems


def _set_dotted(data: dict[str, Any], keys: Sequence[str], value: Any) -> None:
    node = data
    for key in keys[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child
    node[keys[-1]] = value


def build(
    cls: type[T], data: Any, source: str, prefix: str = "", errors: list[str] | None = None
) -> T:
    """Build dataclass ``cls`` from ``data``, rejecting unknown keys and wrong types.

    Raises ConfigError at the first problem, unless ``errors`` is given: then every problem is
    appended to it (a bad key keeps its default) so one run can report them all.
    """
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        return _fail(
            errors,
            f"{source}: '{prefix.rstrip('.') or '<top level>'}' must be a mapping, "
            f"found {_describe(data)}",
            cls,
        )
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if key not in fields:
            _fail(errors, _unknown_key_message(source, dotted, str(key), list(fields)), None)
            continue
        try:
            kwargs[key] = _convert(hints[key], value, source, dotted, errors)
        except ConfigError as exc:
            if errors is None:
                raise
            errors.append(str(exc))
    return cls(**kwargs)


def _fail(errors: list[str] | None, message: str, cls: type[T] | None) -> T:
    """Raise ``message``, or record it and go on with ``cls``'s defaults (collecting mode)."""
    if errors is None:
        raise ConfigError(message)
    errors.append(message)
    return cls() if cls is not None else None  # type: ignore[return-value]


def _unknown_key_message(source: str, dotted: str, key: str, valid: list[str]) -> str:
    near = difflib.get_close_matches(key, valid, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(near)}?" if near else f"; valid keys: {', '.join(valid)}"
    return f"{source}: unknown key '{dotted}'{hint}"


def _describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


def _convert(tp: Any, value: Any, source: str, dotted: str, errors: list[str] | None = None) -> Any:
    """Check ``value`` against annotation ``tp`` (type, then allowed values) and convert it."""
    if is_section(tp):
        return build(tp, value, source, dotted + ".", errors)
    if dotted in _COMMA_LISTS and isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    try:
        return accept(tp, value)
    except Mismatch:
        raise ConfigError(
            f"{source}: '{dotted}' must be {describe(tp)}, found {_describe(value)}"
        ) from None
    except Disallowed as exc:
        raise ConfigError(
            f"{source}: '{dotted}' must be {exc.allowed}, found {exc.value!r}"
        ) from None


# --------------------------------------------------------------------------------------------
# Printing (secrets masked)
# --------------------------------------------------------------------------------------------


def to_dict(obj: Any, mask_secrets: bool = True, name: str = "") -> Any:
    """Plain-data view of a config object; secrets become '****' unless ``mask_secrets`` is off.

    Secrets are ``Secret`` fields, every value of ``additional_headers`` and, in other mappings
    (``consumer_config``), the values of secret-named keys (``sasl.password``).
    """
    if isinstance(obj, Secret):
        return mask(obj) if mask_secrets else obj.value
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {
            f.name: to_dict(getattr(obj, f.name), mask_secrets, f.name)
            for f in dataclasses.fields(obj)
        }
    if isinstance(obj, tuple | list):
        return [to_dict(v, mask_secrets) for v in obj]
    if isinstance(obj, Mapping):
        plain = {k: to_dict(v, mask_secrets, str(k)) for k, v in obj.items()}
        return masked_settings(plain, name in SECRET_MAPPINGS) if mask_secrets else plain
    return obj


def dump_yaml(config: IngestorConfig) -> str:
    """The effective configuration as YAML, secrets masked."""
    return yaml.safe_dump(to_dict(config), sort_keys=False)


def secret_values(config: IngestorConfig) -> list[str]:
    """Every non-empty secret in the config (used by the log filter that redacts them)."""
    found: list[str] = []

    def walk(obj: Any, name: str = "") -> None:
        if isinstance(obj, Secret):
            if obj.value:
                found.append(obj.value)
        elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            for f in dataclasses.fields(obj):
                walk(getattr(obj, f.name), f.name)
        elif isinstance(obj, Mapping):
            found.extend(
                str(v)
                for k, v in obj.items()
                if (name in SECRET_MAPPINGS or is_secret_key(str(k))) and v != ""
            )

    walk(config)
    return found


def iter_leaf_fields(
    cls: type[Any] = IngestorConfig, prefix: str = ""
) -> typing.Iterator[tuple[str, Any, Any]]:
    """Yield (dotted key, type annotation, default) for every scalar/list config key."""
    hints = typing.get_type_hints(cls, include_extras=True)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        dotted = f"{prefix}{f.name}"
        if is_section(tp):
            yield from iter_leaf_fields(tp, dotted + ".")
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = None
        yield dotted, tp, default


def config_warnings(config: IngestorConfig) -> list[str]:
    """Settings that load but do something an operator should know about (logged at start)."""
    warnings: list[str] = []
    if not config.scicat.verify:
        warnings.append(
            "scicat.verify is false: TLS certificates of SciCat are NOT verified "
            "(the ESS ingestor always verified them; set scicat.verify: true)"
        )
    if not config.scicat.timeout:
        warnings.append(
            f"scicat.timeout is {config.scicat.timeout!r}, which would disable or break requests; "
            f"using {DEFAULT_SCICAT_TIMEOUT:g} s"
        )
    if config.kafka.enable_auto_commit and not config.kafka.individual_message_commit:
        warnings.append(
            "kafka.enable_auto_commit is ignored: offsets are committed only after ingestion"
        )
    fh = config.ingestion.file_handling
    if fh.save_file_hash and not fh.compute_file_hash:
        warnings.append(
            "ingestion.file_handling.save_file_hash needs compute_file_hash: no hash file written"
        )
    return warnings
