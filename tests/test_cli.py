"""Command line: subcommands, typed dotted overrides, exit codes 0/1/2, upstream command names."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from scicat_ingestor.cli import SUBCOMMANDS, main, upstream_offline_main


def test_python_m_help_lists_subcommands() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "scicat_ingestor", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0
    for name in SUBCOMMANDS:
        assert name in result.stdout


def test_console_scripts_are_installed() -> None:
    bindir = Path(sys.executable).parent
    for script in ("scicat-ingestor", "scicat_ingestor", "scicat_background_ingestor"):
        result = subprocess.run(
            [bindir / script, "--help"], capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, script


def test_each_subcommand_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    for name in SUBCOMMANDS:
        with pytest.raises(SystemExit) as exc:
            main([name, "--help"])
        assert exc.value.code == 0
    assert "--kafka.bootstrap-servers" in capsys.readouterr().out


def test_validate_config_ok_and_invalid(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["validate-config", str(data_dir / "upstream-config.sample.yml")]) == 0
    bad = tmp_path / "bad.yml"
    bad.write_text("kafka:\n  topicz: a\n")
    assert main(["validate-config", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"INVALID {bad}: unknown key 'kafka.topicz'; did you mean topics?"]


def test_run_with_invalid_config_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text("ingestion:\n  max_offline_ingestors: ten\n")
    assert main(["-c", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "'ingestion.max_offline_ingestors' must be integer, found str 'ten'" in err[0]


def test_usage_error_exits_2() -> None:
    with pytest.raises(SystemExit) as exc:
        main(["ingest"])  # -c and FILE missing
    assert exc.value.code == 2
    assert main([]) == 2


def show(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, object]:
    assert main(["show-config", *args]) == 0
    loaded = yaml.safe_load(capsys.readouterr().out)
    assert isinstance(loaded, dict)
    return loaded


def test_fix_list_overrides_keep_element_type(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Upstream gives strings for list flags, then crashes comparing '1' < 120."""
    cfg = str(data_dir / "upstream-config.sample.yml")
    out = show(
        capsys, "-c", cfg, "--ingestion.file-handling.data-file-open-retry-delay", "1", "2.5"
    )
    assert out["ingestion"]["file_handling"]["data_file_open_retry_delay"] == [1.0, 2.5]  # type: ignore[index]


def test_fix_boolean_overrides_can_switch_off(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Upstream's store_true flags can only switch booleans on."""
    cfg = str(data_dir / "upstream-config.sample.yml")
    assert show(capsys, "-c", cfg, "-d")["ingestion"]["dry_run"] is True  # type: ignore[index]
    off = show(capsys, "-c", cfg, "--ingestion.file-handling.message-to-file", "false")
    assert off["ingestion"]["file_handling"]["message_to_file"] is False  # type: ignore[index]


def test_overrides_for_lists_mappings_and_secrets(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = str(data_dir / "upstream-config.sample.yml")
    out = show(
        capsys,
        "-c",
        cfg,
        "--kafka.topics",
        "t1",
        "t2",
        "--kafka.bootstrap-servers",
        "host:9092",
        "--kafka.consumer-config",
        "session.timeout.ms=6000",
        "client.id=ingest",
        "--scicat.token",
        "very-secret",
    )
    kafka = out["kafka"]
    assert kafka["topics"] == ["t1", "t2"]  # type: ignore[index]
    assert kafka["bootstrap_servers"] == "host:9092"  # type: ignore[index]
    assert kafka["consumer_config"] == {"session.timeout.ms": 6000, "client.id": "ingest"}  # type: ignore[index]
    assert out["scicat"]["token"] == "****"  # type: ignore[index]


def test_bad_boolean_value_is_usage_error(data_dir: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["show-config", "-c", str(data_dir / "upstream-config.sample.yml"), "-d", "maybe"])
    assert exc.value.code == 2


def test_background_ingestor_alias_requires_nexus_file() -> None:
    with pytest.raises(SystemExit) as exc:
        upstream_offline_main(["-c", "x.yml"])
    assert exc.value.code == 2
