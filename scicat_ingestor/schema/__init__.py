"""The imsc metadata schema engine: load, select, evaluate variables, build the dataset payload."""

from scicat_ingestor.schema.loader import load_schemas
from scicat_ingestor.schema.model import MetadataSchema, SchemaError, SchemaSet
from scicat_ingestor.schema.payload import DatasetDraft, FieldFailure, build_dataset
from scicat_ingestor.schema.variables import (
    Builtins,
    VariableFailure,
    VariableResults,
    evaluate_variables,
)

__all__ = [
    "Builtins",
    "DatasetDraft",
    "FieldFailure",
    "MetadataSchema",
    "SchemaError",
    "SchemaSet",
    "VariableFailure",
    "VariableResults",
    "build_dataset",
    "evaluate_variables",
    "load_schemas",
]
