"""Every config key as a dotted override flag (``--kafka.bootstrap-servers HOST:PORT``),
generated from the config dataclasses and ``fieldtypes`` so the two never drift apart.

Booleans are switches that never take the next argument: ``--ingestion.dry-run`` / ``-d``
and ``--no-ingestion.dry-run``; ``--ingestion.dry-run=false`` is the explicit form."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Literal, get_args, get_origin

from scicat_ingestor.config.fieldtypes import (
    Disallowed,
    Mismatch,
    base_type,
    describe,
    is_list,
    metavar,
    parse_bool,
    parse_text,
)
from scicat_ingestor.config.model import (
    iter_leaf_fields,
    to_dict,
)

# Top-level keys handled by explicit flags (or meaningless on the command line).
_NO_OVERRIDE_FLAG = {
    "config_file",
    "nexus_file",
    "done_writing_message_file",
    "run_start_message_file",
    "logging.graylogs",  # a list of mappings: in the file only
}


_SHORT_FLAGS = {"ingestion.dry_run": "-d"}


def _flag(dotted: str) -> str:
    return "--" + dotted.replace("_", "-")


def _override_keys() -> Iterator[tuple[str, Any, Any]]:
    for dotted, tp, default in iter_leaf_fields():
        if dotted not in _NO_OVERRIDE_FLAG:
            yield dotted, tp, default


def _is_bool(tp: Any) -> bool:
    return base_type(tp) is bool


def _text_type(tp: Any) -> Callable[[str], Any]:
    """argparse ``type=``: the field type's own parser, with a message naming what it expects."""

    def parse(text: str) -> Any:
        try:
            return parse_text(tp, text)
        except (ValueError, Mismatch, Disallowed):
            raise argparse.ArgumentTypeError(f"expected {describe(tp)}, got {text!r}") from None

    return parse


def _flag_spec(tp: Any) -> dict[str, Any]:
    """argparse keyword arguments for a non-boolean config field annotation."""
    base = base_type(tp)
    spec: dict[str, Any] = {"type": _text_type(tp), "metavar": metavar(tp)}
    if get_origin(base) is Literal:
        spec["choices"] = list(get_args(base))
    if get_origin(base) is Mapping:
        spec["nargs"] = "+"
    elif is_list(tp):
        spec["nargs"] = "*"
    return spec


def add_override_flags(parser: argparse.ArgumentParser) -> None:
    """One hidden ``--section.key`` flag per config key (``--no-`` twins for booleans)."""
    for dotted, tp, _default in _override_keys():
        dest = f"override:{dotted}"
        names = [_flag(dotted), *([_SHORT_FLAGS[dotted]] if dotted in _SHORT_FLAGS else [])]
        hidden: dict[str, Any] = {
            "dest": dest,
            "default": argparse.SUPPRESS,
            "help": argparse.SUPPRESS,
        }
        if _is_bool(tp):
            parser.add_argument(*names, action="store_const", const=True, **hidden)
            parser.add_argument(
                "--no-" + _flag(dotted)[2:], action="store_const", const=False, **hidden
            )
        else:
            parser.add_argument(*names, **hidden, **_flag_spec(tp))


def explicit_booleans(argv: Sequence[str]) -> list[str]:
    """``--key=false`` / ``--key=true`` for boolean keys → ``--no-key`` / ``--key``.

    A boolean switch never takes the next argument (``-d FILE`` is a dry run of FILE), so the
    explicit value can only be given with ``=``; argparse switches cannot read it themselves.
    """
    booleans = {_flag(dotted) for dotted, tp, _ in _override_keys() if _is_bool(tp)}
    result: list[str] = []
    for i, arg in enumerate(argv):
        if arg == "--":
            return [*result, *argv[i:]]
        flag, sep, value = arg.partition("=")
        if not (sep and flag in booleans):
            result.append(arg)
            continue
        try:
            result.append(flag if parse_bool(value) else "--no-" + flag[2:])
        except ValueError as exc:
            raise UsageError(f"argument {flag}: {exc}") from None
    return result


class UsageError(Exception):
    """A flag's value cannot be used; ``str()`` is argparse's one-line form, naming the flag."""


def collect_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Namespace → {dotted key: value} for the flags actually given."""
    overrides: dict[str, Any] = {}
    for dest, value in vars(args).items():
        if dest.startswith("override:"):
            key = dest.removeprefix("override:")
            overrides[key] = dict(value) if _is_pairs(value) else value
    return overrides


def _is_pairs(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, tuple) for v in value)


def overrides_help() -> str:
    """Every override flag grouped by section, with its metavar and default (``help overrides``)."""
    sections: dict[str, list[str]] = {}
    for dotted, tp, default in _override_keys():
        flag = _flag(dotted)
        short = f"{_SHORT_FLAGS[dotted]}, " if dotted in _SHORT_FLAGS else ""
        if _is_bool(tp):
            usage = f"{short}--[no-]{flag[2:]}"
        else:
            usage = f"{short}{flag} {metavar(tp)}{' ...' if is_list(tp) else ''}"
        shown = f"(default: {_shown(default)})"
        line = f"  {usage:<58} {shown}" if len(usage) <= 58 else f"  {usage}\n  {'':<58} {shown}"
        sections.setdefault(dotted.rpartition(".")[0] or "top level", []).append(line)
    lines = [
        "Config overrides: every config key is also a flag; it beats the file and the environment.",
        "Booleans are switches, --KEY or --no-KEY (explicit: --KEY=false); lists take several",
        "values (--kafka.topics a b); mappings take KEY=VALUE pairs.",
    ]
    for section, flags in sections.items():
        lines += ["", f"{section}:", *flags]
    return "\n".join(lines) + "\n"


def _shown(default: Any) -> str:
    return json.dumps(to_dict(default), ensure_ascii=False)
