"""``validate-schema``: check schema files and, given a NeXus file, show what would be ingested.

Written for instrument scientists editing schemas: every file gets one OK/FAIL line with the
reason, then (with a NeXus file) the selected schema, each variable's value or error, and the
dataset payload exactly as it would be sent to SciCat.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

import yaml

from scicat_ingestor.config import IngestorConfig
from scicat_ingestor.nexus import NexusError, open_nexus
from scicat_ingestor.schema.loader import (
    SUFFIXES,
    assemble,
    discover,
    fallback_path,
    is_schema_file,
    load_schema_file,
)
from scicat_ingestor.schema.model import MetadataSchema, SchemaError, SchemaSet
from scicat_ingestor.schema.payload import DatasetDraft, build_dataset
from scicat_ingestor.schema.variables import (
    BUILTIN_NAMES,
    Builtins,
    VariableResults,
    evaluate_variables,
)

NOT_FETCHED = "not fetched (no SciCat)"


class _NotFetchedError(Exception):
    pass


def _no_scicat(url: str) -> Any:
    raise _NotFetchedError(NOT_FETCHED)


def validate_schema_command(
    config: IngestorConfig,
    paths: Sequence[str],
    nexus_file: str | None,
    fetch: Callable[[str], Any] | None,
    out: TextIO,
) -> int:
    """Validate schema files/directories (default: the configured directory); 0 ok, 1 invalid.

    With ``nexus_file``, also evaluate the selected schema against it. ``fetch=None`` reports SC
    variables as not fetched; missing mandatory fields then do not fail the command, because
    SciCat was not asked.
    """
    ok = True
    schemas: list[tuple[MetadataSchema, list[str]]] = []
    out.write("Schema files\n")
    for target in paths or [config.ingestion.schemas_directory]:
        ok &= _check_target(Path(target), schemas, out)
    fallback: MetadataSchema | None = None
    spec = config.ingestion.fallback_schema_file_path
    if spec:
        try:
            fallback, warnings = load_schema_file(fallback_path(spec))
            _print_ok(fallback, warnings, out, label="fallback")
        except SchemaError as exc:
            out.write(f"  FAIL  fallback: {exc}\n")
            ok = False
    try:
        schema_set = assemble(schemas, fallback)
    except SchemaError as exc:
        out.write(f"  FAIL  {exc}\n")
        return 1
    printed = {w for _, warnings in schemas for w in warnings}
    for warning in schema_set.warnings:
        if warning not in printed:
            out.write(f"  warning: {warning}\n")
    out.write(f"{len(schemas)} valid schema file(s); {'no errors' if ok else 'errors found'}\n")
    if nexus_file is not None:
        ok &= _show_file(config, schema_set, nexus_file, fetch, out)
    return 0 if ok else 1


def _check_target(
    target: Path, schemas: list[tuple[MetadataSchema, list[str]]], out: TextIO
) -> bool:
    if target.is_dir():
        files = discover(target)
        if not files:
            out.write(f"  note  {target}: no *{'/*'.join(SUFFIXES)} files here\n")
    elif target.exists():
        files = [target]
        if not is_schema_file(target):
            out.write(
                f"  note  {target}: the ingestor only loads files ending in {', '.join(SUFFIXES)}\n"
            )
    else:
        out.write(f"  FAIL  {target}: no such file or directory\n")
        return False
    ok = True
    for path in files:
        try:
            schema, warnings = load_schema_file(path)
        except SchemaError as exc:
            out.write(f"  FAIL  {exc}\n")
            ok = False
            continue
        _print_ok(schema, warnings, out)
        schemas.append((schema, warnings))
    return ok


def _print_ok(schema: MetadataSchema, warnings: list[str], out: TextIO, label: str = "") -> None:
    what = f"{label}: " if label else ""
    out.write(
        f"  OK    {what}{schema.file}  ({schema.name!r}, id {schema.id}, order {schema.order}, "
        f"selector {schema.selector.describe()!r})\n"
    )
    prefix = f"{schema.file}: "
    for warning in warnings:
        out.write(f"        warning: {warning.removeprefix(prefix)}\n")


def _show_file(
    config: IngestorConfig,
    schema_set: SchemaSet,
    nexus_file: str,
    fetch: Callable[[str], Any] | None,
    out: TextIO,
) -> bool:
    out.write(f"\nNeXus file {nexus_file}\n")
    schema = schema_set.select(nexus_file)
    if schema is None:
        out.write("  FAIL  no schema selector matches this path and no fallback is configured\n")
        return False
    out.write(f"  selected schema {schema.name!r} (id {schema.id}, {schema.file})\n")
    builtins = Builtins(
        data_file_path=Path(nexus_file).as_posix(),
        ingestor_files_directory=config.ingestion.file_handling.ingestor_files_directory,
    )
    try:
        with open_nexus(
            Path(nexus_file), max_read_bytes=config.ingestion.file_handling.max_read_bytes
        ) as reader:
            results = evaluate_variables(schema, reader, builtins, fetch or _no_scicat)
    except NexusError as exc:
        out.write(f"  FAIL  {exc}\n")
        return False
    _print_variables(schema, results, out)
    draft = build_dataset(schema, results, config.dataset)
    _print_payload(draft, out)
    if draft.missing_mandatory and fetch is None:
        out.write("  (SciCat was not asked, so fields built from SC variables are missing)\n")
        return True
    return not draft.missing_mandatory


def _print_variables(schema: MetadataSchema, results: VariableResults, out: TextIO) -> None:
    out.write("\nVariables\n")
    errors = {f.name: f.error for f in results.failures}
    names = [*BUILTIN_NAMES, *(v.name for v in schema.variables if v.name not in BUILTIN_NAMES)]
    width = max(len(n) for n in names)
    for name in names:
        if name in errors:
            out.write(f"  {name:<{width}}  FAILED: {errors[name]}\n")
            continue
        value = results.values[name]
        unit = f"  [{value.unit}]" if value.unit else ""
        out.write(f"  {name:<{width}}  = {_short(value.value)}{unit}\n")
    if "sample_attachment" in errors:
        out.write(f"  sample lookup FAILED: {errors['sample_attachment']}\n")
    elif results.sample_ids:
        out.write(f"  sample lookup found: {', '.join(results.sample_ids)}\n")


def _print_payload(draft: DatasetDraft, out: TextIO) -> None:
    out.write("\nDataset payload (size and numberOfFiles are added when ingesting)\n")
    text = yaml.safe_dump(draft.payload, sort_keys=False, allow_unicode=True, width=100)
    out.writelines(f"  {line}\n" for line in text.splitlines())
    for failure in draft.failures:
        out.write(
            f"  FAILED field schema.{failure.name} ({failure.machine_name}): {failure.error}\n"
        )
    if draft.missing_mandatory:
        out.write(f"  MISSING mandatory fields: {', '.join(draft.missing_mandatory)}\n")


def _short(value: Any, limit: int = 100) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."
