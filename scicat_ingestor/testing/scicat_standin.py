"""A SciCat v3 backend stand-in: an in-memory HTTP server for tests, the demo and the benchmark.

It serves the endpoints the ingestor uses under ``/api/v3`` and validates every request body
against the schemas of the real backend's OpenAPI document (``data/openapi.json``), the way the
real backend's class-validator setup does: unknown properties are refused ("property X should not
exist"), optional properties may be null, ``date-time`` and ``email`` formats are checked.

Faults can be injected from Python or, for a stand-in in another process, over HTTP under
``/_standin/...`` (see :class:`SciCatStandIn`). Run it on its own with
``python -m scicat_ingestor.testing.scicat_standin [--port P] [--token T]``.

Authentication and permissions answer like the real backend (scicat-backend-next 4.5.0, recorded
in ``tests/data/scicat-real-backend-behaviour.md``): a missing, garbage or expired token gets 403
(never 401), a search 200 ``[]``; accounts may create without reading other groups' datasets;
idle keep-alive connections are closed after ``idle_timeout`` seconds.

Latency matters because the benchmark measures through it: HTTP/1.1 keep-alive, ``TCP_NODELAY``,
each response written with a single ``sendall``, no per-request logging, validators compiled once.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import http
import json
import logging
import re
import secrets
import signal
import socket
import socketserver
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, cast
from urllib.parse import parse_qs, unquote, urlsplit

import jsonschema

logger = logging.getLogger("scicat_ingestor.testing.scicat_standin")

BASE_PATH = "/api/v3"
CONTROL_PATH = "/_standin"
OPENAPI_PATH = Path(__file__).with_name("data") / "openapi.json"
DEFAULT_TOKEN = "standin-token"
STATIC_TOKEN_USER = "ingestor"  # the account the static token belongs to
PID_PREFIX = "20.500.12269"
MAX_BODY_BYTES = 16 * 1024 * 1024  # the real backend's body-parser limit ("16mb")
REQUEST_LOG_SIZE = 10_000
TOKEN_TTL_SECONDS = 3600  # the backend's default JWT_EXPIRES_IN
IDLE_TIMEOUT_SECONDS = 5.0  # the backend's (Node's) keep-alive timeout

# OpenAPI schema names the stand-in validates request bodies against.
DTO_RAW_DATASET = "CreateRawDatasetObsoleteDto"
DTO_DERIVED_DATASET = "CreateDerivedDatasetObsoleteDto"
DTO_ORIGDATABLOCK = "CreateOrigDatablockDto"
DTO_SAMPLE = "CreateSampleDto"
DTO_CREDENTIALS = "CredentialsDto"
DTO_ATTACHMENT = "CreateAttachmentV3Dto"
VALIDATED_DTOS = (
    DTO_RAW_DATASET,
    DTO_DERIVED_DATASET,
    DTO_ORIGDATABLOCK,
    DTO_SAMPLE,
    DTO_CREDENTIALS,
    DTO_ATTACHMENT,
)

JSONDict = dict[str, Any]


@dataclass(frozen=True)
class Account:
    """A functional account. ``admin``: in ADMIN_GROUPS (reads everything); ``may_create``: in
    CREATE_DATASET_PRIVILEGED_GROUPS (creates datasets and origdatablocks of any group, but reads
    only datasets of its own ``groups``, like the real backend)."""

    password: str
    groups: tuple[str, ...] = ()
    admin: bool = True
    may_create: bool = True

    def may_read(self, document: Mapping[str, Any]) -> bool:
        """Whether this account may read a dataset or proposal with these groups."""
        if self.admin or document.get("isPublished") is True:
            return True
        groups = {document.get("ownerGroup"), *(document.get("accessGroups") or ())}
        return not groups.isdisjoint(self.groups)


DEFAULT_ACCOUNTS: Mapping[str, Account] = {"ingestor": Account("pwd"), "admin": Account("pwd")}


def _seed_id(name: str) -> str:
    """A stable id, so a seeded instrument has the same id in every run."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"scicat-standin/{name}"))


SEED_INSTRUMENTS: tuple[Mapping[str, str], ...] = (
    {"pid": _seed_id("instrument/odin"), "name": "odin", "uniqueName": "ODIN"},
    {"pid": _seed_id("instrument/ymir"), "name": "ymir", "uniqueName": "YMIR"},
    {"pid": _seed_id("instrument/coda"), "name": "coda", "uniqueName": "CODA"},
)

SEED_PROPOSALS: tuple[Mapping[str, Any], ...] = (
    {
        "proposalId": "443503",
        "title": "CODA commissioning with the ODIN sample file",
        "pi_firstname": "Pia",
        "pi_lastname": "Investigator",
        "pi_email": "pia.investigator@ess.example.org",
        "firstname": "Pia",
        "lastname": "Investigator",
        "email": "pia.investigator@ess.example.org",
        "ownerGroup": "ess_proposal_443503",
        "accessGroups": ["ess_proposal_443503", "scientific information management systems group"],
        "instrumentIds": [_seed_id("instrument/odin"), _seed_id("instrument/coda")],
    },
    {
        "proposalId": "876380",
        "title": "YMIR lego test",
        "pi_firstname": "Yara",
        "pi_lastname": "Mirsky",
        "pi_email": "yara.mirsky@ess.example.org",
        "firstname": "Yara",
        "lastname": "Mirsky",
        "email": "yara.mirsky@ess.example.org",
        "ownerGroup": "ess_proposal_876380",
        "accessGroups": ["ess_proposal_876380", "scientific information management systems group"],
        "instrumentIds": [_seed_id("instrument/ymir")],
    },
)


# --------------------------------------------------------------------------------------------
# Request-body validation against the OpenAPI schemas
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Violation:
    """One class-validator-like complaint: the top-level property and a human message."""

    property: str
    constraint: str
    message: str


# JSON-schema type → (class-validator constraint, its default message).
_TYPE_MESSAGES = {
    "string": ("isString", "must be a string"),
    "date-time": ("isDateString", "must be a valid ISO 8601 date string"),
    "number": ("isNumber", "must be a number conforming to the specified constraints"),
    "integer": ("isInt", "must be an integer number"),
    "boolean": ("isBoolean", "must be a boolean value"),
    "array": ("isArray", "must be an array"),
    "object": ("isObject", "must be an object"),
}


def _format_date_time(value: object) -> bool:
    """ISO 8601 like class-validator's IsDateString (Python 3.11 parses ``Z`` and offsets)."""
    if not isinstance(value, str):
        return True
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def _format_email(value: object) -> bool:
    return not isinstance(value, str) or _EMAIL.match(value) is not None


def _format_checker() -> Any:
    checker = jsonschema.FormatChecker(formats=())
    checker.checks("date-time")(_format_date_time)
    checker.checks("email")(_format_email)
    return checker


def _allow_null(schema: JSONDict) -> JSONDict:
    """class-validator's ``@IsOptional`` accepts null as well as a missing property.

    A plain ``type`` just gains ``"null"`` (the cheap form); ``$ref``/``allOf`` get wrapped.
    """
    kind = schema.get("type")
    if isinstance(kind, str):
        return {**schema, "type": [kind, "null"]}
    return {"if": {"type": "null"}, "else": schema}


