"""SciCat credentials: where the token comes from, and what happens on a 401 or 403.

The token comes from a login (renewed *before* it ends, at the login answer's ``expires_in``),
from ``scicat.token_file`` (re-read when it changes or is refused) or from ``scicat.token``.

On a 401 or 403 (``Credentials.send``): the credentials are renewed once (a new login, the token
file re-read) and the request repeated. A refusal that survives that is probed with the same token
(``GET users/my/self``): refused there too → our credentials are dead, an auth outage
(``SciCatAuthRefused``: files wait, nothing is dead-lettered); accepted → this account may not do
this to this record (``SciCatForbidden``, with the reason from ``permissions``).

Why a probe, and why that one: backend 4.5 answers an expired token exactly like a permission
problem (403, or a silently empty search), and both 4.5 and 5 answer a garbage, revoked or
old-secret token like no token at all. v5 answers an expired one with 401 ``SESSION_EXPIRED``
(renewed like any 401). ``GET auth/whoami`` cannot tell: it answers 200 with an empty body to a
dead token. ``GET users/my/self`` answers 401 to one, so only an answer with a ``username``
counts as accepted. A SciCat without that route (404) leaves the probe inconclusive: one WARNING,
and a refusal counts as a permission problem, as before the probe existed.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from scicat_ingestor.config.model import ConfigError, SciCatOptions
from scicat_ingestor.config.redact import Redactor
from scicat_ingestor.ops.logs import add_secret
from scicat_ingestor.ops.metrics import SCICAT_AUTH_OK, SCICAT_LOGINS
from scicat_ingestor.ops.turns import TURNS
from scicat_ingestor.scicat.errors import SciCatAuthRefused, SciCatError, SciCatUnavailable, decode
from scicat_ingestor.scicat.http import Request, Transport
from scicat_ingestor.scicat.permissions import Permissions

logger = logging.getLogger("scicat_ingestor.scicat")

# Answers that may mean "these credentials are dead" (4.5: 403 for expired tokens; 5: 401).
AUTH_REFUSALS = frozenset({401, 403})
PROBE_PATH = "users/my/self"
LOGIN_PATH = "auth/login"

RENEW_FRACTION = 0.8  # renew at 80 % of the token's lifetime ...
RENEW_MARGIN_SECONDS = 30.0  # ... and at the latest this long before it ends (when that fits)
LOGIN_RETRY_SECONDS = 1.0  # a failed login is not repeated sooner (no login storm)
PROBE_CACHE_SECONDS = 3.0  # how long a probe's refusal (or, to skip renewals, acceptance) holds
ERROR_LOG_INTERVAL = 60.0  # an auth outage is logged at ERROR at most this often


@dataclass(frozen=True)
class Login:
    """A login answer: the token and, when the backend said so, its lifetime in seconds."""

    token: str
    expires_in: float | None


def renew_after(lifetime: float) -> float:
    """Seconds after a login to renew it: at 80 % of the lifetime, but at the latest 30 s before
    it ends when that still leaves half of it (a 3600 s token: 2880 s; 60 s: 30 s; 3 s: 2.4 s)."""
    by_fraction = RENEW_FRACTION * lifetime
    by_margin = lifetime - RENEW_MARGIN_SECONDS
    return min(by_fraction, by_margin) if by_margin >= lifetime / 2 else by_fraction


@dataclass(frozen=True)
class Account:
    """Who SciCat says we are (the probe's answer); ``verified`` False: SciCat has no probe
    route, so the name is the configured one and nothing was checked."""

    name: str
    verified: bool = True


class TokenSource:
    """The bearer token to send: from a login (renewed before expiry, once for all threads), from
    ``scicat.token_file`` (re-read when it changes or is refused) or the configured token."""

    def __init__(
        self,
        options: SciCatOptions,
        login: Callable[[], Login],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._login = login
        self._clock = clock
        self._lock = threading.Lock()  # held while logging in or reading the token file
        self._file = Path(options.token_file) if options.token_file else None
        self.username = options.username
        self.can_login = self._file is None and not options.token and bool(options.username)
        self._token = options.token.value
        self._renew_at = math.inf
        self._expires_at = math.inf
        self._failure: tuple[float, Exception] | None = None
        self._file_stamp: tuple[int, int, int] | None = None
        self._file_error = ""
        if self._file is not None:
            self._read_file(initial=True)

    @property
    def kind(self) -> str:
        """How we authenticate, for log lines: never the secret itself."""
        if self._file is not None:
            return f"token from {self._file}"
        if self.can_login:
            return f"login as '{self.username}'"
        return "static token (scicat.token)" if self._token else "no credentials"

    def current(self) -> str:
        """The token for the next request; logs in when there is none or it is due for renewal."""
        if self._file is not None:
            self._reread_if_changed()
            return self._token
        if not self.can_login:
            return self._token
        now = self._clock()
        if self._token and now < self._renew_at:
            return self._token
        still_valid = bool(self._token) and now < self._expires_at
        # While one thread renews, the others go on with the old token if it still works.
        if not TURNS.take_lock(self._lock, blocking=not still_valid):
            return self._token
        try:
            if self._token and self._clock() < self._renew_at:
                return self._token  # another thread renewed while we waited
            try:
                self._log_in("renewing before expiry" if self._token else "first login")
            except Exception as exc:
                if not (self._token and self._clock() < self._expires_at):
                    raise
                logger.warning("SciCat login failed (%s); the current token is still valid", exc)
            return self._token
        finally:
            self._lock.release()

    def renew(self, rejected: str) -> bool:
        """After SciCat refused ``rejected``: True when a different token is there to try."""
        with self._locked():
            if self._token != rejected:
                return True  # another thread renewed it meanwhile
            if self._file is not None:
                self._read_file()
                return self._token != rejected
            if not self.can_login:
                return False
            self._log_in("SciCat refused the token")
            return True

    # ----------------------------------------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """The lock, taken without holding the turn while it is busy: its holder may be logging
        in and need the turn back to finish (``ops/turns.py``)."""
        TURNS.take_lock(self._lock)
        try:
            yield
        finally:
            self._lock.release()

    def _log_in(self, why: str) -> None:
        """One login (lock held); a failure is remembered so other threads do not repeat it."""
        started = self._clock()
        if self._failure is not None and started - self._failure[0] < LOGIN_RETRY_SECONDS:
            raise self._failure[1]
        try:
            login = self._login()
        except Exception as exc:
            self._failure = (started, exc)
            raise
        self._failure = None
        self._token = login.token
        lifetime = login.expires_in
        if lifetime is None or lifetime <= 0:
            self._renew_at = self._expires_at = math.inf
            logger.info("Logged in to SciCat as %s (%s; no lifetime given)", self.username, why)
            return
        self._renew_at = started + renew_after(lifetime)
        self._expires_at = started + lifetime
        logger.info(
            "Logged in to SciCat as %s (%s; token valid %g s, renewed after %.1f s)",
            self.username,
            why,
            lifetime,
            self._renew_at - started,
        )

    def _reread_if_changed(self) -> None:
        assert self._file is not None
        try:
            stamp = _stamp(self._file)
        except OSError:
            stamp = None
        if stamp != self._file_stamp:
            with self._locked():
                if stamp != self._file_stamp or stamp is None:
                    self._read_file()

    def _read_file(self, initial: bool = False) -> None:
        """Read the token file (lock held, or in ``__init__``); a later read error keeps the
        token we have (a secret being re-mounted), once logged."""
        assert self._file is not None
        try:
            stamp = _stamp(self._file)
            token = self._file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            if initial:
                message = f"scicat.token_file: cannot read {self._file}: {reason}"
                raise ConfigError(message) from None
            if reason != self._file_error:
                logger.warning("scicat.token_file: cannot read %s: %s", self._file, reason)
            self._file_error = reason
            return
        if initial and not token:
            raise ConfigError(f"scicat.token_file: {self._file} is empty")
        self._file_error = ""
        changed = token != self._token
        self._token, self._file_stamp = token, stamp
        if token:
            add_secret(token)
        if changed and not initial:
            logger.info("Read a new SciCat token from %s", self._file)


def _stamp(path: Path) -> tuple[int, int, int]:
    st = os.stat(path)
    return st.st_mtime_ns, st.st_size, st.st_ino


class ProbeCache:
    """The last probe verdict per token, reused for ``PROBE_CACHE_SECONDS``."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._entry: tuple[str, float, Account | None, str] | None = None

    def get(self, token: str) -> tuple[Account | None, str] | None:
        """(account or None if refused, refusal text) when a fresh verdict exists."""
        with self._lock:
            entry = self._entry
        if entry is None or entry[0] != token or self._clock() - entry[1] > PROBE_CACHE_SECONDS:
            return None
        return entry[2], entry[3]

    def put(self, token: str, account: Account | None, refusal: str = "") -> None:
        with self._lock:
            self._entry = (token, self._clock(), account, refusal)

    def accepted_recently(self, token: str) -> bool:
        verdict = self.get(token)
        return verdict is not None and verdict[0] is not None


class CredentialsState:
    """Whether SciCat accepts our credentials: the ``/ready`` check, the metric, the outage log.

    ``recheck`` (run by the health checker's thread) probes again during an outage, so ``/ready``
    recovers even while no file is being retried.
    """

    def __init__(self, recheck: Callable[[], None], hint: str, fix: str) -> None:
        """``hint``: what to do while the daemon waits; ``fix``: the same for a one-off run."""
        self._recheck = recheck
        self._hint = hint
        self._fix = fix
        self._waits = True
        self._lock = threading.Lock()
        self._ok = True
        self._detail = "no refusal seen"
        self._account = ""
        self._last_error_log = -math.inf
        SCICAT_AUTH_OK.set(1)

    @property
    def ok(self) -> bool:
        return self._ok

    def ends_run(self) -> None:
        """For a one-off command (``ingest``): a refusal ends its run, nothing waits for SciCat,
        so the daemon's ERROR ("files wait ...") would be wrong; the command says it once, with
        ``refusal()``, and a refusal is only logged at DEBUG here."""
        self._waits = False

    def refusal(self) -> str:
        """One line for a one-off command: what SciCat refused and what to fix."""
        with self._lock:
            return f"{self._detail}; {self._fix}"

    def status(self) -> tuple[bool, str]:
        """(accepted, one line for /ready); never a secret, never a network call."""
        with self._lock:
            return self._ok, self._detail

    def recheck(self) -> None:
        if not self._ok:
            self._recheck()

    def accepted(self, account: str = "") -> None:
        """A request with our token succeeded (or the probe did)."""
        if self._ok and (not account or account == self._account):
            return
        with self._lock:
            recovered = not self._ok
            self._ok = True
            self._account = account or self._account
            who = f" (account '{self._account}')" if self._account else ""
            self._detail = f"SciCat accepts our credentials{who}"
        SCICAT_AUTH_OK.set(1)
        if recovered:
            logger.info("SciCat accepts our credentials again%s: resuming", who)

    def refused(self, detail: str) -> None:
        """An auth outage started or goes on; ERROR when it starts and at most once a minute."""
        now = time.monotonic()
        with self._lock:
            started = self._ok
            self._ok = False
            self._detail = detail
            log = started or now - self._last_error_log >= ERROR_LOG_INTERVAL
            if log:
                self._last_error_log = now
        SCICAT_AUTH_OK.set(0)
        if not self._waits:
            logger.debug("%s; %s", detail, self._fix)
        elif log:
            logger.error(
                "%s: files wait (intake paused, nothing dead-lettered or committed past them) "
                "until SciCat accepts them again; %s",
                detail,
                self._hint,
            )


class Credentials:
    """Sends requests with our token and decides what a 401/403 means (module docstring)."""

    def __init__(self, options: SciCatOptions, transport: Transport, base: str) -> None:
        self._options = options
        self._transport = transport
        self._base = base  # the v3 API: auth and users have no v4 routes
        self._password = options.password.value
        self._tokens = TokenSource(options, self._login)
        self._probes = ProbeCache()
        self._probe_missing = False  # SciCat answered 404 to the probe: it cannot be checked
        self._probe_missing_lock = threading.Lock()
        self._permissions = Permissions()
        self.state = CredentialsState(self._recheck, *self._hints())

    def redactor(self, token: str) -> Callable[[str], str]:
        """SciCat or a proxy may quote our request: keep our secrets (the token, the password,
        every ``additional_headers`` value) out of the error."""
        headers = self._options.additional_headers.values()
        return Redactor((token, self._options.token.value, self._password, *headers)).redact

    def token(self) -> str:
        """The token to send; a refused login becomes an auth outage."""
        try:
            return self._tokens.current()
        except SciCatAuthRefused as err:
            self.state.refused(str(err))
            raise

    def send(self, request: Request) -> tuple[str, requests.Response]:
        """Send with our token; a 401/403 is handled once (renew, repeat, probe): the answer
        returned is not a refusal, or the error raised says whose problem it is."""
        token = self.token()
        response = self._transport.send(request, token)
        if response.status_code in AUTH_REFUSALS:
            return self._after_refusal(request, token, response)
        if response.status_code < 400 and request.method != "GET":
            # a GET may be answered for anyone (public datasets): only a write proves the token
            self.state.accepted()
        return token, response

    def check(self) -> bool:
        """The start-up probe: False, after one ERROR line, when SciCat is reachable and refuses
        our credentials; True when it accepts them or cannot tell now (logged either way).
        Never raises: it runs in its own thread beside the daemon."""
        try:
            token = self._tokens.current()
            account = self._probe(token)
            if account is None and self._tokens.renew(token):
                token = self._tokens.current()
                account = self._probe(token)
        except SciCatAuthRefused as err:
            self.state.refused(str(err))
            return False
        except SciCatError as err:
            logger.warning("SciCat credentials not checked at start: %s", err)
            return True
        if account is None:
            verdict = self._probes.get(token)
            cause = verdict[1] if verdict else "refused"
            self.state.refused(str(SciCatAuthRefused("GET", PROBE_PATH, None, [cause])))
            return False
        if account.verified:
            kind = self._tokens.kind
            logger.info("SciCat accepts our credentials: account '%s' (%s)", account.name, kind)
            self.state.accepted(account.name)
        return True

    # ----------------------------------------------------------------------------------------

    def _after_refusal(
        self, request: Request, token: str, response: requests.Response
    ) -> tuple[str, requests.Response]:
        """Renew the credentials once and repeat; a refusal that survives is probed: the token
        refused too → ``SciCatAuthRefused``; accepted → ``SciCatForbidden`` (this record).

        A token the probe accepted moments ago is probed first instead (renewing it would only
        add a login per permission problem) and renewed only if that probe refuses it.
        """
        renewed = False
        if not self._probes.accepted_recently(token):
            renewed = True
            token, response = self._renew_and_repeat(request, token, response)
            if response.status_code not in AUTH_REFUSALS:
                return token, response
        account = self._probe(token)
        if account is None and not renewed:
            token, response = self._renew_and_repeat(request, token, response)
            if response.status_code not in AUTH_REFUSALS:
                return token, response
            account = self._probe(token)
        if account is None:
            verdict = self._probes.get(token)
            refusal = f"HTTP {response.status_code} on {request.method} {request.endpoint}"
            raise self._refused(request, response, refusal, verdict[1] if verdict else "")
        raise self._permissions.forbidden(request, response, account.name, self.redactor(token))

    def _renew_and_repeat(
        self, request: Request, token: str, response: requests.Response
    ) -> tuple[str, requests.Response]:
        """A new token (login, token file) and the request repeated with it, if there is one."""
        try:
            renewed = self._tokens.renew(token)
        except SciCatAuthRefused as err:
            refusal = f"HTTP {response.status_code} on {request.method} {request.endpoint}"
            raise self._refused(request, response, refusal, *err.causes) from None
        if not renewed:
            return token, response
        token = self.token()
        response = self._transport.send(request, token)
        if 200 <= response.status_code < 400:
            self.state.accepted()
        return token, response

    def _refused(
        self, request: Request, response: requests.Response | None, *causes: str
    ) -> SciCatAuthRefused:
        """An auth outage: the error to raise, after updating ``state`` (log, metric)."""
        status = response.status_code if response is not None else None
        err = SciCatAuthRefused(request.method, request.endpoint, status, [c for c in causes if c])
        self.state.refused(str(err))
        return err

    def _probe(self, token: str) -> Account | None:
        """Who SciCat says this token belongs to (None: refused). A refusal is reused for a few
        seconds (no probe storm in an outage); an acceptance is not: the token may have died
        since, and taking that for a permission problem would dead-letter the file."""
        cached = self._probes.get(token)
        if cached is not None and cached[0] is None:
            return None
        if self._probe_missing:
            return self._unverified()
        url = self._base + PROBE_PATH
        request = Request("GET", url, PROBE_PATH, PROBE_PATH, "idempotent")
        response = self._transport.send(request, token)
        status = response.status_code
        if status == 404:
            with self._probe_missing_lock:  # one WARNING, whichever threads probed at once
                warn, self._probe_missing = not self._probe_missing, True
            if warn:
                logger.warning(
                    "SciCat has no GET %s (404): credentials cannot be checked; a refused "
                    "request counts as a permission problem of its record",
                    PROBE_PATH,
                )
            return self._unverified()
        if status in AUTH_REFUSALS:
            self._probes.put(token, None, f"{self._tokens.kind}: GET {PROBE_PATH} → {status}")
            return None
        answer = decode("GET", PROBE_PATH, response, self.redactor(token))
        name = answer.get("username") if isinstance(answer, dict) else None
        if not isinstance(name, str) or not name:
            refusal = f"{self._tokens.kind}: GET {PROBE_PATH} → {status} without a username"
            self._probes.put(token, None, refusal)
            return None
        account = Account(name)
        self._probes.put(token, account)
        self.state.accepted(account.name)
        return account

    def _unverified(self) -> Account:
        return Account(self._options.username or "?", verified=False)

    def _recheck(self) -> None:
        """During an auth outage (health checker's thread): renew, probe, update the verdict.
        Never raises: the health checker's thread must survive whatever SciCat answers."""
        try:
            token = self._tokens.current()
            account = self._probe(token)
            if account is None and self._tokens.renew(token):
                account = self._probe(self._tokens.current())
            if account is not None and not account.verified:
                self.state.accepted()
        except SciCatError as err:
            logger.debug("SciCat credentials recheck: %s", err)

    def _hints(self) -> tuple[str, str]:
        """What an operator can do about an auth outage: while the daemon waits (the ERROR
        line), and after a one-off command ended (``CredentialsState.refusal``)."""
        if self._options.token_file:
            fix = f"write a valid token to {self._options.token_file}"
            return f"{fix} (re-read, no restart)", fix
        if self._tokens.can_login:
            fix = "check the account and scicat.password"
            return f"{fix} (logins are retried)", fix
        fix = "set a valid scicat.token"
        return f"{fix} and restart, or use scicat.token_file to rotate it live", fix

    def _login(self) -> Login:
        """Functional-account login (``POST auth/login``); never logs the password or token."""
        url = self._base + LOGIN_PATH
        credentials = {"username": self._options.username, "password": self._password}
        request = Request("POST", url, LOGIN_PATH, LOGIN_PATH, "idempotent", body=credentials)
        try:
            response = self._transport.send(request, "")
            if response.status_code in AUTH_REFUSALS:
                SCICAT_LOGINS.labels("refused").inc()
                cause = f"login as '{self._options.username}' failed: {response.status_code}"
                raise SciCatAuthRefused("POST", LOGIN_PATH, response.status_code, [cause])
            answer = decode("POST", LOGIN_PATH, response, self.redactor(""))
        except SciCatAuthRefused:
            raise
        except SciCatError:
            SCICAT_LOGINS.labels("error").inc()
            raise
        token = answer.get("access_token") if isinstance(answer, dict) else None
        if not isinstance(token, str) or not token:
            SCICAT_LOGINS.labels("error").inc()
            raise SciCatUnavailable("POST", LOGIN_PATH, None, "login answer has no access_token")
        SCICAT_LOGINS.labels("ok").inc()
        return Login(token, _lifetime(answer))


def _lifetime(answer: dict[str, Any]) -> float | None:
    """The token's lifetime in seconds from a login answer (``expires_in``, else ``ttl``)."""
    for key in ("expires_in", "ttl"):
        value = answer.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
            return float(value)
    return None
