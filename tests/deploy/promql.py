"""Read the metric names out of the dashboard and the alert rules.

Used by tests/deploy/test_dashboard.py, and by scripts/check-deploy, which runs
`python -m tests.deploy.promql OUT.yaml` to turn every dashboard query into a recording
rule so that `promtool check rules` parses each one with Prometheus's own parser.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import CollectorRegistry, generate_latest

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "amid.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yaml"
ALERTS_TEST = ROOT / "deploy" / "prometheus" / "alerts_test.yaml"

# Grafana's variables, replaced by values that make each query plain PromQL.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$job": "amid", "$instance": ".*"}

_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan", "atan2"}
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
# An identifier that is not a function call and not part of a number or a variable.
_NAME = re.compile(r"(?<![\w:.$])([A-Za-z_:][\w:]*)\b(?!\s*\()")
_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(.*?)\s*(?:,\s*\w+\s*)?\)\s*$")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (not functions, labels or keywords)."""
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub("", text)
    text = _RANGE.sub("", text)
    text = _GROUPING.sub("", text)
    return {name for name in _NAME.findall(text) if name.lower() not in _KEYWORDS}


def _walk_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _walk_panels(panel.get("panels", []))


def load_dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def dashboard_panels() -> list[dict[str, Any]]:
    return list(_walk_panels(load_dashboard()["panels"]))


def dashboard_queries() -> list[str]:
    """Every PromQL query of the dashboard's panels, as written (Grafana variables included)."""
    return [
        target["expr"]
        for panel in dashboard_panels()
        for target in panel.get("targets", [])
        if "expr" in target
    ]


def dashboard_variable_queries() -> list[str]:
    """The series selectors inside the template variables' `label_values(...)` queries."""
    selectors = []
    for variable in load_dashboard()["templating"]["list"]:
        if variable.get("type") != "query":
            continue
        query = variable["query"]
        text = query["query"] if isinstance(query, dict) else query
        match = _LABEL_VALUES.match(text)
        selectors.append(match.group(1) if match else text)
    return selectors


def plain_promql(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return expr


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def alert_test_series() -> list[str]:
    """The series that alerts_test.yaml feeds the rules."""
    tests = yaml.safe_load(ALERTS_TEST.read_text())["tests"]
    return [series["series"] for test in tests for series in test.get("input_series", [])]


def exported_names(registry: CollectorRegistry) -> set[str]:
    """Every sample name the registry can expose, read from its text exposition."""
    return names_in_exposition(generate_latest(registry).decode())


def names_in_exposition(text: str) -> set[str]:
    """Every sample name a /metrics text can carry.

    Labelled series without children print only `# TYPE`, so names come from those lines:
    a histogram exposes `_bucket`, `_sum` and `_count`, a counter its `_total` name.
    """
    names: set[str] = set()
    for line in text.splitlines():
        if not line.startswith("# TYPE "):
            continue
        _, _, name, kind = line.split(" ", 3)
        if kind == "histogram":
            names.update(f"{name}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
        else:
            names.add(name)
    return names


def write_recording_rules(path: Path) -> int:
    """Write each dashboard query as a recording rule, for `promtool check rules`."""
    rules = [
        {"record": f"amid_dashboard:query_{index}", "expr": plain_promql(expr)}
        for index, expr in enumerate(dashboard_queries(), start=1)
    ]
    path.write_text(yaml.safe_dump({"groups": [{"name": "amid-dashboard", "rules": rules}]}))
    return len(rules)


if __name__ == "__main__":
    count = write_recording_rules(Path(sys.argv[1]))
    print(f"{count} dashboard queries written to {sys.argv[1]}")