def _backend_semantics(schema: JSONDict) -> JSONDict:
    """Rewrite one named OpenAPI schema to validate like the backend's DTO class.

    The document does not say ``additionalProperties: false`` nor that optional properties may be
    null, but the backend validates with ``whitelist + forbidNonWhitelisted`` and ``@IsOptional``.
    """
    if "properties" not in schema:
        return schema
    required = set(schema.get("required", ()))
    properties: JSONDict = {}
    for name, prop in schema["properties"].items():
        nullable = prop.get("nullable") is True or name not in required
        properties[name] = _allow_null(prop) if nullable else prop
    return {**schema, "properties": properties, "additionalProperties": False}


@dataclass(frozen=True)
class DtoValidator:
    """A compiled validator for one DTO plus what the stand-in needs to store its documents."""

    name: str
    validator: Any
    defaults: Mapping[str, Any]
    date_fields: frozenset[str]

    def violations(self, body: object) -> list[Violation]:
        found: list[Violation] = []
        for error in self.validator.iter_errors(body):
            for violation in self._describe(error):
                if violation not in found:
                    found.append(violation)
        return found

    def _describe(self, error: Any) -> Iterator[Violation]:
        path = [str(part) for part in error.absolute_path]
        prefix = ".".join(path)
        top = path[0] if path else ""
        keyword = error.validator
        if keyword == "additionalProperties":
            allowed = set(error.schema.get("properties", ()))
            for extra in sorted(set(error.instance) - allowed):
                text = f"property {extra} should not exist"
                yield Violation(top or extra, "whitelistValidation", _prefixed(prefix, text))
        elif keyword == "required":
            for missing in error.validator_value:
                if isinstance(error.instance, dict) and missing not in error.instance:
                    expected = _expected_type(error.schema.get("properties", {}).get(missing))
                    constraint, text = _type_message(expected)
                    name = _prefixed(prefix, missing)
                    yield Violation(top or missing, constraint, f"{name} {text}")
        elif not path:
            yield Violation("", keyword, "the request body must be a JSON object")
        elif keyword == "type":
            constraint, text = _type_message(_expected_type(error.schema))
            yield Violation(top, constraint, f"{prefix} {text}")
        elif keyword == "format" and error.validator_value == "date-time":
            yield Violation(top, "isDateString", f"{prefix} must be a valid ISO 8601 date string")
        elif keyword == "format" and error.validator_value == "email":
            yield Violation(top, "isEmail", f"{prefix} must be an email")
        elif keyword == "minItems":
            yield Violation(top, "arrayNotEmpty", f"{prefix} should not be empty")
        else:
            yield Violation(top, keyword, f"{prefix}: {error.message}")


def _prefixed(prefix: str, text: str) -> str:
    return f"{prefix}.{text}" if prefix else text


def _expected_type(schema: object) -> str:
    if not isinstance(schema, dict):
        return "string"
    if "else" in schema:
        return _expected_type(schema["else"])
    if schema.get("format") == "date-time":
        return "date-time"
    kind = schema.get("type", "object")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    return str(kind)


def _type_message(expected: str) -> tuple[str, str]:
    return _TYPE_MESSAGES.get(expected, (expected, f"must be of type {expected}"))


@dataclass(frozen=True)
class DtoValidators:
    """The validators of every DTO the stand-in accepts, compiled once per process."""

    by_name: Mapping[str, DtoValidator]

    def __getitem__(self, name: str) -> DtoValidator:
        return self.by_name[name]


@functools.cache
def load_validators(openapi_path: Path = OPENAPI_PATH) -> DtoValidators:
    """Compile the DTO validators from an OpenAPI document (cached: fixtures start in ms)."""
    document = json.loads(openapi_path.read_text(encoding="utf-8"))
    named = document["components"]["schemas"]
    missing = [name for name in VALIDATED_DTOS if name not in named]
    if missing:
        raise ValueError(f"{openapi_path}: components/schemas lacks {', '.join(missing)}")
    schemas = {name: _backend_semantics(schema) for name, schema in named.items()}
    root = {"components": {"schemas": schemas}}
    checker = _format_checker()
    cls = jsonschema.Draft202012Validator
    by_name: dict[str, DtoValidator] = {}
    for name in VALIDATED_DTOS:
        schema = {**root, "$ref": f"#/components/schemas/{name}"}
        cls.check_schema(schema)
        properties = named[name].get("properties", {})
        by_name[name] = DtoValidator(
            name=name,
            validator=cls(schema, format_checker=checker),
            defaults={k: v["default"] for k, v in properties.items() if "default" in v},
            date_fields=frozenset(
                k for k, v in properties.items() if v.get("format") == "date-time"
            ),
        )
    return DtoValidators(by_name)


# --------------------------------------------------------------------------------------------
# Loopback/Mongo-style filters
# --------------------------------------------------------------------------------------------


class FilterError(ValueError):
    """A ``filter`` query parameter the stand-in cannot evaluate (answered with 400)."""


_MISSING = object()


def _lookup(document: Mapping[str, Any], dotted: str) -> object:
    value: object = document
    for part in dotted.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _equals(actual: object, expected: object) -> bool:
    """Mongo equality: a missing field equals null; an array field matches a member."""
    if actual is _MISSING:
        return expected is None
    if isinstance(actual, list) and not isinstance(expected, list):
        return expected in actual
    return actual == expected


def _regex_matches(actual: object, pattern: object, flags: int) -> bool:
    if not isinstance(pattern, str):
        raise FilterError(f"a like/regex pattern must be a string, not {pattern!r}")
    try:
        compiled = re.compile(pattern, flags)
    except re.error as exc:
        raise FilterError(f"invalid regular expression {pattern!r}: {exc}") from exc
    values = actual if isinstance(actual, list) else [actual]
    return any(isinstance(v, str) and compiled.search(v) is not None for v in values)


def _operator_matches(
    actual: object, operator: str, operand: object, spec: Mapping[str, Any]
) -> bool:
    if operator in ("like", "$regex", "regexp"):
        flags = re.IGNORECASE if "i" in str(spec.get("$options", spec.get("options", ""))) else 0
        return _regex_matches(actual, operand, flags)
    if operator == "ilike":
        return _regex_matches(actual, operand, re.IGNORECASE)
    if operator in ("$options", "options"):
        return True
    if operator in ("eq", "$eq"):
        return _equals(actual, operand)
    if operator in ("neq", "$ne"):
        return not _equals(actual, operand)
    if operator in ("inq", "$in"):
        if not isinstance(operand, list):
            raise FilterError(f"{operator} needs a list, not {operand!r}")
        return any(_equals(actual, candidate) for candidate in operand)
    if operator in ("exists", "$exists"):
        return (actual is not _MISSING) == bool(operand)
    raise FilterError(f"unsupported filter operator {operator!r}")


