"""Pytest fixtures shared by several test modules (a plugin: ``tests/conftest.py`` registers it).

A module that needs a variant defines a fixture of the same name, which wins over these (as
test_jobs does with ``schemas_dir``).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers.daemon_kit import CODA_SCHEMA, YMIR_SCHEMA, Kit, LiveKit, make_kit
from helpers.pipeline import MakePipeline
from scicat_ingestor.config.model import IngestorConfig, SciCatOptions, build
from scicat_ingestor.ingest.pipeline import Pipeline
from scicat_ingestor.schema.loader import load_schemas
from scicat_ingestor.scicat import SciCatClient
from scicat_ingestor.testing.scicat import SciCatStandIn


@pytest.fixture
def tree(tmp_path: Path, data_dir: Path) -> Path:
    """<tmp>/data/{coda,ymir}/raw/*.hdf and the two matching upstream schemas."""
    for name in ("coda", "ymir"):
        raw = tmp_path / "data" / name / "raw"
        raw.mkdir(parents=True)
        shutil.copy(data_dir / f"small-{name}.hdf", raw)
    schemas = tmp_path / "schemas"
    schemas.mkdir()
    for name in ("small-coda", "small-ymir"):
        shutil.copy(data_dir / "schemas" / f"{name}.imsc.yml", schemas)
    return tmp_path


@pytest.fixture
def kit(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Kit]:
    """A ``Kit`` for daemons in this process (on the test's broker); the ones still running are
    stopped at teardown."""
    made = make_kit(request, tmp_path)
    yield made
    for running in made.running:
        if running.code is None:
            running.stop()


@pytest.fixture
def live_kit(request: pytest.FixtureRequest, tmp_path: Path, data_dir: Path) -> Iterator[LiveKit]:
    """A ``LiveKit`` with the coda and ymir schemas in its own directory; its daemon processes
    are killed and its writers closed at teardown."""
    made = LiveKit(**vars(make_kit(request, tmp_path)))
    made.processes, made.writers = [], []
    made.schema_dir.mkdir()
    for name in (CODA_SCHEMA, YMIR_SCHEMA):
        shutil.copy(data_dir / "schemas" / name, made.schema_dir)
    yield made
    for process in made.processes:
        process.kill()
    for writer in made.writers:
        writer.close()


@pytest.fixture
def coda(tmp_path: Path, data_dir: Path) -> Path:
    """small-coda.hdf at <tmp>/data/coda/raw/ (sourceFolder <tmp>/data/coda, side files beside)."""
    target = tmp_path / "data" / "coda" / "raw" / "small-coda.hdf"
    target.parent.mkdir(parents=True)
    shutil.copy(data_dir / "small-coda.hdf", target)
    return target


@pytest.fixture
def schemas_dir(tmp_path: Path, data_dir: Path) -> Path:
    """The schemas ``make_pipeline`` loads: small-coda's."""
    directory = tmp_path / "schemas"
    directory.mkdir()
    shutil.copy(data_dir / "schemas" / "small-coda.imsc.yml", directory)
    return directory


@pytest.fixture
def make_pipeline(
    tmp_path: Path, schemas_dir: Path, scicat_standin: SciCatStandIn
) -> Iterator[MakePipeline]:
    """``make_pipeline(scicat={...}, ingestion={...}, file_handling={...})`` → Pipeline; ``client``
    makes its SciCat client (a subclass that injects a fault at one call)."""
    clients: list[SciCatClient] = []

    def make(
        scicat: dict[str, Any] | None = None,
        ingestion: dict[str, Any] | None = None,
        file_handling: dict[str, Any] | None = None,
        dataset: dict[str, Any] | None = None,
        client: Callable[[SciCatOptions], SciCatClient] = SciCatClient,
    ) -> Pipeline:
        data = {
            "scicat": {
                "host": scicat_standin.url,
                "token": scicat_standin.token,
                "timeout": 2,
                "backoff_factor": 0.01,
                # the faults and answers the pipeline tests expect are v3's;
                # test_scicat_versions covers each version
                "api_version": 3,
                **(scicat or {}),
            },
            "dataset": dataset or {},
            "ingestion": {
                "schemas_directory": str(schemas_dir),
                "file_handling": {
                    "data_directory": str(tmp_path / "data"),
                    **(file_handling or {}),
                },
                **(ingestion or {}),
            },
        }
        config = build(IngestorConfig, data, "test")
        clients.append(client(config.scicat))
        schemas = load_schemas(schemas_dir, config.ingestion.fallback_schema_file_path)
        return Pipeline(config, schemas, clients[-1])

    yield make
    for made in clients:
        made.close()
