"""Condition waits: poll until something holds, fail with what was awaited."""

import time
from collections.abc import Callable

WAIT = 60.0  # seconds: the default patience of a wait (a loaded CI machine is slow)


def wait_until(condition: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    """Return as soon as ``condition()`` holds; ``AssertionError`` naming ``what`` after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
