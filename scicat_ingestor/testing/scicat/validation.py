"""Request-body validation against the schemas of the real backend's OpenAPI document
(``data/openapi.json``), the way its class-validator setup does: unknown properties are refused
("property X should not exist"), optional properties may be null, ``date-time`` and ``email``
formats are checked."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import jsonschema

from scicat_ingestor.testing.scicat.messages import JSONDict

OPENAPI_PATH = Path(__file__).parent.parent / "data" / "openapi.json"  # backend 4.5.0
OPENAPI_V5_PATH = OPENAPI_PATH.with_name("openapi-v5.json")  # backend v5 (API v3 and v4)

# OpenAPI schema names the stand-in validates request bodies against.
DTO_RAW_DATASET = "CreateRawDatasetObsoleteDto"
DTO_DERIVED_DATASET = "CreateDerivedDatasetObsoleteDto"
DTO_ORIGDATABLOCK = "CreateOrigDatablockDto"
DTO_SAMPLE = "CreateSampleDto"
DTO_CREDENTIALS = "CredentialsDto"
DTO_ATTACHMENT = "CreateAttachmentV3Dto"
DTO_PROPOSAL = "CreateProposalDto"
DTO_V4_DATASET = "CreateDatasetDto"
DTO_V4_DATASET_PATCH = "PartialUpdateDatasetDto"
DTO_V4_ATTACHMENT = "CreateAttachmentV4Dto"
DTO_V4_JOB = "CreateJobDto"
DTO_V3_JOB = "CreateJobDtoV3"
VALIDATED_DTOS = (
    DTO_RAW_DATASET,
    DTO_DERIVED_DATASET,
    DTO_ORIGDATABLOCK,
    DTO_SAMPLE,
    DTO_CREDENTIALS,
    DTO_ATTACHMENT,
    DTO_PROPOSAL,
    DTO_V4_DATASET,  # 4.5 checks a v3 dataset without ``type`` against it
)
V4_DTOS = (DTO_V4_DATASET_PATCH, DTO_V4_ATTACHMENT, DTO_V4_JOB, DTO_V3_JOB)  # backend 5 only


@dataclass(frozen=True)
class Violation:
    """One class-validator-like complaint: the top-level property and a human message."""

    property: str
    constraint: str
    message: str


# JSON-schema type → (class-validator constraint, its default message).
_TYPE_MESSAGES = {
    "string": ("isString", "must be a string"),
    "date-time": ("isDateString", "must be a valid ISO 8601 date string"),
    "number": ("isNumber", "must be a number conforming to the specified constraints"),
    "integer": ("isInt", "must be an integer number"),
    "boolean": ("isBoolean", "must be a boolean value"),
    "array": ("isArray", "must be an array"),
    "object": ("isObject", "must be an object"),
}


def _format_date_time(value: object) -> bool:
    """ISO 8601 like class-validator's IsDateString (Python 3.11 parses ``Z`` and offsets)."""
    if not isinstance(value, str):
        return True
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def _format_email(value: object) -> bool:
    return not isinstance(value, str) or _EMAIL.match(value) is not None


def _format_checker() -> Any:
    checker = jsonschema.FormatChecker(formats=())
    checker.checks("date-time")(_format_date_time)
    checker.checks("email")(_format_email)
    return checker


def _allow_null(schema: JSONDict) -> JSONDict:
    """class-validator's ``@IsOptional`` accepts null as well as a missing property.

    A plain ``type`` just gains ``"null"`` (the cheap form); ``$ref``/``allOf`` get wrapped.
    """
    kind = schema.get("type")
    if isinstance(kind, str):
        return {**schema, "type": [kind, "null"]}
    return {"if": {"type": "null"}, "else": schema}


def _backend_semantics(schema: JSONDict) -> JSONDict:
    """Rewrite one named OpenAPI schema to validate like the backend's DTO class.

    The document does not say ``additionalProperties: false`` nor that optional properties may be
    null, but the backend validates with ``whitelist + forbidNonWhitelisted`` and ``@IsOptional``.
    """
    if "properties" not in schema:
        return schema
    required = set(schema.get("required", ()))
    properties: JSONDict = {}
    for name, prop in schema["properties"].items():
        nullable = prop.get("nullable") is True or name not in required
        properties[name] = _allow_null(prop) if nullable else prop
    return {**schema, "properties": properties, "additionalProperties": False}


