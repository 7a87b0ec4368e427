"""Find, parse and fully validate ``*.imsc.yml`` metadata schema files.

Every check that does not need a NeXus file happens here, once, so a typo is reported when the
ingestor starts (one line: ``<file>: <dotted key>: <reason>``) instead of per file later.
Mistakes upstream tolerated and the example schemas contain (``value: instrument_id`` without
``<>``, a selector no file can reach, fields SciCat does not know) are warnings, not errors.

Deliberate differences from the ESS ingestor: a file is a schema when its name *ends* with
``.imsc.yml``, ``.imsc.yaml`` or ``.imsc.json`` (upstream: *contains*, so ``x.imsc.yml.example``
counted); duplicate ids are an error (upstream: the later file silently replaced the earlier).
"""

from __future__ import annotations

import difflib
import importlib.resources
import json
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NoReturn, cast

import yaml

from scicat_ingestor.schema.model import (
    JOB_PID,
    NAME,
    Compiled,
    FieldType,
    JobSpec,
    MetadataSchema,
    NxsRecipe,
    Recipe,
    SampleAttachment,
    SchemaError,
    SchemaField,
    SchemaSet,
    ScRecipe,
    Template,
    ValueRecipe,
    Variable,
    compile_value,
    one_line,
    references,
)
from scicat_ingestor.schema.nexus import is_wildcard
from scicat_ingestor.schema.operators import NEEDS_FIELD, NEEDS_PATTERN, OPERATORS
from scicat_ingestor.schema.payload import INGESTOR_FIELDS, RAW_DATASET_FIELDS
from scicat_ingestor.schema.selector import SelectorError, parse_selector, subsumes
from scicat_ingestor.schema.types import JSON_TYPE, LIST_TYPES, TYPE_NAMES, short_repr
from scicat_ingestor.schema.variables import BUILTIN_NAMES

__all__ = ["SchemaError", "SchemaSet", "load_all", "load_schema_file", "load_schemas"]

logger = logging.getLogger(__name__)

SUFFIXES = (".imsc.yml", ".imsc.yaml", ".imsc.json")
FALLBACK_NAME = "ess-fallback"

_TOP_REQUIRED = ("id", "name", "instrument", "selector", "order")
# ``variables`` and ``schema`` became optional with the ESS format's ``jobs:`` section
_TOP_OPTIONAL = ("variables", "schema", "sample_attachment", "thumbnail", "jobs")
_JOB_REQUIRED = ("type", "job_params")
_JOB_OWNERS = ("owner_user", "owner_group", "contact_email")
_SOURCE_KEYS: dict[str, tuple[str, ...]] = {
    "NXS": ("path",),
    "SC": ("url", "field"),
    "VALUE": ("value", "operator", "field", "pattern", "replacement"),
}
_SOURCE_REQUIRED = {"NXS": "path", "SC": "url", "VALUE": "value"}
_FIELD_REQUIRED = ("machine_name", "field_type", "value", "type")
_FIELD_OPTIONAL = ("human_name", "unit")
_FIELD_TYPES = ("high_level", "scientific_metadata")
_MAX_NODES = 100_000
_MAX_DEPTH = 50
_SAMPLE_KEYS = {"query_sample_name": bool, "sample_name_path": str, "proposal_id_path": str}


def is_schema_file(path: Path) -> bool:
    """Whether a directory entry is a schema file (name ends with a schema suffix, no dotfile)."""
    return not path.name.startswith(".") and path.name.endswith(SUFFIXES) and path.is_file()


def discover(directory: str | Path) -> list[Path]:
    """Schema files directly inside ``directory`` (not recursive), sorted by name."""
    d = Path(directory)
    if not d.exists():
        raise SchemaError(f"{d}: schema directory not found")
    if not d.is_dir():
        raise SchemaError(f"{d}: not a directory")
    try:
        return sorted(p for p in d.iterdir() if is_schema_file(p))
    except OSError as exc:
        raise SchemaError(f"{d}: cannot list the schema directory: {exc.strerror or exc}") from None


