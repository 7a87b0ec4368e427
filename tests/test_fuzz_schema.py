"""Fuzzing the schema loader: random YAML, random text, and mutated example schemas.

The loader runs at start-up on files people edit by hand and copy between instruments. Whatever a
file contains, the result must be a loaded schema or a ``SchemaError`` whose message is one line
naming the file — never a traceback from deep inside PyYAML or the checker, never a hang.
"""

from __future__ import annotations

import copy
import datetime as dt
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from helpers.fuzz import FUZZ
from scicat_ingestor.schema.loader import load_schema_file
from scicat_ingestor.schema.model import MetadataSchema, SchemaError

EXAMPLES = sorted((Path(__file__).parent / "data" / "schemas").glob("*.imsc.yml"))
FUZZ_FILES = settings(
    FUZZ, suppress_health_check=[*FUZZ.suppress_health_check, HealthCheck.function_scoped_fixture]
)


def _load(directory: Path, text: str | bytes) -> MetadataSchema | SchemaError:
    path = directory / "fuzz.imsc.yml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        schema, warnings = load_schema_file(path)
    except SchemaError as err:
        message = str(err)
        assert message.startswith(f"{path}: "), message
        assert "\n" not in message, f"not one line: {message!r}"
        return err
    assert all("\n" not in w for w in warnings)
    return schema


yaml_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]), max_size=30),
    st.sampled_from(["*", "NXS", "SC", "VALUE", "string", "date", "<pid>", "getitem", "a<b>c"]),
    st.dates(),
    st.datetimes(),
)
# Keys avoid control characters (see test_schema_key_with_newline_gives_one_line_error).
yaml_keys = st.one_of(
    st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]), max_size=12),
    st.sampled_from(
        ["id", "name", "selector", "order", "variables", "schema", "source", "value", "or", "and"]
    ),
    st.integers(),
)
yaml_values = st.recursive(
    yaml_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(yaml_keys, inner, max_size=5)
    ),
    max_leaves=25,
)


@FUZZ_FILES
@given(document=yaml_values)
def test_random_yaml_documents(tmp_path: Path, document: Any) -> None:
    _load(tmp_path, yaml.safe_dump(document, allow_unicode=True))