def matches(document: Mapping[str, Any], where: Mapping[str, Any]) -> bool:
    """Whether ``document`` satisfies a loopback/Mongo ``where``: equality, dotted keys, a few
    operators (like/ilike/$regex, inq/$in, neq/$ne, exists, and/or)."""
    for key, condition in where.items():
        if key in ("and", "$and", "or", "$or"):
            if not isinstance(condition, list) or not all(isinstance(c, dict) for c in condition):
                raise FilterError(f"{key} needs a list of conditions")
            results = (matches(document, c) for c in condition)
            if not (all(results) if key.endswith("and") else any(results)):
                return False
            continue
        actual = _lookup(document, key)
        if (
            isinstance(condition, dict)
            and condition
            and all(k.startswith("$") or k in _LOOPBACK_OPERATORS for k in condition)
        ):
            if not all(_operator_matches(actual, op, v, condition) for op, v in condition.items()):
                return False
        elif not _equals(actual, condition):
            return False
    return True


_LOOPBACK_OPERATORS = frozenset(
    {"like", "ilike", "regexp", "options", "eq", "neq", "inq", "exists"}
)


def _field_sort_key(name: str) -> Callable[[JSONDict], tuple[int, float, str]]:
    """Order by a (dotted) field; missing and null first, like MongoDB ascending."""

    def key(document: JSONDict) -> tuple[int, float, str]:
        value = _lookup(document, name)
        if value is _MISSING or value is None:
            return (0, 0.0, "")
        if isinstance(value, int | float) and not isinstance(value, bool):
            return (1, float(value), "")
        return (2, 0.0, value if isinstance(value, str) else json.dumps(value, sort_keys=True))

    return key


def apply_filter(documents: list[JSONDict], raw_filter: str | None) -> list[JSONDict]:
    """Select, order, skip and limit like the backend's ``?filter=`` (``where``, ``limits``)."""
    if not raw_filter:
        return documents
    try:
        spec = json.loads(raw_filter)
    except json.JSONDecodeError as exc:
        raise FilterError(f"filter is not valid JSON: {exc}") from exc
    if not isinstance(spec, dict):
        raise FilterError("filter must be a JSON object")
    where = spec.get("where", {})
    if not isinstance(where, dict):
        raise FilterError("filter.where must be a JSON object")
    selected = [doc for doc in documents if matches(doc, where)]
    limits = spec.get("limits", spec)
    if not isinstance(limits, dict):
        raise FilterError("filter.limits must be a JSON object")
    order = limits.get("order") or []
    for item in reversed([order] if isinstance(order, str) else order):
        name, _, direction = str(item).replace(" ", ":").partition(":")
        selected.sort(key=_field_sort_key(name), reverse=direction.lower() == "desc")
    skip = int(limits.get("skip") or 0)
    limit = limits.get("limit")
    return selected[skip : skip + int(limit)] if limit else selected[skip:]


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def _now() -> str:
    return _iso(datetime.now(UTC))


def _iso(moment: datetime) -> str:
    """The backend (MongoDB dates) answers every timestamp as UTC with milliseconds and ``Z``."""
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def _utc(value: object) -> object:
    """Normalise a valid date string like the backend; naive times are the server's local time."""
    if not isinstance(value, str):
        return value
    return _iso(datetime.fromisoformat(value))


def _error(status: int, message: object) -> JSONDict:
    """The body NestJS' built-in HTTP exceptions produce."""
    return {"statusCode": status, "message": message, "error": http.HTTPStatus(status).phrase}


def _normalise_api_path(path: str) -> str:
    """``/api/v3/datasets`` → ``datasets``, so fault rules may name paths either way."""
    if path.startswith(BASE_PATH):
        path = path[len(BASE_PATH) :]
    return path.lstrip("/")


class Reply:
    """A response. The payload is JSON-encoded at once, i.e. while the store's lock is held, so
    handlers can answer stored documents without copying them (``None`` is an empty body)."""

    __slots__ = ("body", "status")

    def __init__(self, status: int, payload: object = None) -> None:
        self.status = status
        self.body = b"" if payload is None else json.dumps(payload).encode()


@dataclass
class _Request:
    method: str
    path: str  # raw (still percent-encoded) path
    query: str  # raw query string
    body: bytes
    authorization: str | None
    params: dict[str, str] = field(default_factory=dict)
    user: str = ""

    def filter(self) -> str | None:
        values = parse_qs(self.query).get("filter")
        return values[0] if values else None


@dataclass
class _FailRule:
    prefix: str
    status: int
    remaining: int
    commit: bool


Handler = Callable[["SciCatStandIn", _Request], Reply]


@dataclass(frozen=True)
class _Route:
    method: str
    segments: tuple[str, ...]
    name: str
    handler: Handler
    public: bool = False
    anonymous: Handler | None = None  # the answer without valid credentials (None: 403)

    def match(self, method: str, segments: list[str]) -> dict[str, str] | None:
        if method != self.method or len(segments) != len(self.segments):
            return None
        params: dict[str, str] = {}
        for pattern, actual in zip(self.segments, segments, strict=True):
            if pattern.startswith("{"):
                params[pattern[1:-1]] = unquote(actual)
            elif pattern != actual:
                return None
        return params


# --------------------------------------------------------------------------------------------
# The stand-in
# --------------------------------------------------------------------------------------------