def load_schemas(directory: str | Path, fallback: str = "") -> SchemaSet:
    """Load every schema in ``directory`` plus the fallback; an invalid file raises (the first)."""
    result, errors = load_all(directory, fallback)
    if result is None:
        raise SchemaError(errors[0])
    log_loaded(result, directory)
    return result


def log_loaded(schemas: SchemaSet, directory: str | Path) -> None:
    """The load-time warnings, then one INFO line saying what was loaded."""
    for warning in schemas.warnings:
        logger.warning("%s", warning)
    logger.info(
        "Found %d schemas in %s%s",
        len(schemas.schemas),
        directory,
        f" (fallback: {schemas.fallback.name})" if schemas.fallback else "",
    )


def load_all(directory: str | Path, fallback: str = "") -> tuple[SchemaSet | None, list[str]]:
    """Load every schema file and the fallback, collecting *every* error (one line each).

    ``(set, [])`` when all loaded, ``(None, errors)`` otherwise: a schema set is only ever used
    whole (the live reload keeps the old set; ``validate-schema`` reports the same lines).
    """
    errors: list[str] = []
    loaded: list[tuple[MetadataSchema, list[str]]] = []
    try:
        paths = discover(directory)
    except SchemaError as exc:
        paths, errors = [], [str(exc)]
    for path in paths:
        try:
            loaded.append(load_schema_file(path))
        except SchemaError as exc:
            errors.append(str(exc))
    fallback_schema: MetadataSchema | None = None
    warnings: list[str] = []
    if fallback:
        try:
            fallback_schema, warnings = load_schema_file(fallback_path(fallback))
        except SchemaError as exc:
            errors.append(str(exc))
    if errors:
        return None, errors
    try:
        return assemble(loaded, fallback_schema, warnings), []
    except SchemaError as exc:
        return None, [str(exc)]


def fallback_path(spec: str) -> Path:
    """``ess-fallback`` → the packaged fallback schema; anything else is a file path."""
    if spec == FALLBACK_NAME:
        resource = importlib.resources.files("scicat_ingestor.schema") / "fallback"
        return Path(str(resource / "ess-fallback.imsc.yml"))
    path = Path(spec)
    if not path.is_file():
        raise SchemaError(
            f"{spec}: fallback schema file not found (use '' for none, "
            f"'{FALLBACK_NAME}' for the packaged one, or a file path)"
        )
    return path


def assemble(
    loaded: Iterable[tuple[MetadataSchema, list[str]]],
    fallback: MetadataSchema | None = None,
    warnings: Iterable[str] = (),
) -> SchemaSet:
    """Sort by (order, name ignoring case), reject duplicate ids, warn about shadowed selectors."""
    all_warnings = list(warnings)
    schemas: list[MetadataSchema] = []
    by_id: dict[str, MetadataSchema] = {}
    for schema, file_warnings in loaded:
        all_warnings += file_warnings
        other = by_id.get(schema.id)
        if other is not None:
            raise SchemaError(
                f"{schema.file}: id: duplicate id {schema.id!r} (also in {other.file})"
            )
        by_id[schema.id] = schema
        schemas.append(schema)
    schemas.sort(key=lambda s: (s.order, s.name.casefold(), s.file))
    for i, later in enumerate(schemas):
        for first in schemas[:i]:
            if subsumes(first.selector, later.selector):
                all_warnings.append(
                    f"{later.file}: selector: never selected: {first.name!r} ({first.file}) "
                    f"comes first and matches every file {later.selector.describe()!r} matches"
                )
                break
    return SchemaSet(tuple(schemas), fallback, tuple(all_warnings))


