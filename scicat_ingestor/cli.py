"""Command line: ``python -m scicat_ingestor`` / ``scicat-ingestor``, plus the ESS command names.

Every config key is also a dotted override flag (``--kafka.bootstrap-servers host:9092``),
generated from the config dataclasses so the two can never drift apart. Unlike upstream, list
flags keep their element type and booleans can be switched off (``--ingestion.dry-run false``).
Exit codes: 0 ok, 1 failure, 2 usage error or invalid configuration/schema.
"""

from __future__ import annotations

import argparse
import logging
import sys
import types
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, Union, get_args, get_origin

import yaml

from scicat_ingestor import __version__
from scicat_ingestor.config import (
    ConfigError,
    IngestorConfig,
    Secret,
    config_warnings,
    dump_yaml,
    iter_leaf_fields,
    load_config,
    secret_values,
)

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2

logger = logging.getLogger("scicat_ingestor.cli")

# Top-level keys handled by explicit flags (or meaningless on the command line).
_NO_OVERRIDE_FLAG = {
    "config_file",
    "nexus_file",
    "done_writing_message_file",
    "run_start_message_file",
}

SUBCOMMANDS = ("run", "ingest", "validate-config", "validate-schema", "show-config", "replay")


# ------------------------------------------------------------------------------------------------
# Override flags generated from the config model
# ------------------------------------------------------------------------------------------------


def parse_bool(text: str) -> bool:
    """'true/false/yes/no/on/off/1/0' → bool (argparse type for boolean flags)."""
    lowered = text.strip().lower()
    if lowered in {"true", "yes", "on", "1"}:
        return True
    if lowered in {"false", "no", "off", "0"}:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _parse_int_or_str(text: str) -> int | str:
    return int(text) if text.strip().isdigit() else text


def _parse_key_value(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, yaml.safe_load(value) if value else ""


def _flag_spec(tp: Any) -> dict[str, Any]:
    """argparse keyword arguments for a config field annotation."""
    origin = get_origin(tp)
    args = [a for a in get_args(tp) if a is not type(None)]
    if origin in (Union, types.UnionType):
        if any(get_origin(a) is tuple for a in args):  # e.g. str | tuple[str, ...]
            return _flag_spec(next(a for a in args if get_origin(a) is tuple))
        if set(args) == {str, int}:
            return {"type": _parse_int_or_str, "metavar": "VALUE"}
        return _flag_spec(args[0])
    if origin is Literal:
        return {"choices": list(get_args(tp))}
    if origin is tuple:
        return {"nargs": "*", **_flag_spec(get_args(tp)[0])}
    if origin is Mapping:
        return {"nargs": "+", "type": _parse_key_value, "metavar": "KEY=VALUE"}
    if tp is bool:
        return {"nargs": "?", "const": True, "type": parse_bool, "metavar": "true|false"}
    if tp in (int, float):
        return {"type": tp}
    if tp in (str, Secret):
        return {"type": str}
    raise TypeError(f"no command-line form for {tp!r}")


def add_override_flags(parser: argparse.ArgumentParser) -> None:
    """Add one ``--section.key`` flag per config key, grouped by section."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    for dotted, tp, default in iter_leaf_fields():
        if dotted in _NO_OVERRIDE_FLAG:
            continue
        section = dotted.rpartition(".")[0] or "general"
        if section not in groups:
            groups[section] = parser.add_argument_group(f"config overrides: {section}")
        flag = "--" + dotted.replace("_", "-")
        names = [flag, "-d"] if dotted == "ingestion.dry_run" else [flag]
        shown = "****" if tp is Secret else default
        groups[section].add_argument(
            *names,
            dest=f"override:{dotted}",
            default=argparse.SUPPRESS,
            help=f"(default: {shown!r})",
            **_flag_spec(tp),
        )


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


# ------------------------------------------------------------------------------------------------
# Parsers
# ------------------------------------------------------------------------------------------------


def _add_config_arg(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument(
        "-c",
        "--config-file",
        required=required,
        metavar="CONFIG",
        help="YAML configuration file (the ESS ingestor's format loads unchanged)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scicat-ingestor",
        description="Ingest NeXus files announced on Kafka into SciCat. "
        "'scicat-ingestor -c CONFIG' with no subcommand runs the daemon.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="run the daemon (Kafka → SciCat)")
    _add_config_arg(run)
    add_override_flags(run)

    ingest = sub.add_parser("ingest", help="ingest files, directories or globs now (backfill)")
    _add_config_arg(ingest)
    ingest.add_argument("paths", nargs="+", metavar="FILE", help="file, directory or glob")
    ingest.add_argument(
        "-w",
        "--workers",
        type=int,
        default=None,
        help="threads (default: ingestion.max_offline_ingestors)",
    )
    ingest.add_argument(
        "--report", metavar="FILE", default="", help="write one JSON line per file to FILE"
    )
    ingest.add_argument("--json", action="store_true", help="print the summary as JSON")
    ingest.add_argument(
        "-v", "--verbose", action="store_true", help="on a terminal, also show each file's log line"
    )
    add_override_flags(ingest)

    vconf = sub.add_parser("validate-config", help="check configuration files, one line each")
    vconf.add_argument("configs", nargs="+", metavar="CONFIG")

    vschema = sub.add_parser(
        "validate-schema",
        help="check schema files; with --nexus-file, show selection, variables and payload",
    )
    _add_config_arg(vschema)
    vschema.add_argument(
        "paths",
        nargs="*",
        metavar="PATH",
        help="schema files or directories (default: ingestion.schemas_directory)",
    )
    vschema.add_argument("--nexus-file", help="evaluate the schemas against this NeXus file")
    vschema.add_argument(
        "--thumbnail",
        metavar="OUT.png",
        help="with --nexus-file: write the thumbnail the daemon would attach to this PNG file",
    )
    vschema.add_argument(
        "--scicat",
        action="store_true",
        help="resolve SC variables through the configured SciCat (default: not fetched)",
    )
    add_override_flags(vschema)

    show = sub.add_parser("show-config", help="print the effective configuration (secrets masked)")
    _add_config_arg(show)
    add_override_flags(show)

    replay = sub.add_parser("replay", help="re-ingest the files of a dead-letter JSON-lines file")
    _add_config_arg(replay)
    replay.add_argument("source", metavar="DEADLETTER_FILE")
    add_override_flags(replay)
    return parser


def build_online_alias_parser() -> argparse.ArgumentParser:
    """The ESS ingestor's ``scicat_ingestor -c CONFIG [overrides]``."""
    parser = argparse.ArgumentParser(
        prog="scicat_ingestor", description="Run the daemon (ESS ingestor compatible name)."
    )
    _add_config_arg(parser)
    add_override_flags(parser)
    return parser


def build_offline_alias_parser() -> argparse.ArgumentParser:
    """The ESS ingestor's ``scicat_background_ingestor -c CONFIG --nexus-file F``."""
    parser = argparse.ArgumentParser(
        prog="scicat_background_ingestor",
        description="Ingest one file (ESS ingestor compatible name).",
    )
    _add_config_arg(parser)
    parser.add_argument("--nexus-file", required=True, help="the NeXus file to ingest")
    parser.add_argument(
        "--done-writing-message-file",
        default="",
        help="accepted for compatibility; the message is not needed to ingest",
    )
    add_override_flags(parser)
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
        as_json=getattr(args, "json", False),
        verbose=getattr(args, "verbose", False),
    )


