"""Command line: ``python -m scicat_ingestor`` / ``scicat-ingestor``, plus the ESS command names.

Every config key is also a dotted override flag (``config.flags``). The flags are hidden from
each subcommand's ``--help`` (which stays short) and listed by ``scicat-ingestor help overrides``.
Exit codes: ``ops.exitcodes``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from scicat_ingestor import __version__
from scicat_ingestor.config.flags import (
    UsageError,
    add_override_flags,
    collect_overrides,
    explicit_booleans,
    overrides_help,
)
from scicat_ingestor.config.model import (
    ConfigError,
    IngestorConfig,
    config_warnings,
    load_config,
    secret_values,
)
from scicat_ingestor.ops.exitcodes import EXIT_OK, EXIT_USAGE

logger = logging.getLogger("scicat_ingestor.cli")

_OVERRIDES_HINT = (
    "Every config key is also a flag (--section.key VALUE; booleans --key / --no-key): "
    "--help-overrides or 'scicat-ingestor help overrides' lists them."
)

SUBCOMMANDS = ("run", "ingest", "validate-config", "validate-schema", "show-config", "replay")


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
    except UsageError as exc:
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
