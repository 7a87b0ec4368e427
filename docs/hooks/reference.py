"""mkdocs hook: the reference pages, generated from the code at every build.

A page holds a marker such as ``<!-- reference:configuration -->``; ``on_page_markdown`` replaces
it with tables built from the code itself, so a key, flag or metric added in code appears in the
site, and a configuration key without a meaning fails the build:

- configuration: every key ``config.iter_leaf_fields`` yields (what the loader accepts), with type
  and allowed values from the field annotations (``fieldtypes``), the default, "ESS" or "new" (is
  the key in the ESS ingestor's own sample config, ``tests/data/upstream-config.sample.yml``?) and
  the meaning: ``config_notes.yml`` beside this file, else the comment above the field in
  ``config/model.py``;
- command line: the argparse parsers of ``commands/cli.py`` (every subcommand, option and
  override flag);
- metrics: the Prometheus metrics registered in ``ops/metrics.py``;
- modules: every module of the package with the first paragraph of its docstring.

``on_files`` adds the benchmark results (``bench/results/*.png``, ``*.md``) to the site, so the
Performance page shows the plots the benchmark wrote instead of copies of them.
The functions are plain Python so that ``tests/test_docs.py`` checks them without mkdocs.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import re
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, get_args, get_origin

import yaml

from scicat_ingestor.commands import cli
from scicat_ingestor.config.fieldtypes import Check, describe, is_section
from scicat_ingestor.config.model import SECRET_ENV_VARS, IngestorConfig, iter_leaf_fields, to_dict
from scicat_ingestor.config.redact import Secret
from scicat_ingestor.ops import health, metrics

ROOT = Path(__file__).resolve().parents[2]
NOTES_FILE = Path(__file__).with_name("config_notes.yml")
UPSTREAM_SAMPLE = ROOT / "tests" / "data" / "upstream-config.sample.yml"
# ESS ingestor keys missing from its online sample config: the sample ingestor's, and the
# newer ESS versions' Graylog keys.
UPSTREAM_EXTRA_KEYS = {"run_start_message_file", "logging.graylog_enabled", "logging.graylogs"}
BENCH_RESULTS = ROOT / "bench" / "results"
PACKAGE = ROOT / "scicat_ingestor"


class ReferenceError(Exception):
    """The code and the documentation disagree; the message says what to add or remove."""


# ------------------------------------------------------------------------------------------------
# Configuration keys
# ------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ConfigKey:
    """One row of the configuration reference."""

    key: str
    type: str
    allowed: str
    default: str
    origin: str
    meaning: str


def _checks(tp: Any) -> Iterator[Check]:
    """Every allowed-values rule inside an annotation (also inside lists and unions)."""
    if get_origin(tp) is Annotated:
        base, *extras = get_args(tp)
        yield from (e for e in extras if isinstance(e, Check) and e.allowed)
        yield from _checks(base)
        return
    for arg in get_args(tp):
        yield from _checks(arg)


def _type_text(tp: Any) -> str:
    text = describe(tp)
    return f"{text} (secret)" if Secret in _leaf_types(tp) else text


def _leaf_types(tp: Any) -> set[Any]:
    args = get_args(tp)
    return set().union(*(_leaf_types(a) for a in args)) if args else {tp}


def _default_text(default: Any) -> str:
    """The default as YAML, the way it is written in a config file."""
    plain = to_dict(default)
    if isinstance(plain, str) and plain:
        return plain
    return yaml.safe_dump(plain, default_flow_style=True).strip().removesuffix("...").strip()


def field_comments(cls: type[Any]) -> dict[str, str]:
    """The ``#`` comment lines directly above each field of a config dataclass, joined."""
    comments: dict[str, str] = {}
    pending: list[str] = []
    names = {f.name for f in dataclasses.fields(cls)}
    for line in inspect.getsource(cls).splitlines():
        text = line.strip()
        if text.startswith("#"):
            pending.append(text.lstrip("#").strip())
            continue
        name = text.partition(":")[0]
        if name in names and pending:
            comments[name] = " ".join(pending)
        pending = []
    return comments


def _all_comments(cls: type[Any], prefix: str = "") -> dict[str, str]:
    found = {f"{prefix}{k}": v for k, v in field_comments(cls).items()}
    hints = typing.get_type_hints(cls, include_extras=True)
    for f in dataclasses.fields(cls):
        if is_section(hints[f.name]):
            found.update(_all_comments(hints[f.name], f"{prefix}{f.name}."))
    return found


def _flatten(data: Any, prefix: str = "") -> set[str]:
    if not isinstance(data, dict):
        return {prefix.rstrip(".")}
    return set().union(*(_flatten(v, f"{prefix}{k}.") for k, v in data.items()))


