"""deploy/: the Grafana dashboard and the Prometheus alert rules use only series the ingestor
exports, and the rules file has the shape Prometheus requires.

Where ``promtool`` is installed (Debian's ``prometheus`` package) it also checks the rules, runs
their unit tests (``scicat-ingestor-alerts.test.yml``) and parses every dashboard query.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

import scicat_ingestor.ops.health  # noqa: F401 - registers the readiness gauges
from scicat_ingestor.ops.metrics import REGISTRY

DEPLOY = Path(__file__).parent.parent / "deploy"
DASHBOARD = DEPLOY / "grafana" / "scicat-ingestor-dashboard.json"
RULES = DEPLOY / "prometheus" / "scicat-ingestor-alerts.yml"
RULE_TESTS = DEPLOY / "prometheus" / "scicat-ingestor-alerts.test.yml"
PROMTOOL = shutil.which("promtool")
NEEDS_PROMTOOL = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (Debian package prometheus)"
)

SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "gauge": ("",),
}
PROMETHEUS_OWN = {"up"}  # series Prometheus itself adds to every scrape
DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")
RULE_KEYS = {"alert", "record", "expr", "for", "keep_firing_for", "labels", "annotations"}
LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def exported_names() -> set[str]:
    """Every series name /metrics can show, from the registry's metric families."""
    names = set()
    for family in REGISTRY.collect():
        names.update(family.name + suffix for suffix in SUFFIXES[family.type])
    return names


def dashboard_queries() -> list[str]:
    def walk(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            if isinstance(node.get("expr"), str):
                yield node["expr"]
            if isinstance(node.get("query"), dict) and isinstance(node["query"].get("query"), str):
                yield node["query"]["query"]
            for value in node.values():
                yield from walk(value)
        elif isinstance(node, list):
            for value in node:
                yield from walk(value)

    return list(walk(json.loads(DASHBOARD.read_text(encoding="utf-8"))))


def rule_list() -> list[dict[str, Any]]:
    data = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [rule for group in data["groups"] for rule in group["rules"]]


def series_in(query: str) -> set[str]:
    """The series a query reads: the ingestor's are all named ``scicat_...``; ``up`` is scraped."""
    names = set(re.findall(r"\bscicat_[a-zA-Z0-9_]+", query))
    return names | {name for name in PROMETHEUS_OWN if re.search(rf"\b{name}\s*\{{", query)}


def test_every_series_used_exists_in_the_registry() -> None:
    known = exported_names() | PROMETHEUS_OWN
    queries = dashboard_queries() + [rule["expr"] for rule in rule_list()]
    used = set().union(*(series_in(query) for query in queries))
    assert {"scicat_ingestor_files_total", "scicat_ingestor_ready", "up"} <= used
    assert used - known == set()


def test_the_series_check_catches_an_unknown_name() -> None:
    assert series_in('rate(scicat_ingestor_filez_total{outcome="x"}[5m])') == {
        "scicat_ingestor_filez_total"
    }
    assert "scicat_ingestor_filez_total" not in exported_names()


def test_dashboard_is_importable_grafana_json() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert dashboard["__inputs"][0]["pluginId"] == "prometheus"
    assert dashboard["uid"] == "scicat-ingestor"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert {"type", "title", "gridPos"} <= set(panel)
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "${DS_PROMETHEUS}"
    titles = " ".join(panel["title"] for panel in dashboard["panels"]).lower()
    for topic in ("outcome", "percentiles", "lag", "dead letters", "credentials", "schema"):
        assert topic in titles


def test_rules_file_has_the_fields_prometheus_requires() -> None:
    data = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    assert set(data) == {"groups"}
    names = [group["name"] for group in data["groups"]]
    assert len(names) == len(set(names))
    alerts = []
    for rule in rule_list():
        assert set(rule) <= RULE_KEYS, set(rule) - RULE_KEYS
        assert ("alert" in rule) != ("record" in rule)
        assert isinstance(rule["expr"], str)
        assert rule["expr"].strip()
        if "for" in rule:
            assert DURATION.match(rule["for"]), rule["for"]
        for key in ("labels", "annotations"):
            mapping = rule.get(key, {})
            assert all(LABEL_NAME.match(k) and isinstance(v, str) for k, v in mapping.items())
        alerts.append(rule["alert"])
    assert len(alerts) == len(set(alerts))
    for wanted in ("NotReady", "DeadLettersIncreasing", "LagGrowing", "NoFileIngested"):
        assert f"ScicatIngestor{wanted}" in alerts


@NEEDS_PROMTOOL
def test_promtool_checks_and_unit_tests_the_rules() -> None:
    assert PROMTOOL is not None
    for args in (["check", "rules", RULES.name], ["test", "rules", RULE_TESTS.name]):
        done = subprocess.run(
            [PROMTOOL, *args],
            cwd=RULES.parent,
            check=False,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stdout + done.stderr


@NEEDS_PROMTOOL
def test_promtool_parses_every_dashboard_query(tmp_path: Path) -> None:
    """Grafana's variables replaced by values, each query checked as a recording rule."""
    assert PROMTOOL is not None
    rules = [
        {
            "record": f"dashboard:query_{number}",
            "expr": query.replace("$__rate_interval", "1m").replace("$instance", ".*"),
        }
        for number, query in enumerate(dashboard_queries())
        if not query.startswith("label_values(")
    ]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = subprocess.run(
        [PROMTOOL, "check", "rules", str(path)],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
