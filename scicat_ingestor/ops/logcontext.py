"""Per-thread log context (job id, file, dataset pid) attached to every log record.

Workers wrap one file's ingestion in ``log_context(...)``; ``ContextFilter`` (installed on the
handlers by ``ops.logs``) copies the fields onto each record, so formatters and the GELF handler
can emit them without every log call repeating them.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Iterator
from contextlib import contextmanager

CONTEXT_FIELDS = ("job_id", "file", "dataset_pid", "outcome")

_context: contextvars.ContextVar[dict[str, str]] = contextvars.ContextVar(
    "scicat_ingestor_log_context",
    default={},  # noqa: B039 - never mutated, only replaced
)


@contextmanager
def log_context(**fields: str) -> Iterator[None]:
    """Add ``fields`` to every record logged in this block (nested blocks extend the outer one)."""
    token = _context.set({**_context.get(), **{k: str(v) for k, v in fields.items()}})
    try:
        yield
    finally:
        _context.reset(token)


def update_context(**fields: str) -> None:
    """Add fields to the current block, e.g. the dataset pid once it is known."""
    _context.set({**_context.get(), **{k: str(v) for k, v in fields.items()}})


def current_context() -> dict[str, str]:
    """The fields in force for this thread right now."""
    return dict(_context.get())


class ContextFilter(logging.Filter):
    """Copies the current context onto the record; missing fields become ''."""

    def filter(self, record: logging.LogRecord) -> bool:
        ctx = _context.get()
        for name in CONTEXT_FIELDS:
            if not hasattr(record, name):
                setattr(record, name, ctx.get(name, ""))
        return True
