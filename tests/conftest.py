"""Test configuration: the harness fixtures ship with the package (``scicat_ingestor.testing``)."""

from pathlib import Path

import pytest

pytest_plugins = ["scicat_ingestor.testing.plugin", "scicat_ingestor.testing.scicat.fixtures"]

DATA_DIR = Path(__file__).parent / "data"


@pytest.fixture
def data_dir() -> Path:
    """tests/data: sample NeXus files, upstream schemas and config (see PROVENANCE.md)."""
    return DATA_DIR


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """tests/container builds and runs the Docker image: only when named (`make container-test`)."""
    container = Path(__file__).parent / "container"
    if collection_path != container:
        return None
    named = (Path(arg.split("::")[0]).resolve() for arg in config.args)
    return not any(path == container or container in path.parents for path in named)
