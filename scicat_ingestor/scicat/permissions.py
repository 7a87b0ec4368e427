"""Why SciCat refused a request although it accepts our credentials, and what would allow it.

SciCat's group settings decide what the functional account may do: ``ADMIN_GROUPS`` (read and
write everything), ``CREATE_DATASET_PRIVILEGED_GROUPS`` / ``CREATE_DATASET_WITH_PID_GROUPS``
(create datasets, with our pids) and a record's ``ownerGroup``/``accessGroups``. API v4 checks
more than v3: an origdatablock is checked against the dataset's ``ownerGroup`` (v3 lets a creating
account add it), and a search is refused (403) where v3 answered an empty list.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from urllib.parse import unquote

import requests

from scicat_ingestor.scicat.errors import SciCatForbidden, error_text
from scicat_ingestor.scicat.http import Request

logger = logging.getLogger("scicat_ingestor.scicat")

_READS_DATASET = ("datasets/{pid}", "datasets/{pid}/origdatablocks")


class Permissions:
    """Builds ``SciCatForbidden`` errors; warns once when the account cannot read datasets."""

    def __init__(self) -> None:
        self._warned_read_access = False

    def forbidden(
        self,
        request: Request,
        response: requests.Response,
        account: str,
        redact: Callable[[str], str],
    ) -> SciCatForbidden:
        """A refusal although our credentials work: name the account, the request and the fix."""
        endpoint = request.endpoint
        answer = error_text(response, redact)
        reason = permission_reason(request, account)
        if request.label in _READS_DATASET and not self._warned_read_access:
            self._warned_read_access = True
            logger.warning(
                "SciCat account '%s' cannot read datasets of other groups: a redelivered file's "
                "origdatablocks cannot be checked; add the account to ADMIN_GROUPS",
                account,
            )
        status = response.status_code
        message = f"{reason} (SciCat {request.method} {endpoint} → {status}: {answer})"
        return SciCatForbidden(request.method, endpoint, status, message)


def permission_reason(request: Request, account: str) -> str:
    """What this account may not do, and what would allow it (SciCat's group settings)."""
    method, label, body = request.method, request.label, request.body or {}
    parts = request.endpoint.split("/")
    if request.version == 4:
        parts = parts[1:]  # "v4/datasets/..." → as v3 names it
    subject = request.pid or (unquote(parts[1]) if len(parts) > 1 else "")
    who = f"account '{account}'"
    v4 = request.version == 4
    if label == "datasets/{pid}":
        return (
            f"{who} may not read dataset {subject}: add it to ADMIN_GROUPS or to the "
            "dataset's accessGroups"
        )
    if label == "datasets/{pid}/origdatablocks" and method == "GET":
        return (
            f"{who} may not read the origdatablocks of dataset {subject}: add it "
            "to ADMIN_GROUPS or to the dataset's accessGroups"
        )
    if label == "datasets/{pid}/attachments":
        return (
            f"{who} may not {'add' if method == 'POST' else 'read'} the attachments of dataset "
            f"{subject}: add it to ADMIN_GROUPS or to the dataset's accessGroups"
        )
    if method == "GET" and label == "datasets" and v4:
        return (
            f"{who} may not search datasets: API v4 answers 403 where v3 answered an empty "
            "list; add it to ADMIN_GROUPS"
        )
    if method == "POST" and label == "datasets":
        group = body.get("ownerGroup") or "?"
        return (
            f"{who} may not create datasets of ownerGroup '{group}': add it to "
            "CREATE_DATASET_PRIVILEGED_GROUPS (or to that group)"
        )
    if method == "POST" and label == "origdatablocks" and v4:
        return (
            f"{who} may not add origdatablocks to dataset {body.get('datasetId') or '?'}: API v4 "
            "checks the block against the dataset's ownerGroup; add the account to ADMIN_GROUPS"
        )
    if method == "POST" and label == "origdatablocks":
        return (
            f"{who} may not add origdatablocks to dataset {body.get('datasetId') or '?'}: add "
            "it to CREATE_DATASET_PRIVILEGED_GROUPS or to the dataset's accessGroups"
        )
    if label == "proposals":
        return (
            f"{who} may not read proposal {subject}: add it to ADMIN_GROUPS or to the "
            "proposal's accessGroups"
        )
    return f"{who} may not {method} {request.endpoint}: check the account's groups in SciCat"
