"""Config loading: the upstream sample loads unchanged; each kind of bad input is one clear line."""

from collections.abc import Mapping
from pathlib import Path

import pytest
import yaml

from scicat_ingestor.config.fieldtypes import (
    AtLeastOne,
    Disallowed,
    Mismatch,
    Port,
    Seconds,
    accept,
    base_type,
    describe,
    metavar,
    parse_text,
)
from scicat_ingestor.config.model import (
    ConfigError,
    IngestorConfig,
    Secret,
    build,
    config_warnings,
    dump_yaml,
    iter_leaf_fields,
    load_config,
    secret_values,
    to_dict,
)


def write(tmp_path: Path, data: object, name: str = "c.yml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def test_upstream_sample_loads_unchanged(data_dir: Path) -> None:
    config = load_config(data_dir / "upstream-config.sample.yml", environ={})
    assert config.kafka.topics == ("KAFKA_TOPIC_1", "KAFKA_TOPIC_2")
    assert config.ingestion.file_handling.data_file_open_max_tries == 3
    assert config.ingestion.max_offline_ingestors == 10
    assert config.dataset.default_access_groups == ("ACCESS_GROUP_1",)
    assert config.scicat.api_endpoints.origdatablocks == "origdatablocks"
    assert config.health_check.host == "0.0.0.0"
    assert config.config_file.endswith("upstream-config.sample.yml")


def test_defaults_without_file() -> None:
    config = load_config(None, environ={})
    assert config == IngestorConfig()
    assert config.health_check.host == "127.0.0.1"  # not 0.0.0.0: bind to all only when asked
    assert config.scicat.verify is True


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"kafka": {"topicz": "a"}}, "unknown key 'kafka.topicz'; did you mean topics?"),
        (
            {"ingestion": {"file_handling": {"compute_file_hashes": True}}},
            "unknown key 'ingestion.file_handling.compute_file_hashes'; "
            "did you mean compute_file_hash",
        ),
        ({"scicat": {"api_endpoints": {"dataset": "x"}}}, "'scicat.api_endpoints.dataset'"),
        ({"bogus": 1}, "unknown key 'bogus'; valid keys: "),
    ],
)
def test_unknown_keys_at_any_level_are_errors(tmp_path: Path, data: object, expected: str) -> None:
    path = write(tmp_path, data)
    with pytest.raises(ConfigError) as err:
        load_config(path, environ={})
    assert expected in str(err.value)
    assert str(err.value).startswith(str(path))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            {"ingestion": {"max_offline_ingestors": "ten"}},
            "'ingestion.max_offline_ingestors' must be integer, found str 'ten'",
        ),
        ({"ingestion": {"dry_run": "yes"}}, "'ingestion.dry_run' must be boolean, found str 'yes'"),
        ({"kafka": {"topics": 5}}, "'kafka.topics' must be list of string, found int 5"),
        (
            {"ingestion": {"file_handling": {"file_path_type": "relativ"}}},
            "must be one of 'relative', 'absolute'",
        ),
        ({"scicat": {"additional_headers": ["a"]}}, "'scicat.additional_headers' must be mapping"),
        ({"dataset": {"default_access_groups": [1]}}, "must be list of string, found list [1]"),
        ({"ingestion": 3}, "'ingestion' must be a mapping, found int 3"),
    ],
)
def test_wrong_types_name_key_expected_and_found(
    tmp_path: Path, data: object, expected: str
) -> None:
    with pytest.raises(ConfigError, match=None) as err:
        load_config(write(tmp_path, data), environ={})
    assert expected in str(err.value)


def test_missing_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "nope.yml", environ={})
    assert str(err.value) == f"{tmp_path / 'nope.yml'}: config file not found"


def test_invalid_yaml_is_one_line_with_position(tmp_path: Path) -> None:
    path = write(tmp_path, "kafka:\n  topics: [a, b\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, environ={})
    assert "invalid YAML (line" in str(err.value)
    assert "\n" not in str(err.value)


def test_top_level_must_be_mapping(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="top level must be a mapping, found list"):
        load_config(write(tmp_path, "- a\n- b\n"), environ={})


def test_fix_null_section_uses_defaults(tmp_path: Path) -> None:
    """Upstream crashes with AttributeError on `kafka:` with no value."""
    config = load_config(write(tmp_path, "kafka:\nlogging:\n"), environ={})
    assert config.kafka.group_id == "GROUP_ID"


def test_fix_config_without_kafka_or_health_sections_loads(tmp_path: Path) -> None:
    """Upstream's offline ingestor does `del merged['kafka']` and crashes with KeyError."""
    config = load_config(write(tmp_path, {"scicat": {"host": "http://x/api/v3"}}), environ={})
    assert config.scicat.host == "http://x/api/v3"


def test_fix_timeout_zero_replaced_with_working_default(data_dir: Path) -> None:
    """Upstream's default `timeout: 0` makes every request raise ValueError."""
    config = load_config(data_dir / "upstream-config.sample.yml", environ={})
    assert config.scicat.timeout == 0
    assert config.scicat.effective_timeout == 30.0
    assert any("scicat.timeout" in w for w in config_warnings(config))


def test_fix_topics_comma_string_is_stripped(tmp_path: Path) -> None:
    """Upstream splits on ',' without stripping, so 'a, b' subscribes to ' b'."""
    config = load_config(write(tmp_path, {"kafka": {"topics": "a, b ,c"}}), environ={})
    assert config.kafka.topics == ("a", "b", "c")


def test_verify_false_warns(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, {"scicat": {"verify": False}}), environ={})
    assert any("NOT verified" in w for w in config_warnings(config))


