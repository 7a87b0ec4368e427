"""Schema discovery, ordering and load-time validation (one-line errors, warnings)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from scicat_ingestor.schema.loader import fallback_path, load_schema_file, load_schemas
from scicat_ingestor.schema.model import SampleAttachment, SchemaError
from scicat_ingestor.schema.selector import MatchAll

SCHEMAS = Path(__file__).parent / "data" / "schemas"


def minimal(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": "s1",
        "name": "Schema one",
        "instrument": "coda",
        "selector": "filename:contains:coda",
        "order": 1,
        "variables": {"title": {"source": "NXS", "path": "/entry/title", "value_type": "string"}},
        "schema": {
            "dataset_name": {
                "field_type": "high_level",
                "machine_name": "datasetName",
                "value": "<title>",
                "type": "string",
            }
        },
    }
    data.update(changes)
    return data


def write(directory: Path, name: str, data: dict[str, Any]) -> Path:
    path = directory / name
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def load_error(tmp_path: Path, data: dict[str, Any]) -> str:
    path = write(tmp_path, "x.imsc.yml", data)
    with pytest.raises(SchemaError) as info:
        load_schema_file(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    return message.removeprefix(f"{path}: ")


def test_every_example_schema_loads(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="scicat_ingestor")
    schemas = load_schemas(SCHEMAS, "ess-fallback")
    assert [s.name for s in schemas.schemas] == [
        "Coda Metadata Schema",
        "dream Metadata Schema",
        "Generic metadata schema",
        "Loki Metadata Schema",
        "Ymir Metadata Schema",
        "Test Coda Metadata Schema",
        "Fall Back Metadata Schema",
    ]
    assert schemas.fallback is not None
    assert schemas.fallback.id == "scicat-ingestor-fallback-schema"
    warnings = "\n".join(schemas.warnings)
    # The known mistakes in the examples are warnings, each logged once.
    assert "loki.imsc.yml: selector: never selected: 'dream Metadata Schema'" in warnings
    assert "coda.imsc.yml: schema.instrument_id.value: 'instrument_id' is literal text" in warnings
    assert "base.imsc.yml: schema.location.machine_name: 'location' is not a field" in warnings
    assert caplog.text.count("never selected") == 1
    assert "Found 7 schemas" in caplog.text


def test_fix_sample_attachment_is_parsed(tmp_path: Path) -> None:
    # Upstream left it a dict and crashed with AttributeError when ingesting.
    schema, _ = load_schema_file(SCHEMAS / "base.imsc.yml")
    assert schema.sample_attachment == SampleAttachment(query_sample_name=False)
    data = minimal(
        sample_attachment={"query_sample_name": True, "sample_name_path": "/entry/s/name"}
    )
    schema, _ = load_schema_file(write(tmp_path, "s.imsc.yml", data))
    assert schema.sample_attachment == SampleAttachment(True, "/entry/s/name")


def test_discovery_rules(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write(tmp_path, "a.imsc.yml", minimal(id="a", name="A"))
    write(tmp_path, "b.imsc.yaml", minimal(id="b", name="B"))
    (tmp_path / "c.imsc.json").write_text(json.dumps(minimal(id="c", name="C")))
    # Not schemas: wrong ending (upstream's "contains" rule took it), dotfile, subdirectory.
    write(tmp_path, "d.imsc.yml.example", minimal(id="d", name="D"))
    write(tmp_path, ".e.imsc.yml", minimal(id="e", name="E"))
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub", "f.imsc.yml", minimal(id="f", name="F"))
    schemas = load_schemas(tmp_path)
    assert [s.id for s in schemas.schemas] == ["a", "b", "c"]
    assert "c.imsc.json: JSON schema files are deprecated" in caplog.text


def test_order_then_name_ignoring_case(tmp_path: Path) -> None:
    write(tmp_path, "1.imsc.yml", minimal(id="1", name="beta", order=2))
    write(tmp_path, "2.imsc.yml", minimal(id="2", name="Alpha", order=2))
    write(tmp_path, "3.imsc.yml", minimal(id="3", name="zeta", order=1))
    write(tmp_path, "4.imsc.yml", minimal(id="4", name="alpha2", order=2))
    schemas = load_schemas(tmp_path)
    assert [s.name for s in schemas.schemas] == ["zeta", "Alpha", "alpha2", "beta"]


def test_duplicate_ids_name_both_files(tmp_path: Path) -> None:
    first = write(tmp_path, "a.imsc.yml", minimal(name="A"))
    second = write(tmp_path, "b.imsc.yml", minimal(name="B"))
    with pytest.raises(SchemaError) as info:
        load_schemas(tmp_path)
    assert str(info.value) == f"{second}: id: duplicate id 's1' (also in {first})"


def test_missing_directory_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(SchemaError) as info:
        load_schemas(tmp_path / "nope")
    assert str(info.value) == f"{tmp_path / 'nope'}: schema directory not found"


def test_fallback_specs(tmp_path: Path) -> None:
    assert load_schemas(tmp_path).fallback is None
    packaged = load_schemas(tmp_path, "ess-fallback").fallback
    assert packaged is not None
    assert packaged.selector == MatchAll()
    assert packaged.order == 9999999999
    own = write(tmp_path / "..", "own-fallback.yml", minimal(id="own", selector="*"))
    fallback = load_schemas(tmp_path, str(own)).fallback
    assert fallback is not None
    assert fallback.id == "own"
    with pytest.raises(SchemaError, match="fallback schema file not found"):
        load_schemas(tmp_path, "no-such-fallback")


def test_packaged_fallback_is_the_upstream_file() -> None:
    lines = fallback_path("ess-fallback").read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("# Copied from SciCatProject/scicat-ingestor")
    upstream = (SCHEMAS / "ess-fallback.imsc.yml").read_text(encoding="utf-8").splitlines()
    assert lines[1:] == upstream


@pytest.mark.parametrize("key", ["id", "name", "instrument", "selector", "order"])
def test_required_top_level_keys(tmp_path: Path, key: str) -> None:
    data = minimal()
    del data[key]
    assert load_error(tmp_path, data) == f"{key}: required key is missing"


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"selctor": "*"}, "selctor: unknown key; did you mean 'selector'?"),
        ({"order": "1"}, "order: must be an integer, found '1'"),
        ({"order": True}, "order: must be an integer, found True"),
        ({"id": ""}, "id: must be a non-empty string, found ''"),
        ({"selector": "filename:ends_with:x"}, "selector: unknown operator 'ends_with'"),
        ({"selector": {"or": [{"nope": 1}]}}, "selector.or[0].nope: unknown selector key"),
        ({"variables": []}, "variables: must be a mapping, found list"),
        ({"sample_attachment": {"query": True}}, "sample_attachment.query: unknown key"),
        (
            {"sample_attachment": {"query_sample_name": "yes"}},
            "sample_attachment.query_sample_name: must be a bool",
        ),
    ],
)
def test_top_level_errors(tmp_path: Path, changes: dict[str, Any], expected: str) -> None:
    assert load_error(tmp_path, minimal(**changes)).startswith(expected)


def _var(**spec: Any) -> dict[str, Any]:
    return minimal(variables={"v": spec}, schema={})


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"source": "NXS", "path": "/x"}, "variables.v.value_type: required key is missing"),
        ({"source": "FILE", "value_type": "string"}, "variables.v.source: must be one of"),
        ({"source": "NXS", "value_type": "str", "path": "/x"}, "variables.v.value_type: unknown"),
        ({"source": "NXS", "value_type": "string"}, "variables.v.path: required key is missing"),
        (
            {"source": "NXS", "value_type": "string", "path": "/x", "url": "y"},
            "variables.v.url: unknown key",
        ),
        (
            {"source": "NXS", "value_type": "string", "path": "/entry/user_*/name"},
            "variables.v.path: a wildcard path needs a list value_type",
        ),
        ({"source": "SC", "value_type": "string", "url": "x", "field": 1.5}, "variables.v.field"),
        (
            {"source": "VALUE", "value_type": "string", "value": "x", "operator": "to_uper"},
            "variables.v.operator: unknown operator 'to_uper'",
        ),
        (
            {"source": "VALUE", "value_type": "string", "value": "x", "operator": "getitem"},
            "variables.v.field: operator 'getitem' needs 'field'",
        ),
        (
            {"source": "VALUE", "value_type": "string", "value": "x", "operator": "str-replace"},
            "variables.v.pattern: operator 'str-replace' needs a string 'pattern'",
        ),
        (
            {"source": "VALUE", "value_type": "string", "value": "x", "unit": 5},
            "variables.v.unit: must be a string",
        ),
    ],
)
def test_variable_errors(tmp_path: Path, spec: dict[str, Any], expected: str) -> None:
    assert load_error(tmp_path, _var(**spec)).startswith(expected)


def test_fix_unknown_operator_is_rejected_at_load(tmp_path: Path) -> None:
    # Upstream treated any unknown operator as DO_NOTHING, silently.
    data = _var(source="VALUE", value_type="string", value="x", operator="to_capital")
    assert "unknown operator 'to_capital'" in load_error(tmp_path, data)


@pytest.mark.parametrize("name", ["my-var", "größe", "1st"])
def test_variable_names_must_be_referable(tmp_path: Path, name: str) -> None:
    # Only ASCII identifiers can be written as <name>, so other names could never be used.
    data = minimal(variables={name: {"source": "VALUE", "value_type": "string", "value": 1}})
    assert load_error(tmp_path, data).startswith(f"variables.{name}: variable names must be")


def hl(machine_name: str, value: Any, type_name: str) -> dict[str, Any]:
    return {"field_type": "high_level", "machine_name": machine_name, "value": value,
            "type": type_name}  # fmt: skip


def _field(**spec: Any) -> dict[str, Any]:
    return minimal(schema={"f": spec})


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (
            {"field_type": "high_level", "value": "x", "type": "string"},
            "schema.f.machine_name: required key is missing",
        ),
        (
            {"field_type": "top", "machine_name": "owner", "value": "x", "type": "string"},
            "schema.f.field_type: must be high_level or scientific_metadata",
        ),
        (
            {"field_type": "high_level", "machine_name": "owner", "value": "x", "type": "text"},
            "schema.f.type: unknown type 'text'",
        ),
        (
            {
                "field_type": "high_level",
                "machine_name": "owner",
                "value": "x",
                "type": "string",
                "units": "mm",
            },
            "schema.f.units: unknown key; did you mean 'unit'?",
        ),
        (
            hl("runNumber", 1, "integer"),
            "schema.f.type: type 'integer' gives a number, but SciCat's 'runNumber' is a string",
        ),
        (
            hl("keywords", "x", "string"),
            "schema.f.type: type 'string' gives a string, but SciCat's 'keywords' is a array",
        ),
        (
            {
                "field_type": "scientific_metadata",
                "machine_name": "x",
                "value": "x",
                "type": "string",
                "human_name": 5,
            },
            "schema.f.human_name: must be a string",
        ),
    ],
)
def test_schema_field_errors(tmp_path: Path, spec: dict[str, Any], expected: str) -> None:
    assert load_error(tmp_path, _field(**spec)).startswith(expected)


def test_field_warnings(tmp_path: Path) -> None:
    data = minimal(
        schema={
            "a": hl("ownr", "x", "string"),
            "b": hl("size", 1, "integer"),
            "c": hl("owner", "x", "string"),
            "d": hl("owner", "y", "string"),
            "e": {
                "field_type": "scientific_metadata",
                "machine_name": "e",
                "value": "<undefined>",
                "type": "string",
            },
        }
    )
    _, warnings = load_schema_file(write(tmp_path, "w.imsc.yml", data))
    text = "\n".join(warnings)
    assert "schema.a.machine_name: 'ownr' is not a field of a SciCat raw dataset" in text
    assert "(did you mean 'owner'?)" in text
    assert "schema.b.machine_name: 'size' is set by the ingestor; this entry is ignored" in text
    assert "schema.d.machine_name: 'owner' is also set by schema.c; the later entry wins" in text
    assert "schema.e.value: <undefined> is not a variable; this field will fail" in text


def test_forward_reference_is_a_warning(tmp_path: Path) -> None:
    data = minimal(
        variables={
            "a": {"source": "VALUE", "value_type": "string", "value": "<b>-x"},
            "b": {"source": "VALUE", "value_type": "string", "value": "beta"},
        },
        schema={},
    )
    _, warnings = load_schema_file(write(tmp_path, "w.imsc.yml", data))
    assert warnings == [
        f"{tmp_path / 'w.imsc.yml'}: variables.a: <b> is not defined before this variable; "
        "it will fail"
    ]


def test_yaml_errors_are_one_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.imsc.yml"
    path.write_text("id: x\nname: [unclosed\n", encoding="utf-8")
    with pytest.raises(SchemaError) as info:
        load_schema_file(path)
    # no stray "<file>:" label between the file and the problem
    assert str(info.value).startswith(f"{path}: invalid YAML (line 3, column 1): ")
    assert "\n" not in str(info.value)


def test_duplicate_yaml_keys_are_an_error(tmp_path: Path) -> None:
    path = tmp_path / "dup.imsc.yml"
    text = yaml.safe_dump(minimal(), sort_keys=False)
    path.write_text(text + "order: 2\n", encoding="utf-8")
    with pytest.raises(SchemaError, match=r"duplicate key 'order'"):
        load_schema_file(path)


def test_invalid_json_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.imsc.json"
    path.write_text("{", encoding="utf-8")
    with pytest.raises(SchemaError, match=r"imsc.json: invalid JSON \(line 1, column 2\)"):
        load_schema_file(path)


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "list.imsc.yml"
    path.write_text("- a\n", encoding="utf-8")
    with pytest.raises(SchemaError, match="the top level must be a mapping, found list"):
        load_schema_file(path)


def _text_error(tmp_path: Path, text: str) -> str:
    path = tmp_path / "t.imsc.yml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SchemaError) as info:
        load_schema_file(path)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_hostile_documents_are_one_line_errors(tmp_path: Path) -> None:
    assert "unhashable key" in _text_error(tmp_path, "? [a, b]\n: 1\n")
    assert "nested more than 50 levels" in _text_error(tmp_path, "[" * 5000 + "]" * 5000)
    data = minimal()
    data["variables"]["a\nb"] = {"source": "VALUE", "value": "x", "value_type": "string"}
    assert "variables.a\\nb: variable names must be" in load_error(tmp_path, data)
    data = minimal(variables={"v": {"source": ["NXS"], "value_type": "string", "path": "/x"}})
    assert "variables.v.source: must be one of NXS, SC, VALUE; found ['NXS']" in load_error(
        tmp_path, data
    )


def test_yaml_alias_bomb_is_refused(tmp_path: Path) -> None:
    # Each alias level multiplies by 10: 10**9 values if walked as a tree.
    lines = ["id: bomb", "name: bomb", "instrument: x", "selector: '*'", "order: 1"]
    lines += ["variables:"]
    for i in range(9):
        items = ", ".join(["x"] * 10 if i == 0 else [f"*a{i - 1}"] * 10)
        lines += [f"  a{i}:", "    source: VALUE", f"    value: &a{i} [{items}]"]
        lines += ["    value_type: list"]
    message = _text_error(tmp_path, "\n".join([*lines, "schema: {}"]) + "\n")
    assert "more than 100000 values (YAML aliases repeating?)" in message
