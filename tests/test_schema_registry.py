"""Live schema reload: all-or-nothing swap, old set kept on a bad file, status, the watch thread."""

from __future__ import annotations

import io
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from scicat_ingestor.commands.validate import validate_schema
from scicat_ingestor.config.model import IngestorConfig, build
from scicat_ingestor.ops.metrics import REGISTRY
from scicat_ingestor.ops.state import ServiceState
from scicat_ingestor.schema.loader import load_all
from scicat_ingestor.schema.model import SchemaError
from scicat_ingestor.schema.registry import SchemaRegistry, fingerprint

CODA = "/ess/data/coda/2024/run-1-small-coda.hdf"
YMIR = "/ess/data/ymir/2024/run-2-small-ymir.hdf"


@pytest.fixture
def schemas(tmp_path: Path, data_dir: Path) -> Path:
    directory = tmp_path / "schemas"
    directory.mkdir()
    for name in ("small-coda.imsc.yml", "small-ymir.imsc.yml"):
        shutil.copy(data_dir / "schemas" / name, directory)
    return directory


def edit(path: Path, change: Callable[[dict[str, object]], None]) -> None:
    """Change a schema file and move its mtime on (a coarse-mtime file system must see it too)."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    bump(path)


def bump(path: Path) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))


def reloads(result: str) -> float:
    value = REGISTRY.get_sample_value("scicat_ingestor_schema_reloads_total", {"result": result})
    return value or 0.0


def selected(registry: SchemaRegistry, path: str) -> str | None:
    schema = registry.current().select(path)
    return None if schema is None else schema.name


def test_first_load_publishes_the_status(schemas: Path) -> None:
    state = ServiceState()
    registry = SchemaRegistry(schemas, state=state)
    status = state.snapshot().schemas
    assert status is not None
    assert status.count == 2
    newest = max(p.stat().st_mtime for p in schemas.iterdir())
    assert status.newest_mtime == newest
    assert status.last_error == ""
    assert registry.status == status


def test_first_load_failure_raises_naming_the_first_bad_file_and_the_count(
    schemas: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (schemas / "a.imsc.yml").write_text("id: [\n", encoding="utf-8")
    (schemas / "b.imsc.yml").write_text("just text\n", encoding="utf-8")
    with pytest.raises(SchemaError) as info:
        SchemaRegistry(schemas)
    assert str(info.value).startswith(f"{schemas / 'a.imsc.yml'}: ")
    assert str(info.value).endswith("(and 1 more)")
    assert str(schemas / "b.imsc.yml") in caplog.text


def test_a_changed_file_is_reloaded_and_a_set_taken_before_keeps_its_schemas(
    schemas: Path,
) -> None:
    registry = SchemaRegistry(schemas)
    before = registry.current()
    assert registry.reload_if_changed() is None  # nothing changed: no reload
    loaded = reloads("loaded")

    edit(schemas / "small-coda.imsc.yml", lambda d: d.update(name="Coda v2"))
    assert registry.reload_if_changed() is True
    assert selected(registry, CODA) == "Coda v2"
    assert reloads("loaded") == loaded + 1
    old = before.select(CODA)
    assert old is not None and old.name != "Coda v2"  # a file in flight finishes with its set


def test_a_broken_file_keeps_the_old_set_names_every_bad_file_and_shows_on_status(
    schemas: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state = ServiceState()
    registry = SchemaRegistry(schemas, state=state)
    failed = reloads("failed")
    edit(schemas / "small-coda.imsc.yml", lambda d: d.update(name="Coda v2"))
    (schemas / "typo.imsc.yml").write_text("id: x\nname: [unclosed\n", encoding="utf-8")
    edit(schemas / "small-ymir.imsc.yml", lambda d: d.pop("selector"))

    with caplog.at_level(logging.ERROR, logger="scicat_ingestor.schema.registry"):
        assert registry.reload_if_changed() is False
    assert selected(registry, CODA) != "Coda v2"  # nothing of the new set is used
    assert len(registry.current().schemas) == 2
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(lines) == 2
    assert any(str(schemas / "typo.imsc.yml") in line for line in lines)
    assert any(f"{schemas / 'small-ymir.imsc.yml'}: selector" in line for line in lines)
    assert all("\n" not in line for line in lines)
    status = state.snapshot().schemas
    assert status is not None
    assert status.count == 2
    assert "typo.imsc.yml" in status.last_error and "small-ymir.imsc.yml" in status.last_error
    assert status.as_json()["last_error_at"] is not None
    assert reloads("failed") == failed + 1

    (schemas / "typo.imsc.yml").unlink()
    edit(schemas / "small-ymir.imsc.yml", lambda d: d.update(selector="filename:contains:ymir"))
    assert registry.reload_if_changed() is True
    assert selected(registry, CODA) == "Coda v2"
    assert registry.status.last_error == ""


def test_a_removed_file_removes_its_selection(schemas: Path) -> None:
    registry = SchemaRegistry(schemas)
    assert selected(registry, YMIR) is not None
    (schemas / "small-ymir.imsc.yml").unlink()
    assert registry.reload_if_changed() is True
    assert selected(registry, YMIR) is None
    assert registry.status.count == 1


def test_a_missing_directory_is_an_error_not_an_empty_set(schemas: Path) -> None:
    registry = SchemaRegistry(schemas)
    moved = schemas.with_name("elsewhere")
    schemas.rename(moved)
    assert registry.reload_if_changed() is False
    assert "schema directory not found" in registry.status.last_error
    assert registry.status.count == 2
    moved.rename(schemas)
    assert registry.reload_if_changed() is True


def test_fingerprint_sees_the_fallback_file_and_ignores_other_files(
    schemas: Path, tmp_path: Path
) -> None:
    fallback = tmp_path / "fallback.imsc.yml"
    shutil.copy(schemas / "small-coda.imsc.yml", fallback)
    first = fingerprint(schemas, str(fallback))
    (schemas / "notes.txt").write_text("not a schema", encoding="utf-8")
    assert fingerprint(schemas, str(fallback)) == first
    bump(fallback)
    assert fingerprint(schemas, str(fallback)) != first


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_the_watch_thread_scans_every_interval(schemas: Path) -> None:
    registry = SchemaRegistry(schemas, interval=0.05).start()
    try:
        edit(schemas / "small-coda.imsc.yml", lambda d: d.update(name="Coda v2"))
        wait_for(lambda: selected(registry, CODA) == "Coda v2")
    finally:
        registry.stop()


def test_with_interval_0_only_a_requested_reload_happens(schemas: Path) -> None:
    registry = SchemaRegistry(schemas, interval=0).start()
    try:
        edit(schemas / "small-coda.imsc.yml", lambda d: d.update(name="Coda v2"))
        time.sleep(0.3)
        assert selected(registry, CODA) != "Coda v2"
        registry.request_reload()
        wait_for(lambda: selected(registry, CODA) == "Coda v2")
    finally:
        registry.stop()


def test_validate_schema_reports_the_errors_a_reload_would(schemas: Path) -> None:
    (schemas / "typo.imsc.yml").write_text("id: x\nname: [unclosed\n", encoding="utf-8")
    edit(schemas / "small-ymir.imsc.yml", lambda d: d.pop("selector"))
    _, errors = load_all(schemas)
    assert len(errors) == 2
    config = build(IngestorConfig, {"ingestion": {"schemas_directory": str(schemas)}}, "test")
    out = io.StringIO()
    assert validate_schema(config, [], None, out) == 1
    failures = [line.strip() for line in out.getvalue().splitlines() if "FAIL" in line]
    assert failures == [f"FAIL  {error}" for error in errors]
