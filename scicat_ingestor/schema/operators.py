"""Operators applied to ``source: VALUE`` variables after ``<var>`` substitution.

Names are the ESS ingestor's (hyphenated); the underscore spellings its documentation uses are
accepted too. Unknown names are rejected when the schema is loaded (upstream silently did nothing).
``join_with_space`` joins with ``", "`` exactly as upstream does, because existing datasets
(``acquisition_team_members``) carry that form.
"""

from __future__ import annotations

import ast
import posixpath
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from scicat_ingestor.schema.model import ValueRecipe
from scicat_ingestor.schema.types import short_repr, to_text


@dataclass(frozen=True, slots=True)
class Value:
    """A variable's value and unit ('' when it has none)."""

    value: Any
    unit: str = ""


Operator = Callable[[Value, ValueRecipe], Value]


def _do_nothing(v: Value, recipe: ValueRecipe) -> Value:
    return v


def _getitem(v: Value, recipe: ValueRecipe) -> Value:
    key = recipe.field
    container = v.value
    try:
        return Value(container[key])
    except (KeyError, IndexError, TypeError) as exc:
        if isinstance(container, dict):
            known = ", ".join(short_repr(k) for k in list(container)[:10])
            raise ValueError(f"getitem: no key {key!r} (keys: {known})") from exc
        if isinstance(container, list | tuple):
            raise ValueError(f"getitem: no item {key!r} in a list of {len(container)}") from exc
        raise ValueError(f"getitem: cannot index a {type(container).__name__}") from exc


def _str_replace(v: Value, recipe: ValueRecipe) -> Value:
    assert recipe.pattern is not None and recipe.replacement is not None  # checked at load
    return Value(to_text(v.value).replace(recipe.pattern, recipe.replacement))


def _join_with_space(v: Value, recipe: ValueRecipe) -> Value:
    items = v.value
    if isinstance(items, str):
        try:
            items = ast.literal_eval(items)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as exc:
            raise ValueError(f"join_with_space: not a list: {short_repr(items)}") from exc
    if not isinstance(items, list | tuple):
        raise ValueError(f"join_with_space: needs a list, got {type(items).__name__}")
    return Value(", ".join(to_text(item) for item in items))


def _sum(v: Value, recipe: ValueRecipe) -> Value:
    try:
        return Value(sum(v.value), v.unit)
    except TypeError as exc:
        raise ValueError(
            f"sum: cannot add up {type(v.value).__name__} {short_repr(v.value)}"
        ) from exc


def _text(fn: Callable[[str], str]) -> Operator:
    def op(v: Value, recipe: ValueRecipe) -> Value:
        return Value(fn(to_text(v.value)))

    return op


OPERATORS: dict[str, Operator] = {
    "": _do_nothing,
    "DO_NOTHING": _do_nothing,
    "getitem": _getitem,
    "str-replace": _str_replace,
    "str_replace": _str_replace,
    "to-lower": _text(str.lower),
    "to_lower": _text(str.lower),
    "to-upper": _text(str.upper),
    "to_upper": _text(str.upper),
    "urlsafe": _text(urllib.parse.quote_plus),
    "join_with_space": _join_with_space,
    "dirname": _text(posixpath.dirname),
    "dirname-2": _text(lambda p: posixpath.dirname(posixpath.dirname(p))),
    "filename": _text(posixpath.basename),
    "sum": _sum,
}

# Operators that need ``field`` / ``pattern`` and ``replacement`` (checked at load time).
NEEDS_FIELD = frozenset({"getitem"})
NEEDS_PATTERN = frozenset({"str-replace", "str_replace"})


def apply(name: str, value: Value, recipe: ValueRecipe) -> Value:
    """Apply operator ``name`` (validated at load); the unit is dropped except by DO_NOTHING/sum."""
    return OPERATORS[name](value, recipe)
