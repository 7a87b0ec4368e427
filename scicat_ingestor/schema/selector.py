"""Selectors: which files a schema applies to, decided from the file path as given.

Grammar (every form is checked at load time; anything else is an error, never "silently false"):

- ``"*"``: every file.
- ``"<source>:<operator>:<operand>"``: split on the first two ``:`` only, so the operand may contain
  ``:``. Sources ``filename``, ``datafile`` and ``nexusfile`` all mean the file path; operators are
  ``starts_with`` and ``contains``.
- ``{source: ..., operator: ..., operand_2: ...}``: the same condition in expanded form.
- ``{and: [...]}`` / ``{or: [...]}``: non-empty lists of selectors; both keys together are ANDed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

SOURCES = frozenset({"filename", "datafile", "nexusfile"})
OPERATORS: dict[str, Callable[[str, str], bool]] = {
    "starts_with": str.startswith,
    "contains": lambda path, operand: operand in path,
}
_EXPANDED_KEYS = frozenset({"source", "operator", "operand_2"})
_LOGIC_KEYS = frozenset({"and", "or"})


class SelectorError(ValueError):
    """A malformed selector; ``key`` is the dotted position inside ``selector``."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(reason)
        self.key = key
        self.reason = reason


@dataclass(frozen=True)
class MatchAll:
    def matches(self, path: str) -> bool:
        return True

    def describe(self) -> str:
        return "*"


@dataclass(frozen=True)
class Condition:
    source: str
    operator: str
    operand: str

    def matches(self, path: str) -> bool:
        return OPERATORS[self.operator](path, self.operand)

    def describe(self) -> str:
        return f"{self.source}:{self.operator}:{self.operand}"


@dataclass(frozen=True)
class AllOf:
    items: tuple[Selector, ...]

    def matches(self, path: str) -> bool:
        return all(item.matches(path) for item in self.items)

    def describe(self) -> str:
        return "(" + " and ".join(i.describe() for i in self.items) + ")"


@dataclass(frozen=True)
class AnyOf:
    items: tuple[Selector, ...]

    def matches(self, path: str) -> bool:
        return any(item.matches(path) for item in self.items)

    def describe(self) -> str:
        return "(" + " or ".join(i.describe() for i in self.items) + ")"


Selector = MatchAll | Condition | AllOf | AnyOf


def parse_selector(raw: Any, key: str = "selector") -> Selector:
    """Parse a selector from its YAML form; raises SelectorError naming the position at fault."""
    if isinstance(raw, str):
        return _parse_condensed(raw, key)
    if isinstance(raw, Mapping):
        return _parse_mapping(raw, key)
    raise SelectorError(key, f"must be a string or a mapping, found {type(raw).__name__}")


def _parse_condensed(raw: str, key: str) -> Selector:
    if raw.strip() == "*":
        return MatchAll()
    parts = raw.split(":", 2)
    if len(parts) != 3:
        raise SelectorError(
            key, f"{raw!r} must be '*' or 'source:operator:operand' (e.g. filename:contains:coda)"
        )
    return _condition(parts[0].strip(), parts[1].strip(), parts[2], key)


def _condition(source: Any, operator: Any, operand: Any, key: str) -> Condition:
    if not isinstance(source, str) or source not in SOURCES:
        raise SelectorError(
            key, f"unknown source {source!r}; use one of {', '.join(sorted(SOURCES))}"
        )
    if not isinstance(operator, str) or operator not in OPERATORS:
        raise SelectorError(
            key, f"unknown operator {operator!r}; use one of {', '.join(sorted(OPERATORS))}"
        )
    if not isinstance(operand, str) or not operand:
        raise SelectorError(key, "the operand must be a non-empty string")
    return Condition(source, operator, operand)


def _parse_mapping(raw: Mapping[Any, Any], key: str) -> Selector:
    keys = set(raw)
    if keys & _EXPANDED_KEYS:
        if keys != _EXPANDED_KEYS:
            missing = sorted(_EXPANDED_KEYS - keys)
            extra = sorted(str(k) for k in keys - _EXPANDED_KEYS)
            detail = (
                f"missing {', '.join(missing)}" if missing else f"unexpected {', '.join(extra)}"
            )
            raise SelectorError(
                key, f"an expanded selector needs exactly source, operator, operand_2 ({detail})"
            )
        return _condition(raw["source"], raw["operator"], raw["operand_2"], key)
    if not keys:
        raise SelectorError(key, "empty mapping; use '*' to select every file")
    unknown = sorted(str(k) for k in keys - _LOGIC_KEYS)
    if unknown:
        raise SelectorError(
            f"{key}.{unknown[0]}",
            "unknown selector key; use 'and', 'or', or source/operator/operand_2",
        )
    parts: list[Selector] = []
    for name in ("and", "or"):
        if name not in raw:
            continue
        items = raw[name]
        if not isinstance(items, list) or not items:
            raise SelectorError(f"{key}.{name}", "must be a non-empty list of selectors")
        parsed = tuple(parse_selector(item, f"{key}.{name}[{i}]") for i, item in enumerate(items))
        parts.append(AllOf(parsed) if name == "and" else AnyOf(parsed))
    return parts[0] if len(parts) == 1 else AllOf(tuple(parts))


def subsumes(first: Selector, later: Selector) -> bool:
    """True when ``first`` certainly matches every path ``later`` matches (``later`` is shadowed).

    Conservative: False means "not proven", so a warning based on it is never a false alarm.
    """
    if isinstance(first, MatchAll):
        return True
    if isinstance(later, AnyOf):
        return all(subsumes(first, item) for item in later.items)
    if isinstance(first, AllOf):
        return all(subsumes(item, later) for item in first.items)
    if isinstance(first, AnyOf):
        return any(subsumes(item, later) for item in first.items)
    if isinstance(later, AllOf):
        return any(subsumes(first, item) for item in later.items)
    if isinstance(first, Condition) and isinstance(later, Condition):
        if first.operator == "starts_with":
            return later.operator == "starts_with" and later.operand.startswith(first.operand)
        return first.operand in later.operand
    return False
