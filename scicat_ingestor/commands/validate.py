"""``validate-config``, ``validate-schema`` and ``show-config``: check before running.

``validate-schema --nexus-file`` previews through ``Pipeline.draft``, the same code path as a real
ingestion (data roots, schema selection, variables, pid seed, payload), so the pid and payload it
shows are the ones the daemon or ``ingest`` would send for that file.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

import yaml

from scicat_ingestor.config import (
    ConfigError,
    IngestorConfig,
    config_warnings,
    dump_yaml,
    load_config,
)
from scicat_ingestor.exitcodes import EXIT_FAILURE, EXIT_OK, EXIT_USAGE
from scicat_ingestor.pipeline import Draft, Job, Pipeline
from scicat_ingestor.schema.loader import SchemaSet
from scicat_ingestor.schema.model import MetadataSchema
from scicat_ingestor.schema.payload import DatasetDraft
from scicat_ingestor.schema.report import check_schemas
from scicat_ingestor.schema.variables import BUILTIN_NAMES, VariableResults
from scicat_ingestor.scicat import SciCatClient
from scicat_ingestor.thumbnail import ThumbnailError, thumbnail_of_file

NOT_FETCHED = "not fetched (no SciCat)"


class _NotFetchedError(Exception):
    pass


def _no_scicat(url: str) -> Any:
    raise _NotFetchedError(NOT_FETCHED)


def validate_config(paths: Sequence[str], out: TextIO, err: TextIO) -> int:
    """One OK/INVALID line per config file (warnings below OK); exit 2 if any is invalid."""
    status = EXIT_OK
    for path in paths:
        try:
            config = load_config(path)
        except ConfigError as exc:
            err.write(f"INVALID {exc}\n")
            status = EXIT_USAGE
            continue
        out.write(f"OK {path}\n")
        for warning in config_warnings(config):
            out.write(f"  warning: {warning}\n")
    return status


def show_config(config: IngestorConfig, out: TextIO) -> int:
    """The effective configuration as YAML, secrets masked."""
    out.write(dump_yaml(config))
    return EXIT_OK


def validate_schema(
    config: IngestorConfig,
    paths: Sequence[str],
    nexus_file: str | None,
    out: TextIO,
    *,
    ask_scicat: bool = False,
    fetch: Callable[[str], Any] | None = None,
    job_id: str = "",
    thumbnail: str = "",
) -> int:
    """Check schema files; with ``nexus_file``, show what ingesting it would send. 0 ok, 1 not.

    SC variables are looked up by ``fetch`` if given, else through the configured SciCat when
    ``ask_scicat``, else reported as not fetched; missing mandatory fields then do not fail the
    command, because SciCat was not asked. ``thumbnail`` (a PNG path) also writes the picture
    the daemon would attach, from the plot the selected schema names.
    """
    schema_set, ok = check_schemas(config, paths, out)
    if schema_set is None:
        return EXIT_FAILURE
    if nexus_file is None:
        if thumbnail:
            out.write("Thumbnail: --thumbnail needs --nexus-file\n")
            ok = False
        return EXIT_OK if ok else EXIT_FAILURE
    if fetch is None and not ask_scicat:
        fetch = _no_scicat
    planned = _show_file(config, schema_set, Job(nexus_file, job_id), fetch, out)
    if planned is None:
        return EXIT_FAILURE
    if planned.dataset.missing_mandatory and fetch is _no_scicat:
        out.write("  (SciCat was not asked, so fields built from SC variables are missing)\n")
    elif planned.dataset.missing_mandatory:
        ok = False
    if thumbnail:
        ok &= _write_thumbnail(config, planned.schema, nexus_file, thumbnail, out)
    return EXIT_OK if ok else EXIT_FAILURE


def _show_file(
    config: IngestorConfig,
    schema_set: SchemaSet,
    job: Job,
    fetch: Callable[[str], Any] | None,
    out: TextIO,
) -> Draft | None:
    """Print the pipeline's draft for ``job``: schema, variables, payload (None if it fails)."""
    out.write(f"\nNeXus file {job.file_path}\n")
    client = SciCatClient(config.scicat)
    try:
        planned = Pipeline(config, schema_set, client).draft(job, fetch)
    finally:
        client.close()
    if not isinstance(planned, Draft):
        out.write(f"  FAIL  {planned.reason}\n")
        return None
    schema = planned.schema
    out.write(f"  selected schema {schema.name!r} (id {schema.id}, {schema.file})\n")
    _print_variables(schema, planned.variables, out)
    _print_payload(planned.dataset, out)
    return planned


def _write_thumbnail(
    config: IngestorConfig, schema: MetadataSchema, nexus_file: str, png: str, out: TextIO
) -> bool:
    """The picture the daemon would attach, written to ``png``; False (with why) if none."""
    try:
        thumb = thumbnail_of_file(
            nexus_file, config.ingestion.thumbnail.max_points, schema.thumbnail
        )
    except ThumbnailError as err:
        out.write(f"Thumbnail: none ({err.reason}): {nexus_file}: {err}\n")
        return False
    Path(png).write_bytes(thumb.png)
    out.write(
        f"Thumbnail: {png} ({len(thumb.png)} bytes, {thumb.values_read} values read "
        f"from disk): {thumb.caption}\n"
    )
    return True


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
