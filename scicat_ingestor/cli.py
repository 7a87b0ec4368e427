"""Command line: ``python -m scicat_ingestor`` / ``scicat-ingestor``, plus the ESS command names.

Every config key is also a dotted override flag (``--kafka.bootstrap-servers HOST:PORT``),
generated from the config dataclasses and ``fieldtypes`` so the two can never drift apart. The
flags are hidden from each subcommand's ``--help`` (which stays short) and listed by
``scicat-ingestor help overrides``. Booleans are switches that never take the next argument:
``--ingestion.dry-run`` / ``-d`` and ``--no-ingestion.dry-run``; ``--ingestion.dry-run=false`` is
the explicit form. Exit codes: ``exitcodes``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Literal, NoReturn, get_args, get_origin

from scicat_ingestor import __version__
from scicat_ingestor.config import (
    ConfigError,
    IngestorConfig,
    config_warnings,
    iter_leaf_fields,
    load_config,
    secret_values,
    to_dict,
)
from scicat_ingestor.exitcodes import EXIT_OK, EXIT_USAGE
from scicat_ingestor.fieldtypes import (
    Disallowed,
    Mismatch,
    base_type,
    describe,
    is_list,
    metavar,
    parse_bool,
    parse_text,
)

logger = logging.getLogger("scicat_ingestor.cli")

# Top-level keys handled by explicit flags (or meaningless on the command line).
_NO_OVERRIDE_FLAG = {
    "config_file",
    "nexus_file",
    "done_writing_message_file",
    "run_start_message_file",
    "logging.graylogs",  # a list of mappings: in the file only
}
_SHORT_FLAGS = {"ingestion.dry_run": "-d"}
_OVERRIDES_HINT = (
    "Every config key is also a flag (--section.key VALUE; booleans --key / --no-key): "
    "--help-overrides or 'scicat-ingestor help overrides' lists them."
)

SUBCOMMANDS = ("run", "ingest", "validate-config", "validate-schema", "show-config", "replay")


# ------------------------------------------------------------------------------------------------
# Override flags generated from the config model
# ------------------------------------------------------------------------------------------------


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
            raise _UsageError(f"argument {flag}: {exc}") from None
    return result


class _UsageError(Exception):
    pass


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


class _OverridesHelp(argparse.Action):
    """``--help-overrides``: print the override list and exit, like ``--help``."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> NoReturn:
        sys.stdout.write(overrides_help())
        parser.exit(EXIT_OK)


# ------------------------------------------------------------------------------------------------
# Parsers: one function per subcommand defines its own arguments
# ------------------------------------------------------------------------------------------------


