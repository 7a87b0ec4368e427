"""Docker HEALTHCHECK (`python -m scicat_ingestor.ops.probe`): GET the running daemon's `/health`.

The port is not known when the image is built: ``health_check.port`` comes from the mounted
config file or from a ``--health-check.port`` in the container's command. So the probe finds the
daemon process (``python -m scicat_ingestor run ...``, or the ``scicat-ingestor`` /
``scicat_ingestor`` scripts), parses its command line with the real parser, loads the same config
file with the same overrides, and asks ``/health`` there. Exit 0 alive, 1 not, with one line on
stdout that Docker keeps in ``docker inspect`` (``.State.Health.Log``).
"""

from __future__ import annotations

import argparse
import socket
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from scicat_ingestor.cli import collect_overrides, parse_command_line, with_subcommand
from scicat_ingestor.config import ConfigError, HealthCheckOptions, load_config
from scicat_ingestor.ops.health import local_url

PROC = Path("/proc")
TIMEOUT = 5.0
_SCRIPTS = {"scicat-ingestor", "scicat_ingestor"}


class ProbeError(RuntimeError):
    """The daemon or its endpoint could not be found; the message says which."""


def daemon_arguments(cmdline: Sequence[str]) -> list[str] | None:
    """The CLI arguments of a daemon process's command line (``run ...``), None for any other."""
    for index, word in enumerate(cmdline):
        if word == "-m" and cmdline[index + 1 : index + 2] == ["scicat_ingestor"]:
            rest = cmdline[index + 2 :]
            break
        if Path(word).name in _SCRIPTS:
            rest = cmdline[index + 1 :]
            break
    else:
        return None
    argv = with_subcommand(rest)
    return argv if argv[:1] == ["run"] else None


def find_daemon(proc: Path = PROC) -> tuple[Path, list[str]]:
    """The lowest-numbered daemon process: its /proc directory and CLI arguments."""
    pids = sorted(int(entry.name) for entry in proc.iterdir() if entry.name.isdigit())
    for pid in pids:
        try:
            raw = (proc / str(pid) / "cmdline").read_bytes()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        argv = daemon_arguments([part.decode(errors="replace") for part in raw.split(b"\0")[:-1]])
        if argv is not None:
            return proc / str(pid), argv
    raise ProbeError("no scicat-ingestor daemon process found")


def health_options(argv: Sequence[str], cwd: Path) -> HealthCheckOptions:
    """The health_check section the daemon with these arguments (started in ``cwd``) uses."""
    try:
        args = parse_command_line(argv)
    except SystemExit:
        raise ProbeError(f"cannot parse the daemon's arguments: {' '.join(argv)}") from None
    config_file = cwd / args.config_file
    try:
        return load_config(config_file, collect_overrides(args)).health_check
    except (ConfigError, OSError) as exc:
        raise ProbeError(f"cannot read the daemon's configuration: {exc}") from None


def probe(proc: Path = PROC, timeout: float = TIMEOUT) -> str:
    """GET the daemon's /health; its URL and status when alive, ProbeError otherwise."""
    process, argv = find_daemon(proc)
    options = health_options(argv, process / "cwd")
    if not options.enabled:
        return "health endpoint disabled (health_check.enabled: false): nothing to probe"
    url = local_url(options.host, options.port) + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return f"{url}: {response.status}"
    except urllib.error.HTTPError as exc:
        raise ProbeError(f"{url}: {exc.code} {exc.read().decode(errors='replace')}") from None
    except OSError as exc:
        raise ProbeError(f"{url}: not answering ({cause(exc, timeout)})") from None


def cause(exc: OSError, timeout: float) -> str:
    """Why a request got no answer, in plain words (not ``<urlopen error [Errno 111] ...>``)."""
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused: nothing listens on that port"
    if isinstance(reason, TimeoutError | socket.timeout):
        return f"no answer within {timeout:g} s"
    if isinstance(reason, socket.gaierror):
        return f"host name not found: {reason.strerror or reason}"
    if isinstance(reason, OSError):
        return reason.strerror or str(reason)
    return str(reason)


def main(argv: Sequence[str] | None = None, proc: Path = PROC) -> int:
    argparse.ArgumentParser(
        prog="python -m scicat_ingestor.ops.probe",
        description="Exit 0 when the running daemon's /health answers 200 (Docker HEALTHCHECK).",
    ).parse_args(argv)
    try:
        print(probe(proc))
    except ProbeError as exc:
        print(f"unhealthy: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
