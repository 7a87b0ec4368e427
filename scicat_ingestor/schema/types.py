"""Value types of the imsc schema (``value_type`` of variables, ``type`` of schema fields).

Behaviour follows the ESS ingestor's converters, with its quirks fixed: numpy scalars and epoch
numbers are valid dates, tuples and arrays are valid lists, bytes and 1-element arrays are text,
``"'x'"`` as ``string[]`` is ``['x']`` (not split into characters), and an absent value (None) stays
absent for every type instead of becoming the text ``"None"``.
"""

from __future__ import annotations

import ast
import datetime as dt
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np


class ConversionError(ValueError):
    """A value cannot be converted to the requested type; the message quotes the value."""


def short_repr(value: Any) -> str:
    """A short one-line repr for error messages (numpy reprs span lines)."""
    text = " ".join(repr(value).split())
    return text if len(text) <= 80 else text[:77] + "..."


_LITERAL_ERRORS = (ValueError, SyntaxError, TypeError, MemoryError, RecursionError)
_MAX_DEPTH = 100


def _jsonable(value: Any, depth: int = 0) -> Any:
    """``value`` as strict JSON data (it ends up in a request body) or a ConversionError.

    NaN/infinity, complex numbers, sets and bytes keys are refused; tuples and arrays become lists,
    numpy scalars Python numbers, bytes UTF-8 text, dates ISO text.
    """
    if depth > _MAX_DEPTH:
        raise ConversionError(f"nested more than {_MAX_DEPTH} levels deep")
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConversionError(f"not a finite number: {value!r}")
        return value
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist(), depth)
    if isinstance(value, np.generic):
        return _jsonable(value.item(), depth)
    if isinstance(value, bytes):
        return to_text(value)
    if isinstance(value, dt.date):  # includes datetime
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [_jsonable(v, depth + 1) for v in value]
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if isinstance(key, bool) or not isinstance(key, str | int | float):
                raise ConversionError(f"mapping key {short_repr(key)} is not text")
            out[key if isinstance(key, str) else str(key)] = _jsonable(item, depth + 1)
        return out
    raise ConversionError(f"{type(value).__name__} {short_repr(value)} is not a JSON value")


def to_text(value: Any) -> str:
    """Text of a value: bytes are UTF-8 decoded, one-element arrays unwrapped, bools JSON-style."""
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):  # includes np.bytes_
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConversionError(f"text is not valid UTF-8: {short_repr(value)}") from exc
    if isinstance(value, np.ndarray):
        if value.size == 1:
            return to_text(value.reshape(-1)[0])
        return str(value.tolist())
    if isinstance(value, np.generic):
        return to_text(value.item())
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


_EMAIL = re.compile(r"[^@\s;]+@[^@\s;]+")


def _email(value: Any) -> str:
    """Text that is one e-mail address or several separated by ``;`` (SciCat's convention)."""
    text = to_text(value).strip()
    parts = [p.strip() for p in text.split(";")]
    if not all(_EMAIL.fullmatch(p) for p in parts):
        raise ConversionError(f"not an e-mail address: {short_repr(text)}")
    return text


