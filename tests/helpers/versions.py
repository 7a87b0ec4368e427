"""The SciCat versions the ingestor supports, as a parametrization."""

import pytest

# Every supported (stand-in backend profile, scicat.api_version); for tests that take the
# ``scicat_standin`` fixture (tests/conftest.py) and an ``api_version`` argument.
VERSIONS = pytest.mark.parametrize(
    ("scicat_standin", "api_version"),
    [
        pytest.param("4.5", 3, id="4.5-v3"),
        pytest.param("5", 3, id="5-v3"),
        pytest.param("5", 4, id="5-v4"),
    ],
    indirect=["scicat_standin"],
)
