"""``validate-config``, ``validate-schema`` and ``show-config``: check before running.

``validate-schema --nexus-file`` previews through ``Pipeline.draft``, the same code path as a real
ingestion (data roots, schema selection, variables, pid seed, payload), so the pid and payload it
shows are the ones the daemon or ``ingest`` would send for that file.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

import yaml

from scicat_ingestor.config.model import (
    ConfigError,
    IngestorConfig,
    check_config,
    config_warnings,
    dump_yaml,
)
from scicat_ingestor.ingest.pipeline import Draft, Job, Pipeline
from scicat_ingestor.ingest.thumbnail import ThumbnailError, thumbnail_of_file
from scicat_ingestor.ops.exitcodes import EXIT_FAILURE, EXIT_OK, EXIT_USAGE
from scicat_ingestor.schema.jobs import build_jobs
from scicat_ingestor.schema.loader import SchemaSet
from scicat_ingestor.schema.model import MetadataSchema
from scicat_ingestor.schema.payload import DatasetDraft
from scicat_ingestor.schema.report import check_schemas
from scicat_ingestor.schema.variables import BUILTIN_NAMES, VariableResults
from scicat_ingestor.scicat import SciCatClient

NOT_FETCHED = "not fetched (no SciCat)"


class _NotFetchedError(Exception):
    pass


def _no_scicat(url: str) -> Any:
    raise _NotFetchedError(NOT_FETCHED)


def validate_config(
    paths: Sequence[str], out: TextIO, err: TextIO, *, offline: bool = False
) -> int:
    """``OK <file>`` (warnings below), or one ``INVALID`` line per problem; exit 2 if any.

    Every problem of a file is reported, not only the first; ``offline`` skips the checks of
    paths that must exist (for checking a config on another machine than the daemon's).
    """
    status = EXIT_OK
    for path in paths:
        config, errors = check_config(path, offline=offline)
        if config is not None:
            errors = _logging_problems(config, path)
        if config is None or errors:
            err.writelines(f"INVALID {error}\n" for error in errors)
            status = EXIT_USAGE
            continue
        out.write(f"OK {path}\n")
        for warning in config_warnings(config):
            out.write(f"  warning: {warning}\n")
    return status


def _logging_problems(config: IngestorConfig, path: str) -> list[str]:
    """The log targets ``run`` would refuse at start (checked where the sinks are built)."""
    from scicat_ingestor.ops.logs import graylog_targets, parse_level  # noqa: PLC0415

    try:
        parse_level(config.logging.logging_level)
        graylog_targets(config.logging)
    except ConfigError as exc:
        return [f"{path}: {exc}"]
    return []


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
    show_all: bool = False,
) -> int:
    """Check schema files; with ``nexus_file``, show what ingesting it would send. 0 ok, 1 not.

    The preview lists the selected schema's warnings only (every file's with ``show_all``), and
    fails when mandatory fields are missing, since ingesting the file would fail the same way;
    except fields that only miss because SciCat was not asked (SC variables are looked up by
    ``fetch`` if given, else through the configured SciCat when ``ask_scicat``, else not).
    ``thumbnail`` (a PNG path) also writes the picture the daemon would attach.
    """
    brief = nexus_file is not None and not show_all
    listing = io.StringIO()
    schema_set, ok = check_schemas(config, paths, listing)
    if not brief or schema_set is None or not ok:  # errors matter before a preview: list all
        out.write(listing.getvalue())
    if schema_set is None:
        return EXIT_FAILURE
    if nexus_file is None:
        if thumbnail:
            out.write("Thumbnail: --thumbnail needs --nexus-file\n")
            ok = False
        return EXIT_OK if ok else EXIT_FAILURE
    if brief and ok:
        count = len(schema_set.schemas) + (schema_set.fallback is not None)
        out.write(f"Schema files: {count} valid (--all lists each with its warnings)\n")
    if fetch is None and not ask_scicat:
        fetch = _no_scicat
    # relative like ``ingest``: the data-root check wants the absolute path
    job = Job(os.path.abspath(nexus_file), job_id)
    planned = _show_file(config, schema_set, job, fetch, out, warnings=brief)
    if planned is None:
        return EXIT_FAILURE
    ok &= _mandatory_ok(planned, out)
    _print_jobs(planned, out)
    if thumbnail:
        ok &= _write_thumbnail(config, planned.schema, job.file_path, thumbnail, out)
    return EXIT_OK if ok else EXIT_FAILURE


def _mandatory_ok(planned: Draft, out: TextIO) -> bool:
    """False when mandatory fields are missing for a reason other than SciCat not being asked."""
    missing = planned.dataset.missing_mandatory
    if not missing:
        return True
    unfetched = _unfetched_variables(planned.variables)
    explained = {
        f.machine_name
        for f in planned.dataset.failures
        if f.machine_name in missing and unfetched & set(_REFERENCE.findall(f.error))
    }
    failing = [name for name in missing if name not in explained]
    if explained:
        out.write(
            f"  (SciCat was not asked, so {', '.join(sorted(explained))} built from SC variables "
            "are missing; --scicat looks them up)\n"
        )
    if failing:
        out.write(f"  FAIL  ingesting this file would fail: no {', '.join(failing)}\n")
    return not failing


_REFERENCE = re.compile(r"<([^<>]+)>")


def _unfetched_variables(results: VariableResults) -> set[str]:
    """Variables that failed because SciCat was not asked, directly or through another one."""
    errors = {f.name: f.error for f in results.failures}
    found = {name for name, error in errors.items() if error == NOT_FETCHED}
    grew = True
    while grew:
        more = {
            name
            for name, error in errors.items()
            if name not in found and found & set(_REFERENCE.findall(error))
        }
        found |= more
        grew = bool(more)
    return found


def _show_file(
    config: IngestorConfig,
    schema_set: SchemaSet,
    job: Job,
    fetch: Callable[[str], Any] | None,
    out: TextIO,
    *,
    warnings: bool = False,
) -> Draft | None:
    """Print the pipeline's draft for ``job``: schema (with its ``warnings``), variables, payload
    (None if it fails)."""
    out.write(f"\nNeXus file {job.file_path}\n")
    client = SciCatClient(config.scicat)
    try:
        with _quiet_without_logging():
            planned = Pipeline(config, schema_set, client).draft(job, fetch)
    finally:
        client.close()
    if not isinstance(planned, Draft):
        out.write(f"  FAIL  {planned.reason}\n")
        return None
    schema = planned.schema
    out.write(f"  selected schema {schema.name!r} (id {schema.id}, {schema.file})\n")
    if warnings:
        prefix = f"{schema.file}: "
        for warning in schema_set.warnings:
            if warning.startswith(prefix):
                out.write(f"    warning: {warning.removeprefix(prefix)}\n")
    _print_variables(schema, planned.variables, out)
    _print_payload(planned.dataset, out)
    return planned


@contextmanager
def _quiet_without_logging() -> Iterator[None]:
    """The preview prints every failure itself: without configured logging, Python's last-resort
    handler would print the pipeline's warnings (raw lists of failed variables) on top of it."""
    package = logging.getLogger("scicat_ingestor")
    if package.handlers:
        yield
        return
    null = logging.NullHandler()
    package.addHandler(null)
    try:
        yield
    finally:
        package.removeHandler(null)


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
    out.write("\nDataset payload (size and numberOfFiles sent as 0: SciCat counts the files)\n")
    text = yaml.safe_dump(draft.payload, sort_keys=False, allow_unicode=True, width=100)
    out.writelines(f"  {line}\n" for line in text.splitlines())
    for failure in draft.failures:
        out.write(
            f"  FAILED field schema.{failure.name} ({failure.machine_name}): {failure.error}\n"
        )
    if draft.missing_mandatory:
        out.write(f"  MISSING mandatory fields: {', '.join(draft.missing_mandatory)}\n")


def _print_jobs(planned: Draft, out: TextIO) -> None:
    """The schema's SciCat jobs, rendered as the ingestor would post them (API v4's body)."""
    if not planned.schema.jobs:
        return
    pid = str(planned.dataset.payload.get("pid") or "<pid>")
    drafts, failures = build_jobs(planned.schema, planned.variables, pid)
    out.write(
        "\nJobs (created after the dataset and its origdatablock; <pid> is the pid SciCat "
        "assigns, here the one sent)\n"
    )
    for draft in drafts:
        text = yaml.safe_dump(draft.body, sort_keys=False, allow_unicode=True, width=100)
        out.write(f"  {draft.name}:\n")
        out.writelines(f"    {line}\n" for line in text.splitlines())
    for failure in failures:
        out.write(f"  FAILED job {failure.name}: {failure.error}\n")


def _short(value: Any, limit: int = 100) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."
