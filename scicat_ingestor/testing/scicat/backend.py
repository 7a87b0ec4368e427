"""A SciCat backend stand-in: an in-memory HTTP server for tests, the demo and the benchmark.

It plays backend 4.5 (API v3) or 5 (API v3 and v4; ``profiles`` holds what differs, ``v4`` the
v4 routes), held to the scenarios recorded from the real servers (``data/conformance/``):
a missing or garbage token gets 403, a v3 search 200 ``[]``; an expired one the same on 4.5 and
401 ``SESSION_EXPIRED`` on 5; accounts may create without reading other groups' datasets;
idle keep-alive connections are closed after ``idle_timeout`` seconds.
"""

from __future__ import annotations

import copy
import json
import logging
import secrets
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import Any

from scicat_ingestor.testing.scicat import v4
from scicat_ingestor.testing.scicat.accounts import DEFAULT_ACCOUNTS, STATIC_TOKEN_USER, Account
from scicat_ingestor.testing.scicat.faults import Faults
from scicat_ingestor.testing.scicat.filters import FilterError, apply_filter
from scicat_ingestor.testing.scicat.messages import (
    BASE_PATH,
    CONTROL_PATH,
    V4_BASE_PATH,
    JSONDict,
    Reply,
    _error,
    _internal_error,
    _now,
    _Request,
    _utc,
)
from scicat_ingestor.testing.scicat.profiles import DEFAULT_BACKEND, profile
from scicat_ingestor.testing.scicat.routing import _Route
from scicat_ingestor.testing.scicat.server import Connections, _Server
from scicat_ingestor.testing.scicat.shapes import (
    _add_read_back_fields,
    _attached_to,
    _email_of,
    _v3_attachment,
    _v3_view,
    _with_defaults,
)
from scicat_ingestor.testing.scicat.validation import (
    DTO_ATTACHMENT,
    DTO_CREDENTIALS,
    DTO_DERIVED_DATASET,
    DTO_ORIGDATABLOCK,
    DTO_PROPOSAL,
    DTO_RAW_DATASET,
    DTO_SAMPLE,
    DTO_V4_DATASET,
    Violation,
    load_validators,
)

logger = logging.getLogger("scicat_ingestor.testing.scicat")

DEFAULT_TOKEN = "standin-token"
PID_PREFIX = "20.500.12269"
REQUEST_LOG_SIZE = 10_000
TOKEN_TTL_SECONDS = 3600  # the backend's default JWT_EXPIRES_IN
IDLE_TIMEOUT_SECONDS = 5.0  # the backend's (Node's) keep-alive timeout


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


