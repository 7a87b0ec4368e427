"""Browser tests (``make test-browser``): the status page in headless Debian Chromium."""

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "browser: loads pages in headless Chromium (make test-browser)"
    )
