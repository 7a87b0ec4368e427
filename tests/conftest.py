"""Test configuration: the harness fixtures ship with the package (``scicat_ingestor.testing``)."""

from pathlib import Path

import pytest

pytest_plugins = ["scicat_ingestor.testing.plugin", "scicat_ingestor.testing.standin_plugin"]

DATA_DIR = Path(__file__).parent / "data"


@pytest.fixture
def data_dir() -> Path:
    """tests/data: sample NeXus files, upstream schemas and config (see PROVENANCE.md)."""
    return DATA_DIR
