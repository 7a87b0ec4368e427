"""The validated, immutable form of an ``*.imsc.yml`` metadata schema.

Everything that can be checked without a NeXus file is checked once when the schema is loaded
(``loader.py``); per-file evaluation then only walks these precompiled structures.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from scicat_ingestor.schema.selector import Selector

logger = logging.getLogger(__name__)


class SchemaError(ValueError):
    """A schema problem; ``str()`` is one line: ``<file>: <dotted key>: <reason>``."""


_LINE_BREAKING = re.compile("[\x00-\x1f\x7f\x85\u2028\u2029]")


def one_line(text: str) -> str:
    """Escape control characters and line separators, so a message stays one line."""
    return _LINE_BREAKING.sub(lambda m: repr(m.group())[1:-1], text)


# ``<name>`` is a variable reference only when ``name`` is an identifier, so text such as
# ``a < b > c`` is literal.
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
REFERENCE = re.compile(f"<({NAME.pattern})>")


@dataclass(frozen=True, slots=True)
class Ref:
    """A ``<name>`` reference inside a template."""

    name: str


@dataclass(frozen=True, slots=True)
class Template:
    """A string split into literal text and ``<name>`` references, parsed once at load time."""

    text: str
    parts: tuple[str | Ref, ...]

    @property
    def whole(self) -> str | None:
        """The variable name if the template is exactly one reference (the value keeps its type)."""
        if len(self.parts) == 1 and isinstance(self.parts[0], Ref):
            return self.parts[0].name
        return None

    @property
    def refs(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.parts if isinstance(p, Ref))

    @classmethod
    def parse(cls, text: str) -> Template:
        parts: list[str | Ref] = []
        pos = 0
        for m in REFERENCE.finditer(text):
            if m.start() > pos:
                parts.append(text[pos : m.start()])
            parts.append(Ref(m.group(1)))
            pos = m.end()
        if pos < len(text):
            parts.append(text[pos:])
        return cls(text, tuple(parts))


@dataclass(frozen=True, slots=True)
class ListOf:
    """A literal list whose items are templates or literals."""

    items: tuple[Compiled, ...]


@dataclass(frozen=True, slots=True)
class DictOf:
    """A literal mapping whose keys and values are templates or literals."""

    items: tuple[tuple[Compiled, Compiled], ...]


@dataclass(frozen=True, slots=True)
class Constant:
    """A literal scalar that is not text (number, bool, null, YAML date): used as is."""

    value: Any


Compiled = Template | ListOf | DictOf | Constant


def compile_value(value: Any) -> Compiled:
    """Turn a raw YAML value into its precompiled form."""
    if isinstance(value, str):
        return Template.parse(value)
    if isinstance(value, list | tuple):
        return ListOf(tuple(compile_value(v) for v in value))
    if isinstance(value, Mapping):
        return DictOf(tuple((compile_value(k), compile_value(v)) for k, v in value.items()))
    return Constant(value)


def references(value: Compiled) -> tuple[str, ...]:
    """Every variable name referenced anywhere in a compiled value."""
    if isinstance(value, Template):
        return value.refs
    if isinstance(value, ListOf):
        return tuple(n for item in value.items for n in references(item))
    if isinstance(value, DictOf):
        return tuple(n for k, v in value.items for n in (*references(k), *references(v)))
    return ()


@dataclass(frozen=True)
class NxsRecipe:
    """``source: NXS``: read ``path`` from the NeXus file (wildcards for list types)."""

    path: str
    wildcard: bool


@dataclass(frozen=True)
class ScRecipe:
    """``source: SC``: GET the rendered ``url`` from SciCat, take ``field`` ('' = whole answer)."""

    url: Template
    field: str | int


@dataclass(frozen=True)
class ValueRecipe:
    """``source: VALUE``: a literal/template value, then an optional operator."""

    value: Compiled
    operator: str
    field: str | int | None = None
    pattern: str | None = None
    replacement: str | None = None


Recipe = NxsRecipe | ScRecipe | ValueRecipe


@dataclass(frozen=True)
class Variable:
    """One entry of ``variables:``; ``raw`` is the recipe as written, for failure reports."""

    name: str
    value_type: str
    unit: str
    recipe: Recipe
    raw: Mapping[str, Any] = field(compare=False, hash=False, repr=False)


FieldType = Literal["high_level", "scientific_metadata"]


@dataclass(frozen=True)
class SchemaField:
    """One entry of ``schema:``: a SciCat dataset field or a scientific-metadata entry."""

    key: str
    machine_name: str
    field_type: FieldType
    value: Compiled
    type: str
    human_name: str
    unit: str | None
    raw: Mapping[str, Any] = field(compare=False, hash=False, repr=False)


@dataclass(frozen=True)
class SampleAttachment:
    """``sample_attachment:``: look up the sample by name and proposal and set ``sampleId``."""

    query_sample_name: bool = False
    sample_name_path: str = "/entry/sample/name"
    proposal_id_path: str = "/entry/experiment_identifier"


# In ``jobs:``, ``<pid>`` is the pid SciCat assigned to the dataset (it overrides a variable
# of that name: SciCat may have assigned another than the one sent).
JOB_PID = "pid"


@dataclass(frozen=True)
class JobSpec:
    """One entry of ``jobs:`` (the ESS format): a SciCat job to create once the dataset and its
    origdatablock exist. Each value may hold ``<variable>`` references; ``<pid>`` is the pid
    SciCat assigned. ``None``: the key is not in the file (the job is sent without it)."""

    name: str
    type: Template
    job_params: Compiled
    owner_user: Compiled | None = None
    owner_group: Compiled | None = None
    contact_email: Compiled | None = None


@dataclass(frozen=True)
class MetadataSchema:
    """One loaded schema file."""

    id: str
    name: str
    instrument: str
    selector: Selector
    order: int
    variables: tuple[Variable, ...]
    fields: tuple[SchemaField, ...]
    sample_attachment: SampleAttachment = SampleAttachment()
    # (new) HDF5 path of the NXdata group or dataset to draw as the thumbnail; '' = default plot
    thumbnail: str = ""
    # (ESS format) SciCat jobs to create after the dataset and its origdatablock
    jobs: tuple[JobSpec, ...] = ()
    file: str = ""


@dataclass(frozen=True)
class SchemaSet:
    """Loaded schemas in selection order, the fallback, and the load-time warnings."""

    schemas: tuple[MetadataSchema, ...]
    fallback: MetadataSchema | None = None
    warnings: tuple[str, ...] = ()

    def select(self, file_path: str) -> MetadataSchema | None:
        """The first schema (by order, then name) whose selector matches; else the fallback."""
        for schema in self.schemas:
            if schema.selector.matches(file_path):
                return schema
        if self.fallback is not None:
            logger.warning(
                "No applicable metadata schema found for %s; using the fallback schema %r",
                file_path,
                self.fallback.name,
            )
        return self.fallback
