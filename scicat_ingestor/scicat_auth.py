"""SciCat credentials: where the token comes from, when it is renewed, whether SciCat accepts it.

The real backend (scicat-backend-next 4.x, ``tests/data/scicat-real-backend-behaviour.md``) never
answers 401 for an expired token: it answers 403 (or a silently empty search), exactly as it does
when the account may not touch a record. So the token's lifetime is tracked and renewed *before*
it ends (the login answer's ``expires_in``), a refused request triggers one renewal, and only a
probe with the same token (``GET auth/whoami``) tells "our credentials are dead" (an auth outage:
wait, never dead-letter) from "this account may not do this" (a verdict on one file).

No HTTP here: the client passes in its login call; this module keeps the state and the timing.
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

from scicat_ingestor.config import ConfigError, SciCatOptions
from scicat_ingestor.ops.logs import add_secret
from scicat_ingestor.ops.metrics import SCICAT_AUTH_OK
from scicat_ingestor.turns import TURNS

logger = logging.getLogger("scicat_ingestor.scicat")

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
    """Who SciCat says we are (the probe's answer)."""

    name: str


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
        in and need the turn back to finish (``turns.py``)."""
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

    def __init__(self, recheck: Callable[[], None], hint: str) -> None:
        self._recheck = recheck
        self._hint = hint
        self._lock = threading.Lock()
        self._ok = True
        self._detail = "no refusal seen"
        self._account = ""
        self._last_error_log = -math.inf
        SCICAT_AUTH_OK.set(1)

    @property
    def ok(self) -> bool:
        return self._ok

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
        if log:
            logger.error(
                "%s: files wait (intake paused, nothing dead-lettered or committed past them) "
                "until SciCat accepts them again; %s",
                detail,
                self._hint,
            )
