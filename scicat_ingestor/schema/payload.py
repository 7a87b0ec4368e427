"""Build the SciCat raw-dataset payload from a schema's ``schema:`` section and its variables.

The payload is shaped like SciCat's ``CreateRawDatasetObsoleteDto`` (``POST /datasets``); only
fields that DTO accepts are ever emitted. ``size`` and ``numberOfFiles`` are set by the ingest
pipeline (to 0: SciCat counts the origdatablock into them).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any
from uuid import NAMESPACE_URL, uuid4, uuid5

from scicat_ingestor.config.model import DatasetOptions
from scicat_ingestor.schema.model import MetadataSchema, SchemaField
from scicat_ingestor.schema.types import convert
from scicat_ingestor.schema.variables import VariableResults, describe_error, name_list, render

logger = logging.getLogger(__name__)

# Properties of SciCat's CreateRawDatasetObsoleteDto with their JSON type, copied from
# scicat_ingestor/testing/data/openapi.json (the real backend's OpenAPI document,
# components.schemas.CreateRawDatasetObsoleteDto; "object" where it only has an allOf/$ref).
# tests/test_schema_payload.py checks this copy against the document.
RAW_DATASET_FIELDS: dict[str, str] = {
    "ownerGroup": "string",
    "accessGroups": "array",
    "instrumentGroup": "string",
    "owner": "string",
    "ownerEmail": "string",
    "orcidOfOwner": "string",
    "contactEmail": "string",
    "sourceFolder": "string",
    "sourceFolderHost": "string",
    "size": "number",
    "packedSize": "number",
    "numberOfFiles": "number",
    "numberOfFilesArchived": "number",
    "creationTime": "string",
    "validationStatus": "string",
    "keywords": "array",
    "description": "string",
    "datasetName": "string",
    "classification": "string",
    "license": "string",
    "isPublished": "boolean",
    "techniques": "array",
    "sharedWith": "array",
    "relationships": "array",
    "datasetlifecycle": "object",
    "scientificMetadata": "object",
    "scientificMetadataSchema": "string",
    "scientificMetadataValid": "boolean",
    "comment": "string",
    "dataQualityMetrics": "number",
    "proposalId": "string",
    "runNumber": "string",
    "principalInvestigator": "string",
    "startTime": "string",
    "endTime": "string",
    "creationLocation": "string",
    "dataFormat": "string",
    "sampleId": "string",
    "instrumentId": "string",
    "pid": "string",
    "version": "string",
    "type": "string",
    "investigator": "string",
    "inputDatasets": "array",
    "usedSoftware": "array",
    "jobParameters": "object",
    "jobLogData": "string",
}
# The same DTO's "required" list.
RAW_DATASET_REQUIRED = (
    "ownerGroup",
    "owner",
    "contactEmail",
    "sourceFolder",
    "creationTime",
    "datasetName",
    "principalInvestigator",
    "creationLocation",
    "type",
)
# Mandatory for an ingestion: the DTO's required fields plus what the ESS ingestor insists on
# (pid, unless SciCat assigns it or it is generated; ownerEmail).
MANDATORY = ("pid", "ownerEmail", *RAW_DATASET_REQUIRED)

# Fields the ingestor sets itself; a schema value for them is ignored (warned at load time).
INGESTOR_FIELDS = frozenset({"size", "numberOfFiles", "isPublished", "scientificMetadata"})

# The ESS ingestor's field order, so payloads read the same; other fields follow in schema order.
_ORDER = (
    "pid",
    "size",
    "numberOfFiles",
    "isPublished",
    "datasetName",
    "description",
    "principalInvestigator",
    "creationLocation",
    "scientificMetadata",
    "owner",
    "ownerEmail",
    "sourceFolder",
    "contactEmail",
    "creationTime",
    "type",
    "sampleId",
    "techniques",
    "instrumentId",
    "proposalId",
    "ownerGroup",
    "accessGroups",
    "startTime",
    "endTime",
    "runNumber",
    "keywords",
)


@dataclass(frozen=True)
class FieldFailure:
    """A ``schema:`` entry that could not be computed: its key, target field, recipe and why."""

    name: str
    machine_name: str
    recipe: dict[str, Any]
    error: str

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "machine_name": self.machine_name, "error": self.error}


@dataclass(frozen=True)
class DatasetDraft:
    """The dataset payload (None values dropped), failed fields and missing mandatory fields."""

    payload: dict[str, Any]
    failures: tuple[FieldFailure, ...] = ()
    missing_mandatory: tuple[str, ...] = ()


def build_dataset(
    schema: MetadataSchema, results: VariableResults, options: DatasetOptions, pid_seed: str = ""
) -> DatasetDraft:
    """Map variables to the SciCat raw-dataset payload; failing fields are reported, not raised.

    ``pid_seed`` identifies the file version; generated pids are derived from it (see below)."""
    failed = frozenset(f.name for f in results.failures)
    top: dict[str, Any] = {}
    scientific: dict[str, Any] = {}
    failures: list[FieldFailure] = []
    for item in schema.fields:
        try:
            rendered = render(item.value, results.values, failed)
            value = convert(rendered.value, item.type)
        except Exception as exc:
            failures.append(
                FieldFailure(item.key, item.machine_name, dict(item.raw), describe_error(exc))
            )
            continue
        if item.field_type == "scientific_metadata":
            scientific[item.machine_name] = _scientific_entry(item, value, rendered.unit)
        elif item.machine_name in RAW_DATASET_FIELDS and item.machine_name not in INGESTOR_FIELDS:
            top[item.machine_name] = value
    _apply_pid_rules(top, options, pid_seed)
    _apply_defaults(top, options)
    if results.sample_ids and top.get("sampleId") is None:
        top["sampleId"] = results.sample_ids[0]
        if len(results.sample_ids) > 1:
            logger.warning(
                "%d samples match; SciCat takes one sampleId, using %s",
                len(results.sample_ids),
                results.sample_ids[0],
            )
    top["isPublished"] = False
    top["scientificMetadata"] = scientific
    payload = _ordered({k: v for k, v in top.items() if v is not None})
    if failures:
        _log_failures(failures)
    mandatory = [m for m in MANDATORY if not (m == "pid" and _pid_optional(options))]
    missing = tuple(m for m in mandatory if payload.get(m) in (None, ""))
    return DatasetDraft(payload, tuple(failures), missing)


def _log_failures(failures: list[FieldFailure]) -> None:
    """One DEBUG line per field with its reason, one WARNING naming them all (the file being
    ingested is in the log context)."""
    for failure in failures:
        logger.debug(
            "Metadata field %s (%s) failed: %s", failure.name, failure.machine_name, failure.error
        )
    logger.warning(
        "%d metadata field(s) failed and were left out: %s",
        len(failures),
        name_list([f.name for f in failures]),
    )


def _scientific_entry(item: SchemaField, value: Any, unit: str) -> dict[str, Any]:
    return {
        "value": value,
        "type": item.type,
        "human_name": item.human_name,
        "unit": item.unit or unit or "",
    }


def _pid_optional(options: DatasetOptions) -> bool:
    return not options.allow_dataset_pid or options.generate_dataset_pid


def _apply_pid_rules(top: dict[str, Any], options: DatasetOptions, pid_seed: str) -> None:
    """``allow_dataset_pid: false`` → SciCat assigns the pid; else ``generate_dataset_pid`` →
    ``<dataset_pid_prefix>/<uuid>`` replaces any schema pid (upstream ignored the prefix).

    The generated uuid is derived from ``pid_seed`` (one file version) when given, so a retried or
    redelivered message finds the dataset it created before instead of creating a second one
    (upstream's random uuid4 made every retry a duplicate)."""
    if not options.allow_dataset_pid:
        top.pop("pid", None)
    elif options.generate_dataset_pid:
        uid = uuid5(NAMESPACE_URL, pid_seed) if pid_seed else uuid4()
        prefix = options.dataset_pid_prefix.strip("/")
        top["pid"] = f"{prefix}/{uid}" if prefix else str(uid)


def _apply_defaults(top: dict[str, Any], options: DatasetOptions) -> None:
    defaults: dict[str, Any] = {
        "instrumentId": options.default_instrument_id,
        "proposalId": options.default_proposal_id,
        "ownerGroup": options.default_owner_group,
        "accessGroups": list(options.default_access_groups),
        "type": "raw",
        "techniques": [],
    }
    for name, default in defaults.items():
        if top.get(name) is None:
            top[name] = default


def _ordered(payload: dict[str, Any]) -> dict[str, Any]:
    ordered = {k: payload[k] for k in _ORDER if k in payload}
    ordered.update((k, v) for k, v in payload.items() if k not in ordered)
    return ordered