class SciCatStandIn:
    """An in-memory SciCat v3 backend on 127.0.0.1, with fault injection. Thread-safe.

    Auth: every endpoint but ``/auth/login`` and ``/health`` needs ``Authorization: Bearer <t>``
    with the static ``token`` or one issued by login (valid ``token_lifetime`` seconds). Without
    a valid one the answers are the real backend's: 403 (``GET datasets/{pid}``: 404 when it does
    not exist), ``GET datasets`` 200 ``[]``; a wrong login 401. Accounts (:class:`Account`) decide
    what may be read and created. A request on a connection idle for more than ``idle_timeout``
    seconds is not answered: the connection is closed (``RemoteDisconnected`` at the client).

    Faults (also over HTTP for a stand-in in another process, without auth: ``POST
    /_standin/fail {"count", "status", "path_prefix", "commit"}``, ``/_standin/stop_answering
    {"refuse", "seconds"}`` (``refuse`` needs ``seconds``), ``/_standin/resume``,
    ``/_standin/delay {"seconds", "match"}``, ``/_standin/expire_tokens``,
    ``/_standin/reject_credentials {"seconds"}``, ``/_standin/change_password {"username",
    "password"}``, ``/_standin/set_token {"token"}``, ``/_standin/proposals
    {proposal}``; ``GET /_standin/stats`` and ``/_standin/datasets``):

    * :meth:`fail_next` — the next N matching requests get a given status (default 503).
    * :meth:`stop_answering` — requests are read but never answered, so clients time out; with
      ``refuse=True`` the listening socket is closed and open connections are cut (connection
      refused / reset). :meth:`resume` ends either; requests held during the outage are then
      dropped without an answer (the client sees its timeout, or a closed connection).
    * :meth:`delay` — requests whose URL or body contains a string are answered late.
    * :meth:`expire_tokens` — login-issued tokens expire now (403), the static token stays.
    * :meth:`reject_credentials` — for N seconds logins get 401 and every token counts as dead.
    * :meth:`change_password`, :meth:`set_token` — rotate a password or the static token
      (``""`` revokes it).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str = DEFAULT_TOKEN,
        accounts: Mapping[str, str | Account] | None = None,
        openapi_path: Path | None = None,
        *,
        token_lifetime: float = TOKEN_TTL_SECONDS,
        idle_timeout: float | None = IDLE_TIMEOUT_SECONDS,
    ) -> None:
        self.host = host
        self.port = port
        self.token = token
        self.token_lifetime = token_lifetime
        self.idle_timeout = idle_timeout
        given = DEFAULT_ACCOUNTS if accounts is None else accounts
        self._accounts = {
            name: a if isinstance(a, Account) else Account(a) for name, a in given.items()
        }
        self._reject_until = 0.0  # monotonic: until then every credential is refused
        self._validators = load_validators(openapi_path or OPENAPI_PATH)
        self._lock = threading.Lock()  # guards the store, counters, connections and fault rules
        self._no_connections = threading.Condition(self._lock)
        self._gate = threading.Condition(threading.Lock())  # guards answering/stopping
        self._lifecycle = threading.RLock()  # start/stop/refuse/resume
        self._stopping = threading.Event()
        self._answering = True
        self._server: _Server | None = None
        self._serve_thread: threading.Thread | None = None
        self._resume_timer: threading.Timer | None = None
        self._connections: set[socket.socket] = set()
        self._accepted = 0
        self._login_tokens: dict[str, tuple[str, float]] = {}  # token → (user, expires at)
        self._idle_closed = 0
        self._fail_rules: list[_FailRule] = []
        self._delays: dict[str, float] = {}
        self._counts: Counter[str] = Counter()
        self._log: deque[tuple[str, str, int]] = deque(maxlen=REQUEST_LOG_SIZE)
        self._datasets: dict[str, JSONDict] = {}
        self._origdatablocks: list[JSONDict] = []
        self._blocks_of: dict[str, list[JSONDict]] = {}  # by datasetId: no scans per POST
        self._samples: list[JSONDict] = []
        self._attachments_of: dict[str, list[JSONDict]] = {}  # by dataset pid
        self._proposals: dict[str, JSONDict] = {}
        self._instruments: list[JSONDict] = [self._instrument(seed) for seed in SEED_INSTRUMENTS]
        for proposal in SEED_PROPOSALS:
            self.add_proposal(dict(proposal))

    # ---- lifecycle -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The base URL for ``scicat.host``, e.g. ``http://127.0.0.1:PORT/api/v3``."""
        return f"http://{self.host}:{self.port}{BASE_PATH}"

    @property
    def control_url(self) -> str:
        return f"http://{self.host}:{self.port}{CONTROL_PATH}"

    def start(self) -> None:
        with self._lifecycle:
            if self._server is not None:
                raise RuntimeError("the SciCat stand-in is already running")
            self._stopping.clear()
            self._listen()
            logger.info("SciCat stand-in listening on %s", self.url)

    def stop(self) -> None:
        """Stop serving, cut open connections and release anyone waiting in a fault."""
        with self._lifecycle:
            self._stopping.set()
            if self._resume_timer is not None:
                self._resume_timer.cancel()
                self._resume_timer = None
            with self._gate:
                self._gate.notify_all()
            self._close_listener()
            self._cut_connections()
        logger.info("SciCat stand-in on port %s stopped", self.port)

    def __enter__(self) -> SciCatStandIn:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _listen(self) -> None:
        server = _Server((self.host, self.port), self)
        self.port = server.server_address[1]
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.01},  # how long stop() waits for the loop
            name=f"scicat-standin-{self.port}",
            daemon=True,
        )
        self._server, self._serve_thread = server, thread
        thread.start()

    def _close_listener(self) -> None:
        server, thread = self._server, self._serve_thread
        self._server = self._serve_thread = None
        if server is not None and thread is not None:
            server.shutdown()
            server.server_close()
            thread.join()

    def _cut_connections(self, wait: float = 2.0) -> None:
        """Shut down open connections so their handler threads end (clients see a reset/EOF)."""
        with self._lock:
            open_now = list(self._connections)
        for conn in open_now:
            with contextlib.suppress(OSError):  # already closed by the peer
                conn.shutdown(socket.SHUT_RDWR)
        with self._no_connections:
            self._no_connections.wait_for(lambda: not self._connections, timeout=wait)

    # ---- fault injection and inspection ----------------------------------------------------

    def fail_next(
        self, count: int, status: int = 503, path_prefix: str = "", *, commit: bool = False
    ) -> None:
        """Answer the next ``count`` requests under ``path_prefix`` with ``status``.

        ``path_prefix`` is relative to ``/api/v3`` (``"datasets"``, ``"/origdatablocks"``; the
        full path works too; empty matches every API request). With ``commit=True`` the request
        is carried out first and only its answer is replaced ("the backend did it, the client
        never heard").
        """
        if count < 1 or not 100 <= status <= 599:
            raise ValueError(
                f"fail_next needs count >= 1 and an HTTP status, got {count}, {status}"
            )
        rule = _FailRule(_normalise_api_path(path_prefix), status, count, commit)
        with self._lock:
            self._fail_rules.append(rule)
        logger.info(
            "SciCat stand-in: next %d request(s) under %r get %d", count, rule.prefix, status
        )

    def stop_answering(self, refuse: bool = False, seconds: float | None = None) -> None:
        """Start an outage; ``refuse`` closes the port instead; ``seconds`` ends it by itself."""
        with self._lifecycle:
            with self._gate:
                self._answering = False
            if refuse:
                self._close_listener()
                self._cut_connections()
            if self._resume_timer is not None:
                self._resume_timer.cancel()
                self._resume_timer = None
            if seconds is not None:
                self._resume_timer = threading.Timer(seconds, self.resume)
                self._resume_timer.daemon = True
                self._resume_timer.start()
        logger.info("SciCat stand-in: outage (%s)", "refusing" if refuse else "not answering")

    def resume(self) -> None:
        """End an outage: answer again (and listen again on the same port after ``refuse``)."""
        with self._lifecycle:
            if self._stopping.is_set():
                return
            if self._resume_timer is not None:
                self._resume_timer.cancel()
                self._resume_timer = None
            if self._server is None:
                self._listen()
            with self._gate:
                self._answering = True
                self._gate.notify_all()
        logger.info("SciCat stand-in: answering again")

    def delay(self, seconds: float, match: str) -> None:
        """Answer requests whose decoded URL or body contains ``match`` after ``seconds``.

        ``seconds <= 0`` removes the delay for ``match``.
        """
        with self._lock:
            if seconds > 0:
                self._delays[match] = seconds
            else:
                self._delays.pop(match, None)

    def expire_tokens(self) -> None:
        """Expire every login-issued token now (answered like any expired token: 403)."""
        with self._lock:
            self._login_tokens.clear()

    def reject_credentials(self, seconds: float) -> None:
        """For ``seconds``: every login gets 401 and every token (static, issued) counts as dead."""
        with self._lock:
            self._reject_until = time.monotonic() + seconds
        logger.info("SciCat stand-in: rejecting all credentials for %g s", seconds)

    def change_password(self, username: str, password: str) -> None:
        """A new password for an account (its issued tokens stay valid until they expire)."""
        with self._lock:
            account = self._accounts.get(username, Account(password))
            self._accounts[username] = replace(account, password=password)

    def set_token(self, token: str) -> None:
        """Replace the static token (``""`` revokes it): the old one is refused from now on."""
        with self._lock:
            self.token = token

    def add_proposal(self, proposal: Mapping[str, Any]) -> None:
        """Add (or replace) a proposal; backend-managed fields get defaults."""
        if not isinstance(proposal.get("proposalId"), str) or not proposal["proposalId"]:
            raise ValueError("a proposal needs a non-empty string proposalId")
        now = _now()
        pid = proposal["proposalId"]
        stored: JSONDict = {
            "ownerGroup": f"proposal_{pid}",
            "accessGroups": [],
            "isPublished": False,
            "email": "",
            "title": "",
            "abstract": "",
            "parentProposalId": None,
            "type": "Default Proposal",
            "metadata": {},
            "MeasurementPeriodList": [],
            "instrumentIds": [],
            "createdBy": "admin",
            "updatedBy": "admin",
            "createdAt": now,
            "updatedAt": now,
            **copy.deepcopy(dict(proposal)),
        }
        with self._lock:
            self._proposals[pid] = stored

    @property
    def datasets(self) -> dict[str, JSONDict]:
        """A snapshot of the stored datasets by pid."""
        with self._lock:
            return copy.deepcopy(self._datasets)

    @property
    def origdatablocks(self) -> list[JSONDict]:
        """A snapshot of the stored origdatablocks, in creation order."""
        with self._lock:
            return copy.deepcopy(self._origdatablocks)

    @property
    def samples(self) -> list[JSONDict]:
        with self._lock:
            return copy.deepcopy(self._samples)

    @property
    def requests_log(self) -> list[tuple[str, str, int]]:
        """The last requests as (method, raw path, status); status 0 means never answered."""
        with self._lock:
            return list(self._log)

    def stats(self) -> JSONDict:
        """Counts per ``"METHOD /route STATUS"``, stored documents and accepted connections."""
        with self._lock:
            return {
                "requests": dict(self._counts),
                "datasets": len(self._datasets),
                "origdatablocks": len(self._origdatablocks),
                "samples": len(self._samples),
                "connections": self._accepted,
                "idle_closed": self._idle_closed,
                "answering": self._answering,
            }

    # ---- request processing (called from handler threads) ---------------------------------

    def _connection_opened(self, conn: socket.socket) -> None:
        with self._lock:
            self._accepted += 1
            self._connections.add(conn)

    def _closed_idle(self) -> None:
        with self._lock:
            self._idle_closed += 1

    def _connection_closed(self, conn: socket.socket) -> None:
        with self._no_connections:
            self._connections.discard(conn)
            self._no_connections.notify_all()

    def _handle(self, request: _Request) -> Reply | None:
        """Answer one request, or ``None`` to drop it unanswered (outage)."""
        if request.path.startswith(CONTROL_PATH + "/"):
            return self._control(request)
        route, params = self._route(request)
        name = route.name if route else "unrouted"
        if not self._wait_for_delay(request) or not self._await_answering():
            self._record(request, name, 0)
            return None
        rule = self._take_fail_rule(request.path)
        if rule is not None and not rule.commit:
            reply = Reply(rule.status, _error(rule.status, "injected by the SciCat stand-in"))
        elif route is None:
            reply = Reply(404, _error(404, f"Cannot {request.method} {request.path}"))
        else:
            request.params = params
            reply = self._authorised(route, request)
            if rule is not None:
                reply = Reply(rule.status, _error(rule.status, "injected by the SciCat stand-in"))
        self._record(request, name, reply.status)
        return reply

    def _route(self, request: _Request) -> tuple[_Route | None, dict[str, str]]:
        if not request.path.startswith(BASE_PATH + "/"):
            return None, {}
        segments = request.path[len(BASE_PATH) + 1 :].split("/")
        for route in _ROUTES:
            params = route.match(request.method, segments)
            if params is not None:
                return route, params
        return None, {}

    def _authorised(self, route: _Route, request: _Request) -> Reply:
        try:
            if route.public:
                return route.handler(self, request)
            user = self._user_of(request.authorization)
            if user is None:  # missing, garbage or expired: the real backend's answers
                return (route.anonymous or SciCatStandIn._forbidden_resource)(self, request)
            request.user = user
            return route.handler(self, request)
        except FilterError as exc:
            return Reply(400, _error(400, str(exc)))

    def _user_of(self, authorization: str | None) -> str | None:
        """The account a bearer token belongs to; None when missing, unknown or expired."""
        scheme, _, token = (authorization or "").partition(" ")
        token = token.strip() if scheme.lower() == "bearer" else ""
        if not token:
            return None
        now = time.monotonic()
        with self._lock:
            if now < self._reject_until:
                return None
            user, expires = self._login_tokens.get(token, ("", 0.0))
            if user and now >= expires:
                del self._login_tokens[token]
                user = ""
            if not user and token == self.token:
                user = STATIC_TOKEN_USER
        return user or None

    def _account(self, user: str) -> Account:
        """The permissions of a user (the static token's user is an admin unless configured)."""
        return self._accounts.get(user) or Account("", admin=True)

    def _wait_for_delay(self, request: _Request) -> bool:
        with self._lock:
            if not self._delays:
                return True
            text = unquote(f"{request.path}?{request.query}")
            body = request.body.decode("utf-8", "replace")
            seconds = max(
                (s for m, s in self._delays.items() if m in text or m in body), default=0.0
            )
        return seconds <= 0 or not self._stopping.wait(seconds)

    def _await_answering(self) -> bool:
        """True to answer now; False if the request arrived during an outage (drop it)."""
        with self._gate:
            if self._answering:
                return not self._stopping.is_set()
            while not self._answering and not self._stopping.is_set():
                self._gate.wait()
            return False

    def _take_fail_rule(self, path: str) -> _FailRule | None:
        target = _normalise_api_path(path)
        with self._lock:
            for rule in self._fail_rules:
                if target.startswith(rule.prefix):
                    rule.remaining -= 1
                    if rule.remaining == 0:
                        self._fail_rules.remove(rule)
                    return rule
        return None

    def _record(self, request: _Request, route: str, status: int) -> None:
        with self._lock:
            self._counts[f"{route} {status}"] += 1
            self._log.append((request.method, request.path, status))

    # ---- /_standin control over HTTP -------------------------------------------------------

    def _control(self, request: _Request) -> Reply:
        """Fault injection for a stand-in in another process (benchmark, demo); no auth."""
        action = request.path[len(CONTROL_PATH) + 1 :]
        try:
            args = json.loads(request.body or b"{}")
            if not isinstance(args, dict):
                raise TypeError("the body must be a JSON object")
            return self._control_action(request.method, action, args)
        except (ValueError, TypeError, KeyError) as exc:
            return Reply(400, _error(400, f"{action}: {exc}"))

    def _control_action(self, method: str, action: str, args: JSONDict) -> Reply:
        if method == "GET" and action == "stats":
            return Reply(200, self.stats())
        if method == "GET" and action == "datasets":
            return Reply(200, self.datasets)
        if method != "POST":
            return Reply(404, _error(404, f"Cannot {method} {CONTROL_PATH}/{action}"))
        if action == "fail":
            self.fail_next(
                int(args.get("count", 1)),
                int(args.get("status", 503)),
                str(args.get("path_prefix", "")),
                commit=bool(args.get("commit", False)),
            )
        elif action == "stop_answering":
            seconds = args.get("seconds")
            refuse = bool(args.get("refuse", False))
            if refuse and seconds is None:
                raise ValueError("refuse needs seconds: nothing could ask this port to resume")
            self.stop_answering(refuse, None if seconds is None else float(seconds))
        elif action == "resume":
            self.resume()
        elif action == "delay":
            self.delay(float(args["seconds"]), str(args["match"]))
        elif action == "expire_tokens":
            self.expire_tokens()
        elif action == "reject_credentials":
            self.reject_credentials(float(args["seconds"]))
        elif action == "change_password":
            self.change_password(str(args["username"]), str(args["password"]))
        elif action == "set_token":
            self.set_token(str(args["token"]))
        elif action == "proposals":
            self.add_proposal(args)
        else:
            return Reply(404, _error(404, f"Cannot POST {CONTROL_PATH}/{action}"))
        return Reply(200, {"ok": True})

    # ---- endpoints ---------------------------------------------------------------------------

    def _json_body(self, request: _Request) -> object:
        return json.loads(request.body) if request.body else None

    def _login(self, request: _Request) -> Reply:
        try:
            body = self._json_body(request)
        except ValueError:
            body = None
        unauthorised = Reply(401, {"statusCode": 401, "message": "Unauthorized"})
        # The real login guard (passport-local) rejects before any DTO validation: always 401.
        if self._validators[DTO_CREDENTIALS].violations(body) or not isinstance(body, dict):
            return unauthorised
        username, password = body["username"], body["password"]
        with self._lock:
            account = self._accounts.get(username)
            if account is None or account.password != password:
                return unauthorised
            if time.monotonic() < self._reject_until:
                return unauthorised
            token = secrets.token_urlsafe(24)
            self._login_tokens[token] = (username, time.monotonic() + self.token_lifetime)
        user_id = _seed_id(f"user/{username}")
        return Reply(
            201,
            {
                "access_token": token,
                "id": token,
                "expires_in": self.token_lifetime,
                "ttl": self.token_lifetime,
                "created": _now(),
                "userId": user_id,
                "user": {
                    "id": user_id,
                    "username": username,
                    "email": f"{username}@standin.example.org",
                    "emailVerified": True,
                    "realm": "",
                    "authStrategy": "local",
                },
            },
        )

    def _whoami(self, request: _Request) -> Reply:
        account = self._account(request.user)
        return Reply(
            200,
            {
                "id": _seed_id(f"user/{request.user}"),
                "username": request.user,
                "email": f"{request.user}@standin.example.org",
                "currentGroups": list(account.groups),
                "authStrategy": "local",
            },
        )

    # Answers without valid credentials (missing, garbage or expired token), as the real backend.

    def _forbidden_resource(self, request: _Request) -> Reply:
        return Reply(403, _error(403, "Forbidden resource"))

    def _silently_empty(self, request: _Request) -> Reply:
        return Reply(200, [])

    def _dataset_unauthorised(self, request: _Request) -> Reply:
        """403 only when the dataset exists, else the plain 404."""
        pid = request.params["pid"]
        with self._lock:
            exists = pid in self._datasets
        if exists:
            return Reply(403, _error(403, "Unauthorized access"))
        return Reply(404, _error(404, f"dataset: {pid} not found"))

    def _proposal_unauthorised(self, request: _Request) -> Reply:
        return Reply(403, _error(403, "Unauthorized to this proposal"))

    def _health(self, request: _Request) -> Reply:
        up = {"database": {"status": "up"}}
        return Reply(200, {"status": "ok", "info": up, "error": {}, "details": up})

    def _create_dataset(self, request: _Request) -> Reply:
        try:
            body = self._json_body(request)
        except ValueError as exc:
            return Reply(400, _error(400, f"invalid JSON body: {exc}"))
        kind = body.get("type") if isinstance(body, dict) else None
        if kind not in ("raw", "derived"):
            # The real controller's own check, with its own body shape.
            return Reply(400, {"status": 400, "message": "Wrong dataset type!"})
        dto = self._validators[DTO_RAW_DATASET if kind == "raw" else DTO_DERIVED_DATASET]
        violations = dto.violations(body)
        if violations:
            return Reply(400, _dataset_validation_error(violations))
        assert isinstance(body, dict)
        account = self._account(request.user)
        if not (account.admin or account.may_create or body.get("ownerGroup") in account.groups):
            return Reply(403, _error(403, "Unauthorized to create this dataset"))
        dataset = _with_defaults(dto, body)
        now = _now()
        with self._lock:
            pid = dataset.get("pid") or f"{PID_PREFIX}/{uuid.uuid4()}"
            if pid in self._datasets:
                return Reply(409, _error(409, f"A dataset with pid {pid} already exists!"))
            _add_read_back_fields(dataset)
            dataset.update(
                pid=pid,
                createdBy=request.user,
                updatedBy=request.user,
                createdAt=now,
                updatedAt=now,
            )
            self._datasets[pid] = dataset
            return Reply(201, dataset)

    def _readable_datasets(self, request: _Request) -> list[JSONDict]:
        """The datasets this request's account may read (lock held)."""
        account = self._account(request.user)
        return [d for d in self._datasets.values() if account.may_read(d)]

    def _list_datasets(self, request: _Request) -> Reply:
        with self._lock:
            found = apply_filter(self._readable_datasets(request), request.filter())
            return Reply(200, found)

    def _find_one_dataset(self, request: _Request) -> Reply:
        with self._lock:
            found = apply_filter(self._readable_datasets(request), request.filter())
            if not found:
                return Reply(404, _error(404, "dataset not found"))
            return Reply(200, found[0])

    def _get_dataset(self, request: _Request) -> Reply:
        pid = request.params["pid"]
        with self._lock:
            dataset = self._datasets.get(pid)
            if dataset is None:
                return Reply(404, _error(404, f"dataset: {pid} not found"))
            if not self._account(request.user).may_read(dataset):
                return Reply(403, _error(403, "Unauthorized access"))
            return Reply(200, dataset)

    def _dataset_origdatablocks(self, request: _Request) -> Reply:
        pid = request.params["pid"]
        with self._lock:
            dataset = self._datasets.get(pid)
            if dataset is not None and not self._account(request.user).may_read(dataset):
                return Reply(403, _error(403, "Unauthorized access"))
            found = self._blocks_of.get(pid, [])
            return Reply(200, found)

    def _validated(self, request: _Request, dto_name: str) -> dict[str, Any] | Reply:
        """The body with the DTO's defaults, or the 400 the backend's validation gives."""
        try:
            body = self._json_body(request)
        except ValueError as exc:
            return Reply(400, _error(400, f"invalid JSON body: {exc}"))
        dto = self._validators[dto_name]
        violations = dto.violations(body)
        if violations:
            return Reply(400, _error(400, [v.message for v in violations]))
        assert isinstance(body, dict)
        return _with_defaults(dto, body)

    def _create_origdatablock(self, request: _Request) -> Reply:
        block = self._validated(request, DTO_ORIGDATABLOCK)
        if isinstance(block, Reply):
            return block
        block["dataFileList"] = [{**f, "time": _utc(f["time"])} for f in block["dataFileList"]]
        now = _now()
        with self._lock:
            dataset = self._datasets.get(block["datasetId"])
            if dataset is None:
                message = f"Dataset: {block['datasetId']} not found for attaching an origdatablock"
                return Reply(404, _error(404, message))
            account = self._account(request.user)
            if not (account.may_create or account.may_read(dataset)):
                return Reply(403, _error(403, "Unauthorized to create this origdatablock"))
            # The backend takes the groups from the dataset, whatever the body said.
            block["ownerGroup"] = dataset.get("ownerGroup")
            block["accessGroups"] = dataset.get("accessGroups", [])
            block.pop("instrumentGroup", None)
            if "instrumentGroup" in dataset:
                block["instrumentGroup"] = dataset["instrumentGroup"]
            block_id = str(uuid.uuid4())
            block.setdefault("isPublished", False)
            block.update(
                _id=block_id,
                id=block_id,
                createdBy=request.user,
                updatedBy=request.user,
                createdAt=now,
                updatedAt=now,
            )
            self._origdatablocks.append(block)
            self._blocks_of.setdefault(dataset["pid"], []).append(block)
            self._recompute_size(dataset, now)
            return Reply(201, block)

    def _recompute_size(self, dataset: JSONDict, now: str) -> None:
        """Like the backend: size and numberOfFiles are the sums over all the origdatablocks."""
        blocks = self._blocks_of[dataset["pid"]]
        dataset["size"] = sum(o["size"] for o in blocks)
        dataset["numberOfFiles"] = sum(len(o["dataFileList"]) for o in blocks)
        dataset["updatedAt"] = now

    def _list_origdatablocks(self, request: _Request) -> Reply:
        with self._lock:
            return Reply(200, apply_filter(self._origdatablocks, request.filter()))

    # ---- attachments (dataset thumbnails) --------------------------------------------------

    @property
    def attachments(self) -> dict[str, list[JSONDict]]:
        """A snapshot of the stored attachments by dataset pid, in creation order."""
        with self._lock:
            return copy.deepcopy(self._attachments_of)

    def _create_attachment(self, request: _Request) -> Reply:
        """``POST datasets/{pid}/attachments``: 404 without the dataset, 409 on a repeated id."""
        body = self._validated(request, DTO_ATTACHMENT)
        if isinstance(body, Reply):
            return body
        pid = request.params["pid"]
        now = _now()
        with self._lock:
            if pid not in self._datasets:
                return Reply(404, _error(404, f"dataset: {pid} not found"))
            stored = self._attachments_of.setdefault(pid, [])
            attachment_id = body.get("id") or str(uuid.uuid4())
            if any(a["id"] == attachment_id for a in stored):
                return Reply(409, _error(409, f"attachment {attachment_id} already exists"))
            body.update(
                id=attachment_id,
                datasetId=pid,
                createdBy=request.user,
                updatedBy=request.user,
                createdAt=now,
                updatedAt=now,
            )
            stored.append(body)
            return Reply(201, body)

    def _dataset_attachments(self, request: _Request) -> Reply:
        with self._lock:
            return Reply(200, self._attachments_of.get(request.params["pid"], []))

    # ------------------------------------------------------------------------------------------

    def _get_proposal(self, request: _Request) -> Reply:
        pid = request.params["pid"]
        with self._lock:
            proposal = self._proposals.get(pid)
            if proposal is None:
                return Reply(404, _error(404, f"Proposal: {pid} not found"))
            account = self._account(request.user)
            # Assumed (not in the recorded table): functional accounts that may create read them.
            if not (account.may_create or account.may_read(proposal)):
                return Reply(403, _error(403, "Unauthorized to this proposal"))
            return Reply(200, proposal)

    def _list_instruments(self, request: _Request) -> Reply:
        with self._lock:
            return Reply(200, apply_filter(self._instruments, request.filter()))

    def _list_samples(self, request: _Request) -> Reply:
        with self._lock:
            return Reply(200, apply_filter(self._samples, request.filter()))

    def _create_sample(self, request: _Request) -> Reply:
        sample = self._validated(request, DTO_SAMPLE)
        if isinstance(sample, Reply):
            return sample
        now = _now()
        with self._lock:
            sample_id = sample.get("sampleId") or str(uuid.uuid4())
            if any(s["sampleId"] == sample_id for s in self._samples):
                return Reply(409, _error(409, "A sample with this unique key already exists!"))
            sample.setdefault("sampleCharacteristics", {})
            sample.update(
                sampleId=sample_id,
                createdBy=request.user,
                updatedBy=request.user,
                createdAt=now,
                updatedAt=now,
            )
            self._samples.append(sample)
            return Reply(201, sample)

    @staticmethod
    def _instrument(seed: Mapping[str, str]) -> JSONDict:
        now = _now()
        return {
            **seed,
            "id": seed["pid"],
            "customMetadata": {},
            "createdBy": "admin",
            "updatedBy": "admin",
            "createdAt": now,
            "updatedAt": now,
        }


