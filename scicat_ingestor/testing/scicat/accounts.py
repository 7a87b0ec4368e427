"""SciCat functional accounts: who may read and create what, like the real backend's groups."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

STATIC_TOKEN_USER = "ingestor"  # the account the static token belongs to


@dataclass(frozen=True)
class Account:
    """A functional account. ``admin``: in ADMIN_GROUPS (reads everything); ``may_create``: in
    CREATE_DATASET_PRIVILEGED_GROUPS (creates datasets and origdatablocks of any group, but reads
    only datasets of its own ``groups``, like the real backend)."""

    password: str
    groups: tuple[str, ...] = ()
    admin: bool = True
    may_create: bool = True

    def may_read(self, document: Mapping[str, Any]) -> bool:
        """Whether this account may read a dataset or proposal with these groups."""
        if self.admin or document.get("isPublished") is True:
            return True
        groups = {document.get("ownerGroup"), *(document.get("accessGroups") or ())}
        return not groups.isdisjoint(self.groups)


DEFAULT_ACCOUNTS: Mapping[str, Account] = {
    "ingestor": Account("pwd"),
    "admin": Account("pwd"),
    # The conformance runner's create-only account: CREATE_DATASET_PRIVILEGED_GROUPS, not admin.
    "creator": Account("pwd", groups=("creator",), admin=False),
}
