"""Dataset payloads from the real example schemas and NeXus files, checked against SciCat's DTO."""

from __future__ import annotations

import io
import json
import logging
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from scicat_ingestor.config.model import DatasetOptions
from scicat_ingestor.ops.logcontext import ContextFilter, log_context
from scicat_ingestor.schema.loader import load_schema_file, load_schemas
from scicat_ingestor.schema.model import MetadataSchema
from scicat_ingestor.schema.nexus import open_nexus
from scicat_ingestor.schema.operators import Value
from scicat_ingestor.schema.payload import (
    RAW_DATASET_FIELDS,
    RAW_DATASET_REQUIRED,
    DatasetDraft,
    build_dataset,
)
from scicat_ingestor.schema.variables import Builtins, VariableResults, evaluate_variables

DATA = Path(__file__).parent / "data"
OPENAPI = Path(__file__).parents[1] / "scicat_ingestor" / "testing" / "data" / "openapi.json"
NOW = "2026-11-22T15:46:23.123456+00:00"
RUN_ID = "8a1f3c1e-0000-4000-8000-000000000001"

# What the SciCat stand-in answers for the GETs the example schemas make.
ANSWERS: dict[str, Any] = {
    "proposals/443503": {
        "proposalId": "443503",
        "pi_firstname": "Pia",
        "pi_lastname": "Inv",
        "pi_email": "pi@x.org",
    },
    "proposals/876380": {
        "proposalId": "876380",
        "pi_firstname": "Yara",
        "pi_lastname": "Mir",
        "pi_email": "yara@x.org",
    },
}


class StandInFetch:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, url: str) -> Any:
        self.calls.append(url)
        if url.startswith("instruments?filter="):
            return [{"id": "instrument-odin" if "odin" in url else "instrument-ymir"}]
        return ANSWERS[url]


def ingest(
    nexus: str, data_path: str, options: DatasetOptions | None = None
) -> tuple[MetadataSchema, VariableResults, DatasetDraft]:
    schemas = load_schemas(DATA / "schemas")
    schema = schemas.select(data_path)
    assert schema is not None
    builtins = Builtins(data_path, "../ingestor", ingestor_run_id=RUN_ID, now=NOW)
    with open_nexus(DATA / nexus) as reader:
        results = evaluate_variables(schema, reader, builtins, StandInFetch())
    return schema, results, build_dataset(schema, results, options or DatasetOptions())


def sm(value: Any, type_name: str, human_name: str, unit: str = "") -> dict[str, Any]:
    return {"value": value, "type": type_name, "human_name": human_name, "unit": unit}


TEAM_CODA = (
    "Anders Pettersson, Fredrik Bolmsten, George ONeill, Jonas Petersson, "
    "Massimiliano Novelli, Matt Clarke"
)


def test_small_coda_payload_field_by_field() -> None:
    schema, results, draft = ingest("small-coda.hdf", "/data/coda/2024/443503/raw/small-coda.hdf")
    assert schema.name == "Test Coda Metadata Schema"
    assert results.failures == ()
    assert draft.failures == ()
    assert draft.missing_mandatory == ()
    assert draft.payload == {
        "pid": "20.500.12269/f22acb1c-950b-11ef-a3ef-fa163e9aae0a",
        "isPublished": False,
        "datasetName": "odin",
        "principalInvestigator": "Pia Inv",
        "creationLocation": "ESS:CODA",
        "scientificMetadata": {
            "start_time": sm("2024-10-28T09:06:41.186000+00:00", "date", "Start Time"),
            "end_time": sm("2024-10-28T09:18:14.376000+00:00", "date", "End Time"),
            "run_number": sm(31010, "integer", "Run Number"),
            "job_id": sm("f22acb1c-950b-11ef-a3ef-fa163e9aae0a", "string", "Job Id"),
            "acquisition_team_members": sm(TEAM_CODA, "string", "Acquisition Team Members"),
        },
        "owner": "Pia Inv",
        "ownerEmail": "pi@x.org",
        "sourceFolder": "/data/coda/2024/443503",
        "contactEmail": "pi@x.org",
        "creationTime": NOW,
        "type": "raw",
        "techniques": [],
        # The schema says `value: instrument_id` (no <>): literal text, as upstream (warned).
        "instrumentId": "instrument_id",
        "proposalId": "443503",
        "ownerGroup": "ess_proposal_443503",
        "accessGroups": ["scientific information management systems group"],
    }
    assert list(draft.payload)[:3] == ["pid", "isPublished", "datasetName"]
    assert results.values["instrument_id"] == Value("instrument-odin")