def upstream_keys() -> set[str]:
    """The ESS ingestor's keys: those of its own sample config, plus the one it lacks."""
    data = yaml.safe_load(UPSTREAM_SAMPLE.read_text(encoding="utf-8"))
    return _flatten(data) | UPSTREAM_EXTRA_KEYS


def load_notes(path: Path = NOTES_FILE) -> dict[str, str]:
    notes = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return {str(k): str(v) for k, v in notes.items()}


def config_keys(
    cls: type[Any] = IngestorConfig, notes: dict[str, str] | None = None
) -> list[ConfigKey]:
    """Every key the loader accepts, described; ReferenceError if one has no meaning."""
    notes = load_notes() if notes is None else notes
    comments = _all_comments(cls)
    ess = upstream_keys()
    rows: list[ConfigKey] = []
    missing: list[str] = []
    for key, tp, default in iter_leaf_fields(cls):
        meaning = notes.get(key) or comments.get(key, "")
        if not meaning:
            missing.append(key)
        rows.append(
            ConfigKey(
                key=key,
                type=_type_text(tp),
                allowed="; ".join(dict.fromkeys(c.allowed for c in _checks(tp))),
                default=_default_text(default),
                origin="ESS" if key in ess else "new",
                meaning=meaning.removeprefix("(new) "),
            )
        )
    stale = sorted(set(notes) - {row.key for row in rows})
    problems = []
    if missing:
        problems.append(
            f"no meaning for {', '.join(missing)} (add it to {NOTES_FILE.name} "
            "or as a comment above the field in config/model.py)"
        )
    if stale:
        problems.append(f"{NOTES_FILE.name} names keys the code does not have: {', '.join(stale)}")
    if problems:
        raise ReferenceError("configuration reference out of date: " + "; ".join(problems))
    return rows


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _code(text: str) -> str:
    return f"`{text}`" if text else ""


def _env_table() -> list[str]:
    return [
        "Secrets may come from these environment variables instead of the file. When set",
        "(non-empty) they win over the file; a command-line flag wins over them.",
        "",
        "| variable | config key |",
        "|---|---|",
        *(f"| `{var}` | `{'.'.join(key)}` |" for var, key in SECRET_ENV_VARS.items()),
    ]


def _section_table(section: str, rows: list[ConfigKey]) -> list[str]:
    lines = [
        "| key | type | allowed | default | ESS or new | meaning |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        cells = [
            f"`{row.key.rpartition('.')[2] if section else row.key}`",
            row.type,
            row.allowed,
            _code(row.default) if row.default else "`''`",
            row.origin if row.origin == "ESS" else "**new**",
            row.meaning,
        ]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return lines


def _sections(cls: type[Any]) -> dict[str, list[ConfigKey]]:
    sections: dict[str, list[ConfigKey]] = {}
    for row in config_keys(cls):
        sections.setdefault(row.key.rpartition(".")[0], []).append(row)
    return sections


def config_reference(cls: type[Any] = IngestorConfig) -> str:
    """Markdown: the environment variables, then one table per config section."""
    lines = _env_table()
    for section, rows in _sections(cls).items():
        lines += ["", f"### `{section}`" if section else "### Top level", ""]
        lines += _section_table(section, rows)
    return "\n".join(lines) + "\n"


def config_section_reference(section: str) -> str:
    """Markdown: the table of one config section (for the operator page about it)."""
    sections = _sections(IngestorConfig)
    if section not in sections:
        raise ReferenceError(f"no configuration section {section!r}")
    return "\n".join(_section_table(section, sections[section])) + "\n"