def _add_config_arg(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument(
        "-c",
        "--config-file",
        required=required,
        metavar="CONFIG",
        help="YAML configuration file (the ESS ingestor's format loads unchanged)",
    )


def _with_overrides(parser: argparse.ArgumentParser) -> None:
    """Config file, hidden override flags, and the one help line pointing to them."""
    _add_config_arg(parser)
    add_override_flags(parser)
    parser.add_argument(
        "--help-overrides", action=_OverridesHelp, help="list the config override flags and exit"
    )
    parser.epilog = _OVERRIDES_HINT


def _run_args(parser: argparse.ArgumentParser) -> None:
    _with_overrides(parser)


def _ingest_args(parser: argparse.ArgumentParser) -> None:
    _with_overrides(parser)
    parser.add_argument("paths", nargs="+", metavar="FILE", help="file, directory or glob")
    parser.add_argument(
        "-w",
        "--workers",
        type=int,
        default=None,
        help="threads (default: ingestion.max_offline_ingestors)",
    )
    parser.add_argument(
        "--report", metavar="FILE", default="", help="write one JSON line per file to FILE"
    )
    parser.add_argument(
        "--dead-letters",
        metavar="FILE",
        default="",
        help="write a dead letter per failed file to FILE (for 'replay FILE' later)",
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="on a terminal, also show each file's log line"
    )


def _validate_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("configs", nargs="+", metavar="CONFIG")
    parser.add_argument(
        "--offline",
        action="store_true",
        help="skip the checks of paths that must exist (schemas, data roots, CA and token files)",
    )


def _validate_schema_args(parser: argparse.ArgumentParser) -> None:
    _with_overrides(parser)
    parser.add_argument(
        "paths",
        nargs="*",
        metavar="PATH",
        help="schema files or directories (default: ingestion.schemas_directory)",
    )
    parser.add_argument("--nexus-file", help="preview ingesting this NeXus file (nothing is sent)")
    parser.add_argument(
        "--thumbnail",
        metavar="OUT.png",
        help="with --nexus-file: write the thumbnail the daemon would attach to this PNG file",
    )
    parser.add_argument(
        "--job-id",
        default="",
        help="the file-writer job id the preview assumes (part of a generated pid's seed)",
    )
    parser.add_argument(
        "--scicat",
        action="store_true",
        help="resolve SC variables through the configured SciCat (default: not fetched)",
    )
    parser.add_argument(
        "--all",
        action="store_true",
        dest="show_all",
        help="with --nexus-file: list every schema file with its warnings before the preview",
    )


def _show_config_args(parser: argparse.ArgumentParser) -> None:
    _with_overrides(parser)


def _replay_args(parser: argparse.ArgumentParser) -> None:
    _with_overrides(parser)
    parser.add_argument("source", metavar="DEADLETTER_FILE")
    parser.add_argument(
        "--report", metavar="FILE", default="", help="write one JSON line per letter to FILE"
    )
    parser.add_argument(
        "--still-failing",
        metavar="FILE",
        default="",
        help="write the letters that failed again to FILE, ready for the next replay",
    )


def _help_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "topic",
        nargs="?",
        metavar="TOPIC",
        help="'overrides' (every config key flag) or a command name",
    )


_PARSERS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None]]] = {
    "run": ("run the daemon (Kafka → SciCat)", _run_args),
    "ingest": ("ingest files, directories or globs now (backfill)", _ingest_args),
    "validate-config": ("check configuration files, one line each", _validate_config_args),
    "validate-schema": (
        "check schema files; with --nexus-file, preview what ingesting it would send",
        _validate_schema_args,
    ),
    "show-config": ("print the effective configuration (secrets masked)", _show_config_args),
    "replay": ("re-ingest the files of a dead-letter JSON-lines file", _replay_args),
    "help": ("show help for a command, or 'help overrides' for the config flags", _help_args),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scicat-ingestor",
        description="Ingest NeXus files announced on Kafka into SciCat. "
        "'scicat-ingestor -c CONFIG' with no subcommand runs the daemon.",
        epilog=_OVERRIDES_HINT,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--help-overrides", action=_OverridesHelp, help="list the config override flags and exit"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (summary, define) in _PARSERS.items():
        define(sub.add_parser(name, help=summary, description=summary[0].upper() + summary[1:]))
    return parser


def build_online_alias_parser() -> argparse.ArgumentParser:
    """The ESS ingestor's ``scicat_ingestor -c CONFIG [overrides]``."""
    parser = argparse.ArgumentParser(
        prog="scicat_ingestor", description="Run the daemon (ESS ingestor compatible name)."
    )
    _with_overrides(parser)
    return parser


def build_offline_alias_parser() -> argparse.ArgumentParser:
    """The ESS ingestor's ``scicat_background_ingestor -c CONFIG --nexus-file F``."""
    parser = argparse.ArgumentParser(
        prog="scicat_background_ingestor",
        description="Ingest one file (ESS ingestor compatible name).",
    )
    _with_overrides(parser)
    parser.add_argument("--nexus-file", required=True, help="the NeXus file to ingest")
    parser.add_argument(
        "--done-writing-message-file",
        default="",
        help="accepted for compatibility; the message is not needed to ingest",
    )
    return parser


# ------------------------------------------------------------------------------------------------
# Commands
# ------------------------------------------------------------------------------------------------


def _load(args: argparse.Namespace) -> IngestorConfig:
    return load_config(args.config_file, collect_overrides(args))


def _start_logging(config: IngestorConfig) -> None:
    from scicat_ingestor.ops.logs import setup_logging

    setup_logging(config.logging, secret_values(config))
    for warning in config_warnings(config):
        logger.warning(warning)


def cmd_run(args: argparse.Namespace) -> int:
    config = _load(args)
    _start_logging(config)
    from scicat_ingestor.commands.run import run_daemon

    return run_daemon(config)


def cmd_ingest(args: argparse.Namespace) -> int:
    config = _load(args)
    _start_logging(config)
    from scicat_ingestor.commands.ingest import ingest_command

    workers = args.workers or config.ingestion.max_offline_ingestors
    return ingest_command(
        config,
        args.paths,
        workers,
        report=getattr(args, "report", ""),
        dead_letters=getattr(args, "dead_letters", ""),
        as_json=getattr(args, "json", False),
        verbose=getattr(args, "verbose", False),
    )


def cmd_validate_config(args: argparse.Namespace) -> int:
    from scicat_ingestor.commands.validate import validate_config

    return validate_config(args.configs, sys.stdout, sys.stderr, offline=args.offline)


def cmd_validate_schema(args: argparse.Namespace) -> int:
    config = _load(args)
    from scicat_ingestor.commands.validate import validate_schema

    return validate_schema(
        config,
        args.paths,
        args.nexus_file,
        sys.stdout,
        ask_scicat=args.scicat,
        job_id=args.job_id,
        thumbnail=args.thumbnail or "",
        show_all=args.show_all,
    )


def cmd_show_config(args: argparse.Namespace) -> int:
    config = _load(args)
    from scicat_ingestor.commands.validate import show_config

    return show_config(config, sys.stdout)


def cmd_replay(args: argparse.Namespace) -> int:
    config = _load(args)
    _start_logging(config)
    from scicat_ingestor.commands.replay import replay_command

    return replay_command(config, args.source, report=args.report, still_failing=args.still_failing)


def cmd_help(args: argparse.Namespace) -> int:
    if args.topic == "overrides":
        sys.stdout.write(overrides_help())
        return EXIT_OK
    if args.topic in SUBCOMMANDS:
        build_parser().parse_args([args.topic, "--help"])
    if args.topic is not None:
        print(f"error: no help topic {args.topic!r}; use 'overrides' or a command", file=sys.stderr)
        return EXIT_USAGE
    build_parser().print_help()
    return EXIT_OK


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": cmd_run,
    "ingest": cmd_ingest,
    "validate-config": cmd_validate_config,
    "validate-schema": cmd_validate_schema,
    "show-config": cmd_show_config,
    "replay": cmd_replay,
    "help": cmd_help,
}


