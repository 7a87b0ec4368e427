"""routes.py: the v3/v4 table, the body mapping and where each version's URLs are (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from scicat_ingestor.config.model import ConfigError, SciCatOptions, build
from scicat_ingestor.scicat import routes
from scicat_ingestor.scicat.routes import ROUTES, BodyError, layout

V3_DATASET: dict[str, Any] = {
    "pid": "20.500.12269/x",
    "type": "raw",
    "datasetName": "x",
    "owner": "Pia Investigator",
    "principalInvestigator": "Pia Investigator",
    "proposalId": "443503",
    "instrumentId": "odin-pid",
    "ownerGroup": "ess_proposal_443503",
    "size": 0,
}


def _options(**values: Any) -> SciCatOptions:
    return build(SciCatOptions, values, "test")


def test_v4_dataset_body_has_arrays_instead_of_the_singular_ids() -> None:
    mapped = routes.v4_dataset({**V3_DATASET, "sampleId": "s-1"}, "")
    assert mapped == {
        "pid": "20.500.12269/x",
        "type": "raw",
        "datasetName": "x",
        "owner": "Pia Investigator",
        "principalInvestigators": ["Pia Investigator"],
        "proposalIds": ["443503"],
        "instrumentIds": ["odin-pid"],
        "sampleIds": ["s-1"],
        "ownerGroup": "ess_proposal_443503",
        "size": 0,
    }


def test_v4_dataset_body_drops_empty_ids_and_keeps_given_arrays() -> None:
    body = {**V3_DATASET, "sampleId": None, "instrumentId": "", "proposalIds": ["1", "2"]}
    mapped = routes.v4_dataset(body, "")
    assert "sampleIds" not in mapped and "instrumentIds" not in mapped
    assert mapped["proposalIds"] == ["1", "2"]  # the caller's array wins over proposalId
    assert not set(routes.V4_ARRAYS) & set(mapped)


def test_v4_dataset_body_needs_an_owner() -> None:
    """v5 answers 500 to a v4 dataset without owner: refused here, with the reason."""
    with pytest.raises(BodyError, match="owner is required by API v4"):
        routes.v4_dataset({k: v for k, v in V3_DATASET.items() if k != "owner"}, "")


def test_v4_attachment_body_links_the_dataset_and_keeps_our_id_as_aid() -> None:
    v3 = {
        "id": "att-1",
        "datasetId": "20.500.12269/x",
        "caption": "c",
        "thumbnail": "data:image/png;base64,AA",
        "ownerGroup": "g",
        "accessGroups": ["a"],
    }
    assert routes.v4_attachment(v3, "20.500.12269/x") == {
        "aid": "att-1",
        "caption": "c",
        "thumbnail": "data:image/png;base64,AA",
        "ownerGroup": "g",
        "accessGroups": ["a"],
        "isPublished": False,
        "relationships": [
            {
                "targetId": "20.500.12269/x",
                "targetType": "dataset",
                "relationType": "is attached to",
            }
        ],
    }


def test_every_operation_has_both_versions_with_the_same_method_and_label() -> None:
    for operation, versions in ROUTES.items():
        assert set(versions) == {3, 4}, operation
        assert versions[3].method == versions[4].method, operation
        assert versions[3].label == versions[4].label, operation  # metrics, reasons: per operation


def test_v4_looks_ups_are_filters() -> None:
    blocks = ROUTES["origdatablocks_of"][4]
    attachments = ROUTES["attachments_of"][4]
    assert blocks.query is not None and attachments.query is not None
    assert blocks.query("p/1") == {"filter": '{"where": {"datasetId": "p/1"}}'}
    assert attachments.query("p/1") == {"filter": '{"where": {"relationships.targetId": "p/1"}}'}
    assert ROUTES["origdatablocks_of"][3].query is None


@pytest.mark.parametrize(
    "host",
    [
        "https://s.example/api",
        "https://s.example/api/",
        "https://s.example/api/v3",
        "https://s.example/api/v4/",
    ],
)
def test_host_may_end_in_api_or_a_version(host: str) -> None:
    plan = layout(host)
    assert plan.v3 == "https://s.example/api/v3/"
    assert plan.v4 == "https://s.example/api/v4/"
    assert plan.root == "https://s.example/api/"


def test_a_host_without_a_version_is_v3_only() -> None:
    plan = layout("https://s.example/scicat")
    assert (plan.v3, plan.v4, plan.root) == ("https://s.example/scicat/", None, None)
    with pytest.raises(ConfigError, match="API v4 needs a host ending in /api, /api/v3 or /api/v4"):
        plan.base(4)


def test_endpoint_urls_per_version_and_the_upstream_versioned_form() -> None:
    plain = _options(host="https://s.example/api/v3")
    plan = layout(plain.host)
    assert routes.endpoint_url(plain, plan, "datasets", 3) == "https://s.example/api/v3/datasets"
    assert routes.endpoint_url(plain, plan, "datasets", 4) == "https://s.example/api/v4/datasets"
    assert routes.endpoint_url(plain, plan, "attachments", 4) == (
        "https://s.example/api/v4/attachments"
    )
    upstream = _options(
        host="https://s.example/api",
        api_endpoints={"datasets": "v4/datasets", "proposals": "v3/proposals"},
    )
    plan = layout(upstream.host)
    assert routes.endpoint_url(upstream, plan, "datasets", 3) == "https://s.example/api/v4/datasets"
    assert routes.endpoint_url(upstream, plan, "proposals", 3) == (
        "https://s.example/api/v3/proposals"
    )
    assert routes.family_versions(upstream) == {"datasets": 4, "origdatablocks": None}


def test_a_versioned_endpoint_needs_a_host_with_the_api_root() -> None:
    options = _options(host="https://s.example/scicat", api_endpoints={"datasets": "v4/datasets"})
    with pytest.raises(ConfigError, match=r"scicat.api_endpoints.datasets: 'v4/datasets' names"):
        routes.endpoint_url(options, layout(options.host), "datasets", 3)


def test_a_versioned_endpoint_must_agree_with_api_version() -> None:
    options = _options(api_version=3, api_endpoints={"datasets": "v4/datasets"})
    with pytest.raises(ConfigError, match=r"v4 contradicts scicat\.api_version: 3"):
        routes.family_versions(options)


@pytest.mark.parametrize(
    ("status", "version"), [(404, 3), (405, 3), (403, 4), (401, 4), (200, 4), (500, None)]
)
def test_version_from_the_detection_answer(status: int, version: int | None) -> None:
    assert routes.version_from_status(status) == version


@pytest.mark.parametrize("value", [5, "v4", "4.0", None])
def test_api_version_setting_is_3_4_or_auto(value: object) -> None:
    with pytest.raises(ConfigError, match="'api_version' must be"):
        _options(api_version=value)
    assert _options(api_version="auto").api_version == "auto"
    assert _options(api_version=4).api_version == 4


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"host": "https://s.example/api/v3"}, None),  # auto: SciCat is asked
        ({"host": "https://s.example/api/v3", "api_version": 4}, 4),
        ({"host": "https://s.example/scicat", "api_version": 3}, 3),
        ({"host": "https://s.example/scicat"}, 3),  # auto without a v4 URL: nothing to ask
        (
            {
                "host": "https://s.example/api",
                "api_endpoints": {"datasets": "v4/datasets", "origdatablocks": "v4/origdatablocks"},
            },
            4,
        ),
    ],
)
def test_the_version_known_without_asking(values: dict[str, Any], expected: int | None) -> None:
    options = _options(**values)
    plan = layout(options.host)
    assert routes.fixed_version(options, plan, routes.family_versions(options)) == expected


def test_api_version_4_on_a_host_without_v4_is_a_config_error() -> None:
    options = _options(host="https://s.example/scicat", api_version=4)
    with pytest.raises(ConfigError, match="API v4 needs a host ending in"):
        routes.fixed_version(options, layout(options.host), routes.family_versions(options))
