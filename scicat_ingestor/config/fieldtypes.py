"""Config field types: how each kind of value is accepted from YAML, named, checked and typed in.

One table (``KINDS``) per base type, and small ``Check`` annotations for the allowed values, drive
the config loader (``config.build``), its error messages and the generated command-line flags, so
the three cannot disagree. A config key with a range or a set of allowed values is declared once,
on its dataclass field: ``max_offline_ingestors: AtLeastOne = 10``.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union, get_args, get_origin
from urllib.parse import urlsplit

from scicat_ingestor.config.redact import Secret


class Mismatch(Exception):  # noqa: N818 - a signal, not an error shown to anyone
    """The value does not have the expected type (the next alternative of a union may fit)."""


class Disallowed(Exception):  # noqa: N818 - carries the "allowed" text into the config error
    """The value has the right type but is outside the allowed values."""

    def __init__(self, value: Any, allowed: str) -> None:
        super().__init__(allowed)
        self.value = value
        self.allowed = allowed


def parse_bool(text: str) -> bool:
    """'true/false/yes/no/on/off/1/0' → bool (the explicit ``--key=false`` form)."""
    lowered = text.strip().lower()
    if lowered in {"true", "yes", "on", "1"}:
        return True
    if lowered in {"false", "no", "off", "0"}:
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def _exact(*classes: type) -> Callable[[Any], Any]:
    def accept(value: Any) -> Any:
        if isinstance(value, bool) and bool not in classes:
            raise Mismatch
        if not isinstance(value, classes):
            raise Mismatch
        return value

    return accept


def _accept_float(value: Any) -> float:
    return float(_exact(int, float)(value))


def _accept_secret(value: Any) -> Secret:
    if isinstance(value, Secret):
        return value
    return Secret(_exact(str)(value))


@dataclass(frozen=True)
class Kind:
    """One base type: ``accept`` converts a YAML value (or raises Mismatch); ``parse`` reads a
    flag's text; ``name`` is used in error messages and ``metavar`` in the flag list."""

    name: str
    metavar: str
    accept: Callable[[Any], Any]
    parse: Callable[[str], Any]


KINDS: dict[Any, Kind] = {
    str: Kind("string", "TEXT", _exact(str), str),
    int: Kind("integer", "N", _exact(int), int),
    float: Kind("number", "NUMBER", _accept_float, float),
    bool: Kind("boolean", "", _exact(bool), parse_bool),
    Secret: Kind("string", "SECRET", _accept_secret, str),
}


@dataclass(frozen=True)
class Check:
    """An allowed-values rule on a field (``Annotated`` metadata); ``metavar`` names it on flags."""

    allowed: str
    ok: Callable[[Any], bool] = lambda value: True
    metavar: str = ""

    def __call__(self, value: Any) -> Any:
        if not self.ok(value):
            raise Disallowed(value, self.allowed)
        return value


def at_least(low: float, what: str = "a number", metavar: str = "") -> Check:
    return Check(f"{what} >= {low:g}", lambda v: v >= low, metavar)


def above(low: float, what: str = "a number", metavar: str = "") -> Check:
    return Check(f"{what} > {low:g}", lambda v: v > low, metavar)


def one_of(*values: str, ignore_case: bool = False, unset: bool = False) -> Check:
    """A string from ``values`` (compared case-insensitively when ``ignore_case``); with
    ``unset``, also ``""``, which leaves the setting out (the library default applies)."""
    allowed = {v.lower() for v in values} if ignore_case else set(values)
    if unset:
        allowed.add("")
    return Check(
        "one of " + ", ".join(values) + (" (or empty: not set)" if unset else ""),
        lambda v: (v.lower() if ignore_case else v) in allowed,
        "|".join(values) if len(values) <= 4 else "NAME",
    )


def url_with_scheme(*schemes: str) -> Check:
    return Check(
        "a URL starting with " + " or ".join(f"{s}://" for s in schemes),
        lambda v: urlsplit(v).scheme in schemes and bool(urlsplit(v).netloc),
        "URL",
    )


def _host_ports(value: str) -> bool:
    for item in value.split(","):
        host, sep, port = item.strip().rpartition(":")
        if not (sep and host and port.isdigit() and 0 < int(port) < 65536):
            return False
    return True


# The named kinds of value used by the config model; each names itself on the command line.
Count = Annotated[int, at_least(0, "an integer")]
AtLeastOne = Annotated[int, at_least(1, "an integer")]
Bytes = Annotated[int, at_least(1, "a size in bytes", "BYTES")]
Seconds = Annotated[float, at_least(0, "seconds", "SECONDS")]
PositiveSeconds = Annotated[float, above(0, "seconds", "SECONDS")]
Port = Annotated[int, Check("a port number 0-65535", lambda v: 0 <= v <= 65535, "PORT")]
HostPorts = Annotated[
    str, Check("HOST:PORT[,HOST:PORT...] (port 1-65535)", _host_ports, "HOST:PORT")
]
Host = Annotated[str, Check("a host name or address", bool, "HOST")]
PathText = Annotated[str, Check("", metavar="PATH")]
FileSuffix = Annotated[
    str, Check("a file name suffix without '/'", lambda v: "/" not in v and "\\" not in v)
]


