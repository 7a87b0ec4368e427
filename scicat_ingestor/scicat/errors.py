"""The SciCat client's errors: what a caller may do about a failed request is in the class.

``SciCatUnavailable`` (try later), ``SciCatRejected`` (this request cannot succeed),
``SciCatConflict`` (409: it exists), ``SciCatForbidden`` (this account may not do this to this
record) and ``SciCatAuthRefused`` (our credentials are dead: an outage, never a verdict on a file).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import requests

# Answers that mean "SciCat cannot serve this now": retried, then reported as unavailable.
UNAVAILABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


class SciCatError(Exception):
    """A SciCat request failed; ``str()`` is one line naming the method, endpoint and answer."""

    def __init__(self, method: str, endpoint: str, status: int | None, message: str) -> None:
        self.method = method
        self.endpoint = endpoint
        self.status = status
        self.message = message
        answer = str(status) if status is not None else "no answer"
        super().__init__(f"SciCat {method} {endpoint} → {answer}: {message}")


class SciCatUnavailable(SciCatError):  # noqa: N818 - name agreed with the other modules
    """SciCat unreachable, too slow or failing (5xx/429) even after retries: try later."""


class SciCatRejected(SciCatError):  # noqa: N818 - name agreed with the other modules
    """SciCat refused the request (4xx): repeating the same request cannot succeed."""


class SciCatConflict(SciCatRejected):
    """409: the object (a dataset with this pid) already exists."""


class SciCatForbidden(SciCatRejected):
    """401/403 although SciCat accepts our credentials: this account may not do this to this
    record. ``str()`` names the account, the request and the likely fix."""

    def __str__(self) -> str:
        return self.message


class SciCatAuthRefused(SciCatUnavailable):
    """SciCat refuses our credentials (expired or revoked token, wrong password): an auth outage.
    Like an unreachable SciCat it says nothing about the file; it is retried until they work."""

    def __init__(self, method: str, endpoint: str, status: int | None, causes: Sequence[str]):
        super().__init__(method, endpoint, status, "; ".join(causes))
        self.causes = tuple(causes)

    def __str__(self) -> str:
        return f"SciCat refuses our credentials ({self.message})"


def error_text(response: requests.Response, redact: Callable[[str], str]) -> str:
    """SciCat's own error text (NestJS ``message`` / ``error``) on one line, else the raw body.

    ``redact`` runs before the text is cut, so no part of a secret survives the cut.
    """
    try:
        body = response.json()
    except ValueError:
        body = None
    text = message_text(body.get("message") or body.get("error")) if isinstance(body, dict) else ""
    text = " ".join(redact(text or response.text).split())[:500]
    return text or response.reason or "(empty answer)"


def message_text(message: Any) -> str:
    """Flatten NestJS validation messages: a list of texts, or of class-validator errors
    (``{"property", "constraints", "children"}``, sometimes JSON-encoded in a string: v3)."""
    if isinstance(message, str) and message.startswith("[{"):
        try:
            message = json.loads(message)
        except ValueError:
            return str(message)
    if isinstance(message, list):
        return "; ".join(filter(None, (message_text(m) for m in message)))
    if isinstance(message, dict) and ("constraints" in message or "children" in message):
        texts = [str(t) for t in (message.get("constraints") or {}).values()]
        texts += [message_text(c) for c in message.get("children") or []]
        return "; ".join(filter(None, texts))
    return "" if message is None else str(message)


def decode(
    method: str, endpoint: str, response: requests.Response, redact: Callable[[str], str]
) -> Any:
    """JSON body of a 2xx answer (None when empty); the typed error otherwise."""
    code = response.status_code
    if 200 <= code < 300:
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            message = "answer is not JSON: " + error_text(response, redact)
            raise SciCatUnavailable(method, endpoint, code, message) from None
    message = error_text(response, redact)
    if code == 409:
        raise SciCatConflict(method, endpoint, code, message)
    if code in UNAVAILABLE_STATUSES or code >= 500:
        raise SciCatUnavailable(method, endpoint, code, message)
    raise SciCatRejected(method, endpoint, code, message)
