"""The documentation: reference pages generated from the code, the README, the minimal config.

The generator (docs/hooks/reference.py, an mkdocs hook) is imported directly, so these tests run
without mkdocs; ``make docs`` then builds the site with ``--strict``.
"""

import argparse
import dataclasses
import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from scicat_ingestor import __version__
from scicat_ingestor.commands import cli
from scicat_ingestor.config.model import (
    SECRET_ENV_VARS,
    IngestorConfig,
    iter_leaf_fields,
    load_config,
)
from scicat_ingestor.ops import metrics

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docs_reference", DOCS / "hooks" / "reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it is executed
    spec.loader.exec_module(module)
    return module


reference = _load_generator()


# ------------------------------------------------------------------------------------------------
# Configuration keys
# ------------------------------------------------------------------------------------------------


def test_config_reference_lists_exactly_the_keys_the_loader_accepts() -> None:
    text = reference.config_reference()
    documented: set[str] = set()
    section: str | None = None  # None: before the first section (the environment table)
    for line in text.splitlines():
        if line.startswith("### "):
            heading = line.removeprefix("### ").strip("`")
            section = "" if heading == "Top level" else heading + "."
        elif section is not None and line.startswith("| `"):
            documented.add(section + line.split("|")[1].strip().strip("`"))
    accepted = {key for key, _tp, _default in iter_leaf_fields()}
    assert documented == accepted


def test_every_config_key_can_be_loaded_by_its_documented_name(tmp_path: Path) -> None:
    """The documented dotted names are real: each one, set to its default, loads."""
    for row in reference.config_keys():
        data: dict[str, object] = {}
        node = data
        *parents, leaf = row.key.split(".")
        for part in parents:
            node = node.setdefault(part, {})  # type: ignore[assignment]
        node[leaf] = yaml.safe_load(row.default) if row.default else ""
        path = tmp_path / "c.yml"
        path.write_text(yaml.safe_dump(data))
        load_config(path, environ={})


def test_config_rows_carry_type_allowed_values_default_and_origin() -> None:
    rows = {row.key: row for row in reference.config_keys()}
    workers = rows["ingestion.max_offline_ingestors"]
    assert (workers.type, workers.allowed, workers.default, workers.origin) == (
        "integer",
        "an integer >= 1",
        "10",
        "ESS",
    )
    assert rows["ingestion.queue_size"].origin == "new"
    assert rows["kafka.sasl_password"].type == "string (secret)"
    assert "blake2b" in rows["ingestion.file_handling.file_hash_algorithm"].allowed
    assert rows["run_start_message_file"].origin == "ESS"


def test_a_section_table_lists_that_sections_keys_for_its_operator_page() -> None:
    text = reference.config_section_reference("logging")
    keys = [k for k, _tp, _d in iter_leaf_fields() if k.startswith("logging.")]
    assert keys
    for key in keys:
        assert f"| `{key.removeprefix('logging.')}` |" in text
    with pytest.raises(reference.ReferenceError, match="no configuration section 'logg'"):
        reference.config_section_reference("logg")


def test_secret_environment_variables_are_in_the_config_reference() -> None:
    text = reference.config_reference()
    for variable, key in SECRET_ENV_VARS.items():
        assert f"| `{variable}` | `{'.'.join(key)}` |" in text


@dataclasses.dataclass(frozen=True)
class _Undocumented:
    # The comment above a field is its meaning when the notes have none.
    commented: int = 1
    bare: int = 2


def test_a_key_without_a_meaning_fails_the_build() -> None:
    with pytest.raises(reference.ReferenceError, match="no meaning for bare"):
        reference.config_keys(_Undocumented, notes={})


def test_a_field_comment_is_the_meaning_when_there_is_no_note() -> None:
    rows = reference.config_keys(_Undocumented, notes={"bare": "documented here"})
    assert [r.meaning for r in rows] == [
        "The comment above a field is its meaning when the notes have none.",
        "documented here",
    ]


def test_a_note_for_a_key_the_code_does_not_have_fails_the_build() -> None:
    notes = {"commented": "x", "bare": "y", "gone": "z"}
    with pytest.raises(reference.ReferenceError, match="does not have: gone"):
        reference.config_keys(_Undocumented, notes=notes)


def test_every_documented_config_key_has_a_meaning() -> None:
    assert all(row.meaning for row in reference.config_keys(IngestorConfig))


# ------------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------------


