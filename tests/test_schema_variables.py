"""Variable evaluation: sources, ``<var>`` substitution, failures, SciCat caching, built-ins."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import yaml

from scicat_ingestor.schema.loader import load_schema_file
from scicat_ingestor.schema.model import MetadataSchema
from scicat_ingestor.schema.nexus import NexusReader, open_nexus
from scicat_ingestor.schema.operators import Value
from scicat_ingestor.schema.variables import (
    Builtins,
    VariableResults,
    evaluate_variables,
    name_list,
)


@pytest.fixture(scope="module")
def nexus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("vars") / "run.h5"
    with h5py.File(path, "w") as f:
        e = f.create_group("entry")
        e["title"] = "odin"
        e["run"] = np.array([b"31010"], dtype=h5py.string_dtype())
        e["number"] = np.int64(31010)
        e["temperature"] = 3.5
        e["temperature"].attrs["units"] = "K"
        e["plain"] = 2.0
        e["names"] = np.array([b"a", b"b"], dtype="S1")
        e["one_name"] = np.bytes_(b"solo")
        e["template_text"] = "<title> stays literal"
        e["counts"] = np.array([1, 2, 3])
        for name in ("user_Ann", "user_Bo"):
            e.create_group(name)["name"] = name.removeprefix("user_")
        e["sample/name"] = "A Sample"
        e["experiment_identifier"] = "443503"
    return path


@pytest.fixture
def reader(nexus: Path) -> Iterator[NexusReader]:
    with open_nexus(nexus) as r:
        yield r


def schema(tmp_path: Path, variables: dict[str, Any], **extra: Any) -> MetadataSchema:
    data = {
        "id": "schema-id",
        "name": "test",
        "instrument": "",
        "selector": "*",
        "order": 1,
        "variables": variables,
        "schema": {},
        **extra,
    }
    path = tmp_path / "t.imsc.yml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return load_schema_file(path)[0]


BUILTINS = Builtins(
    data_file_path="/ess/data/coda/2024/443503/raw/run.h5",
    ingestor_files_directory="../ingestor",
    ingestor_run_id="run-1",
    now="2024-01-01T00:00:00+00:00",
)


def no_fetch(url: str) -> Any:
    raise AssertionError(f"unexpected fetch {url}")


def evaluate(
    tmp_path: Path, reader: NexusReader, variables: dict[str, Any], fetch: Any = no_fetch
) -> VariableResults:
    return evaluate_variables(schema(tmp_path, variables), reader, BUILTINS, fetch)


def nxs(path: str, value_type: str = "string", **extra: Any) -> dict[str, Any]:
    return {"source": "NXS", "path": path, "value_type": value_type, **extra}


def val(value: Any, value_type: str = "string", **extra: Any) -> dict[str, Any]:
    return {"source": "VALUE", "value": value, "value_type": value_type, **extra}


def errors(results: VariableResults) -> dict[str, str]:
    return {f.name: f.error for f in results.failures}


def test_builtins(tmp_path: Path, reader: NexusReader) -> None:
    values = evaluate(tmp_path, reader, {}).values
    assert {k: v.value for k, v in values.items()} == {
        "ingestor_run_id": "run-1",
        "data_file_path": "/ess/data/coda/2024/443503/raw/run.h5",
        "data_file_name": "run.h5",
        "now": "2024-01-01T00:00:00+00:00",
        "ingestor_files_directory": "../ingestor",
        "ingestor_metadata_schema_id": "schema-id",
    }


def test_builtin_defaults_are_fresh() -> None:
    a, b = Builtins("/x", "d"), Builtins("/x", "d")
    assert a.ingestor_run_id != b.ingestor_run_id
    assert a.now.endswith("+00:00")


def test_nexus_sources(tmp_path: Path, reader: NexusReader) -> None:
    results = evaluate(
        tmp_path,
        reader,
        {
            "title": nxs("/entry/title"),
            "run": nxs("/entry/run", "integer"),
            "temperature": nxs("/entry/temperature", "float", unit="mK"),
            "plain": nxs("/entry/plain", "float", unit="mm"),
            "counts": nxs("/entry/counts", "integer[]"),
            "one_count": nxs("/entry/number", "integer[]"),
            "users": nxs("/entry/user_*/name", "string[]"),
            "nobody": nxs("/entry/nobody_*/name", "string[]"),
        },
    )
    assert results.failures == ()
    values = results.values
    assert values["title"] == Value("odin")
    assert values["run"] == Value(31010)
    assert values["temperature"] == Value(3.5, "K")  # the file's units attribute wins
    assert values["plain"] == Value(2.0, "mm")  # else the recipe's unit
    assert values["counts"].value == [1, 2, 3]
    assert values["one_count"].value == [31010]
    assert values["users"].value == ["Ann", "Bo"]
    assert values["nobody"].value == []


def test_fix_numeric_dataset_read_as_string(tmp_path: Path, reader: NexusReader) -> None:
    # Upstream: .item().decode() → AttributeError on numbers.
    results = evaluate(tmp_path, reader, {"n": nxs("/entry/number"), "t": nxs("/entry/plain")})
    assert results.values["n"].value == "31010"
    assert results.values["t"].value == "2.0"


def test_fix_string_array_without_wildcard_has_no_bytes_repr(
    tmp_path: Path, reader: NexusReader
) -> None:
    # Upstream gave str(np.bytes_) items: ["b'a'", "b'b'"].
    results = evaluate(
        tmp_path,
        reader,
        {"names": nxs("/entry/names", "string[]"), "one": nxs("/entry/one_name", "string[]")},
    )
    assert results.values["names"].value == ["a", "b"]
    assert results.values["one"].value == ["solo"]


def test_missing_nexus_path_is_a_failure_not_an_abort(tmp_path: Path, reader: NexusReader) -> None:
    results = evaluate(tmp_path, reader, {"gone": nxs("/entry/gone"), "title": nxs("/entry/title")})
    assert errors(results) == {"gone": "/entry/gone: no such dataset"}
    assert results.failures[0].recipe == nxs("/entry/gone")
    assert results.values["title"].value == "odin"
    assert "gone" not in results.values


def test_whole_reference_keeps_type_and_unit(tmp_path: Path, reader: NexusReader) -> None:
    results = evaluate(
        tmp_path,
        reader,
        {
            "t": nxs("/entry/temperature", "float"),
            "same": val("<t>", "float"),
            "text": val("T=<t>", "string"),
            "items": val(["<t>", 1.5], "list"),
            "total": val(["<t>", "<t>"], "float", operator="sum"),
            "mapping": val({"<title>": "<t>", "fixed": "x"}, "dict"),
            "title": nxs("/entry/title"),
        },
    )
    v = results.values
    assert v["same"] == Value(3.5, "K")
    assert v["text"] == Value("T=3.5")
    assert v["items"] == Value([3.5, 1.5])
    assert v["total"] == Value(7.0, "K")
    assert errors(results)["mapping"].startswith("unresolved variable name <title>")


def test_value_unit_falls_back_to_the_recipe(tmp_path: Path, reader: NexusReader) -> None:
    results = evaluate(tmp_path, reader, {"d": val(12, "integer", unit="mm")})
    assert results.values["d"] == Value(12, "mm")


def test_fix_literal_angle_brackets_are_text(tmp_path: Path, reader: NexusReader) -> None:
    # Upstream raised "Unresolved variable" for any text containing '<' and '>'.
    results = evaluate(
        tmp_path, reader, {"cmp": val("a < b > c"), "html": val("<a href> <title> <1x>")}
    )
    assert results.values["cmp"].value == "a < b > c"
    assert errors(results) == {
        "html": "unresolved variable name <title> (not defined before this point)"
    }


def test_fix_substitution_does_not_recurse(tmp_path: Path, reader: NexusReader) -> None:
    # A value that itself contains '<title>' is used as text, never expanded again.
    results = evaluate(
        tmp_path,
        reader,
        {
            "title": nxs("/entry/title"),
            "raw": nxs("/entry/template_text"),
            "combined": val("<raw> / <title>"),
            "self_ref": val("<self_ref>"),
        },
    )
    assert results.values["combined"].value == "<title> stays literal / odin"
    assert errors(results) == {
        "self_ref": "unresolved variable name <self_ref> (not defined before this point)"
    }


def test_reference_to_a_failed_variable_fails_too(tmp_path: Path, reader: NexusReader) -> None:
    results = evaluate(tmp_path, reader, {"gone": nxs("/entry/gone"), "uses": val("x-<gone>")})
    assert errors(results)["uses"] == "unresolved variable name <gone> (that variable failed)"


def test_declaration_order_and_builtins(tmp_path: Path, reader: NexusReader) -> None:
    results = evaluate(
        tmp_path,
        reader,
        {
            "folder": val("<data_file_path>", operator="dirname-2"),
            "name": val("<data_file_name>", operator="to-upper"),
            "folder2": val("<folder>/x"),
            "quoted": val("<title>", operator="urlsafe"),
            "title": val("a b"),
        },
    )
    assert results.values["folder"].value == "/ess/data/coda/2024/443503"
    assert results.values["name"].value == "RUN.H5"
    assert results.values["folder2"].value == "/ess/data/coda/2024/443503/x"
    assert "quoted" in errors(results)  # <title> is declared after it


def test_conversion_failure_is_reported(tmp_path: Path, reader: NexusReader) -> None:
    results = evaluate(tmp_path, reader, {"when": nxs("/entry/title", "date")})
    assert errors(results) == {
        "when": "not an ISO 8601 date/time: 'odin' (expected e.g. 2024-10-28T09:06:41Z)"
    }


class Recorder:
    """A dict-backed SciCat stand-in that counts the GETs it answers."""

    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers = answers
        self.calls: list[str] = []

    def __call__(self, url: str) -> Any:
        self.calls.append(url)
        if url not in self.answers:
            raise LookupError(f"404 for {url}")
        return self.answers[url]


PROPOSAL = {"proposalId": "443503", "pi_firstname": "Pia", "pi_email": "pi@x.org"}


def test_scicat_source(tmp_path: Path, reader: NexusReader) -> None:
    fetch = Recorder({"proposals/443503": PROPOSAL, "instruments?x": [{"id": "i1"}]})
    results = evaluate(
        tmp_path,
        reader,
        {
            "pid": nxs("/entry/experiment_identifier"),
            "first": {"source": "SC", "url": "proposals/<pid>", "field": "pi_firstname",
                      "value_type": "string"},
            "email": {"source": "SC", "url": "proposals/<pid>", "field": "pi_email",
                      "value_type": "email"},
            "whole": {"source": "SC", "url": "proposals/<pid>", "field": "", "value_type": "dict"},
            "typo": {"source": "SC", "url": "proposals/<pid>", "field": ":pi_lastname",
                     "value_type": "string"},
            "listed": {"source": "SC", "url": "instruments?x", "value_type": "list"},
            "bad_field": {"source": "SC", "url": "instruments?x", "field": "id",
                          "value_type": "string"},
            "missing": {"source": "SC", "url": "proposals/1", "field": "x", "value_type": "string"},
        },
        fetch,
    )  # fmt: skip
    v = results.values
    assert v["first"] == Value("Pia")
    assert v["email"] == Value("pi@x.org")
    assert v["whole"].value == PROPOSAL
    assert v["listed"].value == [{"id": "i1"}]
    assert errors(results) == {
        "typo": "field ':pi_lastname' not in SciCat's answer (keys: 'proposalId', 'pi_firstname', "
        "'pi_email')",
        "bad_field": "field 'id': SciCat answered a list, not an object",
        "missing": "404 for proposals/1",
    }


def test_fix_identical_scicat_urls_are_fetched_once(tmp_path: Path, reader: NexusReader) -> None:
    # Upstream sent 3 identical GETs for the fallback schema's pi_* variables.
    fetch = Recorder({"proposals/443503": PROPOSAL})
    sc = {"source": "SC", "url": "proposals/443503", "value_type": "string"}
    evaluate(
        tmp_path,
        reader,
        {
            "a": {**sc, "field": "pi_firstname"},
            "b": {**sc, "field": "pi_email"},
            "c": {**sc, "field": "proposalId"},
            "d": {**sc, "url": "proposals/1"},
            "e": {**sc, "url": "proposals/1"},
        },
        fetch,
    )
    assert fetch.calls == ["proposals/443503", "proposals/1"]


def test_sample_attachment_lookup(tmp_path: Path, reader: NexusReader) -> None:
    url = (
        "samples?filter=%7B%22where%22%3A+%7B%22description%22%3A+%22A+Sample%22%2C+"
        "%22proposalId%22%3A+%22443503%22%7D%7D"
    )
    fetch = Recorder({url: [{"sampleId": "s-1", "description": "A Sample"}]})
    spec = {"query_sample_name": True, "sample_name_path": "/entry/sample/name"}
    results = evaluate_variables(
        schema(tmp_path, {}, sample_attachment=spec), reader, BUILTINS, fetch
    )
    assert results.sample_ids == ("s-1",)


def test_sample_attachment_failure_is_reported(tmp_path: Path, reader: NexusReader) -> None:
    spec = {"query_sample_name": True, "sample_name_path": "/entry/sample/nope"}
    results = evaluate_variables(
        schema(tmp_path, {}, sample_attachment=spec), reader, BUILTINS, Recorder({})
    )
    assert results.sample_ids == ()
    assert errors(results) == {"sample_attachment": "/entry/sample/nope: no such dataset"}


def test_failures_are_one_summary_and_one_debug_line_each(
    tmp_path: Path, reader: NexusReader, caplog: pytest.LogCaptureFixture
) -> None:
    """It warned '2 variables failed ... [{"name": ...}]': a raw JSON list without the file."""
    caplog.set_level(logging.DEBUG, logger="scicat_ingestor")
    evaluate(tmp_path, reader, {"a": nxs("/nope"), "b": nxs("/nope2"), "c": nxs("/entry/title")})
    lines = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert lines == [
        ("DEBUG", "Variable a (NXS) failed: /nope: no such dataset"),
        ("DEBUG", "Variable b (NXS) failed: /nope2: no such dataset"),
        ("WARNING", f"2 variable(s) failed for {reader.path} and were left out: a, b"),
    ]


def test_a_long_failure_list_is_cut_in_the_summary() -> None:
    assert (
        name_list([f"v{i}" for i in range(12)])
        == "v0, v1, v2, v3, v4, v5, v6, v7, v8, v9 and 2 more"
    )
