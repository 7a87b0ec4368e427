"""Selector grammar, matching, shadowing detection, and schema selection with the fallback."""

from __future__ import annotations

from typing import Any

import pytest

from scicat_ingestor.schema.model import MetadataSchema, SchemaSet
from scicat_ingestor.schema.selector import (
    AllOf,
    AnyOf,
    Condition,
    MatchAll,
    Selector,
    SelectorError,
    parse_selector,
    subsumes,
)

CODA = "/ess/data/coda/2024/443503/raw/small-coda.hdf"


@pytest.mark.parametrize(
    ("raw", "matches", "rejects"),
    [
        ("*", [CODA, ""], []),
        ("filename:starts_with:/ess/data/coda", [CODA], ["/ess/data/dream/x.hdf"]),
        ("filename:contains:small-coda", [CODA], ["/x/small-ymir.hdf"]),
        ("filename:contains:/ess/data", [CODA], ["/tmp/x.hdf"]),
    ],
)
def test_condensed(raw: str, matches: list[str], rejects: list[str]) -> None:
    selector = parse_selector(raw)
    assert all(selector.matches(p) for p in matches)
    assert not any(selector.matches(p) for p in rejects)


def test_fix_selector_operand_may_contain_colons() -> None:
    # Upstream required exactly 3 ':'-parts, so such a selector silently never matched.
    selector = parse_selector("filename:starts_with:C:/data/run")
    assert selector == Condition("filename", "starts_with", "C:/data/run")
    assert selector.matches("C:/data/run/1.hdf")


@pytest.mark.parametrize("source", ["datafile", "nexusfile"])
def test_fix_selector_datafile_and_nexusfile_sources(source: str) -> None:
    # Documented upstream but "Invalid target name" → never matched.
    assert parse_selector(f"{source}:contains:coda").matches(CODA)


def test_fix_expanded_selector_is_applied() -> None:
    # Upstream ignored these keys, so an expanded selector matched every file.
    selector = parse_selector(
        {"source": "filename", "operator": "starts_with", "operand_2": "/ess/data/coda"}
    )
    assert selector.matches(CODA)
    assert not selector.matches("/ess/data/dream/x.hdf")


def test_and_or_nesting() -> None:
    selector = parse_selector(
        {
            "or": [
                {"and": ["filename:starts_with:/ess/data", "filename:contains:coda"]},
                "filename:contains:ymir",
                {"source": "nexusfile", "operator": "contains", "operand_2": "special"},
            ]
        }
    )
    assert selector.matches(CODA)
    assert selector.matches("/tmp/small-ymir.hdf")
    assert selector.matches("/tmp/special.hdf")
    assert not selector.matches("/ess/data/dream/x.hdf")


def test_and_and_or_keys_together_are_anded() -> None:
    selector = parse_selector({"and": ["filename:contains:coda"], "or": ["filename:contains:2024"]})
    assert selector.matches(CODA)
    assert not selector.matches("/ess/data/coda/2023/x.hdf")


@pytest.mark.parametrize(
    ("raw", "key", "reason"),
    [
        ("filename:starts_with", "selector", r"must be '\*' or 'source:operator:operand'"),
        ("target:contains:x", "selector", "unknown source 'target'"),
        ("filename:ends_with:x", "selector", "unknown operator 'ends_with'"),
        ("filename:contains:", "selector", "operand must be a non-empty string"),
        ({}, "selector", "empty mapping"),
        ({"xor": ["*"]}, "selector.xor", "unknown selector key"),
        ({"or": []}, "selector.or", "non-empty list"),
        ({"and": "filename:contains:x"}, "selector.and", "non-empty list"),
        ({"or": ["*", "bad"]}, "selector.or[1]", r"must be '\*'"),
        ({"source": "filename", "operator": "contains"}, "selector", "missing operand_2"),
        (
            {"source": "filename", "operator": "contains", "operand_2": "x", "or": []},
            "selector",
            "unexpected or",
        ),
        (5, "selector", "must be a string or a mapping"),
    ],
)
def test_invalid_selectors_name_the_position(raw: Any, key: str, reason: str) -> None:
    with pytest.raises(SelectorError, match=reason) as info:
        parse_selector(raw)
    assert info.value.key == key


A = Condition("filename", "starts_with", "/ess/data")
B = Condition("filename", "starts_with", "/ess/data/coda")
C = Condition("filename", "contains", "coda")
D = Condition("filename", "contains", "dream")


@pytest.mark.parametrize(
    ("first", "later", "expected"),
    [
        (MatchAll(), B, True),
        (A, B, True),
        (B, A, False),
        (C, B, True),
        (B, C, False),
        (C, Condition("filename", "contains", "small-coda"), True),
        (A, AnyOf((B, Condition("filename", "starts_with", "/ess/data/x"))), True),
        (A, AnyOf((B, D)), False),
        (AllOf((A, C)), B, True),
        (AllOf((A, D)), B, False),
        (AnyOf((D, A)), B, True),
        (A, AllOf((D, B)), True),
        (A, MatchAll(), False),
    ],
)
def test_subsumes(first: Selector, later: Selector, expected: bool) -> None:
    assert subsumes(first, later) is expected


def _schema(name: str, selector: Selector, order: int = 1) -> MetadataSchema:
    return MetadataSchema(
        id=name, name=name, instrument="", selector=selector, order=order, variables=(), fields=()
    )


def test_select_takes_the_first_match_in_order() -> None:
    specific = _schema("coda", B)
    generic = _schema("generic", A)
    schemas = SchemaSet((specific, generic))
    assert schemas.select(CODA) is specific
    assert schemas.select("/ess/data/dream/x.hdf") is generic
    assert schemas.select("/tmp/x.hdf") is None


def test_fix_fallback_is_used_when_nothing_matches(caplog: pytest.LogCaptureFixture) -> None:
    # Upstream loaded the fallback but never passed it to the selection.
    fallback = _schema("fallback", MatchAll(), order=9999999999)
    schemas = SchemaSet((_schema("coda", B),), fallback)
    assert schemas.select("/tmp/x.hdf") is fallback
    assert "using the fallback schema 'fallback'" in caplog.text
