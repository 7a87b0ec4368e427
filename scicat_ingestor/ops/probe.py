"""Docker HEALTHCHECK (`python -m scicat_ingestor.ops.probe`): GET the running daemon's `/health`.

The port is not known when the image is built: ``health_check.port`` comes from the mounted
config file or from a ``--health-check.port`` in the container's command. So the daemon
publishes the URL its health endpoint actually bound in a file (:func:`publish_health_url`,
called by ``run``; removed on a clean stop) and the probe reads it. Both sides of that file are
here, so they agree on its place and form. The file is ``$SCICAT_INGESTOR_HEALTH_URL_FILE`` if
set, else ``scicat-ingestor-health.url`` in ``$XDG_RUNTIME_DIR`` if set, else in ``/tmp``
(writable by the image's uid 10001, also with a read-only root and a tmpfs ``/tmp``). Without
the file (the daemon still starting, or it could not write it) the probe asks the default
port. Exit 0 alive, 1 not, with one line on stdout that Docker keeps in ``docker inspect``
(``.State.Health.Log``).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import socket
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from scicat_ingestor.config.model import HealthCheckOptions
from scicat_ingestor.ops.health import local_url

URL_FILE_VARIABLE = "SCICAT_INGESTOR_HEALTH_URL_FILE"
URL_FILE_NAME = "scicat-ingestor-health.url"
DEFAULT_DIRECTORY = Path("/tmp")
DISABLED = "disabled"  # the file's text when health_check.enabled is false
TIMEOUT = 5.0

logger = logging.getLogger("scicat_ingestor.daemon")


class ProbeError(RuntimeError):
    """The endpoint could not be found or did not answer 200; the message says which."""


def url_file(environ: Mapping[str, str] = os.environ) -> Path:
    """Where the daemon publishes its health URL and the probe looks for it."""
    explicit = environ.get(URL_FILE_VARIABLE)
    if explicit:
        return Path(explicit)
    return Path(environ.get("XDG_RUNTIME_DIR") or DEFAULT_DIRECTORY) / URL_FILE_NAME


@dataclass(frozen=True)
class PublishedUrl:
    """A health URL the daemon published: removed again on a clean stop."""

    path: Path
    text: str

    def remove(self) -> None:
        """Remove the file unless another daemon has published its own there since."""
        try:
            if self.path.read_text(encoding="utf-8").strip() == self.text:
                self.path.unlink()
        except OSError:  # gone already, or never readable: nothing of ours to remove
            return


def publish_health_url(url: str | None, path: Path | None = None) -> PublishedUrl | None:
    """Write the health endpoint's base URL (``None``: the endpoint is disabled) for the probe.

    Written whole (a temporary file renamed), so the probe never reads half of it. A file that
    cannot be written is a WARNING, not a failure: the probe then asks the default port.
    """
    target = url_file() if path is None else path
    text = DISABLED if url is None else url
    partial = target.with_name(f".{target.name}.{os.getpid()}")
    try:
        partial.write_text(text + "\n", encoding="utf-8")
        os.replace(partial, target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            partial.unlink()
        logger.warning(
            "health_check: cannot write the health URL for the Docker HEALTHCHECK to %s (%s); "
            "it will ask the default port; set %s to a writable path",
            target,
            exc.strerror or exc,
            URL_FILE_VARIABLE,
        )
        return None
    return PublishedUrl(target, text)


def health_url(path: Path) -> tuple[str | None, str]:
    """The daemon's health base URL (None: disabled) from ``path``, and a note when it is the
    default because the file is missing."""
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        defaults = HealthCheckOptions()
        return local_url(defaults.host, defaults.port), f" (no {path}: the default port)"
    except OSError as exc:
        raise ProbeError(f"cannot read {path}: {exc.strerror or exc}") from None
    if text == DISABLED:
        return None, ""
    if not text.startswith(("http://", "https://")):
        raise ProbeError(f"{path}: not a health URL: {text[:80]!r}")
    return text, ""


def probe(path: Path, timeout: float = TIMEOUT) -> str:
    """GET the daemon's /health; its URL and status when alive, ProbeError otherwise."""
    base, note = health_url(path)
    if base is None:
        return "health endpoint disabled (health_check.enabled: false): nothing to probe"
    url = base + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return f"{url}: {response.status}{note}"
    except urllib.error.HTTPError as exc:
        body = exc.read().decode(errors="replace")
        raise ProbeError(f"{url}: {exc.code} {body}{note}") from None
    except OSError as exc:
        raise ProbeError(f"{url}: not answering ({cause(exc, timeout)}){note}") from None


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


def main(argv: Sequence[str] | None = None) -> int:
    argparse.ArgumentParser(
        prog="python -m scicat_ingestor.ops.probe",
        description="Exit 0 when the running daemon's /health answers 200 (Docker HEALTHCHECK).",
        epilog=f"The daemon's health URL is read from {URL_FILE_VARIABLE}, "
        f"$XDG_RUNTIME_DIR/{URL_FILE_NAME} or {DEFAULT_DIRECTORY / URL_FILE_NAME}.",
    ).parse_args(argv)
    try:
        print(probe(url_file()))
    except ProbeError as exc:
        print(f"unhealthy: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
