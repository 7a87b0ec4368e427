"""``python -m scicat_ingestor.testing.scicat.conformance --backend 4.5|5``: hold the stand-in to
the scenarios recorded from the real servers (``data/conformance/``, run by its own runner).

Two passes, each against a fresh stand-in of that profile: every scenario with the backend's
default token lifetime (the runner skips the expiry scenarios: they need a short one), then the
expiry scenarios against a stand-in whose tokens live ``--token-lifetime`` seconds. The runner's
output is printed as it comes; the exit status is non-zero when any scenario failed.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import cast

from scicat_ingestor.testing.scicat.accounts import DEFAULT_ACCOUNTS
from scicat_ingestor.testing.scicat.backend import TOKEN_TTL_SECONDS, SciCatStandIn
from scicat_ingestor.testing.scicat.messages import JSONDict
from scicat_ingestor.testing.scicat.profiles import BACKENDS, DEFAULT_BACKEND

CONFORMANCE_DIR = Path(__file__).parent.parent / "data" / "conformance"
RUNNER_PATH = CONFORMANCE_DIR / "run.py"
RUNNER_MODULE = "scicat_conformance_run"
SCENARIOS_PATH = CONFORMANCE_DIR / "scenarios.json"
ROLES = ("admin", "ingestor", "creator")  # the runner's accounts, same names here
SHORT_TOKEN_LIFETIME = 1.0  # seconds: each expiry scenario waits lifetime + 1.5 s once

logger = logging.getLogger("scicat_ingestor.testing.scicat")


@dataclass(frozen=True)
class Pass:
    """One run of the runner: which stand-in, which scenarios (None: all of the profile's)."""

    name: str
    token_lifetime: float | None  # None: the stand-in's default
    only: tuple[str, ...] | None


@functools.cache
def _runner() -> ModuleType:
    """The recorded runner, loaded from its file (it is data, not a package module)."""
    spec = importlib.util.spec_from_file_location(RUNNER_MODULE, RUNNER_PATH)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"{RUNNER_PATH}: cannot load the conformance runner")
    module = importlib.util.module_from_spec(spec)
    sys.modules[RUNNER_MODULE] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _expiry(backend: str) -> list[JSONDict]:
    scenarios = json.loads(SCENARIOS_PATH.read_text(encoding="utf-8"))
    return [
        s
        for s in scenarios
        if backend in s["backends"] and "token_lifetime_max" in s.get("needs", {})
    ]


def expiry_scenarios(backend: str) -> tuple[str, ...]:
    """The ids of the profile's scenarios that need an expired token (a short lifetime)."""
    return tuple(s["id"] for s in _expiry(backend))


def longest_expiry_lifetime(backend: str) -> float:
    """The longest token lifetime under which the runner plays every expiry scenario."""
    return min(float(s["needs"]["token_lifetime_max"]) for s in _expiry(backend))


def passes(backend: str, token_lifetime: float) -> tuple[Pass, ...]:
    return (
        Pass("all scenarios", None, None),
        Pass("expiry scenarios", token_lifetime, expiry_scenarios(backend)),
    )


def run_pass(backend: str, run: Pass) -> int:
    """Start a stand-in for this pass, run the runner against it; the runner's exit status."""
    main = cast(Callable[[list[str]], int], _runner().main)
    lifetime = TOKEN_TTL_SECONDS if run.token_lifetime is None else run.token_lifetime
    accounts = ",".join(f"{r}={r}:{DEFAULT_ACCOUNTS[r].password}" for r in ROLES)
    with SciCatStandIn(backend=backend, token_lifetime=lifetime) as standin:
        base_url = standin.api_url
        argv = ["--base-url", base_url, "--backend", backend, "--accounts", accounts]
        if run.token_lifetime is not None:
            argv += ["--token-lifetime", f"{run.token_lifetime:g}"]
        if run.only is not None:
            argv += ["--only", *run.only]
        print(f"== backend {backend}: {run.name} ({base_url})", flush=True)
        return main(argv)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m scicat_ingestor.testing.scicat.conformance",
        description="Run the recorded SciCat conformance scenarios against the stand-in.",
    )
    parser.add_argument("--backend", choices=BACKENDS, default=DEFAULT_BACKEND)
    parser.add_argument(
        "--token-lifetime",
        type=float,
        default=SHORT_TOKEN_LIFETIME,
        help="token seconds of the expiry pass' stand-in (the scenarios need at most 5)",
    )
    options = parser.parse_args(argv)
    limit = longest_expiry_lifetime(options.backend)
    if not 0 < options.token_lifetime <= limit:
        # Longer, and the runner would skip the expiry scenarios instead of running them.
        parser.error(f"--token-lifetime must be > 0 and <= {limit:g} s")
    logging.basicConfig(level=logging.WARNING)
    results = [
        run_pass(options.backend, run) for run in passes(options.backend, options.token_lifetime)
    ]
    return 1 if any(results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