def load_schema_file(path: str | Path) -> tuple[MetadataSchema, list[str]]:
    """Parse and validate one schema file; returns the schema and its warnings."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SchemaError(f"{p}: schema file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SchemaError(f"{p}: cannot read schema file: {exc}") from None
    checker = _Checker(str(p))
    data = checker.parse(text, json_format=p.name.endswith(".json"))
    return checker.schema(data), checker.warnings


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate mapping keys (YAML silently keeps the last one)."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        try:
            hash(key)
        except TypeError:
            break  # construct_mapping reports "found unhashable key"
        if key in seen:
            mark = key_node.start_mark
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", mark)
        seen.add(key)
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


class _Checker:
    """Validates one file's data, raising on the first error and collecting warnings."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.warnings: list[str] = []

    def fail(self, key: str, reason: str) -> NoReturn:
        raise SchemaError(self._line(key, reason))

    def warn(self, key: str, reason: str) -> None:
        self.warnings.append(self._line(key, reason))

    def _line(self, key: str, reason: str) -> str:
        """``<file>: <key>: <reason>``; a problem of the whole file has no key."""
        where = f"{one_line(key)}: " if key else ""
        return f"{self.file}: {where}{one_line(reason)}"

    # -- parsing --------------------------------------------------------------------------

    def parse(self, text: str, json_format: bool) -> Mapping[str, Any]:
        if json_format:
            self.warn("", "JSON schema files are deprecated; convert it to *.imsc.yml")
        try:
            # _UniqueKeyLoader is a SafeLoader subclass
            data = json.loads(text) if json_format else yaml.load(text, Loader=_UniqueKeyLoader)
        except RecursionError:
            self.fail("", f"nested more than {_MAX_DEPTH} levels deep")
        except json.JSONDecodeError as exc:
            self.fail("", f"invalid JSON (line {exc.lineno}, column {exc.colno}): {exc.msg}")
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            self.fail("", f"invalid YAML{where}: {problem}")
        if not isinstance(data, Mapping):
            self.fail("", f"the top level must be a mapping, found {type(data).__name__}")
        self.check_size(data)
        return data

    def check_size(self, data: Any) -> None:
        """Refuse absurdly large or deep documents before walking them recursively.

        YAML aliases share one node, but every later step walks values as trees, so a few nested
        aliases would otherwise expand exponentially (an "alias bomb").
        """
        stack: list[tuple[Any, int]] = [(data, 0)]
        count = 0
        while stack:
            node, depth = stack.pop()
            count += 1
            if count > _MAX_NODES:
                self.fail("", f"more than {_MAX_NODES} values (YAML aliases repeating?)")
            if depth > _MAX_DEPTH:
                self.fail("", f"nested more than {_MAX_DEPTH} levels deep")
            if isinstance(node, Mapping):
                stack.extend((v, depth + 1) for kv in node.items() for v in kv)
            elif isinstance(node, list):
                stack.extend((v, depth + 1) for v in node)

    def keys(
        self, data: Mapping[str, Any], where: str, required: Iterable[str], optional: Iterable[str]
    ) -> None:
        required = tuple(required)
        valid = [*required, *optional]
        for key in data:
            if key not in valid:
                near = difflib.get_close_matches(str(key), valid, n=1, cutoff=0.6)
                hint = (
                    f"; did you mean {near[0]!r}?" if near else f"; valid keys: {', '.join(valid)}"
                )
                self.fail(f"{where}{key}", f"unknown key{hint}")
        for key in required:
            if key not in data:
                self.fail(f"{where}{key}", "required key is missing")

    def text(self, data: Mapping[str, Any], key: str, where: str, empty: bool = False) -> str:
        value = data[key]
        if not isinstance(value, str) or (not empty and not value.strip()):
            self.fail(f"{where}{key}", f"must be a non-empty string, found {short_repr(value)}")
        return value

    def section(self, data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
        """An optional top-level mapping (absent or empty: ``{}``)."""
        value = data.get(key)
        return {} if value is None else self.mapping(value, key)

    def mapping(self, value: Any, key: str) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            self.fail(key, f"must be a mapping, found {type(value).__name__}")
        return value

    # -- the schema -----------------------------------------------------------------------

    def schema(self, data: Mapping[str, Any]) -> MetadataSchema:
        self.keys(data, "", _TOP_REQUIRED, _TOP_OPTIONAL)
        order = data["order"]
        if not isinstance(order, int) or isinstance(order, bool):
            self.fail("order", f"must be an integer, found {short_repr(order)}")
        try:
            selector = parse_selector(data["selector"])
        except SelectorError as exc:
            self.fail(exc.key, exc.reason)
        raw_vars = self.section(data, "variables")
        variables = self.variables(raw_vars)
        fields = self.fields(self.section(data, "schema"), set(raw_vars))
        return MetadataSchema(
            id=self.text(data, "id", ""),
            name=self.text(data, "name", ""),
            instrument=self.text(data, "instrument", "", empty=True),
            selector=selector,
            order=order,
            variables=variables,
            fields=fields,
            sample_attachment=self.sample_attachment(data.get("sample_attachment")),
            thumbnail=self.thumbnail_path(data.get("thumbnail")),
            jobs=self.jobs(data.get("jobs"), set(raw_vars)),
            file=self.file,
        )

    def sample_attachment(self, raw: Any) -> SampleAttachment:
        if raw is None:
            return SampleAttachment()
        data = self.mapping(raw, "sample_attachment")
        self.keys(data, "sample_attachment.", (), _SAMPLE_KEYS)
        for key, kind in _SAMPLE_KEYS.items():
            if key in data and not isinstance(data[key], kind):
                self.fail(f"sample_attachment.{key}", f"must be a {kind.__name__}")
        return SampleAttachment(**data)

    def thumbnail_path(self, raw: Any) -> str:
        """``thumbnail:`` (new, optional): the NXdata group or dataset to draw, absolute."""
        if raw is None:
            return ""
        if not isinstance(raw, str) or not raw.startswith("/"):
            self.fail("thumbnail", f"must be an absolute HDF5 path, found {short_repr(raw)}")
        return raw

    # -- jobs -----------------------------------------------------------------------------

    def jobs(self, raw: Any, variables: set[str]) -> tuple[JobSpec, ...]:
        """``jobs:`` (ESS format, optional): SciCat jobs to create after the dataset."""
        if raw is None:
            return ()
        known = variables | set(BUILTIN_NAMES) | {JOB_PID}
        result: list[JobSpec] = []
        by_type: dict[str, str] = {}
        for name, spec in self.mapping(raw, "jobs").items():
            key = f"jobs.{name}"
            if not isinstance(name, str) or not name.strip():
                self.fail(key, "job names must be non-empty strings")
            job = self.job(name, self.mapping(spec, key), key)
            for ref in _job_refs(job):
                if ref not in known:
                    self.warn(key, f"<{ref}> is not a variable; this job will not be created")
            if isinstance(job.type, Template) and not job.type.refs:
                other = by_type.setdefault(job.type.text, name)
                if other != name:
                    self.warn(
                        f"{key}.type",
                        f"same type as jobs.{other}: the ingestor creates one job per dataset "
                        "and type, so only the first of them",
                    )
            result.append(job)
        return tuple(result)

    def job(self, name: str, spec: Mapping[str, Any], key: str) -> JobSpec:
        self.keys(spec, f"{key}.", _JOB_REQUIRED, _JOB_OWNERS)
        self.text(spec, "type", f"{key}.")
        params = self.mapping(spec["job_params"], f"{key}.job_params")
        for owner in _JOB_OWNERS:
            if owner in spec:
                self.text(spec, owner, f"{key}.")
        if not any(owner in spec for owner in _JOB_OWNERS):
            self.fail(
                key,
                f"needs one of {', '.join(_JOB_OWNERS)}: SciCat refuses a job without "
                "owner or contact (422 'anonymous job')",
            )
        optional = {o: compile_value(spec[o]) if o in spec else None for o in _JOB_OWNERS}
        return JobSpec(
            name=name,
            type=Template.parse(spec["type"]),
            job_params=compile_value(dict(params)),
            owner_user=optional["owner_user"],
            owner_group=optional["owner_group"],
            contact_email=optional["contact_email"],
        )

    # -- variables ------------------------------------------------------------------------

    def variables(self, raw: Mapping[str, Any]) -> tuple[Variable, ...]:
        defined = set(BUILTIN_NAMES)
        result = []
        for name, spec in raw.items():
            key = f"variables.{name}"
            if not isinstance(name, str) or not NAME.fullmatch(name):
                self.fail(key, "variable names must be identifiers (letters, digits, '_')")
            var = self.variable(name, self.mapping(spec, key), key)
            for ref in _recipe_refs(var.recipe):
                if ref not in defined:
                    self.warn(key, f"<{ref}> is not defined before this variable; it will fail")
            self.check_bare_name(var.recipe, set(raw), key)
            defined.add(name)
            result.append(var)
        return tuple(result)

    def variable(self, name: str, spec: Mapping[str, Any], key: str) -> Variable:
        source = spec.get("source")
        if not isinstance(source, str) or source not in _SOURCE_KEYS:
            self.fail(f"{key}.source", f"must be one of NXS, SC, VALUE; found {short_repr(source)}")
        required = ("source", "value_type", _SOURCE_REQUIRED[source])
        optional = ("unit", *(k for k in _SOURCE_KEYS[source] if k not in required))
        self.keys(spec, f"{key}.", required, optional)
        value_type = self.type_name(spec["value_type"], f"{key}.value_type")
        unit = spec.get("unit") or ""
        if not isinstance(unit, str):
            self.fail(f"{key}.unit", f"must be a string, found {short_repr(unit)}")
        recipe: Recipe
        if source == "NXS":
            path = self.text(spec, "path", f"{key}.")
            wildcard = is_wildcard(path)
            if wildcard and value_type not in LIST_TYPES:
                self.fail(
                    f"{key}.path",
                    "a wildcard path needs a list value_type "
                    f"({', '.join(sorted(LIST_TYPES))}), not {short_repr(value_type)}",
                )
            recipe = NxsRecipe(path, wildcard)
        elif source == "SC":
            recipe = ScRecipe(
                Template.parse(self.text(spec, "url", f"{key}.")),
                self.field_key(spec.get("field", ""), f"{key}.field"),
            )
        else:
            recipe = self.value_recipe(spec, key)
        return Variable(name, value_type, unit, recipe, dict(spec))

    def value_recipe(self, spec: Mapping[str, Any], key: str) -> ValueRecipe:
        operator = spec.get("operator") or ""
        if not isinstance(operator, str) or operator not in OPERATORS:
            valid = ", ".join(sorted(o for o in OPERATORS if o))
            self.fail(
                f"{key}.operator", f"unknown operator {short_repr(operator)}; use one of {valid}"
            )
        field = None
        if operator in NEEDS_FIELD:
            if "field" not in spec:
                self.fail(f"{key}.field", f"operator {operator!r} needs 'field' (a key or index)")
            field = self.field_key(spec["field"], f"{key}.field")
        pattern = replacement = None
        if operator in NEEDS_PATTERN:
            for name in ("pattern", "replacement"):
                value = spec.get(name)
                if not isinstance(value, str) or (name == "pattern" and not value):
                    self.fail(f"{key}.{name}", f"operator {operator!r} needs a string {name!r}")
            pattern, replacement = spec["pattern"], spec["replacement"]
        return ValueRecipe(compile_value(spec["value"]), operator, field, pattern, replacement)

    def field_key(self, value: Any, key: str) -> str | int:
        if isinstance(value, bool) or not isinstance(value, str | int):
            self.fail(key, f"must be a string or an integer, found {short_repr(value)}")
        return value

    def type_name(self, value: Any, key: str) -> str:
        if not isinstance(value, str) or value not in TYPE_NAMES:
            self.fail(
                key, f"unknown type {short_repr(value)}; use one of {', '.join(sorted(TYPE_NAMES))}"
            )
        return str(value)

    def check_bare_name(self, recipe: Recipe | Compiled, names: set[str], key: str) -> None:
        """Warn about ``value: instrument_id``: literal text that is a variable's name."""
        value = recipe.value if isinstance(recipe, ValueRecipe) else recipe
        if isinstance(value, Template) and not value.refs and value.text in names:
            self.warn(
                f"{key}.value",
                f"{value.text!r} is literal text that equals a variable name; "
                f"write '<{value.text}>' to use the variable's value",
            )

    # -- schema fields --------------------------------------------------------------------

    def fields(self, raw: Mapping[str, Any], variables: set[str]) -> tuple[SchemaField, ...]:
        known = variables | set(BUILTIN_NAMES)
        result = []
        high_level: dict[str, str] = {}
        for name, spec in raw.items():
            key = f"schema.{name}"
            item = self.field(str(name), self.mapping(spec, key), key)
            for ref in references(item.value):
                if ref not in known:
                    self.warn(f"{key}.value", f"<{ref}> is not a variable; this field will fail")
            self.check_bare_name(item.value, variables, key)
            if item.field_type == "high_level":
                self.check_high_level(item, key, high_level)
            result.append(item)
        return tuple(result)

    def field(self, name: str, spec: Mapping[str, Any], key: str) -> SchemaField:
        self.keys(spec, f"{key}.", _FIELD_REQUIRED, _FIELD_OPTIONAL)
        field_type = spec["field_type"]
        if not isinstance(field_type, str) or field_type not in _FIELD_TYPES:
            self.fail(
                f"{key}.field_type",
                f"must be high_level or scientific_metadata, found {short_repr(field_type)}",
            )
        machine_name = self.text(spec, "machine_name", f"{key}.")
        human_name = spec.get("human_name") or machine_name
        unit = spec.get("unit")
        for opt in ("human_name", "unit"):
            if spec.get(opt) is not None and not isinstance(spec[opt], str):
                self.fail(f"{key}.{opt}", f"must be a string, found {short_repr(spec[opt])}")
        return SchemaField(
            key=name,
            machine_name=machine_name,
            field_type=cast(FieldType, field_type),
            value=compile_value(spec["value"]),
            type=self.type_name(spec["type"], f"{key}.type"),
            human_name=human_name,
            unit=unit,
            raw=dict(spec),
        )

    def check_high_level(self, item: SchemaField, key: str, seen: dict[str, str]) -> None:
        m = item.machine_name
        expected = RAW_DATASET_FIELDS.get(m)
        if expected is None:
            near = difflib.get_close_matches(m, list(RAW_DATASET_FIELDS), n=1, cutoff=0.8)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            self.warn(
                f"{key}.machine_name",
                f"{m!r} is not a field of a SciCat raw dataset{hint}; "
                "it is left out of the payload",
            )
            return
        if m in INGESTOR_FIELDS:
            self.warn(f"{key}.machine_name", f"{m!r} is set by the ingestor; this entry is ignored")
            return
        produced = JSON_TYPE[item.type]
        if produced not in (expected, "null"):
            self.fail(
                f"{key}.type",
                f"type {item.type!r} gives a {produced}, but SciCat's {m!r} is a {expected}",
            )
        if m in seen:
            self.warn(
                f"{key}.machine_name",
                f"{m!r} is also set by schema.{seen[m]}; the later entry wins",
            )
        seen[m] = item.key


def _job_refs(job: JobSpec) -> tuple[str, ...]:
    values = (job.type, job.job_params, job.owner_user, job.owner_group, job.contact_email)
    return tuple(ref for value in values if value is not None for ref in references(value))


def _recipe_refs(recipe: Recipe) -> tuple[str, ...]:
    if isinstance(recipe, ScRecipe):
        return recipe.url.refs
    if isinstance(recipe, ValueRecipe):
        return references(recipe.value)
    return ()
