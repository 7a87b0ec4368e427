"""Secrets: the one place that decides what is secret and how it is hidden.

Three uses share it: the log filter (``ops.logs``) and SciCat error texts (``scicat``) replace known
secret *values* in free text; config printing (``show-config``, ``config.to_dict``) and the Kafka
settings log line hide values by *where* they sit (a ``Secret`` field, a password-like key).
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

REDACTED = "****"

# Key names (librdkafka settings, HTTP headers, consumer_config entries) whose values are secret:
# a rule, not a list of known names, so ``X-Api-Key`` or ``Cookie`` are caught too.
_SECRET_KEY_MARKERS = (
    "password",
    "passwd",
    "secret",
    "token",
    "key",
    "cookie",
    "credential",
    "authorization",
    "auth",
)
# ... except names of files holding a secret (``ssl.key.location``): a path is no secret.
_PATH_KEY_ENDINGS = ("location", "_file", ".file", "_path", ".path")

# Mappings whose every value is secret whatever its key: HTTP headers carry API keys and cookies
# under any name a site chose.
SECRET_MAPPINGS = frozenset({"additional_headers"})


@dataclass(frozen=True)
class Secret:
    """A secret string whose repr/str never shows the value (safe to log or print)."""

    value: str = field(default="", repr=False)

    def __repr__(self) -> str:
        return f"Secret('{REDACTED}')" if self.value else "Secret('')"

    __str__ = __repr__

    def __bool__(self) -> bool:
        return bool(self.value)


def is_secret_key(key: str) -> bool:
    """Whether a setting named ``key`` holds a secret (``sasl.password``, ``Authorization``...)."""
    lowered = key.lower()
    if lowered.endswith(_PATH_KEY_ENDINGS):
        return False
    return any(marker in lowered for marker in _SECRET_KEY_MARKERS)


def mask(value: Any) -> Any:
    """``****`` for a set secret, ``""`` for an empty one; other values unchanged."""
    if isinstance(value, Secret):
        return REDACTED if value.value else ""
    return REDACTED if value not in ("", None) else value


def masked_settings(settings: Mapping[str, Any], all_secret: bool = False) -> dict[str, Any]:
    """A copy safe to log or print: values of secret-named keys (or all) replaced by ``****``."""
    return {
        key: mask(value) if all_secret or is_secret_key(str(key)) else value
        for key, value in settings.items()
    }


def _variants(secret: str) -> set[str]:
    """The forms a secret can take in text: raw, repr/JSON-escaped, URL-encoded."""
    forms = {
        secret,
        repr(secret)[1:-1],
        json.dumps(secret)[1:-1],
        urllib.parse.quote(secret, safe=""),
        urllib.parse.quote_plus(secret, safe=""),
    }
    return {form for form in forms if form}


class Redactor:
    """Replaces every known secret value (in each of its textual forms) with ``****``."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._forms: tuple[str, ...] = ()
        self.set_secrets(secrets)

    def set_secrets(self, secrets: Iterable[str]) -> None:
        forms: set[str] = set()
        for secret in secrets:
            if secret:
                forms |= _variants(secret)
        # Longest first, so a secret containing another is replaced whole.
        self._forms = tuple(sorted(forms, key=len, reverse=True))

    def add_secret(self, secret: str) -> None:
        if secret:
            self.set_secrets((*self._forms, secret))

    def __bool__(self) -> bool:
        return bool(self._forms)

    def redact(self, text: str) -> str:
        for form in self._forms:
            if form in text:
                text = text.replace(form, REDACTED)
        return text