def _integer(value: Any) -> int:
    if isinstance(value, bool):
        raise ConversionError(f"cannot convert {short_repr(value)} to integer")
    value = _scalar(value)
    try:
        if isinstance(value, float):
            return int(value)  # truncates, as the ESS ingestor does
        return int(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ConversionError(f"cannot convert {short_repr(value)} to integer") from exc


def _float(value: Any) -> float:
    if isinstance(value, bool):
        raise ConversionError(f"cannot convert {short_repr(value)} to float")
    value = _scalar(value)
    try:
        result = float(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ConversionError(f"cannot convert {short_repr(value)} to float") from exc
    if not math.isfinite(result):
        raise ConversionError(f"not a finite number: {short_repr(value)}")
    return result


def _scalar(value: Any) -> Any:
    """Unwrap numpy scalars, one-element arrays and bytes into a plain Python scalar."""
    if isinstance(value, np.ndarray) and value.size == 1:
        value = value.reshape(-1)[0]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bytes):
        value = to_text(value)
    return value


def _date(value: Any) -> str:
    """ISO 8601 text (``Z`` accepted), epoch seconds (int/float/numpy) or a datetime → ISO text."""
    value = _scalar(value)
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return dt.datetime.fromtimestamp(value, dt.UTC).isoformat()
        except (OverflowError, OSError, ValueError) as exc:
            raise ConversionError(f"epoch time out of range: {short_repr(value)}") from exc
    if isinstance(value, str):
        try:
            return dt.datetime.fromisoformat(value.strip()).isoformat()
        except ValueError as exc:
            raise ConversionError(
                f"not an ISO 8601 date/time: {short_repr(value)} "
                "(expected e.g. 2024-10-28T09:06:41Z)"
            ) from exc
    raise ConversionError(f"cannot convert {short_repr(value)} to a date")


def _sequence(value: Any) -> list[Any]:
    """A list from a list, tuple, array, Python-literal text, or a single value."""
    if isinstance(value, np.ndarray):
        return list(np.atleast_1d(value).tolist())  # a 0-d array's tolist() is a scalar
    if isinstance(value, list | tuple):
        return list(value)
    if isinstance(value, str):
        try:
            parsed = ast.literal_eval(value)
        except _LITERAL_ERRORS:
            return [value]
        return list(parsed) if isinstance(parsed, list | tuple) else [parsed]
    return [value]


def _list_of(item: Callable[[Any], Any]) -> Callable[[Any], list[Any]]:
    def convert(value: Any) -> list[Any]:
        return [item(v) for v in _sequence(value)]

    return convert


def _dict(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        try:
            value = ast.literal_eval(value)
        except _LITERAL_ERRORS as exc:
            raise ConversionError(f"not a dict: {short_repr(value)}") from exc
        if not isinstance(value, dict):
            raise ConversionError(f"not a dict: {short_repr(value)}")
    elif not isinstance(value, Mapping):
        try:
            value = dict(value)
        except (TypeError, ValueError) as exc:
            raise ConversionError(f"not a dict: {short_repr(value)}") from exc
    result: dict[str, Any] = _jsonable(value)
    return result


def _list(value: Any) -> list[Any]:
    if isinstance(value, str):
        try:
            value = ast.literal_eval(value)
        except _LITERAL_ERRORS as exc:
            raise ConversionError(f"not a list: {short_repr(value)}") from exc
    if isinstance(value, np.ndarray):
        value = np.atleast_1d(value)  # a 0-d array's tolist() is a scalar
    if not isinstance(value, list | tuple | np.ndarray):
        raise ConversionError(f"not a list: {short_repr(value)}")
    result: list[Any] = _jsonable(value)
    return result


def _none(value: Any) -> None:
    raise ConversionError(f"type 'none' needs an empty value, got {short_repr(value)}")


CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "string": to_text,
    "email": _email,
    "link": to_text,
    "string[]": _list_of(to_text),
    "integer": _integer,
    "integer[]": _list_of(_integer),
    "float": _float,
    "float[]": _list_of(_float),
    "date": _date,
    "dict": _dict,
    "list": _list,
    "none": _none,
}

TYPE_NAMES = frozenset(CONVERTERS)

# Types whose value is a list: NeXus wildcards are allowed for them, and a single value read from
# the file is wrapped into a one-element list.
LIST_TYPES = frozenset({"string[]", "integer[]", "float[]", "list"})

# The JSON type each imsc type produces (to check high-level fields against SciCat's DTO).
JSON_TYPE: dict[str, str] = {
    "string": "string",
    "email": "string",
    "link": "string",
    "date": "string",
    "integer": "number",
    "float": "number",
    "string[]": "array",
    "integer[]": "array",
    "float[]": "array",
    "list": "array",
    "dict": "object",
    "none": "null",
}


def convert(value: Any, type_name: str) -> Any:
    """Convert ``value`` to ``type_name`` (validated at schema load); raises ConversionError.

    None (an absent value, e.g. a JSON null from SciCat) stays None whatever the type.
    """
    if value is None:
        return None
    return CONVERTERS[type_name](value)