# ------------------------------------------------------------------------------------------------
# Walking annotations: accept, describe, metavar
# ------------------------------------------------------------------------------------------------


def _unwrap(tp: Any) -> tuple[Any, tuple[Check, ...]]:
    """``Annotated[T, checks...]`` → (T, checks); any other annotation → (it, ())."""
    if get_origin(tp) is Annotated:
        base, *extras = get_args(tp)
        return base, tuple(e for e in extras if isinstance(e, Check))
    return tp, ()


def is_union(tp: Any) -> bool:
    return get_origin(tp) in (Union, types.UnionType)


def accept(tp: Any, value: Any) -> Any:
    """``value`` converted to annotation ``tp``; Mismatch (wrong type) or Disallowed (checks)."""
    tp, checks = _unwrap(tp)
    converted = _accept_type(tp, value)
    for check in checks:
        check(converted)
    return converted


def _accept_type(tp: Any, value: Any) -> Any:
    origin = get_origin(tp)
    if is_union(tp):
        for arg in get_args(tp):
            try:
                return accept(arg, value)
            except Mismatch:
                continue
        raise Mismatch
    if origin is Literal:
        if value in get_args(tp):
            return value
        raise Mismatch
    if tp is type(None):
        if value is None:
            return None
        raise Mismatch
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise Mismatch
        return tuple(accept(get_args(tp)[0], item) for item in value)
    if origin is Mapping:
        if not isinstance(value, Mapping):
            raise Mismatch
        key_tp, val_tp = get_args(tp)
        return {accept(key_tp, k): accept(val_tp, v) for k, v in value.items()}
    if tp in KINDS:
        return KINDS[tp].accept(value)
    raise TypeError(f"config field type {tp!r} has no entry in fieldtypes.KINDS")


def describe(tp: Any) -> str:
    """What an annotation expects, for error messages: 'integer', 'list of string', ..."""
    tp, _checks = _unwrap(tp)
    origin = get_origin(tp)
    if is_union(tp):
        return " or ".join(describe(a) for a in get_args(tp))
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin is tuple:
        return f"list of {describe(get_args(tp)[0])}"
    if origin is Mapping:
        return "mapping"
    if tp is type(None):
        return "null"
    return KINDS[tp].name


def metavar(tp: Any) -> str:
    """How a flag's value is shown in help: N, SECONDS, HOST:PORT, PATH, TEXT, ..."""
    tp, checks = _unwrap(tp)
    named = [c.metavar for c in checks if c.metavar]
    if named:
        return named[0]
    origin = get_origin(tp)
    if is_union(tp):
        arms = [a for a in get_args(tp) if a is not type(None)]
        listed = [a for a in arms if get_origin(_unwrap(a)[0]) is tuple]
        if listed:
            return metavar(listed[0])
        names = [m for m in dict.fromkeys(metavar(a) for a in arms) if m != "TEXT"]
        return "|".join(names) or "TEXT"
    if origin is Literal:
        return "|".join(str(a) for a in get_args(tp))
    if origin is tuple:
        return metavar(get_args(tp)[0])
    if origin is Mapping:
        return "KEY=VALUE"
    return KINDS[tp].metavar


def parse_text(tp: Any, text: str) -> Any:
    """A flag's text → the value ``accept`` then checks (ValueError when it cannot be read)."""
    tp, _checks = _unwrap(tp)
    origin = get_origin(tp)
    if is_union(tp):
        arms = [a for a in get_args(tp) if a is not type(None)]
        for arm in arms:
            try:
                return accept(arm, parse_text(arm, text))
            except (ValueError, Mismatch, Disallowed):
                continue
        return text
    if origin is Literal:
        return text
    if origin is tuple:
        return parse_text(get_args(tp)[0], text)
    if origin is Mapping:
        key, sep, value = text.partition("=")
        if not sep or not key:
            raise ValueError(f"expected KEY=VALUE, got {text!r}")
        return key, _yaml_scalar(value)
    return KINDS[tp].parse(text)


def _yaml_scalar(text: str) -> Any:
    import yaml  # noqa: PLC0415 - only flags with KEY=VALUE need it

    return yaml.safe_load(text) if text else ""


def base_type(tp: Any) -> Any:
    """The annotation without its checks (``Annotated[int, ...]`` → ``int``)."""
    return _unwrap(tp)[0]


def is_list(tp: Any) -> bool:
    """Whether the flag takes several values (a list, or a union that allows one)."""
    tp = base_type(tp)
    if is_union(tp):
        return any(is_list(a) for a in get_args(tp))
    return get_origin(tp) is tuple


def is_section(tp: Any) -> bool:
    """Whether the annotation is a nested config section (a dataclass other than Secret)."""
    return dataclasses.is_dataclass(tp) and tp is not Secret
