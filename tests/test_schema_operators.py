"""VALUE operators: names, behaviour, units, and errors."""

from __future__ import annotations

from typing import Any

import pytest

from scicat_ingestor.schema.model import Constant, ValueRecipe
from scicat_ingestor.schema.operators import OPERATORS, Value, apply


def run(name: str, value: Any, unit: str = "", **recipe: Any) -> Value:
    return apply(name, Value(value, unit), ValueRecipe(Constant(None), name, **recipe))


@pytest.mark.parametrize(
    ("name", "value", "recipe", "expected"),
    [
        ("getitem", [{"id": "a"}, {"id": "b"}], {"field": 1}, {"id": "b"}),
        ("getitem", {"id": "x"}, {"field": "id"}, "x"),
        (
            "str-replace",
            "/ess/raw/a/ess/raw",
            {"pattern": "ess/raw", "replacement": "ess/data"},
            "/ess/data/a/ess/data",
        ),
        ("to-lower", "ODIN", {}, "odin"),
        ("to-upper", "odin", {}, "ODIN"),
        ("urlsafe", "a b/c&d", {}, "a+b%2Fc%26d"),
        ("join_with_space", ["Anna A", "Bo B"], {}, "Anna A, Bo B"),
        ("join_with_space", "['x', 'y']", {}, "x, y"),
        ("dirname", "/data/coda/raw/f.hdf", {}, "/data/coda/raw"),
        ("dirname-2", "/data/coda/raw/f.hdf", {}, "/data/coda"),
        ("filename", "/data/coda/raw/f.hdf", {}, "f.hdf"),
        ("sum", [1, 2.5], {}, 3.5),
    ],
)
def test_operators(name: str, value: Any, recipe: dict[str, Any], expected: Any) -> None:
    assert run(name, value, **recipe).value == expected


def test_join_with_space_keeps_upstreams_comma_separator() -> None:
    # Existing datasets carry "a, b": keeping it keeps the ESS metadata consistent.
    assert run("join_with_space", ["a", "b"]).value == "a, b"


@pytest.mark.parametrize(
    ("spelled", "canonical"),
    [("str_replace", "str-replace"), ("to_lower", "to-lower"), ("to_upper", "to-upper")],
)
def test_fix_documented_operator_spellings(spelled: str, canonical: str) -> None:
    # Upstream documented these spellings but only knew the hyphenated ones (no-ops otherwise).
    recipe = {"pattern": "o", "replacement": "0"} if "replace" in spelled else {}
    assert run(spelled, "Odin o", **recipe).value == run(canonical, "Odin o", **recipe).value
    assert run(spelled, "Odin o", **recipe).value != "Odin o"


def test_units_are_dropped_except_by_do_nothing_and_sum() -> None:
    assert run("sum", [1, 2], unit="mm") == Value(3, "mm")
    assert run("DO_NOTHING", 5, unit="mm") == Value(5, "mm")
    assert run("", 5, unit="mm") == Value(5, "mm")
    assert run("to-upper", "a", unit="mm") == Value("A", "")


@pytest.mark.parametrize(
    ("name", "value", "recipe", "message"),
    [
        ("getitem", {"id": 1}, {"field": "name"}, r"getitem: no key 'name' \(keys: 'id'\)"),
        ("getitem", [1], {"field": 3}, "getitem: no item 3 in a list of 1"),
        ("getitem", 5, {"field": 0}, "getitem: cannot index a int"),
        ("join_with_space", "not a list", {}, "join_with_space: not a list"),
        ("join_with_space", 5, {}, "join_with_space: needs a list"),
        ("sum", ["a", 1], {}, "sum: cannot add up list"),
    ],
)
def test_operator_errors(name: str, value: Any, recipe: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        run(name, value, **recipe)


def test_every_documented_name_is_registered() -> None:
    documented = {
        "getitem", "str-replace", "to-lower", "to-upper", "urlsafe", "join_with_space",
        "dirname", "dirname-2", "filename", "sum", "DO_NOTHING", "",
        "str_replace", "to_lower", "to_upper",
    }  # fmt: skip
    assert set(OPERATORS) == documented


@pytest.mark.parametrize("text", ["-" * 100_000 + "1", "[" * 1000 + "]" * 1000])
def test_join_with_space_refuses_pathological_text(text: str) -> None:
    with pytest.raises(ValueError, match="join_with_space: not a list") as info:
        run("join_with_space", text)
    assert "\n" not in str(info.value)