def _with_defaults(dto: DtoValidator, body: Mapping[str, Any]) -> JSONDict:
    """The stored document: the (freshly parsed) body, schema defaults for absent properties,
    dates normalised to UTC."""
    document: JSONDict = dict(body)
    for name, default in dto.defaults.items():
        document.setdefault(name, copy.deepcopy(default))
    for name in dto.date_fields & document.keys():
        document[name] = _utc(document[name])
    return document


def _add_read_back_fields(dataset: JSONDict) -> None:
    """Fields the real backend (v3 API on a v4 store) adds to every dataset it returns."""
    for single, plural in (
        ("principalInvestigator", "principalInvestigators"),
        ("proposalId", "proposalIds"),
        ("instrumentId", "instrumentIds"),
        ("sampleId", "sampleIds"),
    ):
        value = dataset.get(single)
        dataset.setdefault(plural, [value] if value else [])
    dataset.setdefault("keywords", [])
    dataset.setdefault("classification", "IN=medium,AV=low,CO=low")
    dataset.setdefault("datasetlifecycle", {})
    dataset["version"] = "3"


def _dataset_validation_error(violations: list[Violation]) -> JSONDict:
    """POST /datasets validates in the controller, whose 400 body is ``{status, message}`` with
    ``message`` the JSON-encoded class-validator errors (not NestJS' usual ``statusCode`` body)."""
    errors: dict[str, JSONDict] = {}
    for v in violations:
        entry = errors.setdefault(
            v.property, {"property": v.property, "children": [], "constraints": {}}
        )
        entry["constraints"][v.constraint] = v.message
    return {"status": 400, "message": json.dumps(list(errors.values()))}