@dataclass(frozen=True)
class DtoValidator:
    """A compiled validator for one DTO plus what the stand-in needs to store its documents."""

    name: str
    validator: Any
    defaults: Mapping[str, Any]
    date_fields: frozenset[str]

    def violations(self, body: object) -> list[Violation]:
        found: list[Violation] = []
        for error in self.validator.iter_errors(body):
            for violation in self._describe(error):
                if violation not in found:
                    found.append(violation)
        return found

    def _describe(self, error: Any) -> Iterator[Violation]:
        path = [str(part) for part in error.absolute_path]
        prefix = ".".join(path)
        top = path[0] if path else ""
        keyword = error.validator
        if keyword == "additionalProperties":
            allowed = set(error.schema.get("properties", ()))
            for extra in sorted(set(error.instance) - allowed):
                text = f"property {extra} should not exist"
                yield Violation(top or extra, "whitelistValidation", _prefixed(prefix, text))
        elif keyword == "required":
            for missing in error.validator_value:
                if isinstance(error.instance, dict) and missing not in error.instance:
                    expected = _expected_type(error.schema.get("properties", {}).get(missing))
                    constraint, text = _type_message(expected)
                    name = _prefixed(prefix, missing)
                    yield Violation(top or missing, constraint, f"{name} {text}")
        elif not path:
            yield Violation("", keyword, "the request body must be a JSON object")
        elif keyword == "type":
            constraint, text = _type_message(_expected_type(error.schema))
            yield Violation(top, constraint, f"{prefix} {text}")
        elif keyword == "format" and error.validator_value == "date-time":
            yield Violation(top, "isDateString", f"{prefix} must be a valid ISO 8601 date string")
        elif keyword == "format" and error.validator_value == "email":
            yield Violation(top, "isEmail", f"{prefix} must be an email")
        elif keyword == "minItems":
            yield Violation(top, "arrayNotEmpty", f"{prefix} should not be empty")
        else:
            yield Violation(top, keyword, f"{prefix}: {error.message}")


def _prefixed(prefix: str, text: str) -> str:
    return f"{prefix}.{text}" if prefix else text


def _expected_type(schema: object) -> str:
    if not isinstance(schema, dict):
        return "string"
    if "else" in schema:
        return _expected_type(schema["else"])
    if schema.get("format") == "date-time":
        return "date-time"
    kind = schema.get("type", "object")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    return str(kind)


def _type_message(expected: str) -> tuple[str, str]:
    return _TYPE_MESSAGES.get(expected, (expected, f"must be of type {expected}"))


@dataclass(frozen=True)
class DtoValidators:
    """The validators of every DTO the stand-in accepts, compiled once per process."""

    by_name: Mapping[str, DtoValidator]

    def __getitem__(self, name: str) -> DtoValidator:
        return self.by_name[name]


@functools.cache
def load_validators(
    openapi_path: Path = OPENAPI_PATH, names: tuple[str, ...] = VALIDATED_DTOS
) -> DtoValidators:
    """Compile the validators of the DTOs ``names`` from an OpenAPI document (cached: fixtures
    start in well under a millisecond)."""
    document = json.loads(openapi_path.read_text(encoding="utf-8"))
    named = document["components"]["schemas"]
    missing = [name for name in names if name not in named]
    if missing:
        raise ValueError(f"{openapi_path}: components/schemas lacks {', '.join(missing)}")
    schemas = {name: _backend_semantics(schema) for name, schema in named.items()}
    root = {"components": {"schemas": schemas}}
    checker = _format_checker()
    cls = jsonschema.Draft202012Validator
    by_name: dict[str, DtoValidator] = {}
    for name in names:
        schema = {**root, "$ref": f"#/components/schemas/{name}"}
        cls.check_schema(schema)
        properties = named[name].get("properties", {})
        by_name[name] = DtoValidator(
            name=name,
            validator=cls(schema, format_checker=checker),
            defaults={k: v["default"] for k, v in properties.items() if "default" in v},
            date_fields=frozenset(
                k for k, v in properties.items() if v.get("format") == "date-time"
            ),
        )
    return DtoValidators(by_name)
