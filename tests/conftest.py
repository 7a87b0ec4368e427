"""Test configuration: the harness fixtures ship with the package (``scicat_ingestor.testing``);
helpers shared by several test modules live in ``tests/helpers`` (``pythonpath = tests``)."""

from collections.abc import Callable
from pathlib import Path

import pytest

from scicat_ingestor.testing.scicat import SciCatStandIn

# The harness's fixtures, then the ones several test modules share (tests/helpers/fixtures.py).
pytest_plugins = [
    "scicat_ingestor.testing.plugin",
    "scicat_ingestor.testing.scicat.fixtures",
    "helpers.fixtures",
]

DATA_DIR = Path(__file__).parent / "data"


@pytest.fixture
def data_dir() -> Path:
    """tests/data: sample NeXus files, upstream schemas and config (see PROVENANCE.md)."""
    return DATA_DIR


@pytest.fixture
def scicat_standin(
    request: pytest.FixtureRequest, scicat_standin_factory: Callable[..., SciCatStandIn]
) -> SciCatStandIn:
    """The plugin's stand-in, whose backend profile a test may pick with
    ``@pytest.mark.parametrize("scicat_standin", ["4.5", "5"], indirect=True)``."""
    backend: str | None = getattr(request, "param", None)
    return scicat_standin_factory(**({} if backend is None else {"backend": backend}))


_NAMED_ONLY = ("container", "browser")


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """tests/container builds and runs the Docker image, tests/browser drives Chromium: each only
    when named (`make container-test`, `make test-browser`), so `make test` needs neither."""
    folders = [Path(__file__).parent / name for name in _NAMED_ONLY]
    if collection_path not in folders:
        return None
    named = [Path(arg.split("::")[0]).resolve() for arg in config.args]
    return not any(path == collection_path or collection_path in path.parents for path in named)