_ROUTES: tuple[_Route, ...] = (
    _Route("POST", ("auth", "login"), "POST /auth/login", SciCatStandIn._login, public=True),
    _Route("GET", ("health",), "GET /health", SciCatStandIn._health, public=True),
    _Route("GET", ("auth", "whoami"), "GET /auth/whoami", SciCatStandIn._whoami),
    _Route("GET", ("users", "my", "self"), "GET /users/my/self", SciCatStandIn._whoami),
    _Route("POST", ("datasets",), "POST /datasets", SciCatStandIn._create_dataset),
    _Route(
        "GET",
        ("datasets",),
        "GET /datasets",
        SciCatStandIn._list_datasets,
        anonymous=SciCatStandIn._silently_empty,
    ),
    _Route(
        "GET", ("datasets", "findOne"), "GET /datasets/findOne", SciCatStandIn._find_one_dataset
    ),
    _Route(
        "GET",
        ("datasets", "{pid}"),
        "GET /datasets/{pid}",
        SciCatStandIn._get_dataset,
        anonymous=SciCatStandIn._dataset_unauthorised,
    ),
    _Route(
        "GET",
        ("datasets", "{pid}", "origdatablocks"),
        "GET /datasets/{pid}/origdatablocks",
        SciCatStandIn._dataset_origdatablocks,
        anonymous=SciCatStandIn._dataset_unauthorised,
    ),
    _Route(
        "POST", ("origdatablocks",), "POST /origdatablocks", SciCatStandIn._create_origdatablock
    ),
    _Route("GET", ("origdatablocks",), "GET /origdatablocks", SciCatStandIn._list_origdatablocks),
    _Route(
        "GET",
        ("proposals", "{pid}"),
        "GET /proposals/{pid}",
        SciCatStandIn._get_proposal,
        anonymous=SciCatStandIn._proposal_unauthorised,
    ),
    _Route("GET", ("instruments",), "GET /instruments", SciCatStandIn._list_instruments),
    _Route("GET", ("samples",), "GET /samples", SciCatStandIn._list_samples),
    _Route("POST", ("samples",), "POST /samples", SciCatStandIn._create_sample),
    _Route(
        "POST",
        ("datasets", "{pid}", "attachments"),
        "POST /datasets/{pid}/attachments",
        SciCatStandIn._create_attachment,
    ),
    _Route(
        "GET",
        ("datasets", "{pid}", "attachments"),
        "GET /datasets/{pid}/attachments",
        SciCatStandIn._dataset_attachments,
    ),
)


