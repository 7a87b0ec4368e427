"""Fuzzing the schema value types and operators with arbitrary values.

Values reach the converters from NeXus files (numpy scalars and arrays, bytes, odd text) and from
SciCat's JSON answers; the contract is "a converted value, or a ``ConversionError``/``ValueError``
with a one-line message" — never another exception type, never a hang. What a converter returns ends
up in a JSON request body, so it must also be strict JSON (no NaN, bytes, complex or sets).
"""

from __future__ import annotations

import datetime as dt
import json
import math
from typing import Any, cast

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from helpers.fuzz import FUZZ
from scicat_ingestor.schema import operators
from scicat_ingestor.schema.model import Constant, ValueRecipe
from scicat_ingestor.schema.operators import Value
from scicat_ingestor.schema.types import CONVERTERS, ConversionError, convert

# Text that means something to ast.literal_eval, datetime.fromisoformat or int().
_literal_texts = st.sampled_from(
    [
        "[1, 2, 3]",
        "['a', 'b']",
        "('a',)",
        "{'a': 1}",
        "{b'a': 1}",
        "[1j]",
        "{1, 2}",
        "[nan]",
        "nan",
        "inf",
        "-inf",
        "1e999",
        "9" * 5000,
        "[" * 300 + "]" * 300,
        "-" * 50 + "1",
        "2024-10-28T09:06:41Z",
        "2024-10-28T09:06:41.123+02:00",
        "2024-02-30",
        " 42 ",
        "1.5",
        "0x1F",
        "'test'",
        "a < b > c",
        "<var>",
        "",
        "\x00",
        "é" * 10,
    ]
)

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=60),
    _literal_texts,
    st.binary(max_size=40),
    st.datetimes(timezones=st.one_of(st.none(), st.timezones())),
    st.dates(),
    st.complex_numbers(),
)
_array_dtypes: st.SearchStrategy[np.dtype[Any]] = st.sampled_from(
    [np.dtype("int32"), np.dtype("float64"), np.dtype("S4"), np.dtype("U4")]
)
_numpy = st.one_of(
    hnp.from_dtype(np.dtype("int64")),
    hnp.from_dtype(np.dtype("uint8")),
    hnp.from_dtype(np.dtype("float32")),
    hnp.from_dtype(np.dtype("float64")),
    hnp.from_dtype(np.dtype("bool")),
    hnp.from_dtype(np.dtype("S8")),
    hnp.arrays(
        _array_dtypes,
        # 0-d arrays: see test_zero_dimensional_arrays_convert_to_lists
        hnp.array_shapes(min_dims=1, max_dims=1, max_side=3),
    ),
)
values = st.recursive(
    st.one_of(_scalars, _numpy),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.tuples(inner, inner),
        st.dictionaries(st.text(max_size=8), inner, max_size=4),
    ),
    max_leaves=12,
)
# What operators can actually receive: nexus.plain() turns numpy into Python values, and JSON/YAML
# give Python values too.
plain_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)

TYPES = sorted(CONVERTERS)


def _one_line(exc: BaseException) -> None:
    text = str(exc)
    assert text and "\n" not in text, f"not a one-line message: {text!r}"


@FUZZ
@given(value=values, type_name=st.sampled_from(TYPES))
@example(value="-" * 100_000 + "1", type_name="list")
@example(value="1" + "+1" * 50_000, type_name="dict")
@example(value=np.array([], dtype="float64"), type_name="float")
@example(value=np.datetime64("2024-01-01T00:00:00"), type_name="date")
@example(value=2**70, type_name="date")
@example(value=b"\xff\xfe", type_name="string[]")
def test_converters_return_or_raise_conversion_error(value: Any, type_name: str) -> None:
    try:
        result: Any = convert(value, type_name)
    except ConversionError as exc:
        _one_line(exc)
        return
    if value is None:
        assert result is None
        return
    expected: dict[str, type | tuple[type, ...]] = {
        "string": str,
        "email": str,
        "link": str,
        "date": str,
        "integer": int,
        "float": float,
        "string[]": list,
        "integer[]": list,
        "float[]": list,
        "list": list,
        "dict": dict,
    }
    assert type_name != "none", "type 'none' accepted a value"
    assert isinstance(result, expected[type_name])
    result = cast(Any, result)  # isinstance() above narrowed it to object
    if type_name == "date":  # parses back
        text = str(result)
        assert (dt.datetime if "T" in text else dt.date).fromisoformat(text)
    if type_name.endswith("[]"):
        item_type = {"string[]": str, "integer[]": int, "float[]": float}[type_name]
        assert all(isinstance(item, item_type) for item in result)


