"""Type converters: upstream behaviour where sound, its quirks fixed (``test_fix_*``)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pytest

from scicat_ingestor.schema.types import ConversionError, convert, to_text


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("odin", "odin"),
        (b"odin", "odin"),
        (np.bytes_(b"odin"), "odin"),
        (np.array(b"odin", dtype=object), "odin"),
        (np.array([b"odin"]), "odin"),
        (np.str_("odin"), "odin"),
        (31010, "31010"),
        (np.int64(5), "5"),
        (True, "true"),
        (["a", "b"], "['a', 'b']"),
    ],
)
def test_string(value: Any, expected: str) -> None:
    assert convert(value, "string") == expected


def test_string_from_invalid_utf8_is_a_clear_error() -> None:
    with pytest.raises(ConversionError, match="not valid UTF-8"):
        convert(b"\xff", "string")


def test_none_stays_none_for_every_type() -> None:
    for type_name in ("string", "integer", "float", "date", "email", "string[]", "dict", "list"):
        assert convert(None, type_name) is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [("31010", 31010), (" 7 ", 7), (np.int64(3), 3), (2.9, 2), (b"12", 12), (np.array([4]), 4)],
)
def test_integer(value: Any, expected: int) -> None:
    result = convert(value, "integer")
    assert result == expected
    assert type(result) is int


@pytest.mark.parametrize("value", ["1.5", "abc", True, [1]])
def test_integer_rejects(value: Any) -> None:
    with pytest.raises(ConversionError, match="to integer"):
        convert(value, "integer")


@pytest.mark.parametrize(
    ("value", "expected"), [("1.5", 1.5), (np.float32(0.5), 0.5), (3, 3.0), (b"2", 2.0)]
)
def test_float(value: Any, expected: float) -> None:
    result = convert(value, "float")
    assert result == expected
    assert type(result) is float


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-10-28T09:06:41.186Z", "2024-10-28T09:06:41.186000+00:00"),
        ("2024-10-28T09:06:41+02:00", "2024-10-28T09:06:41+02:00"),
        ("2024-10-28T09:06:41", "2024-10-28T09:06:41"),
        (b"2024-10-28T09:06:41Z", "2024-10-28T09:06:41+00:00"),
        (np.array([b"2024-10-28T09:06:41Z"]), "2024-10-28T09:06:41+00:00"),
        (0, "1970-01-01T00:00:00+00:00"),
        (1.5, "1970-01-01T00:00:01.500000+00:00"),
        (dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC), "2024-01-02T03:04:05+00:00"),
        (dt.date(2024, 1, 2), "2024-01-02"),
    ],
)
def test_date(value: Any, expected: str) -> None:
    assert convert(value, "date") == expected


def test_fix_date_from_numpy_scalars() -> None:
    # Upstream returned None for numpy numbers (e.g. an epoch time read from NeXus).
    assert convert(np.int64(86400), "date") == "1970-01-02T00:00:00+00:00"
    assert convert(np.float64(0.25), "date") == "1970-01-01T00:00:00.250000+00:00"


def test_non_iso_date_is_a_clear_error() -> None:
    with pytest.raises(ConversionError, match=r"not an ISO 8601 date/time: '28/10/2024'"):
        convert("28/10/2024", "date")


def test_date_rejects_other_types() -> None:
    with pytest.raises(ConversionError, match="to a date"):
        convert(["2024-01-01"], "date")


@pytest.mark.parametrize("value", ["pi@x.org", "a@b.c; d@e.f", b"pi@x.org"])
def test_email_accepts_addresses(value: Any) -> None:
    assert "@" in convert(value, "email")


@pytest.mark.parametrize("value", ["", "nobody", "a@b; nobody", "a b@c"])
def test_email_rejects_non_addresses(value: str) -> None:
    with pytest.raises(ConversionError, match="not an e-mail address"):
        convert(value, "email")


def test_link_is_text() -> None:
    assert convert(b"https://doi.org/x", "link") == "https://doi.org/x"


@pytest.mark.parametrize(
    ("value", "type_name", "expected"),
    [
        (["a", b"b", np.bytes_(b"c")], "string[]", ["a", "b", "c"]),
        ("['a', 'b']", "string[]", ["a", "b"]),
        ("plain text", "string[]", ["plain text"]),
        ("x", "string[]", ["x"]),
        (np.array([1, 2]), "integer[]", [1, 2]),
        (("1", 2.7), "integer[]", [1, 2]),
        ("[1.5, 2]", "float[]", [1.5, 2.0]),
        (3, "float[]", [3.0]),
    ],
)
def test_typed_lists(value: Any, type_name: str, expected: list[Any]) -> None:
    assert convert(value, type_name) == expected


def test_fix_string_list_from_quoted_text() -> None:
    # Upstream: literal_eval("'test'") gives 'test', then list('test') → ['t', 'e', 's', 't'].
    assert convert("'test'", "string[]") == ["test"]


def test_fix_list_accepts_tuple_and_ndarray() -> None:
    assert convert((1, 2), "list") == [1, 2]
    assert convert(np.array([1, 2]), "list") == [1, 2]
    assert convert("[1, 'a']", "list") == [1, "a"]


def test_list_rejects_non_lists() -> None:
    with pytest.raises(ConversionError, match="not a list"):
        convert("{'a': 1}", "list")
    with pytest.raises(ConversionError, match="not a list"):
        convert(5, "list")


def test_dict() -> None:
    assert convert({"a": 1}, "dict") == {"a": 1}
    assert convert("{'a': 1}", "dict") == {"a": 1}
    assert convert([("a", 1)], "dict") == {"a": 1}
    with pytest.raises(ConversionError, match="not a dict"):
        convert("[1]", "dict")
    with pytest.raises(ConversionError, match="not a dict"):
        convert(5, "dict")


def test_none_type() -> None:
    assert convert(None, "none") is None
    with pytest.raises(ConversionError, match="needs an empty value"):
        convert("x", "none")


def test_to_text_of_multi_element_array() -> None:
    assert to_text(np.array([1, 2])) == "[1, 2]"


@pytest.mark.parametrize(
    ("value", "type_name"),
    [
        ("nan", "float"),
        (float("inf"), "float"),
        ("[1e999]", "float[]"),
        ("[1e999]", "list"),
        ("[1j]", "list"),
        ([{1, 2}], "list"),
        ("{b'a': 1}", "dict"),
        ({"a": float("nan")}, "dict"),
    ],
)
def test_results_are_strict_json(value: Any, type_name: str) -> None:
    # Whatever a field converts to goes into a JSON request body: NaN, complex, sets and bytes
    # keys would make the POST itself fail.
    with pytest.raises(ConversionError):
        convert(value, type_name)


def test_list_and_dict_contents_become_json_data() -> None:
    when = dt.datetime(2024, 1, 2, tzinfo=dt.UTC)
    assert convert((np.int64(1), b"x", when, (2, 3)), "list") == [
        1,
        "x",
        "2024-01-02T00:00:00+00:00",
        [2, 3],
    ]
    assert convert({1: np.float32(0.5), "n": None}, "dict") == {"1": 0.5, "n": None}
    with pytest.raises(ConversionError, match="nested more than 100 levels"):
        convert("[" * 150 + "]" * 150, "list")


def test_errors_about_arrays_are_one_line() -> None:
    with pytest.raises(ConversionError) as info:
        convert(np.zeros((2, 1)), "integer")
    assert "\n" not in str(info.value)
