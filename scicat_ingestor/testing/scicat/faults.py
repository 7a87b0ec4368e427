"""Fault injection: failing, withholding, delaying answers and killing credentials, from Python or
over HTTP under ``/_standin/`` for a stand-in in another process."""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING
from urllib.parse import unquote

from scicat_ingestor.testing.scicat.accounts import Account
from scicat_ingestor.testing.scicat.messages import (
    BASE_PATH,
    CONTROL_PATH,
    JSONDict,
    Reply,
    _error,
    _normalise_api_path,
    _Request,
)

if TYPE_CHECKING:
    from scicat_ingestor.testing.scicat.backend import SciCatStandIn

logger = logging.getLogger("scicat_ingestor.testing.scicat")


@dataclass
class _FailRule:
    prefix: str
    status: int
    remaining: int
    commit: bool


# The fault and ``/_standin`` control methods of SciCatStandIn (bound there; its state and
# locks live there, its docstring gives the HTTP forms).


def fail_next(
    self: SciCatStandIn,
    count: int,
    status: int = 503,
    path_prefix: str = "",
    *,
    commit: bool = False,
) -> None:
    """Answer the next ``count`` requests under ``path_prefix`` with ``status``.

    ``path_prefix`` is relative to ``/api/v3`` (``"datasets"``, ``"/origdatablocks"``; the
    full path works too; empty matches every API request). With ``commit=True`` the request
    is carried out first and only its answer is replaced ("the backend did it, the client
    never heard").
    """
    if count < 1 or not 100 <= status <= 599:
        raise ValueError(f"fail_next needs count >= 1 and an HTTP status, got {count}, {status}")
    rule = _FailRule(_normalise_api_path(path_prefix), status, count, commit)
    with self._lock:
        self._fail_rules.append(rule)
    logger.info("SciCat stand-in: next %d request(s) under %r get %d", count, rule.prefix, status)


def stop_answering(self: SciCatStandIn, refuse: bool = False, seconds: float | None = None) -> None:
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


def resume(self: SciCatStandIn) -> None:
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


def delay(self: SciCatStandIn, seconds: float, match: str) -> None:
    """Answer requests whose decoded URL or body contains ``match`` after ``seconds``.

    ``seconds <= 0`` removes the delay for ``match``.
    """
    with self._lock:
        if seconds > 0:
            self._delays[match] = seconds
        else:
            self._delays.pop(match, None)


def expire_tokens(self: SciCatStandIn) -> None:
    """Expire every login-issued token now (answered like any expired token: 403 / ``[]`` on
    4.5, 401 ``SESSION_EXPIRED`` on 5)."""
    now = time.monotonic()
    with self._lock:
        for token, (user, expires) in self._login_tokens.items():
            self._login_tokens[token] = (user, min(expires, now))


def remove_route(self: SciCatStandIn, path: str, method: str = "*") -> None:
    """Answer a route 404 ``Cannot METHOD path`` from now on, like a backend without it.

    ``path`` is the route's template relative to ``/api/v3`` (``"users/my/self"``,
    ``"datasets/{pid}"``) or a full one (``"/api/v4/datasets"``); ``method`` ``"*"`` is any.
    """
    template = path if path.startswith("/api/") else f"{BASE_PATH}/{path.lstrip('/')}"
    with self._lock:
        self._removed_routes.add(f"{method.upper()} {template}")
    logger.info("SciCat stand-in: %s %s removed (404 from now on)", method, template)


def reject_credentials(self: SciCatStandIn, seconds: float) -> None:
    """For ``seconds``: every login gets 401 and every token (static, issued) counts as dead."""
    with self._lock:
        self._reject_until = time.monotonic() + seconds
    logger.info("SciCat stand-in: rejecting all credentials for %g s", seconds)


def change_password(self: SciCatStandIn, username: str, password: str) -> None:
    """A new password for an account (its issued tokens stay valid until they expire)."""
    with self._lock:
        account = self._accounts.get(username, Account(password))
        self._accounts[username] = replace(account, password=password)


def set_token(self: SciCatStandIn, token: str) -> None:
    """Replace the static token (``""`` revokes it): the old one is refused from now on."""
    with self._lock:
        self.token = token


def _wait_for_delay(self: SciCatStandIn, request: _Request) -> bool:
    with self._lock:
        if not self._delays:
            return True
        text = unquote(f"{request.path}?{request.query}")
        body = request.body.decode("utf-8", "replace")
        seconds = max((s for m, s in self._delays.items() if m in text or m in body), default=0.0)
    return seconds <= 0 or not self._stopping.wait(seconds)


def _await_answering(self: SciCatStandIn) -> bool:
    """True to answer now; False if the request arrived during an outage (drop it)."""
    with self._gate:
        if self._answering:
            return not self._stopping.is_set()
        while not self._answering and not self._stopping.is_set():
            self._gate.wait()
        return False


def _take_fail_rule(self: SciCatStandIn, path: str) -> _FailRule | None:
    target = _normalise_api_path(path)
    with self._lock:
        for rule in self._fail_rules:
            if target.startswith(rule.prefix):
                rule.remaining -= 1
                if rule.remaining == 0:
                    self._fail_rules.remove(rule)
                return rule
    return None


# ---- /_standin control over HTTP -------------------------------------------------------


def _control(self: SciCatStandIn, request: _Request) -> Reply:
    """Fault injection for a stand-in in another process (benchmark, demo); no auth."""
    action = request.path[len(CONTROL_PATH) + 1 :]
    try:
        args = json.loads(request.body or b"{}")
        if not isinstance(args, dict):
            raise TypeError("the body must be a JSON object")
        return self._control_action(request.method, action, args)
    except (ValueError, TypeError, KeyError) as exc:
        return Reply(400, _error(400, f"{action}: {exc}"))


def _control_action(self: SciCatStandIn, method: str, action: str, args: JSONDict) -> Reply:
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
    elif action == "remove_route":
        self.remove_route(str(args["path"]), str(args.get("method", "*")))
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