# ------------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------------


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _visible(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [
        a
        for a in parser._actions
        if a.help != argparse.SUPPRESS and not isinstance(a, argparse._SubParsersAction)
    ]


def _argument_row(action: argparse.Action) -> str:
    if action.option_strings:
        names = ", ".join(f"`{o}`" for o in action.option_strings)
        if action.nargs != 0:
            names += f" `{action.metavar or action.dest.upper()}`"
    else:
        names = f"`{action.metavar or action.dest}`"
        if action.nargs in ("+", "*"):
            names += " …"
    default = action.default
    shown = "" if default in (None, "", False, argparse.SUPPRESS) else f"`{default}`"
    required = "yes" if action.required else ""
    return f"| {names} | {required} | {shown} | {_cell(action.help or '')} |"


def _parser_section(title: str, parser: argparse.ArgumentParser, epilog: bool = False) -> list[str]:
    usage = parser.format_usage().removeprefix("usage: ").strip()
    lines = [f"### {title}", ""]
    if parser.description:
        lines += [parser.description, ""]
    lines += ["```", usage, "```", ""]
    rows = [_argument_row(a) for a in _visible(parser)]
    if rows:
        lines += ["| argument | required | default | meaning |", "|---|---|---|---|", *rows, ""]
    if epilog and parser.epilog:
        lines += [parser.epilog, ""]
    return lines


def cli_reference() -> str:
    """Markdown: every command and its arguments, the ESS command names, the override flags."""
    main = cli.build_parser()
    lines = _parser_section("`scicat-ingestor`", main, epilog=True)
    for name, sub in _subparsers(main).items():
        lines += _parser_section(f"`scicat-ingestor {name}`", sub)
    lines += [
        "## The ESS ingestor's command names",
        "",
        "Installed too, so existing service definitions keep working.",
        "",
    ]
    lines += _parser_section("`scicat_ingestor`", cli.build_online_alias_parser())
    lines += _parser_section("`scicat_background_ingestor`", cli.build_offline_alias_parser())
    lines += [
        "## Override flags",
        "",
        "Every configuration key is also a flag, hidden from `--help`; "
        "`scicat-ingestor help overrides` prints this list:",
        "",
        "```",
        cli.overrides_help().rstrip(),
        "```",
    ]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------
# Metrics
# ------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class MetricDoc:
    """One row of the metrics reference: the name as scraped, its type, labels and help."""

    name: str
    type: str
    labels: tuple[str, ...]
    help: str


def metric_docs() -> list[MetricDoc]:
    """Every metric of ``ops/metrics.py``'s registry, with the names Prometheus scrapes: its own
    and those of collectors registered on it elsewhere (``ops/health.py``'s readiness gauges,
    computed at scrape time)."""
    collectors = {
        id(v): v
        for v in vars(metrics).values()
        if hasattr(v, "_labelnames") and hasattr(v, "describe")
    }
    registered = {m.name for m in metrics.REGISTRY.collect()}
    docs: list[MetricDoc] = []
    for collector in collectors.values():
        for family in collector.describe():
            if family.name not in registered:
                continue
            suffix = "_total" if family.type == "counter" else ""
            docs.append(
                MetricDoc(
                    family.name + suffix,
                    family.type,
                    tuple(collector._labelnames),
                    family.documentation,
                )
            )
    listed = {d.name.removesuffix("_total") for d in docs}
    for family in health.READINESS.describe():
        labels = tuple(getattr(family, "_labelnames", ()))
        docs.append(MetricDoc(family.name, family.type, labels, family.documentation))
        listed.add(family.name)
    unlisted = registered - listed
    if unlisted:
        raise ReferenceError(f"metrics registered outside ops/metrics.py: {sorted(unlisted)}")
    return docs


def metrics_reference() -> str:
    lines = ["| metric | type | labels | meaning |", "|---|---|---|---|"]
    for doc in metric_docs():
        labels = ", ".join(f"`{label}`" for label in doc.labels)
        lines.append(f"| `{doc.name}` | {doc.type} | {labels} | {_cell(doc.help)} |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------
# Modules
# ------------------------------------------------------------------------------------------------


def module_docs() -> list[tuple[str, str]]:
    """(path, first paragraph of its docstring) for every module of the package, data excluded."""
    found: list[tuple[str, str]] = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative.startswith("testing/data/"):
            continue
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or "(no docstring)"
        found.append((relative, " ".join(doc.split("\n\n")[0].split())))
    return found


def modules_reference() -> str:
    lines = ["| module | what it is for |", "|---|---|"]
    lines += [f"| `{path}` | {_cell(doc)} |" for path, doc in module_docs()]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------
# mkdocs hooks
# ------------------------------------------------------------------------------------------------

GENERATORS: dict[str, Callable[[], str]] = {
    "<!-- reference:configuration -->": config_reference,
    "<!-- reference:cli -->": cli_reference,
    "<!-- reference:metrics -->": metrics_reference,
    "<!-- reference:modules -->": modules_reference,
}


SECTION_MARKER = re.compile(r"<!-- reference:configuration:([\w.]+) -->")


def on_page_markdown(markdown: str, **_kwargs: Any) -> str:
    for marker, generate in GENERATORS.items():
        if marker in markdown:
            markdown = markdown.replace(marker, generate())
    return SECTION_MARKER.sub(lambda m: config_section_reference(m.group(1)), markdown)


def on_files(files: Any, config: Any) -> Any:
    """The benchmark results as site files under ``bench-results/`` (read where they are)."""
    from mkdocs.structure.files import File  # noqa: PLC0415 - only mkdocs builds need it

    for path in sorted(BENCH_RESULTS.glob("*.png")) + sorted(BENCH_RESULTS.glob("*.md")):
        files.append(File.generated(config, f"bench-results/{path.name}", abs_src_path=str(path)))
    return files