@FUZZ_FILES
@given(text=st.text(max_size=300) | st.binary(max_size=300))
@example(text="!!python/object/apply:os.system ['true']\n")
@example(text="%YAML 9.9\n---\na: 1\n")
@example(text="a: &x 1\nb: *y\n")
@example(text=b"id: \xff\xfe\n")
@example(text="\ufeffid: x\n")
def test_random_text(tmp_path: Path, text: str | bytes) -> None:
    _load(tmp_path, text)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path inside nested dicts/lists (the places a mutation can hit)."""
    found = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _paths(value, (*prefix, i))
    return found


def _parent(doc: Any, path: tuple[Any, ...]) -> Any:
    for key in path[:-1]:
        doc = doc[key]
    return doc


@st.composite
def mutated_examples(draw: st.DrawFn) -> str:
    """A valid example schema with 1-4 structural mutations: delete, replace, add, rename."""
    source = draw(st.sampled_from(EXAMPLES))
    doc = yaml.safe_load(source.read_text())
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.sampled_from(_paths(doc)[1:]))
        parent, key = _parent(doc, path), path[-1]
        action = draw(st.sampled_from(["delete", "replace", "add", "rename", "duplicate"]))
        if action == "delete":
            del parent[key]
        elif action == "replace":
            parent[key] = draw(yaml_values)
        elif action == "add" and isinstance(parent, dict):
            parent[draw(yaml_keys)] = draw(yaml_values)
        elif action == "rename" and isinstance(parent, dict):
            parent[draw(yaml_keys)] = parent.pop(key)
        elif action == "duplicate" and isinstance(parent, dict):
            parent[f"{key}_copy" if isinstance(key, str) else key] = copy.deepcopy(parent[key])
    return yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)


@FUZZ_FILES
@given(text=mutated_examples())
def test_mutated_example_schemas(tmp_path: Path, text: str) -> None:
    _load(tmp_path, text)


@st.composite
def text_mutations(draw: st.DrawFn) -> str:
    """An example schema with lines dropped, swapped, re-indented or with bytes spliced in."""
    lines = draw(st.sampled_from(EXAMPLES)).read_text().splitlines()
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(lines) - 1))
        action = draw(st.sampled_from(["drop", "swap", "indent", "dedent", "splice"]))
        if action == "drop":
            del lines[i]
        elif action == "swap":
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif action == "indent":
            lines[i] = "  " + lines[i]
        elif action == "dedent":
            lines[i] = lines[i].lstrip()
        else:
            at = draw(st.integers(0, len(lines[i])))
            junk = draw(st.sampled_from([":", "- ", "&a", "*a", "!!str", "{", "[", "'", '"', "#"]))
            lines[i] = lines[i][:at] + junk + lines[i][at:]
    return "\n".join(lines) + "\n"


@FUZZ_FILES
@given(text=text_mutations())
def test_text_mutated_example_schemas(tmp_path: Path, text: str) -> None:
    _load(tmp_path, text)


def test_examples_load_unchanged(tmp_path: Path) -> None:
    """Control case: the unmutated examples load, so the fuzzers above do reach the checker."""
    for source in EXAMPLES:
        assert isinstance(_load(tmp_path, source.read_text()), MetadataSchema), source


# ------------------------------------------------------------------------------------------------
# Regression tests for what the fuzzers found (all fixed in loader.py)
# ------------------------------------------------------------------------------------------------


def test_unhashable_key_is_a_schema_error(tmp_path: Path) -> None:
    assert isinstance(_load(tmp_path, "? [a, b]\n: 1\n"), SchemaError)


def test_deeply_nested_yaml_is_a_schema_error(tmp_path: Path) -> None:
    assert isinstance(_load(tmp_path, "[" * 5000 + "]" * 5000), SchemaError)


def test_schema_key_with_newline_gives_one_line_error(tmp_path: Path) -> None:
    doc = yaml.safe_load(EXAMPLES[0].read_text())
    doc["variables"]["a\nb"] = {"source": "VALUE", "value": "x", "value_type": "string"}
    _load(tmp_path, yaml.safe_dump(doc))


def _alias_bomb(depth: int) -> str:
    """12 lines of YAML whose aliases expand to 10**depth list items when walked as a tree."""
    lines = ["id: bomb", "name: bomb", "instrument: x", "selector: '*'", "order: 1", "variables:"]
    for i in range(depth):
        items = "x, " * 9 + "x" if i == 0 else ", ".join([f"*a{i - 1}"] * 10)
        lines += [f"  a{i}:", "    source: VALUE", f"    value: &a{i} [{items}]"]
        lines += ["    value_type: list"]
    return "\n".join([*lines, "schema: {}"]) + "\n"


def test_yaml_alias_bomb_is_refused_quickly(tmp_path: Path) -> None:
    """Aliases share nodes, but walking values as trees expands them (depth 9: 10**9 items)."""
    path = tmp_path / "bomb.imsc.yml"
    path.write_text(_alias_bomb(9))
    script = textwrap.dedent(
        f"""
        from scicat_ingestor.schema.loader import load_schema_file
        from scicat_ingestor.schema.model import SchemaError
        try:
            load_schema_file({str(path)!r})
        except SchemaError as err:
            print("refused:", err)
        """
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=20, check=False
        )
    except subprocess.TimeoutExpired:
        pytest.fail("loading a 40-line schema with nested aliases did not finish in 20 s")
    assert done.stdout.startswith("refused:"), done.stdout + done.stderr


def test_yaml_dates_and_odd_scalars_are_refused_or_kept(tmp_path: Path) -> None:
    """YAML turns `2024-01-01` and `yes` into non-strings; identity fields must then be refused."""
    doc = yaml.safe_load(EXAMPLES[0].read_text())
    doc["id"] = dt.date(2024, 1, 1)
    result = _load(tmp_path, yaml.safe_dump(doc))
    assert isinstance(result, SchemaError) and "id" in str(result)
