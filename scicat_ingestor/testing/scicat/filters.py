"""The Loopback/Mongo-style ``?filter=`` engine (``where``, ``limits``: order, skip, limit)."""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from scicat_ingestor.testing.scicat.messages import JSONDict


class FilterError(ValueError):
    """A ``filter`` query parameter the stand-in cannot evaluate (answered with 400)."""


_MISSING = object()


def _lookup(document: Mapping[str, Any], dotted: str) -> object:
    """The value at a dotted path; through an array of objects it is the list of the members'
    values (Mongo: ``relationships.targetId`` matches when any member's does)."""
    value: object = document
    for part in dotted.split("."):
        if isinstance(value, list):
            value = [m[part] for m in value if isinstance(m, Mapping) and part in m]
            if not value:
                return _MISSING
        elif not isinstance(value, Mapping) or part not in value:
            return _MISSING
        else:
            value = value[part]
    return value


def _equals(actual: object, expected: object) -> bool:
    """Mongo equality: a missing field equals null; an array field matches a member."""
    if actual is _MISSING:
        return expected is None
    if isinstance(actual, list) and not isinstance(expected, list):
        return expected in actual
    return actual == expected


def _regex_matches(actual: object, pattern: object, flags: int) -> bool:
    if not isinstance(pattern, str):
        raise FilterError(f"a like/regex pattern must be a string, not {pattern!r}")
    try:
        compiled = re.compile(pattern, flags)
    except re.error as exc:
        raise FilterError(f"invalid regular expression {pattern!r}: {exc}") from exc
    values = actual if isinstance(actual, list) else [actual]
    return any(isinstance(v, str) and compiled.search(v) is not None for v in values)


def _operator_matches(
    actual: object, operator: str, operand: object, spec: Mapping[str, Any]
) -> bool:
    if operator in ("like", "$regex", "regexp"):
        flags = re.IGNORECASE if "i" in str(spec.get("$options", spec.get("options", ""))) else 0
        return _regex_matches(actual, operand, flags)
    if operator == "ilike":
        return _regex_matches(actual, operand, re.IGNORECASE)
    if operator in ("$options", "options"):
        return True
    if operator in ("eq", "$eq"):
        return _equals(actual, operand)
    if operator in ("neq", "$ne"):
        return not _equals(actual, operand)
    if operator in ("inq", "$in"):
        if not isinstance(operand, list):
            raise FilterError(f"{operator} needs a list, not {operand!r}")
        return any(_equals(actual, candidate) for candidate in operand)
    if operator in ("exists", "$exists"):
        return (actual is not _MISSING) == bool(operand)
    raise FilterError(f"unsupported filter operator {operator!r}")


def matches(document: Mapping[str, Any], where: Mapping[str, Any]) -> bool:
    """Whether ``document`` satisfies a loopback/Mongo ``where``: equality, dotted keys, a few
    operators (like/ilike/$regex, inq/$in, neq/$ne, exists, and/or)."""
    for key, condition in where.items():
        if key in ("and", "$and", "or", "$or"):
            if not isinstance(condition, list) or not all(isinstance(c, dict) for c in condition):
                raise FilterError(f"{key} needs a list of conditions")
            results = (matches(document, c) for c in condition)
            if not (all(results) if key.endswith("and") else any(results)):
                return False
            continue
        actual = _lookup(document, key)
        if (
            isinstance(condition, dict)
            and condition
            and all(k.startswith("$") or k in _LOOPBACK_OPERATORS for k in condition)
        ):
            if not all(_operator_matches(actual, op, v, condition) for op, v in condition.items()):
                return False
        elif not _equals(actual, condition):
            return False
    return True


_LOOPBACK_OPERATORS = frozenset(
    {"like", "ilike", "regexp", "options", "eq", "neq", "inq", "exists"}
)


def _field_sort_key(name: str) -> Callable[[JSONDict], tuple[int, float, str]]:
    """Order by a (dotted) field; missing and null first, like MongoDB ascending."""

    def key(document: JSONDict) -> tuple[int, float, str]:
        value = _lookup(document, name)
        if value is _MISSING or value is None:
            return (0, 0.0, "")
        if isinstance(value, int | float) and not isinstance(value, bool):
            return (1, float(value), "")
        return (2, 0.0, value if isinstance(value, str) else json.dumps(value, sort_keys=True))

    return key


def apply_filter(
    documents: Iterable[JSONDict],
    raw_filter: str | None,
    view: Callable[[JSONDict], JSONDict] | None = None,
) -> list[JSONDict]:
    """Select, order, skip, limit and project like the backend's ``?filter=`` (``where``,
    ``limits``, ``fields``); ``view``: the API's shape of a stored document, applied before the
    projection, as the backend projects what it answers.

    Like MongoDB without an index, every document is examined against ``where`` until the answer
    is complete: all of them when an ``order`` is given or fewer than ``skip + limit`` match,
    else the scan stops at the last match needed (a collection scan with a limit does the same).
    ``limit`` and ``skip`` count only inside ``limits``: backend 5 ignores them at the top level
    (recorded on v3 and v4); a top-level ``order`` is still taken (not recorded either way).
    """
    shape = view or (lambda doc: doc)
    if not raw_filter:
        return [shape(doc) for doc in documents]
    try:
        spec = json.loads(raw_filter)
    except json.JSONDecodeError as exc:
        raise FilterError(f"filter is not valid JSON: {exc}") from exc
    if not isinstance(spec, dict):
        raise FilterError("filter must be a JSON object")
    where = spec.get("where", {})
    if not isinstance(where, dict):
        raise FilterError("filter.where must be a JSON object")
    limits = spec.get("limits", {})
    if not isinstance(limits, dict):
        raise FilterError("filter.limits must be a JSON object")
    fields = spec.get("fields") or []
    if not isinstance(fields, list) or not all(isinstance(f, str) for f in fields):
        raise FilterError("filter.fields must be a list of field names")
    order = limits.get("order") or spec.get("order") or []
    skip = int(limits.get("skip") or 0)
    limit = int(limits.get("limit") or 0)
    matching = (doc for doc in documents if matches(doc, where))
    if order or not limit:
        selected = list(matching)
    else:
        selected = list(itertools.islice(matching, skip + limit))
    for item in reversed([order] if isinstance(order, str) else order):
        name, _, direction = str(item).replace(" ", ":").partition(":")
        selected.sort(key=_field_sort_key(name), reverse=direction.lower() == "desc")
    page = selected[skip : skip + limit] if limit else selected[skip:]
    return [_projected(shape(doc), fields) for doc in page]


def _projected(document: JSONDict, fields: list[str]) -> JSONDict:
    """Only ``fields`` and ``_id`` (MongoDB keeps it unless excluded); all without ``fields``."""
    if not fields:
        return document
    return {k: v for k, v in document.items() if k == "_id" or k in fields}
