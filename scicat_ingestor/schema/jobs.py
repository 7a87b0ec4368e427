"""Render a schema's ``jobs:`` (the ESS format) for one dataset: the bodies of its SciCat jobs.

The bodies have API v4's shape (``type``, ``jobParams``, ``ownerUser``, ``ownerGroup``,
``contactEmail``), the shape the schema format follows; ``scicat.routes`` maps them for v3.
Values are rendered with the variables of the file, recursively; ``<pid>`` is the pid SciCat
assigned to the dataset, which wins over a variable of that name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from scicat_ingestor.schema.model import JOB_PID, Compiled, JobSpec, MetadataSchema
from scicat_ingestor.schema.operators import Value
from scicat_ingestor.schema.types import short_repr
from scicat_ingestor.schema.variables import VariableResults, describe_error, render

# the ESS format's key → the body field (API v4)
_OWNER_FIELDS = {
    "owner_user": "ownerUser",
    "owner_group": "ownerGroup",
    "contact_email": "contactEmail",
}


@dataclass(frozen=True)
class JobDraft:
    """One job of the schema, rendered for one dataset; ``body`` is API v4's."""

    name: str
    type: str
    dataset_pid: str
    body: dict[str, Any]


@dataclass(frozen=True)
class JobFailure:
    """A job whose values cannot be rendered for this file (a variable failed): not created."""

    name: str
    type: str  # as written in the schema (the metric's label)
    error: str


class _NotTextError(ValueError):
    """A job value that must be text rendered to something else."""


def build_jobs(
    schema: MetadataSchema, results: VariableResults, pid: str
) -> tuple[tuple[JobDraft, ...], tuple[JobFailure, ...]]:
    """The schema's jobs for the dataset ``pid``: the rendered ones and those that failed."""
    values: Mapping[str, Value] = {**results.values, JOB_PID: Value(pid)}
    failed = frozenset(f.name for f in results.failures) - {JOB_PID}
    drafts: list[JobDraft] = []
    failures: list[JobFailure] = []
    for spec in schema.jobs:
        try:
            drafts.append(_draft(spec, values, failed, pid))
        except Exception as exc:
            failures.append(JobFailure(spec.name, spec.type.text, describe_error(exc)))
    return tuple(drafts), tuple(failures)


def _draft(
    spec: JobSpec, values: Mapping[str, Value], failed: frozenset[str], pid: str
) -> JobDraft:
    kind = _text(spec.type, values, failed, "type")
    if not kind:
        raise _NotTextError("type: rendered empty")
    params = render(spec.job_params, values, failed).value
    body: dict[str, Any] = {"type": kind, "jobParams": params}
    for key, field in _OWNER_FIELDS.items():
        compiled: Compiled | None = getattr(spec, key)
        if compiled is not None:
            value = _text(compiled, values, failed, key)
            if value:
                body[field] = value
    return JobDraft(spec.name, kind, pid, body)


def _text(compiled: Compiled, values: Mapping[str, Value], failed: frozenset[str], key: str) -> str:
    value = render(compiled, values, failed).value
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise _NotTextError(f"{key}: must render to text, found {short_repr(value)}")
    return str(value)
