"""The dashboard and the alert rules read only metrics amid really exports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest

from amid.metrics import Metrics
from tests.deploy.promql import (
    alert_rules,
    alert_test_series,
    dashboard_panels,
    dashboard_queries,
    dashboard_variable_queries,
    exported_names,
    metric_names,
    names_in_exposition,
)
from tests.helpers import hook_handler, make_config, make_queue, running_daemon

# Prometheus's own series, present for every scrape target.
PROMETHEUS_NAMES = {"up"}
# Every family the dashboard must show (a panel each, or a part of one).
ON_DASHBOARD = {
    "amid_build_info",
    "amid_messages_received_total",
    "amid_messages_deleted_total",
    "amid_messages_invalid_total",
    "amid_events_total",
    "amid_notifications_total",
    "amid_notification_failures_total",
    "amid_handler_attempts_total",
    "amid_handler_duration_seconds_bucket",
    "amid_template_failures_total",
    "amid_event_lag_seconds_bucket",
    "amid_inflight_messages",
    "amid_sqs_requests_total",
    "amid_queue_messages",
    "amid_config_reloads_total",
    "amid_config_last_reload_successful",
    "amid_ledger_errors_total",
    "amid_ready",
    # image-aware routing
    "amid_image_lookups_total",
    "amid_event_retries_total",
    "amid_digests_total",
    "amid_digest_events_bucket",
    "amid_digest_pending_events",
    "amid_expectation_overdue",
    "amid_expectation_last_seen_timestamp_seconds",
    "amid_expectation_notifications_total",
    # conversations, incidents, silences
    "amid_slack_conversations_total",
    "amid_incidents_total",
    "amid_silences_active",
    "up",
}


@pytest.fixture(scope="module")
def exported() -> set[str]:
    return exported_names(Metrics().registry) | PROMETHEUS_NAMES


def _names(exprs: list[str]) -> set[str]:
    return set().union(*(metric_names(expr) for expr in exprs))


class TestMetricNameExtraction:
    def test_functions_labels_ranges_and_grouping_are_not_metric_names(self) -> None:
        expr = (
            "histogram_quantile(0.99, sum by (handler, le) "
            '(rate(amid_handler_duration_seconds_bucket{job="amid", outcome!="x"}[5m])))'
        )
        assert metric_names(expr) == {"amid_handler_duration_seconds_bucket"}

    def test_every_operand_of_a_binary_expression_is_found(self) -> None:
        expr = "sum(rate(a_sum[5m])) / sum(rate(a_count[$__rate_interval])) * 60 > bool 1e3"
        assert metric_names(expr) == {"a_sum", "a_count"}

    def test_a_bare_selector_is_its_own_name(self) -> None:
        assert metric_names('up{job="amid"} == 0') == {"up"}


class TestDashboard:
    def test_every_dashboard_query_names_an_exported_metric(self, exported: set[str]) -> None:
        used = _names(dashboard_queries() + dashboard_variable_queries())

        assert used, "no metric names found: the extraction is broken"
        assert used - exported == set()

    def test_the_dashboard_shows_every_family_operators_need(self) -> None:
        assert ON_DASHBOARD - _names(dashboard_queries()) == set()

    def test_panel_ids_are_unique(self) -> None:
        ids = [panel["id"] for panel in dashboard_panels()]
        assert len(ids) == len(set(ids))

    def test_every_query_uses_the_datasource_variable_and_a_unique_ref_id(self) -> None:
        for panel in dashboard_panels():
            targets = panel.get("targets", [])
            assert [t["datasource"]["uid"] for t in targets] == ["${datasource}"] * len(targets)
            ref_ids = [t["refId"] for t in targets]
            assert len(ref_ids) == len(set(ref_ids)), panel["title"]

    def test_every_query_is_scoped_to_the_chosen_job(self) -> None:
        unscoped = [expr for expr in dashboard_queries() if 'job="$job"' not in expr]
        assert unscoped == []

    def test_panels_fit_the_24_column_grid_without_overlapping(self) -> None:
        cells: set[tuple[int, int]] = set()
        for panel in dashboard_panels():
            pos = panel["gridPos"]
            assert pos["x"] + pos["w"] <= 24, panel["title"]
            area = {
                (x, y)
                for x in range(pos["x"], pos["x"] + pos["w"])
                for y in range(pos["y"], pos["y"] + pos["h"])
            }
            assert cells.isdisjoint(area), panel["title"]
            cells |= area


class TestAlerts:
    def test_every_alert_expression_names_an_exported_metric(self, exported: set[str]) -> None:
        used = _names([rule["expr"] for rule in alert_rules()])

        assert used, "no metric names found: the extraction is broken"
        assert used - exported == set()

    def test_the_alert_unit_tests_feed_only_exported_series(self, exported: set[str]) -> None:
        used = _names(alert_test_series())

        assert used - exported == set()

    def test_the_operators_alerts_all_exist(self) -> None:
        assert {rule["alert"] for rule in alert_rules()} >= {
            "AmidDown",
            "AmidNotReady",
            "AmidHandlerFailing",
            "AmidDeadLetterQueueNotEmpty",
            "AmidEventLagHigh",
            "AmidExpectationOverdue",
        }


class TestAgainstALiveDaemon:
    async def test_every_name_the_dashboard_and_alerts_use_is_served_by_a_running_amid(
        self, sqs: Any, moto_url: str, tmp_path: Path
    ) -> None:
        queue, _ = await make_queue(sqs)
        # A digest handler too: its series exist only for handlers that have one.
        handler = hook_handler(tmp_path / "calls.jsonl", extra="    digest: {wait: 1m}\n")
        config = make_config(queue, moto_url, handler)
        async with running_daemon(config) as daemon, aiohttp.ClientSession() as http:
            url = f"http://127.0.0.1:{daemon.metrics_port}/metrics"
            async with http.get(url) as response:
                text = await response.text()
        served = names_in_exposition(text) | PROMETHEUS_NAMES
        used = _names(dashboard_queries()) | _names([rule["expr"] for rule in alert_rules()])
        assert used <= served, f"not served by a live amid: {sorted(used - served)}"
