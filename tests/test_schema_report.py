"""``validate-schema``: exit codes and what instrument scientists get to read."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from scicat_ingestor.commands.validate import NOT_FETCHED, validate_schema
from scicat_ingestor.config.model import DatasetOptions, IngestionOptions, IngestorConfig

DATA = Path(__file__).parent / "data"
SCHEMAS = DATA / "schemas"


def config(directory: Path = SCHEMAS, fallback: str = "") -> IngestorConfig:
    return IngestorConfig(
        ingestion=IngestionOptions(
            schemas_directory=str(directory), fallback_schema_file_path=fallback
        ),
        dataset=DatasetOptions(),
    )


def run(
    cfg: IngestorConfig,
    paths: list[str] | None = None,
    nexus: str | None = None,
    fetch: Any = None,
) -> tuple[int, str]:
    out = io.StringIO()
    code = validate_schema(cfg, paths or [], nexus, out, fetch=fetch)
    return code, out.getvalue()


def fetch(url: str) -> Any:
    if url.startswith("instruments?"):
        return [{"id": "instrument-odin"}]
    if url == "proposals/443503":
        return {"pi_firstname": "Pia", "pi_lastname": "Inv", "pi_email": "pi@x.org"}
    raise LookupError(f"404 for {url}")


def test_configured_directory_is_valid() -> None:
    code, text = run(config(fallback="ess-fallback"))
    assert code == 0
    assert text.count("  OK    ") == 8  # 7 files + the packaged fallback
    assert "warning: schema.instrument_id.value: 'instrument_id' is literal text" in text
    assert "loki.imsc.yml: selector: never selected" in text
    assert "no errors" in text


def test_fix_validator_accepts_the_star_selector() -> None:
    # Upstream's validator demanded 3 ':'-parts and so rejected its own fallback schema.
    code, text = run(config(), [str(SCHEMAS / "ess-fallback.imsc.yml")])
    assert code == 0
    assert "selector '*'" in text


def test_invalid_file_fails_with_its_reason(tmp_path: Path) -> None:
    shutil.copy(SCHEMAS / "small-coda.imsc.yml", tmp_path / "good.imsc.yml")
    bad = tmp_path / "bad.imsc.yml"
    text = (SCHEMAS / "small-ymir.imsc.yml").read_text(encoding="utf-8")
    bad.write_text(text.replace("operator: str-replace", "operator: str-replase"), "utf-8")
    code, out = run(config(tmp_path))
    assert code == 1
    assert f"  FAIL  {bad}: variables.source_folder.operator: unknown operator 'str-replase'" in out
    assert f"  OK    {tmp_path / 'good.imsc.yml'}" in out


def test_duplicate_ids_across_files_fail(tmp_path: Path) -> None:
    shutil.copy(SCHEMAS / "small-coda.imsc.yml", tmp_path / "a.imsc.yml")
    shutil.copy(SCHEMAS / "small-coda.imsc.yml", tmp_path / "b.imsc.yml")
    code, out = run(config(tmp_path))
    assert code == 1
    assert "duplicate id '628b28d6-9c26-11ef-948d-0b2d405fc82f'" in out


def test_missing_path_and_bad_fallback_fail(tmp_path: Path) -> None:
    code, out = run(config(tmp_path, fallback="nope.yml"), [str(tmp_path / "nope")])
    assert code == 1
    assert "no such file or directory" in out
    assert "FAIL  fallback: nope.yml: fallback schema file not found" in out


def test_single_file_with_another_name_gets_a_note(tmp_path: Path) -> None:
    path = tmp_path / "draft.yml"
    shutil.copy(SCHEMAS / "small-coda.imsc.yml", path)
    code, out = run(config(), [str(path)])
    assert code == 0
    assert "the ingestor only loads files ending in .imsc.yml" in out


def test_nexus_file_shows_schema_variables_and_payload() -> None:
    code, out = run(config(), nexus=str(DATA / "small-coda.hdf"), fetch=fetch)
    assert code == 0
    assert "selected schema 'Test Coda Metadata Schema'" in out
    assert '  pi_firstname                   = "Pia"' in out
    assert "  run_number                     = 31010" in out
    assert "  pid: 20.500.12269/f22acb1c-950b-11ef-a3ef-fa163e9aae0a" in out
    assert "  principalInvestigator: Pia Inv" in out
    assert "MISSING" not in out


def test_without_scicat_sc_variables_are_not_fetched() -> None:
    code, out = run(config(), nexus=str(DATA / "small-coda.hdf"))
    assert code == 0
    assert f"  pi_firstname                   FAILED: {NOT_FETCHED}" in out
    assert "MISSING mandatory fields: ownerEmail, owner, contactEmail, principalInvestigator" in out
    assert "SciCat was not asked" in out


def test_missing_mandatory_with_scicat_fails() -> None:
    code, out = run(config(), nexus=str(DATA / "small-ymir.hdf"), fetch=fetch)
    assert code == 1
    assert "FAILED: 404 for proposals/876380" in out
    assert "MISSING mandatory fields:" in out


def test_unreadable_nexus_file_fails(tmp_path: Path) -> None:
    code, out = run(config(), nexus=str(tmp_path / "small-coda.hdf"))
    assert code == 1
    assert "file not found" in out


def test_no_matching_schema_without_fallback_fails(tmp_path: Path) -> None:
    shutil.copy(SCHEMAS / "small-ymir.imsc.yml", tmp_path / "ymir.imsc.yml")
    code, out = run(config(tmp_path), nexus=str(DATA / "small-coda.hdf"))
    assert code == 1
    assert "no metadata schema matches this file and no fallback schema is configured" in out


def test_fallback_is_selected_when_nothing_matches(tmp_path: Path) -> None:
    shutil.copy(SCHEMAS / "small-ymir.imsc.yml", tmp_path / "ymir.imsc.yml")
    code, out = run(
        config(tmp_path, "ess-fallback"), nexus=str(DATA / "small-coda.hdf"), fetch=fetch
    )
    assert "selected schema 'Fall Back Metadata Schema'" in out
    assert code == 0


def test_preview_lists_only_the_selected_schemas_warnings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """It re-listed every schema with all its warnings first (106 lines for one file)."""
    monkeypatch.chdir(DATA)
    out = io.StringIO()
    code = validate_schema(config(), [], "small-coda.hdf", out, fetch=fetch)  # relative path
    text = out.getvalue()
    assert code == 0, text
    assert "  OK    " not in text and "loki.imsc.yml" not in text
    assert text.startswith("Schema files: 7 valid (--all lists each with its warnings)\n")
    assert f"NeXus file {DATA / 'small-coda.hdf'}\n" in text
    assert "    warning: schema.instrument_id.value: 'instrument_id' is literal text" in text
    out = io.StringIO()
    validate_schema(config(), [], "small-coda.hdf", out, fetch=fetch, show_all=True)
    assert out.getvalue().count("  OK    ") == 7


def test_missing_mandatory_fields_fail_the_preview_without_scicat(tmp_path: Path) -> None:
    """It exited 0 although ingesting the file would fail on the missing fields."""
    schema = yaml.safe_load((SCHEMAS / "small-coda.imsc.yml").read_text(encoding="utf-8"))
    del schema["schema"]["dataset_name"]
    (tmp_path / "coda.imsc.yml").write_text(yaml.safe_dump(schema, sort_keys=False), "utf-8")
    code, out = run(config(tmp_path), nexus=str(DATA / "small-coda.hdf"))
    assert code == 1, out
    assert "  FAIL  ingesting this file would fail: no datasetName\n" in out
    assert "SciCat was not asked, so contactEmail, owner, ownerEmail, principalInvestigator" in out


def test_preview_on_the_command_line_prints_no_raw_warning_lists(tmp_path: Path) -> None:
    """The pipeline's warnings ('6 variables failed ... [{"name": ...}]') came on top of the
    preview, which lists every failure itself."""
    cfg = tmp_path / "c.yml"
    cfg.write_text(f"ingestion:\n  schemas_directory: {SCHEMAS}\n")
    command = [sys.executable, "-m", "scicat_ingestor", "validate-schema", "-c", str(cfg)]
    done = subprocess.run(
        [*command, "--nexus-file", "small-coda.hdf"],
        cwd=DATA,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stderr == ""
    assert "  pi_firstname                   FAILED: not fetched (no SciCat)" in done.stdout