def _guarded(command: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run a command; configuration and schema errors become one line on stderr and exit 2."""
    from scicat_ingestor.schema.loader import SchemaError

    try:
        return command(args)
    except (ConfigError, SchemaError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_OK


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.Namespace:
    try:
        return parser.parse_args(explicit_booleans(argv))
    except _UsageError as exc:
        parser.error(str(exc))


def with_subcommand(argv: Sequence[str]) -> list[str]:
    """'scicat-ingestor -c CONFIG ...' (no subcommand) runs the daemon, like the ESS ingestor."""
    top_level = {"-h", "--help", "--version", "--help-overrides", "help"}
    if argv and argv[0] not in SUBCOMMANDS and argv[0] not in top_level:
        return ["run", *argv]
    return list(argv)


def parse_command_line(argv: Sequence[str]) -> argparse.Namespace:
    """A ``scicat-ingestor`` command line as ``main`` reads it."""
    return _parse(build_parser(), with_subcommand(argv))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_command_line(sys.argv[1:] if argv is None else argv)
    if args.command is None:
        build_parser().print_help()
        return EXIT_USAGE
    return _guarded(COMMANDS[args.command], args)


def upstream_online_main(argv: Sequence[str] | None = None) -> int:
    """Entry point named ``scicat_ingestor`` like the ESS daemon's."""
    args = _parse(build_online_alias_parser(), sys.argv[1:] if argv is None else argv)
    return _guarded(cmd_run, args)


def upstream_offline_main(argv: Sequence[str] | None = None) -> int:
    """Entry point named ``scicat_background_ingestor`` like the ESS one-file ingestor."""
    args = _parse(build_offline_alias_parser(), sys.argv[1:] if argv is None else argv)
    args.paths = [args.nexus_file]
    args.workers = 1
    return _guarded(cmd_ingest, args)