# --------------------------------------------------------------------------------------------
# HTTP plumbing
# --------------------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], standin: SciCatStandIn) -> None:
        self.standin = standin
        super().__init__(address, _RequestHandler)

    def server_bind(self) -> None:
        """Bind without HTTPServer's reverse-DNS lookup (``getfqdn``), which can take seconds."""
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), self.server_address[1]

    def get_request(self) -> tuple[socket.socket, Any]:
        conn, address = super().get_request()
        # Without this, keep-alive clients stall ~40 ms per request (Nagle vs delayed ACK).
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn, address

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        conn = cast(socket.socket, request)
        self.standin._connection_opened(conn)
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.standin._connection_closed(conn)

    def handle_error(self, request: Any, client_address: Any) -> None:
        logger.debug("SciCat stand-in: connection from %s failed", client_address, exc_info=True)


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    _last_answer: float | None = None  # monotonic time this connection last answered

    def log_message(self, format: str, *args: Any) -> None:
        """No per-request logging: it costs time the benchmark would measure."""

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        refusal = None
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            refusal = Reply(411, _error(411, "the stand-in needs a Content-Length"))
        elif length > MAX_BODY_BYTES:
            refusal = Reply(413, _error(413, "request entity too large"))
        if refusal is not None:  # the body stays unread: this connection cannot go on
            self.close_connection = True
            self._send(refusal)
            return
        body = self.rfile.read(length) if length else b""
        standin = cast(_Server, self.server).standin
        idle = standin.idle_timeout
        last = self._last_answer
        control = self.path.startswith(CONTROL_PATH + "/")  # test plumbing, not the backend
        if last is not None and idle is not None and not control and time.monotonic() - last > idle:
            # The server closed this idle connection as the request came in: the client sees it
            # closed before any answer (the race a real keep-alive timeout produces, made sure).
            standin._closed_idle()
            self.close_connection = True
            return
        parts = urlsplit(self.path)
        request = _Request(
            self.command, parts.path, parts.query, body, self.headers.get("Authorization")
        )
        try:
            reply = standin._handle(request)
        except Exception:
            logger.exception("SciCat stand-in failed on %s %s", self.command, parts.path)
            reply = Reply(500, {"statusCode": 500, "message": "Internal server error"})
        if reply is None:
            self.close_connection = True
            return
        self._send(reply)

    def _send(self, reply: Reply) -> None:
        """Status line, headers and body in one buffer, written with one ``sendall``."""
        body = reply.body
        phrase = http.HTTPStatus(reply.status).phrase
        head = [
            f"HTTP/1.1 {reply.status} {phrase}",
            "Content-Type: application/json; charset=utf-8",
            f"Content-Length: {len(body)}",
        ]
        idle = cast(_Server, self.server).standin.idle_timeout
        if self.close_connection:
            head.append("Connection: close")
        elif idle is not None:
            head.append(f"Keep-Alive: timeout={idle:g}")
        self.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        self._last_answer = time.monotonic()


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Serve a stand-in until SIGINT/SIGTERM; prints its URL (for ``scicat.host``) first."""
    parser = argparse.ArgumentParser(
        prog="python -m scicat_ingestor.testing.scicat_standin",
        description="A SciCat v3 backend stand-in on 127.0.0.1 (in memory, for tests and demos).",
    )
    parser.add_argument("--port", type=int, default=0, help="TCP port (default: any free port)")
    parser.add_argument("--token", default=DEFAULT_TOKEN, help="static bearer token accepted")
    parser.add_argument(
        "--token-lifetime", type=float, default=TOKEN_TTL_SECONDS, help="login tokens' seconds"
    )
    parser.add_argument(
        "--idle-timeout", type=float, default=IDLE_TIMEOUT_SECONDS, help="keep-alive seconds"
    )
    options = parser.parse_args(argv)
    done = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    with SciCatStandIn(
        port=options.port,
        token=options.token,
        token_lifetime=options.token_lifetime,
        idle_timeout=options.idle_timeout,
    ) as standin:
        print(standin.url, flush=True)
        done.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