def test_data_directory_accepts_one_path_or_a_list(tmp_path: Path) -> None:
    one = load_config(write(tmp_path, {"ingestion": {"file_handling": {"data_directory": "/d"}}}))
    assert one.ingestion.file_handling.data_roots == ("/d",)
    many = {"ingestion": {"file_handling": {"data_directory": ["/a", "/b"]}}}
    assert load_config(write(tmp_path, many), environ={}).ingestion.file_handling.data_roots == (
        "/a",
        "/b",
    )


def test_consumer_config_passthrough(tmp_path: Path) -> None:
    data = {"kafka": {"consumer_config": {"session.timeout.ms": 6000, "client.id": "x"}}}
    config = load_config(write(tmp_path, data), environ={})
    assert config.kafka.consumer_config == {"session.timeout.ms": 6000, "client.id": "x"}


def test_secrets_from_environment_and_precedence(tmp_path: Path) -> None:
    path = write(tmp_path, {"scicat": {"token": "from-file"}, "kafka": {"sasl_password": "f"}})
    env = {"SCICAT_TOKEN": "from-env", "KAFKA_SASL_PASSWORD": "env-pw", "SCICAT_PASSWORD": "p"}
    config = load_config(path, environ=env)
    assert config.scicat.token.value == "from-env"
    assert config.kafka.sasl_password.value == "env-pw"
    assert config.scicat.password.value == "p"
    overridden = load_config(path, {"scicat.token": "from-cli"}, environ=env)
    assert overridden.scicat.token.value == "from-cli"


def test_secrets_masked_in_repr_and_dump(tmp_path: Path) -> None:
    path = write(tmp_path, {"scicat": {"token": "tok-123", "password": "pw-456"}})
    config = load_config(path, {"kafka.sasl_password": "sasl-789"}, environ={})
    text = dump_yaml(config) + repr(config) + str(config)
    for secret in ("tok-123", "pw-456", "sasl-789"):
        assert secret not in text
    assert "****" in dump_yaml(config)
    assert sorted(secret_values(config)) == ["pw-456", "sasl-789", "tok-123"]
    assert repr(Secret("x")) == "Secret('****')"


def test_overrides_are_validated_like_the_file() -> None:
    with pytest.raises(ConfigError, match=r"'ingestion\.max_offline_ingestors' must be integer"):
        load_config(None, {"ingestion.max_offline_ingestors": "many"}, environ={})


def test_build_directly_for_tests() -> None:
    config = build(IngestorConfig, {"ingestion": {"dry_run": True}}, "test")
    assert config.ingestion.dry_run is True


def test_every_default_passes_its_own_checks() -> None:
    """A new key whose default breaks its own rule fails here, not in production."""
    plain = to_dict(IngestorConfig(), mask_secrets=False)
    assert build(IngestorConfig, plain, "defaults") == IngestorConfig()


def test_every_key_type_is_in_the_field_type_table() -> None:
    """Adding a key is a one-line field: its type must be describable and typeable on the CLI."""
    for dotted, tp, _default in iter_leaf_fields():
        assert describe(tp), dotted
        assert metavar(tp) or base_type(tp) is bool, dotted


@pytest.mark.parametrize(
    ("tp", "text", "expected"),
    [
        (Seconds, "2.5", 2.5),
        (AtLeastOne, "4", 4),
        (Port | str, "12201", 12201),
        (Port | str, "", ""),
        (Seconds | None, "3", 3.0),
        (tuple[Seconds, ...], "1", 1.0),
        (Mapping[str, str | int], "a=1", ("a", 1)),
    ],
)
def test_flag_text_is_parsed_by_the_field_type(tp: object, text: str, expected: object) -> None:
    assert parse_text(tp, text) == expected


def test_checks_run_on_list_items_and_union_arms() -> None:
    with pytest.raises(Disallowed, match=r"seconds >= 0"):
        accept(tuple[Seconds, ...], [1, -1])
    with pytest.raises(Disallowed, match=r"0-65535"):
        accept(Port | str, 70000)
    assert accept(Port | str, "not-a-port") == "not-a-port"  # checked only when graylog is on
    with pytest.raises(Mismatch):
        accept(AtLeastOne, True)  # a YAML boolean is not a count