class SciCatStandIn:
    """An in-memory SciCat backend on 127.0.0.1, with fault injection (:attr:`faults`).
    Thread-safe.

    ``backend`` is the version played: ``"5"`` (default; API v3 under ``/api/v3`` and v4 under
    ``/api/v4``) or ``"4.5"`` (v3 only). Auth: every endpoint but ``/auth/login`` and
    ``/health`` needs ``Authorization: Bearer <t>`` with the static ``token`` or one issued by
    login (valid ``token_lifetime`` seconds). Without a valid one the answers are the real
    backend's: 403 (``GET datasets/{pid}``: 404 when it does not exist), ``GET datasets`` 200
    ``[]``, ``GET auth/whoami`` 200 with an empty body, ``GET users/my/self`` 401; an expired
    token on backend 5: 401 ``SESSION_EXPIRED`` everywhere (``/health`` too); a wrong login 401.
    Accounts (:class:`Account`) decide what may be read and created. A request on a connection
    idle for more than ``idle_timeout`` seconds is not answered: the connection is closed
    (``RemoteDisconnected`` at the client).

    Faults (``standin.faults``, a :class:`~scicat_ingestor.testing.scicat.faults.Faults`; also
    over HTTP under ``/_standin/`` for a stand-in in another process):

    * ``fail_next`` — the next N matching requests get a given status (default 503).
    * ``stop_answering`` — requests are read but never answered, so clients time out; with
      ``refuse=True`` the listening socket is closed and open connections are cut (connection
      refused / reset). ``resume`` ends either; requests held during the outage are then
      dropped without an answer (the client sees its timeout, or a closed connection).
    * ``delay`` — requests whose URL or body contains a string are answered late.
    * ``expire_tokens`` — login-issued tokens expire now, the static token stays.
    * ``remove_route`` — a route answers 404 as if this backend had none (e.g. no
      ``users/my/self``).
    * ``reject_credentials`` — for N seconds logins get 401 and every token counts as dead.
    * ``change_password``, ``set_token`` — rotate a password or the static token (``""``
      revokes it).
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
        backend: str = DEFAULT_BACKEND,
        preload: int = 0,
    ) -> None:
        self.profile = profile(backend)
        self.backend = backend
        self.host = host
        self.port = port
        self.token = token
        self.token_lifetime = token_lifetime
        self.idle_timeout = idle_timeout
        given = DEFAULT_ACCOUNTS if accounts is None else accounts
        self._accounts = {
            name: a if isinstance(a, Account) else Account(a) for name, a in given.items()
        }
        self._validators = load_validators(
            openapi_path or self.profile.openapi_path, self.profile.dtos
        )
        self.faults = Faults(self)
        self._lock = threading.Lock()  # guards the store and counters
        self._lifecycle = threading.RLock()  # start/stop, a refusing outage and its end
        self._stopped = True
        self._server: _Server | None = None
        self._serve_thread: threading.Thread | None = None
        self._connections = Connections()
        # token → (user, issued at, expires at), monotonic
        self._login_tokens: dict[str, tuple[str, float, float]] = {}
        self._counts: Counter[str] = Counter()
        self._log: deque[tuple[str, str, int]] = deque(maxlen=REQUEST_LOG_SIZE)
        self._datasets: dict[str, JSONDict] = {}
        self._examined = 0  # datasets examined by searches (MongoDB's totalDocsExamined)
        self._origdatablocks: list[JSONDict] = []
        self._blocks_of: dict[str, list[JSONDict]] = {}  # by datasetId: no scans per POST
        self._samples: list[JSONDict] = []
        self._attachments_of: dict[str, list[JSONDict]] = {}  # v3 shape, by dataset pid
        self._attachments: dict[str, JSONDict] = {}  # v4 shape, by aid
        self._jobs: dict[str, JSONDict] = {}
        self._proposals: dict[str, JSONDict] = {}
        self._instruments: list[JSONDict] = [self._instrument(seed) for seed in SEED_INSTRUMENTS]
        for proposal in SEED_PROPOSALS:
            self.add_proposal(dict(proposal))
        self._preloaded = 0
        self.preload_datasets(preload)

    # ---- lifecycle -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The base URL for ``scicat.host``, e.g. ``http://127.0.0.1:PORT/api/v3``."""
        return f"http://{self.host}:{self.port}{BASE_PATH}"

    @property
    def api_url(self) -> str:
        """The API root, ``http://127.0.0.1:PORT/api``: ``v3/…`` and (backend 5) ``v4/…`` below."""
        return self.url.removesuffix(BASE_PATH) + "/api"

    @property
    def control_url(self) -> str:
        return f"http://{self.host}:{self.port}{CONTROL_PATH}"

    def start(self) -> None:
        with self._lifecycle:
            if self._server is not None:
                raise RuntimeError("the SciCat stand-in is already running")
            self._stopped = False
            self.faults.start()
            self._listen()
            logger.info("SciCat stand-in listening on %s", self.url)

    def stop(self) -> None:
        """Stop serving, cut open connections and release anyone waiting in a fault."""
        self.faults.stop()  # first, outside _lifecycle: a fault's resume takes both in that order
        with self._lifecycle:
            self._stopped = True
            self._close_listener()
            self._connections.cut()
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
        server = _Server((self.host, self.port), self._handle, self._connections, self.idle_timeout)
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

    # ---- what the faults do to the stand-in (faults.Host) -----------------------------------

    def _refuse_connections(self) -> None:
        with self._lifecycle:
            self._close_listener()
            self._connections.cut()

    def _accept_connections(self) -> None:
        with self._lifecycle:
            if self._server is None and not self._stopped:
                self._listen()

    def _set_password(self, username: str, password: str) -> None:
        with self._lock:
            account = self._accounts.get(username, Account(password))
            self._accounts[username] = replace(account, password=password)

    # ---- the store ---------------------------------------------------------------------------

    def add_proposal(self, proposal: Mapping[str, Any]) -> None:
        """Add (or replace) a proposal; backend-managed fields get defaults."""
        if not isinstance(proposal.get("proposalId"), str) or not proposal["proposalId"]:
            raise ValueError("a proposal needs a non-empty string proposalId")
        stored = _proposal_document(proposal, "admin")
        with self._lock:
            self._proposals[stored["proposalId"]] = stored

    def preload_datasets(self, count: int) -> None:
        """Add ``count`` raw datasets, a catalogue that other ingestions filled before (each its
        own pid and ``scientificMetadata.job_id``, no origdatablock), straight into the store:
        the benchmark measures how the cost per file grows with the catalogue, and 100,000 load
        in about a second this way (over HTTP it would take minutes)."""
        if count < 0:
            raise ValueError(f"cannot preload {count} datasets")
        if not count:
            return
        template = self._preload_template()
        now = _now()
        with self._lock:
            first = self._preloaded
            for number in range(first, first + count):
                job_id = f"preloaded-{number:09d}"
                pid = f"{PID_PREFIX}/{job_id}"
                if pid in self._datasets:
                    raise ValueError(f"dataset {pid} exists already")
                self._datasets[pid] = {
                    **template,
                    "pid": pid,
                    "_id": pid,
                    "datasetName": job_id,
                    "scientificMetadata": {
                        "job_id": {"value": job_id, "type": "string", "unit": ""},
                        "run_number": {"value": number, "type": "integer", "unit": ""},
                    },
                    "createdAt": now,
                    "updatedAt": now,
                }
            self._preloaded = first + count
        logger.info("SciCat stand-in: %d datasets preloaded", count)

    def _preload_template(self) -> JSONDict:
        """The fields every preloaded dataset shares: an ingestor-like raw dataset as the v3
        ``POST datasets`` would store it (DTO defaults, read-back fields)."""
        body: JSONDict = {
            "type": "raw",
            "datasetName": "preloaded",
            "owner": "Pia Investigator",
            "ownerEmail": "pia.investigator@ess.example.org",
            "contactEmail": "pia.investigator@ess.example.org",
            "principalInvestigator": "Pia Investigator",
            "creationLocation": "ESS:CODA",
            "sourceFolder": "/ess/data/coda/2026/443503",
            "creationTime": "2026-01-01T00:00:00.000Z",
            "size": 0,
            "numberOfFiles": 0,
            "isPublished": False,
            "techniques": [],
            "proposalId": "443503",
            "instrumentId": SEED_INSTRUMENTS[2]["pid"],
            "ownerGroup": "ess_proposal_443503",
            "accessGroups": ["scientific information management systems group"],
        }
        dto = self._validators[DTO_RAW_DATASET]
        violations = dto.violations(body)
        if violations:  # the stand-in's own body: a DTO of a new backend profile disagrees
            raise RuntimeError(f"preload template rejected: {[v.message for v in violations]}")
        dataset = _with_defaults(dto, body)
        _add_read_back_fields(dataset)
        dataset.update(version="3", createdBy="admin", updatedBy="admin")
        return dataset

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
        answering = self.faults.answering
        with self._lock:
            return {
                "requests": dict(self._counts),
                "datasets": len(self._datasets),
                "examined": self._examined,
                "origdatablocks": len(self._origdatablocks),
                "samples": len(self._samples),
                "connections": self._connections.accepted,
                "idle_closed": self._connections.idle_closed,
                "answering": answering,
            }

    # ---- request processing (called from handler threads) ---------------------------------

    def _handle(self, request: _Request) -> Reply | None:
        """Answer one request, or ``None`` to drop it unanswered (outage)."""
        if request.path.startswith(CONTROL_PATH + "/"):
            return self.faults.control(request)
        route, params = self._route(request)
        name = route.name if route else "unrouted"
        if not self.faults.hold(request):
            self._record(request, name, 0)
            return None
        rule = self.faults.take_fail_rule(request.path)
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
        routes = self._routes
        base = BASE_PATH
        if request.path.startswith(V4_BASE_PATH + "/") and self.profile.serves_v4:
            routes, base = v4.ROUTES, V4_BASE_PATH
        elif not request.path.startswith(BASE_PATH + "/"):
            return None, {}
        segments = request.path[len(base) + 1 :].split("/")
        for route in routes:
            params = route.match(request.method, segments)
            if params is not None:
                if self.faults.route_removed(route.method, base, route.segments):
                    return None, {}
                return route, params
        return None, {}

    @property
    def _routes(self) -> tuple[_Route, ...]:
        return _ROUTES_V5 if self.profile.serves_v4 else _ROUTES

    def _authorised(self, route: _Route, request: _Request) -> Reply:
        try:
            user, expired = self._caller(request.authorization)
            if expired and self.profile.session_expired and not route.login:
                return Reply(401, _error(401, "SESSION_EXPIRED"))
            if route.public:
                return route.handler(self, request)
            if user is None:  # missing, garbage or (4.5) expired: the real backend's answers
                return (route.anonymous or SciCatStandIn._forbidden_resource)(self, request)
            request.user = user
            return route.handler(self, request)
        except FilterError as exc:
            return Reply(400, _error(400, str(exc)))

    def _caller(self, authorization: str | None) -> tuple[str | None, bool]:
        """The account a bearer token belongs to (None when missing, unknown, revoked or
        expired) and whether the token is an expired one of ours (a JWT says so itself)."""
        scheme, _, token = (authorization or "").partition(" ")
        token = token.strip() if scheme.lower() == "bearer" else ""
        if not token:
            return None, False
        now = time.monotonic()
        if self.faults.rejecting(now):
            return None, False  # as if the secret changed: not expired, just unknown
        with self._lock:
            user, issued, expires = self._login_tokens.get(token, ("", 0.0, 0.0))
            if user and (now >= expires or self.faults.expired(issued)):
                return None, True
            if not user and token == self.token:
                user = STATIC_TOKEN_USER
        return user or None, False

    def _account(self, user: str) -> Account:
        """The permissions of a user (the static token's user is an admin unless configured)."""
        return self._accounts.get(user) or Account("", admin=True)

    def _record(self, request: _Request, route: str, status: int) -> None:
        with self._lock:
            self._counts[f"{route} {status}"] += 1
            self._log.append((request.method, request.path, status))

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
            now = time.monotonic()
            if self.faults.rejecting(now):
                return unauthorised
            token = secrets.token_urlsafe(24)
            # Kept after expiry: a dead JWT still says it expired (backend 5 answers 401).
            self._login_tokens[token] = (username, now, now + self.token_lifetime)
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
                    "email": _email_of(username),
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
                "_id": _seed_id(f"user/{request.user}"),
                "id": _seed_id(f"user/{request.user}"),
                "username": request.user,
                "email": _email_of(request.user),
                "currentGroups": list(account.groups),
                "authStrategy": "local",
            },
        )

    def _my_self(self, request: _Request) -> Reply:
        user_id = _seed_id(f"user/{request.user}")
        return Reply(
            200,
            {
                "username": request.user,
                "email": _email_of(request.user),
                "authStrategy": "local",
                "_id": user_id,
                "__v": 0,
                "id": user_id,
            },
        )

    # Answers without valid credentials (missing, garbage or expired token), as the real backend.

    def _forbidden_resource(self, request: _Request) -> Reply:
        return Reply(403, _error(403, "Forbidden resource"))

    def _unauthenticated(self, request: _Request) -> Reply:
        return Reply(401, _error(401, "Unauthenticated"))

    def _silently_empty(self, request: _Request) -> Reply:
        return Reply(200, [])

    def _empty_body(self, request: _Request) -> Reply:
        """``GET auth/whoami`` without a valid token: 200 with nothing in it."""
        return Reply(200)

    def _dataset_unauthorised(self, request: _Request) -> Reply:
        """403 only when the dataset exists, else the plain 404."""
        pid = request.params["pid"]
        with self._lock:
            exists = pid in self._datasets
        if exists:
            return Reply(403, _error(403, "Unauthorized access"))
        return Reply(404, _error(404, f"dataset: {pid} not found"))

    def _proposal_unauthorised(self, request: _Request) -> Reply:
        pid = request.params["pid"]
        with self._lock:
            exists = pid in self._proposals
        if exists:
            return Reply(403, _error(403, "Unauthorized to this proposal"))
        return Reply(404, _error(404, f"Proposal: {pid} not found"))

    def _health(self, request: _Request) -> Reply:
        up = {"database": {"status": "up"}}
        return Reply(200, {"status": "ok", "info": up, "error": {}, "details": up})

    # ---- datasets (v3) -----------------------------------------------------------------------

    def _create_dataset(self, request: _Request) -> Reply:
        try:
            body = self._json_body(request)
        except ValueError as exc:
            return Reply(400, _error(400, f"invalid JSON body: {exc}"))
        kind = body.get("type") if isinstance(body, dict) else None
        if kind not in ("raw", "derived"):
            return self._untyped_dataset(body)
        dto = self._validators[DTO_RAW_DATASET if kind == "raw" else DTO_DERIVED_DATASET]
        violations = dto.violations(body)
        if violations:
            return Reply(400, _dataset_validation_error(violations))
        assert isinstance(body, dict)
        account = self._account(request.user)
        if not (account.admin or account.may_create or body.get("ownerGroup") in account.groups):
            return Reply(403, _error(403, "Unauthorized to create this dataset"))
        dataset = _with_defaults(dto, body)
        _add_read_back_fields(dataset)
        dataset["version"] = "3"
        return self._store_dataset(request, dataset, _v3_view)

    def _untyped_dataset(self, body: object) -> Reply:
        """The controller's own type check, with its own body shapes: 4.5 validates an untyped
        body against the generic dataset DTO (which knows no ``principalInvestigator``)."""
        if self.profile.untyped_is_validated and isinstance(body, dict) and "type" not in body:
            violations = self._validators[DTO_V4_DATASET].violations(body)
            return Reply(400, _error(400, [v.message for v in violations]))
        return Reply(400, {"status": 400, "message": self.profile.wrong_type_message})

    def _store_dataset(
        self, request: _Request, dataset: JSONDict, view: Callable[[JSONDict], JSONDict]
    ) -> Reply:
        """Store a new dataset (pid given or made) and answer it in the API's shape; 409 when
        the pid exists."""
        now = _now()
        with self._lock:
            pid = dataset.get("pid") or f"{PID_PREFIX}/{uuid.uuid4()}"
            if pid in self._datasets:
                return Reply(409, _error(409, f"A dataset with pid {pid} already exists!"))
            dataset.update(
                pid=pid,
                _id=pid,
                createdBy=request.user,
                updatedBy=request.user,
                createdAt=now,
                updatedAt=now,
            )
            self._datasets[pid] = dataset
            return Reply(201, view(dataset))

    def _scan_datasets(
        self, request: _Request, view: Callable[[JSONDict], JSONDict] | None = None
    ) -> list[JSONDict]:
        """The readable datasets matching the request's ``filter``, found as SciCat's MongoDB
        finds them by a field without an index: by examining the stored datasets one by one (no
        index, no dict look-up), so a search costs time in proportion to the catalogue. The
        scan walks a snapshot outside the lock, so other requests go on meanwhile, as they do
        beside a collection scan; ``stats()["examined"]`` counts the documents examined. ``view``:
        the API's shape of each one answered."""
        account = self._account(request.user)
        raw_filter = request.filter()
        with self._lock:
            snapshot = list(self._datasets.values())
        examined = 0

        def readable() -> Iterator[JSONDict]:
            nonlocal examined
            for dataset in snapshot:
                examined += 1
                if account.may_read(dataset):
                    yield dataset

        try:
            return apply_filter(readable(), raw_filter, view)
        finally:
            with self._lock:
                self._examined += examined

    def _list_datasets(self, request: _Request) -> Reply:
        return Reply(200, self._scan_datasets(request, _v3_view))

    def _find_one_dataset(self, request: _Request) -> Reply:
        found = self._scan_datasets(request, _v3_view)
        return Reply(200, found[0]) if found else Reply(404, _error(404, "dataset not found"))

    def _get_dataset(self, request: _Request) -> Reply:
        pid = request.params["pid"]
        with self._lock:
            dataset = self._datasets.get(pid)
            if dataset is None:
                return Reply(404, _error(404, f"dataset: {pid} not found"))
            if not self._account(request.user).may_read(dataset):
                return Reply(403, _error(403, "Unauthorized access"))
            return Reply(200, {**_v3_view(dataset), "history": []})

    def _dataset_origdatablocks(self, request: _Request) -> Reply:
        pid = request.params["pid"]
        with self._lock:
            dataset = self._datasets.get(pid)
            if dataset is not None and not self._account(request.user).may_read(dataset):
                return Reply(403, _error(403, "Unauthorized access"))
            found = self._blocks_of.get(pid, [])
            return Reply(200, found)

    def _validated(self, request: _Request, dto_name: str) -> JSONDict | Reply:
        """The body with the DTO's defaults, or the 400 the backend's validation gives (its
        ``message`` a list, on v3 and v4)."""
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

    # ---- origdatablocks ----------------------------------------------------------------------

    def _create_origdatablock(self, request: _Request) -> Reply:
        block = self._validated(request, DTO_ORIGDATABLOCK)
        if isinstance(block, Reply):
            return block
        return self._store_block(request, block, owner_only=False)

    def _store_block(self, request: _Request, block: JSONDict, *, owner_only: bool) -> Reply:
        """Store an origdatablock of an existing dataset and count it into the dataset's size.

        ``owner_only`` (v4): an account outside the admin groups may add blocks only to
        datasets whose ownerGroup is one of its groups (v3: any it may create or read)."""
        block["dataFileList"] = [{**f, "time": _utc(f["time"])} for f in block["dataFileList"]]
        now = _now()
        with self._lock:
            dataset = self._datasets.get(block["datasetId"])
            if dataset is None:
                message = f"Dataset: {block['datasetId']} not found for attaching an origdatablock"
                return Reply(404, _error(404, message))
            account = self._account(request.user)
            if owner_only:
                if not (account.admin or dataset.get("ownerGroup") in account.groups):
                    return Reply(403, _error(403, "Unauthorized access"))
            elif not (account.may_create or account.may_read(dataset)):
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
            self._count_block(dataset, block)
            dataset["updatedAt"] = now
            return Reply(201, block)

    def _count_block(self, dataset: JSONDict, block: JSONDict) -> None:
        """Backend 5 (HEAD) adds each block on top of what the dataset was created with; 4.5
        (and v5.2.1) recompute size and numberOfFiles as the sums over the dataset's blocks."""
        files = len(block["dataFileList"])
        if self.profile.size_by_increment:
            dataset["size"] = (dataset.get("size") or 0) + block["size"]
            dataset["numberOfFiles"] = (dataset.get("numberOfFiles") or 0) + files
            return
        blocks = self._blocks_of[dataset["pid"]]
        dataset["size"] = sum(o["size"] for o in blocks)
        dataset["numberOfFiles"] = sum(len(o["dataFileList"]) for o in blocks)

    def _list_origdatablocks(self, request: _Request) -> Reply:
        with self._lock:
            return Reply(200, apply_filter(self._origdatablocks, request.filter()))

    # ---- attachments (dataset thumbnails) --------------------------------------------------

    @property
    def attachments(self) -> dict[str, list[JSONDict]]:
        """A snapshot of the stored attachments (v3 shape) by dataset pid, in creation order."""
        with self._lock:
            return copy.deepcopy(self._attachments_of)

    def _create_attachment(self, request: _Request) -> Reply:
        """``POST datasets/{pid}/attachments``: 404 without the dataset; the ``id`` sent is
        ignored (4.5 and 5 both give a new server uuid: a repeated POST makes a second one)."""
        body = self._validated(request, DTO_ATTACHMENT)
        if isinstance(body, Reply):
            return body
        pid = request.params["pid"]
        body.pop("id", None)
        with self._lock:
            if pid not in self._datasets:
                return Reply(404, _error(404, f"dataset: {pid} not found"))
            body["relationships"] = [_attached_to(pid)]
            stored = self._store_attachment(request, body, str(uuid.uuid4()))
            return Reply(201, _v3_attachment(stored, pid))

    def _store_attachment(self, request: _Request, attachment: JSONDict, aid: str) -> JSONDict:
        """Store an attachment under ``aid`` and list it with every dataset it is attached to
        (lock held)."""
        now = _now()
        attachment.update(
            aid=aid,
            _id=aid,
            id=aid,
            createdBy=request.user,
            updatedBy=request.user,
            createdAt=now,
            updatedAt=now,
        )
        attachment.setdefault("accessGroups", [])
        attachment.setdefault("__v", 0)
        self._attachments[aid] = attachment
        for relation in attachment.get("relationships") or ():
            if relation.get("targetType") == "dataset":
                target = relation.get("targetId")
                shown = _v3_attachment(attachment, target)
                self._attachments_of.setdefault(target, []).append(shown)
        return attachment

    def _dataset_attachments(self, request: _Request) -> Reply:
        with self._lock:
            return Reply(200, self._attachments_of.get(request.params["pid"], []))

    # ---- proposals, instruments, samples -----------------------------------------------------

    def _create_proposal(self, request: _Request) -> Reply:
        proposal = self._validated(request, DTO_PROPOSAL)
        if isinstance(proposal, Reply):
            return proposal
        if not self._account(request.user).admin:
            return Reply(403, _error(403, "Forbidden resource"))
        stored = _proposal_document(proposal, request.user)
        with self._lock:
            if stored["proposalId"] in self._proposals:
                return Reply(409, _error(409, "A proposal with this proposalId already exists!"))
            self._proposals[stored["proposalId"]] = stored
            return Reply(201, stored)

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
        """``POST samples``; a duplicate ``sampleId`` is a duplicate key (500, not 409), and on
        backend 5 so is a missing ``sampleName`` (checked by mongoose, not by the DTO)."""
        try:
            body = self._json_body(request)
        except ValueError as exc:
            return Reply(400, _error(400, f"invalid JSON body: {exc}"))
        dto = self._validators[DTO_SAMPLE]
        if not isinstance(body, dict):
            return Reply(400, _error(400, [v.message for v in dto.violations(body)]))
        # v5's DTO requires sampleName on paper; the validation pipe lets its absence through.
        absent_name = "sampleName" not in body
        violations = [
            v for v in dto.violations(body) if not (absent_name and v.property == "sampleName")
        ]
        if violations:
            return Reply(400, _error(400, [v.message for v in violations]))
        if self.profile.sample_name_required and not isinstance(body.get("sampleName"), str):
            return Reply(500, _internal_error())
        sample = _with_defaults(dto, body)
        now = _now()
        with self._lock:
            sample_id = sample.get("sampleId") or str(uuid.uuid4())
            if any(s["sampleId"] == sample_id for s in self._samples):
                return Reply(500, _internal_error())
            sample.setdefault("sampleCharacteristics", {})
            sample.update(
                sampleId=sample_id,
                _id=sample_id,
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


def _proposal_document(proposal: Mapping[str, Any], user: str) -> JSONDict:
    """A proposal as stored: backend-managed fields get defaults."""
    now = _now()
    pid = proposal["proposalId"]
    return {
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
        "createdBy": user,
        "updatedBy": user,
        "createdAt": now,
        "updatedAt": now,
        **copy.deepcopy(dict(proposal)),
    }


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
    _Route(
        "POST",
        ("auth", "login"),
        "POST /auth/login",
        SciCatStandIn._login,
        public=True,
        login=True,
    ),
    _Route("GET", ("health",), "GET /health", SciCatStandIn._health, public=True),
    _Route(
        "GET",
        ("auth", "whoami"),
        "GET /auth/whoami",
        SciCatStandIn._whoami,
        anonymous=SciCatStandIn._empty_body,
    ),
    _Route(
        "GET",
        ("users", "my", "self"),
        "GET /users/my/self",
        SciCatStandIn._my_self,
        anonymous=SciCatStandIn._unauthenticated,
    ),
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
    _Route("POST", ("proposals",), "POST /proposals", SciCatStandIn._create_proposal),
    _Route(
        "GET",
        ("proposals", "{pid}"),
        "GET /proposals/{pid}",
        SciCatStandIn._get_proposal,
        anonymous=SciCatStandIn._proposal_unauthorised,
    ),
    _Route("GET", ("instruments",), "GET /instruments", SciCatStandIn._list_instruments),
    _Route(
        "GET",
        ("samples",),
        "GET /samples",
        SciCatStandIn._list_samples,
        anonymous=SciCatStandIn._silently_empty,
    ),
    _Route(
        "POST",
        ("samples",),
        "POST /samples",
        SciCatStandIn._create_sample,
        anonymous=SciCatStandIn._unauthenticated,
    ),
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
_ROUTES_V5 = _ROUTES + v4.V3_ROUTES  # backend 5's v3 API also takes jobs