def _strict_json(value: Any) -> None:
    json.dumps(value, allow_nan=False)


@FUZZ
@given(value=values, type_name=st.sampled_from(TYPES))
@example(value="nan", type_name="float")
@example(value="1e999", type_name="float[]")
@example(value="[1j]", type_name="list")
@example(value="{b'a': 1}", type_name="dict")
def test_converted_values_are_strict_json(value: Any, type_name: str) -> None:
    try:
        result = convert(value, type_name)
    except ConversionError:
        return
    _strict_json(result)


# ------------------------------------------------------------------------------------------------
# Operators
# ------------------------------------------------------------------------------------------------

_recipes = st.builds(
    ValueRecipe,
    value=st.just(Constant(None)),
    operator=st.just(""),
    field=st.one_of(st.none(), st.integers(-5, 5), st.text(max_size=8)),
    pattern=st.text(max_size=4),
    replacement=st.text(max_size=4),
)


@FUZZ
@given(
    name=st.sampled_from(sorted(operators.OPERATORS)),
    value=plain_values,
    unit=st.text(max_size=5),
    recipe=_recipes,
)
@example(name="join_with_space", value="[1, 2]", unit="", recipe=ValueRecipe(Constant(None), ""))
@example(name="sum", value=[1.5, 2], unit="K", recipe=ValueRecipe(Constant(None), ""))
@example(name="getitem", value={"a": 1}, unit="", recipe=ValueRecipe(Constant(None), "", "b"))
@example(name="urlsafe", value=b"\xff", unit="", recipe=ValueRecipe(Constant(None), ""))
def test_operators_return_a_value_or_raise_value_error(
    name: str, value: Any, unit: str, recipe: ValueRecipe
) -> None:
    try:
        result = operators.apply(name, Value(value, unit), recipe)
    except ValueError as exc:
        _one_line(exc)
        return
    assert isinstance(result, Value)
    if name in ("", "DO_NOTHING"):
        assert result.value is value and result.unit == unit
    elif name == "sum":
        assert result.unit == unit
    else:
        assert result.unit == ""
    if name in ("to-lower", "to_lower", "to-upper", "to_upper", "urlsafe", "dirname", "filename"):
        assert isinstance(result.value, str)


@pytest.mark.parametrize("text", ["-" * 100_000 + "1", "1" + "+1" * 50_000])
def test_join_with_space_refuses_pathological_literals_cleanly(text: str) -> None:
    with pytest.raises(ValueError, match="join_with_space"):
        operators.apply("join_with_space", Value(text), ValueRecipe(Constant(None), ""))


def test_errors_about_2d_arrays_are_one_line() -> None:
    value = np.zeros((2, 1), dtype="int32")
    with pytest.raises(ConversionError) as err:
        convert(value, "integer")
    _one_line(err.value)
    with pytest.raises(ValueError, match="sum") as err2:
        operators.apply("sum", Value((None, value)), ValueRecipe(Constant(None), ""))
    _one_line(err2.value)


@pytest.mark.parametrize("type_name", ["string[]", "integer[]", "float[]", "list"])
def test_zero_dimensional_arrays_convert_to_lists(type_name: str) -> None:
    assert convert(np.array(7, dtype="int32"), type_name) in (["7"], [7], [7.0])


def test_sum_keeps_unit_and_float_semantics() -> None:
    """A control case for the fuzzers above: they pass on well-formed input too."""
    total = operators.apply("sum", Value([1.5, 2], "K"), ValueRecipe(Constant(None), ""))
    assert total == Value(3.5, "K")
    assert math.isclose(convert("1.5", "float"), 1.5)
