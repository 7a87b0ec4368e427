"""Schema file checks for ``validate-schema``: one OK/FAIL line per file, with the reason.

Written for instrument scientists editing schemas. The NeXus-file preview that follows is the
pipeline's own draft (``Pipeline.draft``), so nothing here repeats the ingestion steps.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from scicat_ingestor.config.model import IngestorConfig
from scicat_ingestor.schema.loader import (
    SUFFIXES,
    assemble,
    discover,
    fallback_path,
    is_schema_file,
    load_schema_file,
)
from scicat_ingestor.schema.model import MetadataSchema, SchemaError, SchemaSet


def check_schemas(
    config: IngestorConfig, paths: Sequence[str], out: TextIO
) -> tuple[SchemaSet | None, bool]:
    """Check schema files/directories (default: the configured directory), one line each.

    Returns the assembled set (None when the files cannot form one) and whether all were valid.
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
        return None, False
    printed = {w for _, warnings in schemas for w in warnings}
    for warning in schema_set.warnings:
        if warning not in printed:
            out.write(f"  warning: {warning}\n")
    out.write(f"{len(schemas)} valid schema file(s); {'no errors' if ok else 'errors found'}\n")
    return schema_set, ok


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
    if schema.jobs:
        jobs = ", ".join(f"{job.name} (type {job.type.text})" for job in schema.jobs)
        out.write(f"        SciCat jobs after ingestion: {jobs}\n")
    prefix = f"{schema.file}: "
    for warning in warnings:
        out.write(f"        warning: {warning.removeprefix(prefix)}\n")
