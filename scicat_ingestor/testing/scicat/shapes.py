"""How stored documents look under API v3 and v4: the real backend keeps one (v4) store and
converts on the way in and out (singular v3 fields ↔ v4 arrays, attachments' relationships)."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from scicat_ingestor.testing.scicat.messages import JSONDict, _utc
from scicat_ingestor.testing.scicat.validation import DtoValidator


def _email_of(user: str) -> str:
    return f"{user}@standin.example.org"


def _with_defaults(dto: DtoValidator, body: Mapping[str, Any]) -> JSONDict:
    """The stored document: the (freshly parsed) body, schema defaults for absent properties,
    dates normalised to UTC."""
    document: JSONDict = dict(body)
    for name, default in dto.defaults.items():
        document.setdefault(name, copy.deepcopy(default))
    for name in dto.date_fields & document.keys():
        document[name] = _utc(document[name])
    return document


# v3 singular field → the v4 array the backend stores it in
SINGULAR_FIELDS = (
    ("principalInvestigator", "principalInvestigators"),
    ("proposalId", "proposalIds"),
    ("instrumentId", "instrumentIds"),
    ("sampleId", "sampleIds"),
)


def _add_read_back_fields(dataset: JSONDict) -> None:
    """Fields the real backend (a v4 store under both APIs) adds to every dataset it returns.
    The v3 conversion copies an absent ``sampleId`` too: ``sampleIds: [null]``."""
    for single, plural in SINGULAR_FIELDS:
        value = dataset.get(single)
        dataset.setdefault(plural, [value] if value or single == "sampleId" else [])
    for name in ("keywords", "sharedWith", "relationships", "inputDatasets", "usedSoftware"):
        dataset.setdefault(name, [])
    dataset.setdefault("packedSize", 0)
    dataset.setdefault("numberOfFilesArchived", 0)
    dataset.setdefault("classification", "IN=medium,AV=low,CO=low")
    dataset.setdefault("datasetlifecycle", {})


def _v3_view(dataset: JSONDict) -> JSONDict:
    """A dataset as API v3 answers it: the singular fields from the arrays' first elements."""
    missing = [(s, p) for s, p in SINGULAR_FIELDS if s not in dataset]
    if not missing:
        return dataset
    view = dict(dataset)
    for single, plural in missing:
        values = dataset.get(plural) or [None]
        view[single] = values[0]
    return view


def _attached_to(pid: str) -> JSONDict:
    return {"targetId": pid, "targetType": "dataset", "relationType": "is attached to"}


def _v3_attachment(attachment: JSONDict, pid: str) -> JSONDict:
    """An attachment as API v3 lists it under a dataset."""
    return {k: v for k, v in attachment.items() if k not in ("aid", "relationships")} | {
        "datasetId": pid
    }


def _v4_view(dataset: JSONDict) -> JSONDict:
    """A dataset as API v4 answers it: no singular v3 fields."""
    return {k: v for k, v in dataset.items() if k not in _SINGULAR_NAMES}


_SINGULAR_NAMES = frozenset(single for single, _ in SINGULAR_FIELDS)