def cmd_validate_config(args: argparse.Namespace) -> int:
    status = EXIT_OK
    for path in args.configs:
        try:
            config = load_config(path)
        except ConfigError as exc:
            print(f"INVALID {exc}", file=sys.stderr)
            status = EXIT_USAGE
            continue
        print(f"OK {path}")
        for warning in config_warnings(config):
            print(f"  warning: {warning}")
    return status


def cmd_validate_schema(args: argparse.Namespace) -> int:
    config = _load(args)
    from scicat_ingestor.schema.report import validate_schema_command

    fetch: Callable[[str], Any] | None = None
    if args.scicat:
        from scicat_ingestor.scicat import SciCatClient

        fetch = SciCatClient(config.scicat).get_json
    paths = args.paths or [config.ingestion.schemas_directory]
    status = validate_schema_command(config, paths, args.nexus_file, fetch, sys.stdout)
    if args.thumbnail:
        from scicat_ingestor.thumbnail import preview_command

        status |= preview_command(config, paths, args.nexus_file, args.thumbnail, sys.stdout)
    return status


def cmd_show_config(args: argparse.Namespace) -> int:
    sys.stdout.write(dump_yaml(_load(args)))
    return EXIT_OK


def cmd_replay(args: argparse.Namespace) -> int:
    config = _load(args)
    _start_logging(config)
    from scicat_ingestor.commands.replay import replay_command

    return replay_command(config, args.source)


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": cmd_run,
    "ingest": cmd_ingest,
    "validate-config": cmd_validate_config,
    "validate-schema": cmd_validate_schema,
    "show-config": cmd_show_config,
    "replay": cmd_replay,
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


def with_subcommand(argv: Sequence[str]) -> list[str]:
    """'scicat-ingestor -c CONFIG ...' (no subcommand) runs the daemon, like the ESS ingestor."""
    if argv and argv[0] not in SUBCOMMANDS and argv[0] not in {"-h", "--help", "--version"}:
        return ["run", *argv]
    return list(argv)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(with_subcommand(sys.argv[1:] if argv is None else argv))
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    return _guarded(COMMANDS[args.command], args)


def upstream_online_main(argv: Sequence[str] | None = None) -> int:
    """Entry point named ``scicat_ingestor`` like the ESS daemon's."""
    args = build_online_alias_parser().parse_args(argv)
    return _guarded(cmd_run, args)


def upstream_offline_main(argv: Sequence[str] | None = None) -> int:
    """Entry point named ``scicat_background_ingestor`` like the ESS one-file ingestor."""
    args = build_offline_alias_parser().parse_args(argv)
    args.paths = [args.nexus_file]
    args.workers = 1
    return _guarded(cmd_ingest, args)
