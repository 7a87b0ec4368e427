"""``python -m scicat_ingestor.testing.scicat [--backend 4.5|5] [--port P] [--token T]
[--token-lifetime S] [--idle-timeout S] [--preload N]``: a stand-in on its own, e.g. in another
process for the benchmark."""

from __future__ import annotations

import argparse
import signal
import threading
from types import FrameType

from scicat_ingestor.testing.scicat.backend import (
    DEFAULT_TOKEN,
    IDLE_TIMEOUT_SECONDS,
    TOKEN_TTL_SECONDS,
    SciCatStandIn,
)
from scicat_ingestor.testing.scicat.profiles import BACKENDS, DEFAULT_BACKEND


def main(argv: list[str] | None = None) -> int:
    """Serve a stand-in until SIGINT/SIGTERM; prints its URL (for ``scicat.host``) first."""
    parser = argparse.ArgumentParser(
        prog="python -m scicat_ingestor.testing.scicat",
        description="A SciCat backend stand-in on 127.0.0.1 (in memory, for tests and demos).",
    )
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default=DEFAULT_BACKEND,
        help="the backend version to play: 4.5 (API v3) or 5 (API v3 and v4; default)",
    )
    parser.add_argument("--port", type=int, default=0, help="TCP port (default: any free port)")
    parser.add_argument("--token", default=DEFAULT_TOKEN, help="static bearer token accepted")
    parser.add_argument(
        "--token-lifetime", type=float, default=TOKEN_TTL_SECONDS, help="login tokens' seconds"
    )
    parser.add_argument(
        "--idle-timeout", type=float, default=IDLE_TIMEOUT_SECONDS, help="keep-alive seconds"
    )
    parser.add_argument(
        "--preload",
        type=int,
        default=0,
        metavar="N",
        help="start with N datasets in the store (a filled catalogue, for the benchmark)",
    )
    options = parser.parse_args(argv)
    if options.preload < 0:
        parser.error(f"--preload: {options.preload} is not a number of datasets")
    done = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    with SciCatStandIn(
        port=options.port,
        token=options.token,
        token_lifetime=options.token_lifetime,
        idle_timeout=options.idle_timeout,
        backend=options.backend,
        preload=options.preload,
    ) as standin:
        print(standin.url, flush=True)
        done.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
