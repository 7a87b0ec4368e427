"""Evaluate a schema's ``variables:`` for one NeXus file.

Variables are evaluated in declaration order; each may reference built-ins and earlier variables
as ``<name>``. A failing variable is recorded and evaluation goes on: later references to it fail
with "unresolved variable name". Substitution is a single pass over the template parsed at load
time, so a value that itself contains ``<x>`` is never expanded again (no loops).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import posixpath
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

from scicat_ingestor.schema import operators
from scicat_ingestor.schema.model import (
    Compiled,
    Constant,
    ListOf,
    MetadataSchema,
    NxsRecipe,
    Ref,
    SampleAttachment,
    ScRecipe,
    Template,
    Variable,
    one_line,
)
from scicat_ingestor.schema.nexus import NexusError, NexusReader
from scicat_ingestor.schema.operators import Value
from scicat_ingestor.schema.types import LIST_TYPES, convert, short_repr

logger = logging.getLogger(__name__)

Fetch = Callable[[str], Any]

BUILTIN_NAMES = (
    "ingestor_run_id",
    "data_file_path",
    "data_file_name",
    "now",
    "ingestor_files_directory",
    "ingestor_metadata_schema_id",
)


def _new_run_id() -> str:
    return str(uuid4())


def _now() -> str:
    return datetime.now(UTC).isoformat()


@dataclass(frozen=True)
class Builtins:
    """Values every schema can use without declaring them."""

    data_file_path: str
    ingestor_files_directory: str
    ingestor_run_id: str = field(default_factory=_new_run_id)
    now: str = field(default_factory=_now)

    def values(self, schema_id: str) -> dict[str, Value]:
        return {
            "ingestor_run_id": Value(self.ingestor_run_id),
            "data_file_path": Value(self.data_file_path),
            "data_file_name": Value(posixpath.basename(self.data_file_path)),
            "now": Value(self.now),
            "ingestor_files_directory": Value(self.ingestor_files_directory),
            "ingestor_metadata_schema_id": Value(schema_id),
        }


@dataclass(frozen=True)
class VariableFailure:
    """A variable that could not be computed: its name, recipe as written, and why."""

    name: str
    recipe: Mapping[str, Any]
    error: str

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "recipe": dict(self.recipe), "error": self.error}


@dataclass(frozen=True)
class VariableResults:
    """Computed variables (built-ins included) and the failures; ``sample_ids`` from the lookup."""

    values: Mapping[str, Value]
    failures: tuple[VariableFailure, ...] = ()
    sample_ids: tuple[str, ...] = ()


class UnresolvedVariableError(ValueError):
    """A ``<name>`` reference to a variable that is not defined (or failed) at that point."""


def render(
    value: Compiled, values: Mapping[str, Value], failed: AbstractSet[str] = frozenset()
) -> Value:
    """Substitute ``<name>`` references; a template that is one reference keeps type and unit."""
    if isinstance(value, Template):
        return _render_template(value, values, failed)
    if isinstance(value, Constant):
        return Value(value.value)
    if isinstance(value, ListOf):
        rendered = [render(item, values, failed) for item in value.items]
        return Value([r.value for r in rendered], _common_unit(rendered))
    rendered_items = [
        (render(k, values, failed), render(v, values, failed)) for k, v in value.items
    ]
    return Value(
        {_hashable(k.value): v.value for k, v in rendered_items},
        _common_unit([v for _, v in rendered_items]),
    )


def _render_template(t: Template, values: Mapping[str, Value], failed: AbstractSet[str]) -> Value:
    whole = t.whole
    if whole is not None:
        return _lookup(whole, values, failed)
    out: list[str] = []
    for part in t.parts:
        if isinstance(part, Ref):
            out.append(str(_lookup(part.name, values, failed).value))
        else:
            out.append(part)
    return Value("".join(out))


def _lookup(name: str, values: Mapping[str, Value], failed: AbstractSet[str]) -> Value:
    try:
        return values[name]
    except KeyError:
        why = "that variable failed" if name in failed else "not defined before this point"
        raise UnresolvedVariableError(f"unresolved variable name <{name}> ({why})") from None


def _common_unit(items: list[Value]) -> str:
    units = {v.unit for v in items}
    return units.pop() if len(units) == 1 else ""


def _hashable(key: Any) -> Any:
    try:
        hash(key)
    except TypeError:
        return str(key)
    return key


class _Evaluation:
    """State of one evaluation: computed values, failures, and the per-file SciCat GET cache."""

    def __init__(self, reader: NexusReader, fetch: Fetch) -> None:
        self.reader = reader
        self.fetch = fetch
        self.values: dict[str, Value] = {}
        self.failed: set[str] = set()
        self.cache: dict[str, tuple[bool, Any]] = {}

    def get(self, url: str) -> Any:
        """``fetch(url)`` once per distinct url; a failure is cached (and re-raised) too."""
        hit = self.cache.get(url)
        if hit is None:
            try:
                hit = (True, self.fetch(url))
            except Exception as exc:
                hit = (False, exc)
            self.cache[url] = hit
        ok, result = hit
        if not ok:
            raise result
        return result

    def variable(self, var: Variable) -> Value:
        failed = self.failed
        recipe = var.recipe
        if isinstance(recipe, NxsRecipe):
            result = self._nexus(var, recipe)
        elif isinstance(recipe, ScRecipe):
            result = Value(self._scicat(recipe, failed))
        else:
            result = operators.apply(
                recipe.operator, render(recipe.value, self.values, failed), recipe
            )
        return Value(convert(result.value, var.value_type), result.unit or var.unit)

    def _nexus(self, var: Variable, recipe: NxsRecipe) -> Value:
        r = self.reader
        if recipe.wildcard:
            paths = r.glob(recipe.path)
            if var.value_type == "string[]":
                return Value([r.read_text(p) for p in paths])
            return Value([r.read(p) for p in paths])
        if var.value_type in ("string", "email", "link"):
            value: Any = r.read_text(recipe.path)
        else:
            value = r.read(recipe.path)
            if var.value_type in LIST_TYPES and not isinstance(value, list):
                value = [] if value is None else [value]
        return Value(value, r.units(recipe.path) or "")

    def _scicat(self, recipe: ScRecipe, failed: AbstractSet[str]) -> Any:
        url = render(recipe.url, self.values, failed).value
        if not isinstance(url, str):
            raise ValueError(f"url must be text, got {type(url).__name__}")
        answer = self.get(url)
        if recipe.field == "":
            return answer
        try:
            return answer[recipe.field]
        except (KeyError, IndexError, TypeError) as exc:
            if isinstance(answer, dict):
                keys = ", ".join(short_repr(k) for k in list(answer)[:10]) or "none"
                raise ValueError(
                    f"field {recipe.field!r} not in SciCat's answer (keys: {keys})"
                ) from exc
            raise ValueError(
                f"field {recipe.field!r}: SciCat answered a {type(answer).__name__}, not an object"
            ) from exc

    def sample_ids(self, spec: SampleAttachment) -> tuple[str, ...]:
        name = self.reader.read_text(spec.sample_name_path)
        proposal = self.reader.read_text(spec.proposal_id_path)
        where = json.dumps({"where": {"description": name, "proposalId": proposal}})
        answer = self.get(f"samples?filter={urllib.parse.quote_plus(where)}")
        if not isinstance(answer, list):
            raise ValueError(f"SciCat answered a {type(answer).__name__}, not a list of samples")
        return tuple(str(s["sampleId"]) for s in answer if isinstance(s, dict) and "sampleId" in s)


def describe_error(exc: Exception) -> str:
    """One line saying why a variable or field failed (without the NeXus file name)."""
    if isinstance(exc, NexusError):
        text = exc.detail
    elif isinstance(exc, KeyError) and exc.args:
        text = f"key {short_repr(exc.args[0])} not found"
    else:
        text = str(exc) or type(exc).__name__
    return one_line(text)


def evaluate_variables(
    schema: MetadataSchema, reader: NexusReader, builtins: Builtins, fetch: Fetch
) -> VariableResults:
    """Compute every variable of ``schema`` for the file behind ``reader``; never raises for one."""
    ev = _Evaluation(reader, fetch)
    ev.values.update(builtins.values(schema.id))
    failures: list[VariableFailure] = []
    for var in schema.variables:
        try:
            ev.values[var.name] = ev.variable(var)
        except Exception as exc:
            ev.values.pop(var.name, None)
            ev.failed.add(var.name)
            failures.append(VariableFailure(var.name, var.raw, describe_error(exc)))
    sample_ids: tuple[str, ...] = ()
    if schema.sample_attachment.query_sample_name:
        try:
            sample_ids = ev.sample_ids(schema.sample_attachment)
        except Exception as exc:
            recipe = dataclasses.asdict(schema.sample_attachment)
            failures.append(VariableFailure("sample_attachment", recipe, describe_error(exc)))
    if failures:
        for failure in failures:
            source = failure.recipe.get("source", "lookup")
            logger.debug("Variable %s (%s) failed: %s", failure.name, source, failure.error)
        logger.warning(
            "%d variable(s) failed for %s and were left out: %s",
            len(failures),
            reader.path,
            name_list([f.name for f in failures]),
        )
    return VariableResults(ev.values, tuple(failures), sample_ids)


MAX_NAMES_SHOWN = 10


def name_list(names: Sequence[str]) -> str:
    """The names for a one-line summary: the first ten, then a count (the reasons, one line
    each, are logged at DEBUG)."""
    shown = ", ".join(names[:MAX_NAMES_SHOWN])
    more = len(names) - MAX_NAMES_SHOWN
    return f"{shown} and {more} more" if more > 0 else shown
