"""Deployment files, checked without Docker or systemd: Dockerfile, unit file, sample config.

These check the facts that can be checked from the files: the user, the exec-form entry point,
that CMD and ExecStart parse with the real command line, the HEALTHCHECK's probe, the volume for
side files, and that the stop timeouts leave room for the drain grace period. The image itself is
built and run by `make container-test` (tests/container/).
"""

from __future__ import annotations

import configparser
import dataclasses
import fnmatch
import importlib.util
import json
import os
import re
from pathlib import Path

import pytest

from scicat_ingestor.commands.cli import EXIT_USAGE, build_parser
from scicat_ingestor.config.flags import collect_overrides
from scicat_ingestor.config.model import (
    FileHandlingOptions,
    HealthCheckOptions,
    IngestorConfig,
    iter_leaf_fields,
    load_config,
    read_config_file,
)

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = (ROOT / "config" / "config.sample.yml", ROOT / "config" / "demo.yml")


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with comments dropped and continuation lines joined."""
    result: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, rest = (pending + line).partition(" ")
        result.append((keyword.upper(), rest.strip()))
        pending = ""
    return result


@pytest.fixture(scope="module")
def dockerfile() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for keyword, rest in instructions(ROOT / "Dockerfile"):
        found.setdefault(keyword, []).append(rest)
    return found


def exec_form(text: str) -> list[str]:
    value = json.loads(text)
    assert isinstance(value, list)
    assert all(isinstance(item, str) for item in value)
    return value


def test_base_image_is_slim_python_311(dockerfile: dict[str, list[str]]) -> None:
    """python:3.11-slim unless BASE_IMAGE names docker/base-image.sh's stand-in for it."""
    assert dockerfile["ARG"][0] == "BASE_IMAGE=python:3.11-slim"
    assert dockerfile["FROM"] == ["${BASE_IMAGE}"]


def test_runs_as_non_root(dockerfile: dict[str, list[str]]) -> None:
    user = dockerfile["USER"][-1].split(":")[0]
    assert user not in {"root", "0", ""}


def test_entrypoint_exec_form_and_cmd_parses_with_the_real_cli(
    dockerfile: dict[str, list[str]],
) -> None:
    """Exec form makes python PID 1, so `docker stop`'s SIGTERM reaches our handler."""
    assert exec_form(dockerfile["ENTRYPOINT"][-1]) == ["python", "-m", "scicat_ingestor"]
    args = build_parser().parse_args(exec_form(dockerfile["CMD"][-1]))
    assert args.command == "run"
    assert args.config_file == "/config/config.yml"
    assert collect_overrides(args) == {"health_check.host": "0.0.0.0"}
    assert dockerfile["STOPSIGNAL"] == ["SIGTERM"]


def test_expose_matches_the_health_port(dockerfile: dict[str, list[str]]) -> None:
    assert dockerfile["EXPOSE"] == [str(HealthCheckOptions().port)]


def healthcheck_command(dockerfile: dict[str, list[str]]) -> list[str]:
    (text,) = dockerfile["HEALTHCHECK"]
    options, _, command = text.partition("CMD ")
    assert "--interval=" in options
    assert "--timeout=" in options
    return exec_form(command)


def test_healthcheck_follows_the_configured_port(dockerfile: dict[str, list[str]]) -> None:
    """It probed 8080 whatever health_check.port said; the probe reads the daemon's own config.

    tests/test_probe.py runs the probe against a live endpoint; tests/container runs the image.
    """
    command = healthcheck_command(dockerfile)
    assert command == ["python", "-m", "scicat_ingestor.ops.probe"]
    assert importlib.util.find_spec(command[2]) is not None
    assert str(HealthCheckOptions().port) not in " ".join(command)


def test_side_files_of_a_file_directly_in_data_go_to_a_volume_the_user_owns(
    dockerfile: dict[str, list[str]],
) -> None:
    """`-v /data:/data`: the default ../ingestor of /data/f.hdf is /ingestor (was not writable)."""
    default = FileHandlingOptions().ingestor_files_directory
    side_files = os.path.normpath(os.path.join("/data", default))
    assert side_files == "/ingestor"
    assert side_files in json.loads(dockerfile["VOLUME"][-1])
    user = dockerfile["USER"][-1]
    chowns = [run for run in dockerfile["RUN"] if f"chown {user} " in run]
    assert any(side_files in run.partition(f"chown {user} ")[2].split() for run in chowns)


def test_copied_sources_exist_and_are_not_dockerignored(dockerfile: dict[str, list[str]]) -> None:
    ignored = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for copy in dockerfile["COPY"]:
        *sources, _dest = copy.split()
        for source in sources:
            assert (ROOT / source).exists(), source
            assert not any(fnmatch.fnmatch(source, pattern) for pattern in ignored), source


# --- systemd unit -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(ROOT / "config" / "scicat-ingestor.service")
    return parser


def seconds(value: str) -> float:
    """systemd time span ('90', '90s', '1min 30s') → seconds."""
    units = {"": 1, "s": 1, "sec": 1, "min": 60, "m": 60, "h": 3600}
    total = 0.0
    for number, unit_name in re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", value):
        total += float(number) * units[unit_name]
    return total


def test_unit_restarts_on_failure_but_not_on_bad_config(unit: configparser.ConfigParser) -> None:
    service = unit["Service"]
    assert service["Restart"] == "on-failure"
    assert service["RestartPreventExitStatus"] == str(EXIT_USAGE)
    assert service["KillSignal"] == "SIGTERM"
    assert service["EnvironmentFile"].startswith("/")
    assert service["User"] not in {"root", "0"}


def test_unit_stop_timeout_exceeds_every_drain_grace_period(
    unit: configparser.ConfigParser,
) -> None:
    graces = [IngestorConfig().ingestion.drain_grace_period]
    graces += [load_config(path, environ={}).ingestion.drain_grace_period for path in CONFIGS]
    # Room after the grace period for the final commit and leaving the consumer group.
    assert seconds(unit["Service"]["TimeoutStopSec"]) >= max(graces) + 10


def test_unit_exec_start_parses_with_the_real_cli(unit: configparser.ConfigParser) -> None:
    program, *argv = unit["Service"]["ExecStart"].split()
    assert program.endswith("/scicat-ingestor")
    args = build_parser().parse_args(argv)
    assert args.command == "run"
    assert args.config_file.startswith("/etc/")


def test_unit_uses_static_membership_named_after_the_host(unit: configparser.ConfigParser) -> None:
    _, *argv = unit["Service"]["ExecStart"].split()
    assert collect_overrides(build_parser().parse_args(argv))["kafka.group_instance_id"] == "%H"


# --- the annotated sample configuration ---------------------------------------------------------


def test_sample_config_documents_exactly_the_defaults() -> None:
    """Like upstream's sync test: the sample must change when a default changes."""
    path = ROOT / "config" / "config.sample.yml"
    loaded = load_config(path, environ={})
    assert dataclasses.replace(loaded, config_file="") == IngestorConfig()


def test_sample_config_lists_every_key() -> None:
    raw = read_config_file(ROOT / "config" / "config.sample.yml")
    per_invocation = {"nexus_file", "done_writing_message_file", "run_start_message_file"}
    missing = []
    for dotted, _tp, _default in iter_leaf_fields():
        node: object = raw
        for part in dotted.split("."):
            node = node.get(part, KeyError) if isinstance(node, dict) else KeyError
        if node is KeyError and dotted not in per_invocation | {"config_file"}:
            missing.append(dotted)
    assert missing == []