def _parsers() -> list[argparse.ArgumentParser]:
    main = cli.build_parser()
    subs = next(
        a for a in main._actions if isinstance(a, argparse._SubParsersAction)
    ).choices.values()
    return [main, *subs, cli.build_online_alias_parser(), cli.build_offline_alias_parser()]


def test_cli_reference_lists_every_command_and_option() -> None:
    text = reference.cli_reference()
    for name in cli.SUBCOMMANDS:
        assert f"### `scicat-ingestor {name}`" in text
    for parser in _parsers():
        for action in parser._actions:
            shown = action.help != argparse.SUPPRESS
            for option in action.option_strings if shown else ():
                assert f"`{option}`" in text, option


def test_cli_reference_lists_every_override_flag() -> None:
    text = reference.cli_reference()
    hidden = {
        option
        for action in cli.build_online_alias_parser()._actions
        if action.help == argparse.SUPPRESS
        for option in action.option_strings
    }
    assert hidden
    for option in hidden:
        flag = option.removeprefix("--no-") if option.startswith("--no-") else option
        assert re.search(re.escape(flag.removeprefix("--")) + r"\b", text), option


# ------------------------------------------------------------------------------------------------
# Metrics and modules
# ------------------------------------------------------------------------------------------------


def test_metrics_reference_lists_every_registered_metric() -> None:
    text = reference.metrics_reference()
    families = list(metrics.REGISTRY.collect())
    assert families
    for family in families:
        scraped = family.name + ("_total" if family.type == "counter" else "")
        assert f"| `{scraped}` | {family.type} |" in text


def test_architecture_lists_every_module() -> None:
    text = reference.modules_reference()
    package = ROOT / "scicat_ingestor"
    for path in package.rglob("*.py"):
        relative = path.relative_to(package).as_posix()
        if not relative.startswith("testing/data/"):
            assert f"| `{relative}` |" in text


# ------------------------------------------------------------------------------------------------
# README, site pages, minimal config, version
# ------------------------------------------------------------------------------------------------


def test_readme_fits_on_a_few_screens_and_its_links_resolve() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 200
    for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", readme):
        assert (ROOT / target).exists(), target


def test_every_page_in_the_nav_exists_or_is_reserved() -> None:
    text = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    pages = re.findall(r"([\w/-]+\.md)$", text, flags=re.M)
    assert len(pages) > 20
    missing = [p for p in pages if not (DOCS / p).exists()]
    assert set(missing) <= {"operator/scicat.md", "operator/status-page.md"}


def test_minimal_config_loads_and_sets_only_what_production_needs() -> None:
    path = ROOT / "config" / "production.example.yml"
    config = load_config(path, environ={"SCICAT_USERNAME": "ingestor", "SCICAT_PASSWORD": "pw"})
    assert config.scicat.host.startswith("https://")
    assert config.kafka.security_protocol == "sasl_ssl"
    assert config.ingestion.dead_letter.file
    assert config.scicat.password.value == "pw"
    text = path.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 40
    assert "password" not in yaml.safe_load(text).get("scicat", {})


def test_readme_shows_the_minimal_config_as_it_is() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    shown = readme.split("```yaml\n", 1)[1].split("```", 1)[0]
    minimal = (ROOT / "config" / "production.example.yml").read_text(encoding="utf-8")
    body = "\n".join(line for line in minimal.splitlines() if not line.startswith("#")).strip()
    assert shown.strip() == body


def test_the_example_schema_previews_the_sample_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """docs/schemas.md's complete example selects the CODA sample and builds a whole dataset."""
    schemas = tmp_path / "schemas"
    schemas.mkdir()
    example = schemas / "example.imsc.yml"
    example.write_text((DOCS / "examples" / "example.imsc.yml").read_text(encoding="utf-8"))
    data = ROOT / "scicat_ingestor" / "testing" / "data"
    code = cli.main(
        [
            "validate-schema",
            "-c",
            str(ROOT / "config" / "demo.yml"),
            "--ingestion.schemas-directory",
            str(schemas),
            "--ingestion.file-handling.data-directory",
            str(data),
            "--nexus-file",
            str(data / "small-coda.hdf"),
            str(example),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "selected schema 'Example schema (CODA)'" in out
    assert "MISSING" not in out
    assert "accessGroups:\n  - proposal_443503\n  - instrument_coda" in out


def test_version_comes_from_the_installed_metadata() -> None:
    from importlib.metadata import version

    assert __version__ == version("scicat-ingestor")
    assert re.match(r"\d+\.\d+", __version__)
