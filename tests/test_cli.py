"""Command line: subcommands, typed dotted overrides, exit codes 0/1/2, upstream command names."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from scicat_ingestor.commands.cli import (
    SUBCOMMANDS,
    build_parser,
    main,
    parse_command_line,
    upstream_offline_main,
    upstream_online_main,
)
from scicat_ingestor.config.flags import collect_overrides
from scicat_ingestor.config.model import iter_leaf_fields
from scicat_ingestor.ops.logs import reset_logging
from scicat_ingestor.testing.scicat import SciCatStandIn


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


def test_each_help_is_short_and_points_to_the_overrides(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Every help listed all ~90 config flags (~290 lines) with unreadable metavars."""
    helps = [[], *([name] for name in SUBCOMMANDS)]
    for words in helps:
        with pytest.raises(SystemExit) as exc:
            main([*words, "--help"])
        assert exc.value.code == 0
        out = capsys.readouterr().out
        assert len(out.splitlines()) <= 60, words
        assert "--kafka.bootstrap-servers" not in out, words
        if words != ["validate-config"]:  # the one command without config overrides
            assert "help overrides" in " ".join(out.split()), words
    for entry in (upstream_online_main, upstream_offline_main):
        with pytest.raises(SystemExit):
            entry(["--help"])
        assert len(capsys.readouterr().out.splitlines()) <= 60


def test_help_overrides_lists_every_key_with_readable_metavars(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["help", "overrides"]) == 0
    out = capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["ingest", "--help-overrides"])
    assert capsys.readouterr().out == out
    for dotted, _tp, _default in iter_leaf_fields():
        if "." in dotted and dotted != "logging.graylogs":  # a list of mappings: file only
            assert "--" + dotted.replace("_", "-") in out.replace("--[no-]", "--"), dotted
    lines = out.splitlines()
    assert "ingestion.file_handling:" in lines
    assert any(line.split()[:2] == ["--ingestion.max-offline-ingestors", "N"] for line in lines)
    assert any(line.split()[:2] == ["--kafka.bootstrap-servers", "HOST:PORT"] for line in lines)
    assert any(line.split()[:2] == ["--scicat.timeout", "SECONDS"] for line in lines)
    assert any(line.split()[:2] == ["--ingestion.schemas-directory", "PATH"] for line in lines)
    assert any(
        line.split()[:3] == ["-d,", "--[no-]ingestion.dry-run", "(default:"] for line in lines
    )
    assert "OVERRIDE:" not in out


def test_validate_config_ok_and_invalid(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["validate-config", "--offline", str(data_dir / "upstream-config.sample.yml")]) == 0
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
    assert show(capsys, "-c", cfg, "--ingestion.dry-run")["ingestion"]["dry_run"] is True  # type: ignore[index]
    for off_flag in (
        "--no-ingestion.file-handling.message-to-file",
        "--ingestion.file-handling.message-to-file=false",
    ):
        off = show(capsys, "-c", cfg, off_flag)
        assert off["ingestion"]["file_handling"]["message_to_file"] is False, off_flag  # type: ignore[index]
    on = show(capsys, "-c", cfg, "--ingestion.dry-run=yes")
    assert on["ingestion"]["dry_run"] is True  # type: ignore[index]


def test_fix_boolean_switch_never_takes_the_next_argument(data_dir: Path) -> None:
    """`-d run.hdf` failed: the optional boolean value swallowed the file name."""
    cfg = str(data_dir / "upstream-config.sample.yml")
    for switch in ("-d", "--ingestion.dry-run"):
        args = build_parser().parse_args(["ingest", "-c", cfg, switch, "run.hdf"])
        assert args.paths == ["run.hdf"]
        assert collect_overrides(args) == {"ingestion.dry_run": True}
    with pytest.raises(SystemExit) as exc:
        main(["show-config", "-c", cfg, "--ingestion.dry-run", "false"])  # 'false' is no value
    assert exc.value.code == 2


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
        main(
            [
                "show-config",
                "-c",
                str(data_dir / "upstream-config.sample.yml"),
                "--ingestion.dry-run=maybe",
            ]
        )
    assert exc.value.code == 2


def test_background_ingestor_alias_requires_nexus_file() -> None:
    with pytest.raises(SystemExit) as exc:
        upstream_offline_main(["-c", "x.yml"])
    assert exc.value.code == 2