def test_small_ymir_payload_field_by_field() -> None:
    _, results, draft = ingest("small-ymir.hdf", "/ess/raw/ymir/2024/876380/raw/small-ymir.hdf")
    assert results.failures == ()
    assert draft.failures == ()
    payload = draft.payload
    team = payload["scientificMetadata"]["acquisition_team_members"]["value"]
    assert team.split(", ")[9] == "Søren Schmidt"
    assert payload == {
        "pid": "20.500.12269/90d87f9a-950f-11ef-9101-fa163e943f63",
        "isPublished": False,
        "datasetName": f"october 28th, lego test 1, cont - {RUN_ID}",
        "principalInvestigator": "Yara Mir",
        "creationLocation": "ESS:CODA:YMIR",
        "scientificMetadata": {
            "start_time": sm("2024-10-28T09:32:35.895000+00:00", "date", "Start Time"),
            "end_time": sm("2024-10-28T09:34:50.524000+00:00", "date", "End Time"),
            "run_number": sm(11465, "integer", "Run Number"),
            "job_id": sm(
                "90d87f9a-950f-11ef-9101-fa163e943f63", "string", "ESS Data Collection Job Id"
            ),
            "ingestor_run_id": sm(RUN_ID, "string", "ESS Ingestor Run Id"),
            "acquisition_team_members": sm(team, "string", "Acquisition Team Members"),
        },
        "owner": "Yara Mir",
        "ownerEmail": "yara@x.org",
        "sourceFolder": "/ess/data/ymir/2024/876380",
        "contactEmail": "yara@x.org",
        "creationTime": NOW,
        "type": "raw",
        "techniques": [],
        "instrumentId": "instrument-ymir",
        "proposalId": "876380",
        "ownerGroup": "876380",
        "accessGroups": ["scientific information management systems group"],
        "startTime": "2024-10-28T09:32:35.895000+00:00",
        "endTime": "2024-10-28T09:34:50.524000+00:00",
        "runNumber": "11465",
        "keywords": ["YMIR"],
    }


def _dto_validator() -> jsonschema.protocols.Validator:
    doc = json.loads(OPENAPI.read_text(encoding="utf-8"))
    dto = doc["components"]["schemas"]["CreateRawDatasetObsoleteDto"]
    # additionalProperties: the stand-in (like the real backend) rejects unknown fields.
    root = {**dto, "additionalProperties": False, "components": doc["components"]}
    cls = jsonschema.validators.validator_for(root, default=jsonschema.Draft7Validator)
    return cls(root, format_checker=cls.FORMAT_CHECKER)


@pytest.mark.parametrize(
    ("nexus", "path"),
    [
        ("small-coda.hdf", "/data/coda/2024/443503/raw/small-coda.hdf"),
        ("small-ymir.hdf", "/ess/raw/ymir/2024/876380/raw/small-ymir.hdf"),
        ("small-ymir.hdf", "/elsewhere/small.hdf"),  # the fallback schema
    ],
)
def test_payload_validates_against_scicat_openapi(nexus: str, path: str) -> None:
    _, _, draft = ingest(nexus, path)
    payload = {**draft.payload, "size": 29623, "numberOfFiles": 2}
    errors = sorted(_dto_validator().iter_errors(payload), key=str)
    assert [e.message for e in errors] == []


def test_missing_mandatory_covers_the_dto_required_list() -> None:
    # coda.imsc.yml cannot build a complete dataset: every "required" error SciCat would give
    # is among the fields the draft names as missing, and there is no other error.
    _, _, draft = ingest("small-coda.hdf", "/ess/data/coda/2024/443503/raw/small-coda.hdf")
    errors = list(_dto_validator().iter_errors(draft.payload))
    assert errors
    assert {e.validator for e in errors} == {"required"}
    assert {re.sub(r"'(\w+)' is a required property", r"\1", e.message) for e in errors} <= set(
        draft.missing_mandatory
    )


def test_validator_catches_what_the_backend_rejects() -> None:
    validator = _dto_validator()
    _, _, draft = ingest("small-coda.hdf", "/data/coda/2024/443503/raw/small-coda.hdf")
    good = draft.payload
    assert validator.is_valid(good)
    assert not validator.is_valid({**good, "location": "ESS"})
    assert not validator.is_valid({**good, "runNumber": 5})
    assert not validator.is_valid({**good, "creationTime": "yesterday"})
    # $ref resolution into components (techniques → TechniqueClass) works.
    assert validator.is_valid({**good, "techniques": [{"pid": "t1", "name": "SANS"}]})
    assert not validator.is_valid({**good, "techniques": [{"pid": "t1"}]})


