"""Fault injection: failing, withholding, delaying answers and killing credentials, from Python
(``standin.faults``) or over HTTP under ``/_standin/`` for a stand-in in another process.

:class:`Faults` holds the fault state itself; the stand-in asks it, per request, whether and how
to answer. What a fault must do to the stand-in (close its port, change a password) goes
through the small :class:`Host` protocol, so this module imports nothing above it.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import unquote

from scicat_ingestor.testing.scicat.messages import (
    BASE_PATH,
    CONTROL_PATH,
    JSONDict,
    Reply,
    _error,
    _normalise_api_path,
    _Request,
)

logger = logging.getLogger("scicat_ingestor.testing.scicat")


class Host(Protocol):
    """The stand-in as its faults see it."""

    token: str  # the static bearer token (``""``: none)

    @property
    def datasets(self) -> dict[str, JSONDict]: ...

    def stats(self) -> JSONDict: ...

    def add_proposal(self, proposal: Mapping[str, Any]) -> None: ...

    def preload_datasets(self, count: int) -> None: ...

    def _set_password(self, username: str, password: str) -> None: ...

    def _refuse_connections(self) -> None:
        """Close the listening port and cut open connections."""

    def _accept_connections(self) -> None:
        """Listen again on the same port (nothing if the stand-in has stopped)."""


@dataclass
class FailRule:
    """Answer the next ``remaining`` requests under ``prefix`` with ``status`` (after carrying
    them out when ``commit``)."""

    prefix: str
    status: int
    remaining: int
    commit: bool


class Faults:
    """The faults of one stand-in. Thread-safe. The HTTP forms (no auth): ``POST
    /_standin/fail {"count", "status", "path_prefix", "commit"}``, ``/_standin/stop_answering
    {"refuse", "seconds"}`` (``refuse`` needs ``seconds``), ``/_standin/resume``,
    ``/_standin/delay {"seconds", "match"}``, ``/_standin/expire_tokens``,
    ``/_standin/remove_route {"path", "method"}``, ``/_standin/reject_credentials {"seconds"}``,
    ``/_standin/change_password {"username", "password"}``, ``/_standin/set_token {"token"}``,
    ``/_standin/proposals {proposal}``, ``/_standin/preload {"count"}`` (datasets, see
    ``SciCatStandIn.preload_datasets``); ``GET /_standin/stats`` and ``/_standin/datasets``.
    """

    def __init__(self, host: Host) -> None:
        self._host = host
        self._lock = threading.Lock()  # guards the rules, delays, routes and credential faults
        self._gate = threading.Condition(threading.Lock())  # guards _answering
        self._outage = threading.RLock()  # serialises stop_answering, resume and stop
        self._stopping = threading.Event()  # the stand-in is stopping: release held requests
        self._answering = True
        self._resume_timer: threading.Timer | None = None
        self._fail_rules: list[FailRule] = []
        self._delays: dict[str, float] = {}
        self._removed_routes: set[str] = set()  # "METHOD /api/vN/template" ("*": any method)
        self._reject_until = 0.0  # monotonic: until then every credential is refused
        self._tokens_expired_at = -math.inf  # monotonic: tokens issued until then are expired

    # ---- the faults --------------------------------------------------------------------------

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
        rule = FailRule(_normalise_api_path(path_prefix), status, count, commit)
        with self._lock:
            self._fail_rules.append(rule)
        logger.info(
            "SciCat stand-in: next %d request(s) under %r get %d", count, rule.prefix, status
        )

    def stop_answering(self, refuse: bool = False, seconds: float | None = None) -> None:
        """Start an outage: requests are read but never answered, so clients time out.

        ``refuse`` closes the listening port and cuts open connections instead (connection
        refused / reset); ``seconds`` ends the outage by itself. Requests held during the
        outage are dropped unanswered when it ends.
        """
        with self._outage:
            with self._gate:
                self._answering = False
            if refuse:
                self._host._refuse_connections()
            self._cancel_resume()
            if seconds is not None:
                self._resume_timer = threading.Timer(seconds, self.resume)
                self._resume_timer.daemon = True
                self._resume_timer.start()
        logger.info("SciCat stand-in: outage (%s)", "refusing" if refuse else "not answering")

    def resume(self) -> None:
        """End an outage: answer again (and listen again on the same port after ``refuse``)."""
        with self._outage:
            if self._stopping.is_set():
                return
            self._cancel_resume()
            self._host._accept_connections()
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
        """Expire every login-issued token now (answered like any expired token: 403 / ``[]``
        on 4.5, 401 ``SESSION_EXPIRED`` on 5); the static token and later logins stay valid."""
        with self._lock:
            self._tokens_expired_at = time.monotonic()

    def remove_route(self, path: str, method: str = "*") -> None:
        """Answer a route 404 ``Cannot METHOD path`` from now on, like a backend without it.

        ``path`` is the route's template relative to ``/api/v3`` (``"users/my/self"``,
        ``"datasets/{pid}"``) or a full one (``"/api/v4/datasets"``); ``method`` ``"*"`` is any.
        """
        template = path if path.startswith("/api/") else f"{BASE_PATH}/{path.lstrip('/')}"
        with self._lock:
            self._removed_routes.add(f"{method.upper()} {template}")
        logger.info("SciCat stand-in: %s %s removed (404 from now on)", method, template)

    def reject_credentials(self, seconds: float) -> None:
        """For ``seconds``: every login gets 401 and every token (static, issued) counts as
        dead."""
        with self._lock:
            self._reject_until = time.monotonic() + seconds
        logger.info("SciCat stand-in: rejecting all credentials for %g s", seconds)

    def change_password(self, username: str, password: str) -> None:
        """A new password for an account (its issued tokens stay valid until they expire)."""
        self._host._set_password(username, password)

    def set_token(self, token: str) -> None:
        """Replace the static token (``""`` revokes it): the old one is refused from now on."""
        self._host.token = token

    # ---- asked by the stand-in ---------------------------------------------------------------

    @property
    def answering(self) -> bool:
        """False during an outage."""
        with self._gate:
            return self._answering

    def hold(self, request: _Request) -> bool:
        """Wait out the delay and any outage for ``request``: True to answer it now, False to
        drop it (it arrived during an outage, or the stand-in is stopping)."""
        return self._wait_for_delay(request) and self._await_answering()

    def take_fail_rule(self, path: str) -> FailRule | None:
        """The rule that replaces the answer to a request for ``path`` (counted down), if any."""
        target = _normalise_api_path(path)
        with self._lock:
            for rule in self._fail_rules:
                if target.startswith(rule.prefix):
                    rule.remaining -= 1
                    if rule.remaining == 0:
                        self._fail_rules.remove(rule)
                    return rule
        return None

    def route_removed(self, method: str, base: str, segments: tuple[str, ...]) -> bool:
        """Whether the route ``method base/segments…`` was removed by :meth:`remove_route`."""
        with self._lock:
            removed = self._removed_routes
            if not removed:
                return False
            template = f"{base}/{'/'.join(segments)}"
            return f"{method} {template}" in removed or f"* {template}" in removed

    def rejecting(self, now: float) -> bool:
        """Whether every credential is refused at monotonic time ``now``."""
        with self._lock:
            return now < self._reject_until

    def expired(self, issued: float) -> bool:
        """Whether a login token issued at monotonic time ``issued`` was expired since."""
        with self._lock:
            return issued <= self._tokens_expired_at

    def start(self) -> None:
        """The stand-in starts (again): requests may be held."""
        self._stopping.clear()

    def stop(self) -> None:
        """The stand-in stops: end a timed outage and release every request held by a fault."""
        with self._outage:
            self._stopping.set()
            self._cancel_resume()
            with self._gate:
                self._gate.notify_all()

    # ---- /_standin control over HTTP ---------------------------------------------------------

    def control(self, request: _Request) -> Reply:
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
            return Reply(200, self._host.stats())
        if method == "GET" and action == "datasets":
            return Reply(200, self._host.datasets)
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
        elif action == "remove_route":
            self.remove_route(str(args["path"]), str(args.get("method", "*")))
        elif action == "reject_credentials":
            self.reject_credentials(float(args["seconds"]))
        elif action == "change_password":
            self.change_password(str(args["username"]), str(args["password"]))
        elif action == "set_token":
            self.set_token(str(args["token"]))
        elif action == "proposals":
            self._host.add_proposal(args)
        elif action == "preload":
            self._host.preload_datasets(int(args["count"]))
        else:
            return Reply(404, _error(404, f"Cannot POST {CONTROL_PATH}/{action}"))
        return Reply(200, {"ok": True})

    # ---- internals ---------------------------------------------------------------------------

    def _cancel_resume(self) -> None:
        if self._resume_timer is not None:
            self._resume_timer.cancel()
            self._resume_timer = None

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