@pytest.mark.parametrize(
    ("yaml_text", "key", "allowed"),
    [
        ("ingestion:\n  max_offline_ingestors: -5\n", "ingestion.max_offline_ingestors", ">= 1"),
        (
            "ingestion:\n  file_handling:\n    file_hash_algorithm: md55\n",
            "ingestion.file_handling.file_hash_algorithm",
            "one of blake2b,",
        ),
        ("scicat:\n  host: ftp://example.org/api/v3\n", "scicat.host", "http:// or https://"),
        (
            "ingestion:\n  file_handling:\n    file_path_type: sideways\n",
            "ingestion.file_handling.file_path_type",
            "one of 'relative', 'absolute'",
        ),
        ("kafka:\n  auto_offset_reset: yesterday\n", "kafka.auto_offset_reset", "one of earliest"),
        ("kafka:\n  security_protocol: tls\n", "kafka.security_protocol", "one of plaintext"),
        ("kafka:\n  sasl_mechanism: SCRAM\n", "kafka.sasl_mechanism", "one of GSSAPI"),
        ("kafka:\n  bootstrap_servers: broker\n", "kafka.bootstrap_servers", "HOST:PORT"),
        ("kafka:\n  commit_interval: 0\n", "kafka.commit_interval", "seconds > 0"),
        ("health_check:\n  port: 70000\n", "health_check.port", "0-65535"),
        ("logging:\n  logging_level: LOUD\n", "logging.logging_level", "one of DEBUG"),
        ("logging:\n  graylog_port: -1\n", "logging.graylog_port", "0-65535"),
        ("logging:\n  system_log_facility: email\n", "logging.system_log_facility", "one of"),
        ("scicat:\n  timeout: -3\n", "scicat.timeout", "seconds >= 0"),
        ("scicat:\n  max_retries: -1\n", "scicat.max_retries", ">= 0"),
        (
            "ingestion:\n  file_handling:\n    data_file_open_retry_delay: [1, -2]\n",
            "ingestion.file_handling.data_file_open_retry_delay",
            "seconds >= 0",
        ),
        (
            "ingestion:\n  file_handling:\n    hash_file_extension: ../b2b\n",
            "ingestion.file_handling.hash_file_extension",
            "without '/'",
        ),
        (
            "ingestion:\n  file_handling:\n    max_read_bytes: 0\n",
            "ingestion.file_handling.max_read_bytes",
            ">= 1",
        ),
        ("ingestion:\n  retry_initial_delay: 0\n", "ingestion.retry_initial_delay", "> 0"),
        ("ingestion:\n  thumbnail:\n    max_points: 0\n", "ingestion.thumbnail.max_points", ">= 1"),
    ],
)
def test_fix_bad_values_are_rejected_at_load_by_every_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], yaml_text: str, key: str, allowed: str
) -> None:
    """validate-config said OK to these; they failed late (or never) at run time."""
    bad = tmp_path / "bad.yml"
    bad.write_text(yaml_text)
    assert main(["validate-config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"INVALID {bad}: '{key}' must be "), err
    assert allowed in err and ", found " in err, err
    for command in (
        ["show-config"],
        ["run"],
        ["validate-schema"],
        ["ingest", "x.hdf"],
        ["replay", "x"],
    ):
        assert main([command[0], "-c", str(bad), *command[1:]]) == 2, command
        assert f"'{key}' must be" in capsys.readouterr().err, command


def test_upstream_sample_config_still_loads(data_dir: Path) -> None:
    assert main(["validate-config", "--offline", str(data_dir / "upstream-config.sample.yml")]) == 0


def test_validate_config_reports_every_error_of_a_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """It stopped at the first: a file with three bad values needed three runs."""
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "kafka:\n  topicz: a\n  commit_interval: -1\nscicat:\n  timeout: soon\nlogging: [1]\n"
    )
    assert main(["validate-config", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == f"INVALID {bad}: unknown key 'kafka.topicz'; did you mean topics?"
    assert [line.split("'")[1] for line in err[1:]] == [
        "kafka.commit_interval",
        "scicat.timeout",
        "logging",
    ]
    assert all(line.startswith(f"INVALID {bad}: ") for line in err)


def _paths_config(tmp_path: Path, **ingestion: object) -> Path:
    schemas = tmp_path / "schemas"
    schemas.mkdir(exist_ok=True)
    data = {
        "ingestion": {"schemas_directory": str(schemas), **ingestion},
        "kafka": {"security_protocol": "ssl", "ssl_ca_location": str(tmp_path / "ca.pem")},
        "scicat": {"token_file": str(tmp_path / "token")},
    }
    path = tmp_path / "c.yml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_validate_config_checks_paths_that_must_exist(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An empty schemas directory, a missing data root, CA or token file were all 'OK'."""
    path = _paths_config(tmp_path, file_handling={"data_directory": str(tmp_path / "data")})
    assert main(["validate-config", str(path)]) == 2
    err = capsys.readouterr().err
    for key in (
        "ingestion.schemas_directory': " + str(tmp_path / "schemas") + ": no schema files",
        "ingestion.file_handling.data_directory': " + str(tmp_path / "data") + ": no such dir",
        "kafka.ssl_ca_location': " + str(tmp_path / "ca.pem") + ": no such file",
        "scicat.token_file': " + str(tmp_path / "token") + ": no such file",
    ):
        assert f"INVALID {path}: '{key}" in err
    assert main(["validate-config", "--offline", str(path)]) == 0
    (tmp_path / "data").mkdir()
    (tmp_path / "ca.pem").write_text("ca")
    (tmp_path / "token").write_text("t")
    (tmp_path / "schemas" / "a.imsc.yml").write_text("x")
    assert main(["validate-config", str(path)]) == 0
    missing = _paths_config(tmp_path / "schemas", fallback_schema_file_path="ess-fallback")
    (tmp_path / "schemas" / "schemas").rmdir()
    assert main(["validate-config", str(missing)]) == 2
    assert "'ingestion.schemas_directory': " in capsys.readouterr().err


def test_validate_config_refuses_an_empty_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty.yml"
    empty.write_text("# nothing yet\n")
    assert main(["validate-config", "--offline", str(empty)]) == 2
    assert (
        capsys.readouterr().err
        == f"INVALID {empty}: empty config file (every key would be its placeholder default)\n"
    )


@pytest.mark.integration
@pytest.mark.parametrize("switch", ["-d", "--ingestion.dry-run"])
def test_fix_ingest_with_dry_run_switch_is_a_dry_run_of_the_file(
    tmp_path: Path,
    data_dir: Path,
    scicat_standin: SciCatStandIn,
    capsys: pytest.CaptureFixture[str],
    switch: str,
) -> None:
    """`ingest -c CFG -d FILE` failed: "expected true or false, got 'FILE'"."""
    shutil.copytree(data_dir / "schemas", tmp_path / "schemas")
    nexus = tmp_path / "data" / "small-coda.hdf"
    nexus.parent.mkdir()
    shutil.copy(data_dir / "small-coda.hdf", nexus)
    cfg = tmp_path / "cfg.yml"
    settings = {
        "scicat": {"host": scicat_standin.url, "token": scicat_standin.token, "timeout": 2},
        "ingestion": {"schemas_directory": str(tmp_path / "schemas")},
        "logging": {"logging_level": "ERROR"},
    }
    cfg.write_text(yaml.safe_dump(settings))
    report = tmp_path / "report.jsonl"
    try:
        assert main(["ingest", "-c", str(cfg), switch, str(nexus), "--report", str(report)]) == 0
    finally:
        reset_logging()
    assert "1 dry run" in capsys.readouterr().out
    (line,) = (json.loads(text) for text in report.read_text().splitlines())
    assert (line["path"], line["outcome"]) == (str(nexus), "dry_run")
    assert scicat_standin.datasets == {}


def test_command_line_as_main_reads_it() -> None:
    """Explicit boolean values of overrides are read as such; no subcommand means ``run``."""
    args = parse_command_line(["-c", "x.yml", "--scicat.verify=false", "-d"])
    assert args.command == "run"
    assert collect_overrides(args) == {"scicat.verify": False, "ingestion.dry_run": True}


def test_validate_config_checks_the_gelf_targets_of_both_forms(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "c.yml"
    path.write_text(
        "logging:\n  graylog_enabled: true\n  graylogs:\n    - {host: a, port: 12201}\n"
        "    - {host: b, port: none}\n"
    )
    assert main(["validate-config", "--offline", str(path)]) == 2
    assert capsys.readouterr().err == (
        f"INVALID {path}: logging.graylogs[1].port: must be a port number, found 'none'\n"
    )
    path.write_text("logging:\n  graylog_enabled: true\n  graylogs: [{host: a, port: 12201}]\n")
    assert main(["validate-config", "--offline", str(path)]) == 0
    capsys.readouterr()
    assert main(["show-config", "-c", str(path)]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)["logging"]
    assert shown["graylogs"] == [{"host": "a", "port": 12201}]
    assert shown["graylog"] is False and shown["graylog_enabled"] is True