def test_dto_constants_match_the_openapi_document() -> None:
    doc = json.loads(OPENAPI.read_text(encoding="utf-8"))
    dto = doc["components"]["schemas"]["CreateRawDatasetObsoleteDto"]
    assert {k: v.get("type", "object") for k, v in dto["properties"].items()} == RAW_DATASET_FIELDS
    assert set(dto["required"]) == set(RAW_DATASET_REQUIRED)


def test_unknown_high_level_fields_are_never_emitted() -> None:
    # coda.imsc.yml sets `location`, which the DTO does not have (SciCat would answer 400).
    schema, _, draft = ingest("small-coda.hdf", "/ess/data/coda/2024/443503/raw/small-coda.hdf")
    assert schema.name == "Coda Metadata Schema"
    assert set(draft.payload) <= set(RAW_DATASET_FIELDS)
    assert "location" not in draft.payload


def test_failures_are_reported_and_mandatory_fields_named() -> None:
    # coda.imsc.yml: `field: :pi_lastname` typo, `field: id` on a list answer, a
    # self-referencing variable, no sourceFolder or creationLocation.
    _, results, draft = ingest("small-coda.hdf", "/ess/data/coda/2024/443503/raw/small-coda.hdf")
    failed_vars = {f.name: f.error for f in results.failures}
    assert set(failed_vars) == {"pi_lastname", "instrument_id", "acquisition_team_members"}
    assert failed_vars["instrument_id"] == "field 'id': SciCat answered a list, not an object"
    by_name = {f.name: f for f in draft.failures}
    assert set(by_name) == {
        "principal_investigator",
        "owner",
        "job_id",
        "acquisition_team_members",
    }
    assert by_name["owner"].recipe["value"] == "<pi_firstname> <pi_lastname>"
    assert by_name["owner"].error.startswith("unresolved variable name <pi_lastname>")
    assert by_name["job_id"].error.startswith("cannot convert 'f22acb1c")
    assert draft.missing_mandatory == (
        "owner",
        "sourceFolder",
        "creationTime",
        "principalInvestigator",
        "creationLocation",
    )


def _one_field_schema(tmp_path: Path, fields: dict[str, Any]) -> MetadataSchema:
    data = {
        "id": "x",
        "name": "x",
        "instrument": "",
        "selector": "*",
        "order": 1,
        "variables": {"t": {"source": "VALUE", "value": 3.5, "value_type": "float", "unit": "K"}},
        "schema": fields,
    }
    path = tmp_path / "x.imsc.yml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return load_schema_file(path)[0]


def _build(
    tmp_path: Path, fields: dict[str, Any], options: DatasetOptions | None = None
) -> DatasetDraft:
    schema = _one_field_schema(tmp_path, fields)
    results = VariableResults({"t": Value(3.5, "K"), "pid": Value("p/1")})
    return build_dataset(schema, results, options or DatasetOptions())


def test_field_failures_are_one_summary_naming_the_file_and_one_debug_line_each(
    tmp_path: Path,
) -> None:
    """It warned '2 metadata fields failed ... [{"name": ...}]': a raw JSON list."""
    bad = {"field_type": "high_level", "value": "<nope>", "type": "string"}
    fields = {
        "title": {**bad, "machine_name": "datasetName"},
        "who": {**bad, "machine_name": "owner"},
    }
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(ContextFilter())
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s [file=%(file)s]"))
    handler.setLevel(logging.DEBUG)
    log = logging.getLogger("scicat_ingestor.schema.payload")
    log.addHandler(handler)
    level = log.level
    log.setLevel(logging.DEBUG)
    try:
        with log_context(file="/d/run.hdf"):
            _build(tmp_path, fields)
    finally:
        log.removeHandler(handler)
        log.setLevel(level)
    why = "unresolved variable name <nope> (not defined before this point) [file=/d/run.hdf]"
    assert stream.getvalue().splitlines() == [
        f"DEBUG Metadata field title (datasetName) failed: {why}",
        f"DEBUG Metadata field who (owner) failed: {why}",
        "WARNING 2 metadata field(s) failed and were left out: title, who [file=/d/run.hdf]",
    ]


PID_FIELD = {"pid": {"field_type": "high_level", "machine_name": "pid", "value": "p/1",
                     "type": "string"}}  # fmt: skip


def test_defaults_and_constants(tmp_path: Path) -> None:
    options = DatasetOptions(
        default_instrument_id="i0",
        default_proposal_id="p0",
        default_owner_group="g0",
        default_access_groups=("a0", "a1"),
    )
    payload = _build(tmp_path, {}, options).payload
    assert payload == {
        "isPublished": False,
        "scientificMetadata": {},
        "type": "raw",
        "techniques": [],
        "instrumentId": "i0",
        "proposalId": "p0",
        "ownerGroup": "g0",
        "accessGroups": ["a0", "a1"],
    }


