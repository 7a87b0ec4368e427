"""`make demo` end to end (broker, stand-in, daemon subprocess, file-writer) and its pieces."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from scicat_ingestor.config.model import load_config
from scicat_ingestor.testing.demo import DEFAULT_CONFIG, REPO_ROOT, runtime_config
from scicat_ingestor.testing.scicat import DEFAULT_TOKEN

DEMO = [sys.executable, "-m", "scicat_ingestor.testing.demo"]
# Secrets the daemon gets from the environment; none may reach its log, even at DEBUG.
SECRET_ENV = {"KAFKA_SASL_PASSWORD": "sasl-Secret-42", "SCICAT_PASSWORD": "pw-Secret-77"}


def test_demo_config_loads_and_runtime_config_fills_it_in(tmp_path: Path) -> None:
    template = load_config(DEFAULT_CONFIG, environ={})
    assert template.kafka.topics == ("demo-writing-done",)
    path = runtime_config(
        DEFAULT_CONFIG, tmp_path, "127.0.0.1:1234", "http://127.0.0.1:9/api/v3", 81
    )
    config = load_config(path, environ={})
    assert config.kafka.bootstrap_servers == "127.0.0.1:1234"
    assert config.scicat.host == "http://127.0.0.1:9/api/v3"
    assert config.health_check.port == 81
    assert Path(config.ingestion.schemas_directory) == REPO_ROOT / "config" / "schemas"
    assert sorted(p.name for p in (REPO_ROOT / "config" / "schemas").glob("*.imsc.yml")) == [
        "small-coda.imsc.yml",
        "small-ymir.imsc.yml",
    ]
    assert config.ingestion.file_handling.data_roots == (str(tmp_path / "data"),)
    assert (tmp_path / "data").is_dir()
    assert config.ingestion.dead_letter.file == str(tmp_path / "dead-letters.jsonl")
    assert not config.scicat.token  # the token travels in the environment


def debug_config(tmp_path: Path) -> Path:
    data = yaml.safe_load(DEFAULT_CONFIG.read_text())
    data["logging"]["logging_level"] = "DEBUG"
    data["ingestion"]["schemas_directory"] = str(REPO_ROOT / "config" / "schemas")
    path = tmp_path / "demo-debug.yml"
    path.write_text(yaml.safe_dump(data))
    return path


def daemon_pid(output: str) -> int:
    match = re.search(r"Daemon: +pid (\d+)", output)
    assert match, output
    return int(match.group(1))


def assert_gone(pid: int) -> None:
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


@pytest.mark.integration
def test_demo_runs_and_exits_0(tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    result = subprocess.run(
        [*DEMO, "--files", "3", "--workdir", str(workdir), "--config", str(debug_config(tmp_path))],
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, **SECRET_ENV},
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert len(re.findall(r"^  20\.500\.12269/\S+  name=", out, re.MULTILINE)) == 3
    assert len(re.findall(r"files=2 \(run-\d+-small-\w+\.hdf, ", out)) == 3
    assert 'scicat_ingestor_files_total{outcome="created"} 3.0' in out
    assert re.search(r"http://127\.0\.0\.1:\d+/metrics", out)
    assert re.search(r"http://127\.0\.0\.1:\d+/ready", out)
    assert out.rstrip().endswith("Done.")
    # The URLs came only after the datasets, just before it stopped; the log was deleted
    # (without --workdir) and its path no longer on screen.
    ready = out.index("Daemon ready:")
    assert ready < out.index("/ready ") < out.index("Datasets created")
    assert ready < out.index(f"{workdir / 'daemon.log'}  the daemon's log") < out.index("Datasets")
    assert re.search(r"http://127\.0\.0\.1:\d+/api/v3/datasets  the SciCat stand-in", out)
    assert f"The daemon's log: {workdir / 'daemon.log'}" in out.splitlines()[-2]
    assert_gone(daemon_pid(out))
    log = (workdir / "daemon.log").read_text()
    assert " - DEBUG - " in log
    assert "received SIGTERM" in log
    for secret in (DEFAULT_TOKEN, *SECRET_ENV.values()):
        assert secret not in log


@pytest.mark.integration
def test_demo_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [*DEMO, "--files", "1", "--keep-running", "--workdir", str(tmp_path / "work")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 180
    try:
        while not any("Press Ctrl-C" in line for line in lines):
            line = process.stdout.readline()
            assert line, "".join(lines)
            lines.append(line)
            assert time.monotonic() < deadline, "".join(lines)
        process.send_signal(signal.SIGINT)
        rest, _ = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    output = "".join(lines) + rest
    assert process.returncode == 0, output
    assert "Interrupted: stopping." in output
    assert_gone(daemon_pid(output))
    log = (tmp_path / "work" / "daemon.log").read_text()
    assert "received SIGTERM: stopping, draining" in log


def test_without_the_testing_extra_one_line_names_it() -> None:
    """After ``pip install .`` it died in a traceback on ``import jsonschema``."""
    code = (
        "import sys; sys.modules['jsonschema'] = None\n"
        "from scicat_ingestor.testing.demo import main\n"
        "sys.exit(main(['--files', '1']))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr == (
        "error: the demo needs the 'testing' extra (jsonschema is not installed): "
        "pip install '.[testing]' in the checkout (or 'scicat-ingestor[testing]')\n"
    )
    assert done.stdout == ""