def test_scientific_metadata_units(tmp_path: Path) -> None:
    sm_field = {"field_type": "scientific_metadata", "value": "<t>", "type": "float"}
    draft = _build(
        tmp_path,
        {
            "a": {**sm_field, "machine_name": "temp"},
            "b": {**sm_field, "machine_name": "temp_mk", "unit": "mK", "human_name": "T"},
            "c": {**sm_field, "machine_name": "text", "value": "T=<t>", "type": "string"},
        },
    )
    assert draft.payload["scientificMetadata"] == {
        "temp": sm(3.5, "float", "temp", "K"),
        "temp_mk": sm(3.5, "float", "T", "mK"),
        "text": sm("T=3.5", "string", "text", ""),
    }


def test_top_level_none_values_are_dropped(tmp_path: Path) -> None:
    draft = _build(
        tmp_path,
        {"d": {"field_type": "high_level", "machine_name": "description", "value": None,
               "type": "string"}},
    )  # fmt: skip
    assert "description" not in draft.payload


def test_ingestor_owned_fields_are_not_taken_from_the_schema(tmp_path: Path) -> None:
    draft = _build(
        tmp_path,
        {"s": {"field_type": "high_level", "machine_name": "size", "value": 5, "type": "integer"}},
    )
    assert "size" not in draft.payload
    assert draft.payload["isPublished"] is False


def test_pid_from_schema_is_mandatory(tmp_path: Path) -> None:
    assert "pid" in _build(tmp_path, {}).missing_mandatory
    draft = _build(tmp_path, PID_FIELD)
    assert draft.payload["pid"] == "p/1"
    assert "pid" not in draft.missing_mandatory


def test_fix_allow_dataset_pid_false_lets_scicat_assign_it(tmp_path: Path) -> None:
    # Upstream dropped the pid and then crashed with KeyError 'pid'; here it is simply absent
    # and not reported missing.
    draft = _build(tmp_path, PID_FIELD, DatasetOptions(allow_dataset_pid=False))
    assert "pid" not in draft.payload
    assert "pid" not in draft.missing_mandatory


def test_fix_generated_pid_uses_the_prefix(tmp_path: Path) -> None:
    # Upstream ignored dataset_pid_prefix and sent a bare uuid4().hex.
    options = DatasetOptions(generate_dataset_pid=True, dataset_pid_prefix="20.500.12269")
    first = _build(tmp_path, PID_FIELD, options).payload["pid"]
    second = _build(tmp_path, {}, options)
    uuid = r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"
    assert re.fullmatch(rf"20\.500\.12269/{uuid}", first)
    assert second.payload["pid"] != first
    assert "pid" not in second.missing_mandatory
    no_prefix = _build(
        tmp_path, {}, DatasetOptions(generate_dataset_pid=True, dataset_pid_prefix="")
    )
    assert re.fullmatch(uuid, no_prefix.payload["pid"])


def test_sample_ids_fill_sample_id(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    schema = _one_field_schema(tmp_path, {})
    one = VariableResults({}, sample_ids=("s-1",))
    assert build_dataset(schema, one, DatasetOptions()).payload["sampleId"] == "s-1"
    several = VariableResults({}, sample_ids=("s-1", "s-2"))
    assert build_dataset(schema, several, DatasetOptions()).payload["sampleId"] == "s-1"
    assert "2 samples match" in caplog.text


def test_fix_fallback_schema_works_end_to_end() -> None:
    # Upstream: 'ess-fallback' resolved to a Path (not a schema) and was never used anyway.
    schemas = load_schemas(DATA / "schemas", "ess-fallback")
    assert schemas.fallback is not None
    fetch = StandInFetch()
    builtins = Builtins("/data/coda/2024/443503/raw/small-coda.hdf", "../ingestor", now=NOW)
    with open_nexus(DATA / "small-coda.hdf") as reader:
        results = evaluate_variables(schemas.fallback, reader, builtins, fetch)
    draft = build_dataset(schemas.fallback, results, DatasetOptions())
    assert draft.missing_mandatory == ()
    assert fetch.calls == ["proposals/443503"]
    assert draft.payload["pid"] == "20.500.12269/f22acb1c-950b-11ef-a3ef-fa163e9aae0a"
    assert draft.payload["sourceFolder"] == "/data/coda/2024/443503"
    assert draft.payload["principalInvestigator"] == "Pia Inv"
