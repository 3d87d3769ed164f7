"""The pagerduty handler against a local Events API v2 server: the request PagerDuty documents,
the action per state, the outcomes per status, expectation notices, and the routing key kept
secret."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import generate_latest
from structlog.testing import capture_logs

from amid.config import ConfigError, parse_config
from amid.handlers import HandlerError, HandlerResources, build_handler
from amid.handlers.base import Notification
from amid.pipeline.process import Pipeline, Runtime
from amid.pipeline.routing import Router
from amid.store.memory import MemoryStore
from amid.templates import render, template_context
from amid.tools.offline import synthetic_event
from tests.handlers.conftest import (
    MakeHandler,
    assert_golden,
    notify,
    seed_event,
    template_failures,
)
from tests.handlers.test_notices import overdue, recovered
from tests.pagerduty_server import EventsApi, Reply, problems

ROUTING_KEY = "R0UT1NGK3Y0123456789abcdefABCDEF"
IMAGE = {"name": "golden-web-2025-05-01", "tags": {"Pipeline": "golden-web", "Team": "platform"}}
PIPELINE_KEY = "{{ account }}/{{ region }}/{{ image.tags.Pipeline }}"
# docs/handlers.md's recipes: by the pipeline tag, by the image name without its trailing date
# (golden-web-2025-05-01 -> golden-web), each falling back to the image id.
TAG_RECIPE = "{{ account }}/{{ region }}/{{ image.tags.Pipeline or image_id }}"
NAME_RECIPE = (
    "{{ account }}/{{ region }}/{{ image.name.rsplit('-', 3)[0] if image.name else image_id }}"
)


def pagerduty(url: str, **options: Any) -> dict[str, Any]:
    return {
        "name": "oncall",
        "type": "pagerduty",
        "routing_key": ROUTING_KEY,
        "events_url": url,
        **options,
    }


@pytest.fixture
def api() -> Iterator[EventsApi]:
    with EventsApi() as server:
        yield server


def incidents(resources: HandlerResources, action: str) -> float:
    value = resources.metrics.registry.get_sample_value(
        "amid_incidents_total", {"handler": "oncall", "action": action}
    )
    assert value is not None, "the series is primed at zero"
    return value


class TestTheServer:
    """The stand-in refuses what PagerDuty refuses, so a request it accepts is a valid one."""

    def test_a_trigger_without_summary_or_with_a_bad_severity_is_refused(self) -> None:
        body = {
            "routing_key": ROUTING_KEY,
            "event_action": "trigger",
            "payload": {"source": "x", "severity": "high"},
        }
        found = problems(json.dumps(body).encode())
        assert any("summary" in p for p in found)
        assert any("severity" in p for p in found)

    def test_a_resolve_without_dedup_key_or_a_short_routing_key_is_refused(self) -> None:
        found = problems(json.dumps({"routing_key": "short", "event_action": "resolve"}).encode())
        assert len(found) == 2

    def test_an_undocumented_field_is_refused(self) -> None:
        body = {"routing_key": ROUTING_KEY, "event_action": "resolve", "dedup_key": "k", "x": 1}
        assert problems(json.dumps(body).encode()) == ["unknown field 'x'"]


class TestRequest:
    async def test_a_failed_event_triggers_with_the_rendered_key_and_every_field(
        self, make_handler: MakeHandler, api: EventsApi
    ) -> None:
        handler = await make_handler(pagerduty(api.url, dedup_key=PIPELINE_KEY))
        notification = notify("failed", IMAGE)
        reference = await handler.send(notification)
        (request,) = api.received()
        assert request.problems == () and request.accepted
        body = request.body
        assert body["routing_key"] == ROUTING_KEY
        assert body["event_action"] == "trigger"
        assert body["dedup_key"] == "012345678901/us-east-1/golden-web" == reference
        event = notification.event
        assert body["payload"] == {
            "summary": f"AMI {event.image_id} failed in us-east-1: {event.error_message}",
            "source": event.image_id,
            "severity": "error",
            "timestamp": "2025-05-01T12:34:56Z",
            "component": "ami",
            "group": "012345678901/us-east-1",
            "class": "failed",
            "custom_details": {"detail": event.detail, "image": IMAGE},
        }
        assert body["links"] == [
            {"href": event.console_url, "text": f"AMI {event.image_id} in the EC2 console"}
        ]
        assert body["client"] == "amid"
        assert set(body) == {
            "routing_key",
            "event_action",
            "dedup_key",
            "payload",
            "links",
            "client",
        }

    async def test_an_available_event_resolves_the_same_key_and_carries_nothing_else(
        self, make_handler: MakeHandler, api: EventsApi
    ) -> None:
        handler = await make_handler(pagerduty(api.url, dedup_key=PIPELINE_KEY))
        image = {**IMAGE, "name": "golden-web-2025-05-02"}
        await handler.send(notify("available", image))
        (request,) = api.accepted()
        assert request.body == {
            "routing_key": ROUTING_KEY,
            "event_action": "resolve",
            "dedup_key": "012345678901/us-east-1/golden-web",
        }
        compact = (
            f'{{"routing_key":"{ROUTING_KEY}","event_action":"resolve",'
            '"dedup_key":"012345678901/us-east-1/golden-web"}'
        )
        assert request.raw == compact.encode(), "compact JSON, as amid's other bodies"

    async def test_the_default_key_is_account_region_and_image_id(
        self, make_handler: MakeHandler, api: EventsApi
    ) -> None:
        handler = await make_handler(pagerduty(api.url))
        await handler.send(notify("failed"))
        assert api.accepted()[0].dedup_key == "012345678901/us-east-1/ami-0123456789example"

    @pytest.mark.parametrize(
        ("recipe", "failed_image", "good_image"),
        [
            (TAG_RECIPE, IMAGE, {**IMAGE, "name": "golden-web-2025-05-02"}),
            (NAME_RECIPE, {"name": "golden-web-2025-05-01"}, {"name": "golden-web-2025-05-02"}),
        ],
    )
    async def test_the_recipes_of_the_docs_key_two_builds_of_a_pipeline_alike(
        self,
        make_handler: MakeHandler,
        api: EventsApi,
        recipe: str,
        failed_image: dict[str, Any],
        good_image: dict[str, Any],
    ) -> None:
        handler = await make_handler(pagerduty(api.url, dedup_key=recipe))
        await handler.send(notify("failed", failed_image))
        await handler.send(notify("available", good_image))
        await handler.send(notify("failed", {}))  # an image that does not tell: its id
        keys = [(r.action, r.dedup_key) for r in api.accepted()]
        assert keys == [
            ("trigger", "012345678901/us-east-1/golden-web"),
            ("resolve", "012345678901/us-east-1/golden-web"),
            ("trigger", "012345678901/us-east-1/ami-0123456789example"),
        ]

    def test_the_recipes_tested_here_are_the_ones_the_docs_show(self) -> None:
        docs = (Path(__file__).parents[2] / "docs" / "handlers.md").read_text()
        assert f'dedup_key: "{TAG_RECIPE}"' in docs
        assert f'dedup_key: "{NAME_RECIPE}"' in docs

    def test_the_compact_date_recipe_of_the_docs_strips_a_timestamp_too(self) -> None:
        context = template_context(seed_event("failed"), {"name": "golden-web-20250501T0200"})
        assert render("{{ image.name.rsplit('-', 1)[0] }}", context) == "golden-web"

    async def test_a_long_error_is_cut_to_pagerdutys_summary_limit_and_still_accepted(
        self, make_handler: MakeHandler, api: EventsApi
    ) -> None:
        handler = await make_handler(pagerduty(api.url, dedup_key="k" * 300 + "{{ image_id }}"))
        event = seed_event("failed", ErrorMessage="disk full " * 500)
        reference = await handler.send(Notification(event, {}))
        (request,) = api.accepted()
        assert len(request.body["payload"]["summary"]) == 1024
        assert request.body["payload"]["summary"].endswith("…")
        assert request.dedup_key == reference == "k" * 255

    async def test_an_unparsable_event_time_leaves_the_timestamp_to_pagerduty(
        self, make_handler: MakeHandler, api: EventsApi
    ) -> None:
        handler = await make_handler(pagerduty(api.url))
        event = seed_event("failed", time="yyyy-mm-ddThh:mm:ssZ")
        await handler.send(Notification(event, {}))
        (request,) = api.accepted()
        assert "timestamp" not in request.body["payload"]

    async def test_without_enrichment_custom_details_hold_the_detail_alone(
        self, make_handler: MakeHandler, api: EventsApi
    ) -> None:
        handler = await make_handler(pagerduty(api.url))
        notification = notify("failed")
        await handler.send(notification)
        details = api.accepted()[0].body["payload"]["custom_details"]
        assert details == {"detail": notification.event.detail}


class TestRender:
    async def test_render_matches_the_golden_files_and_masks_the_routing_key(
        self, make_handler: MakeHandler
    ) -> None:
        handler = await make_handler(
            pagerduty("https://events.pagerduty.com/v2/enqueue", dedup_key=PIPELINE_KEY)
        )
        rendered = {
            "failed": handler.render(notify("failed", IMAGE)),
            "available": handler.render(notify("available", IMAGE)),
            "overdue": handler.render(overdue()),
            "recovered": handler.render(recovered()),
        }
        for name, request in rendered.items():
            assert_golden(f"pagerduty_{name}.json", request)
        assert ROUTING_KEY not in json.dumps(rendered)
        assert rendered["failed"]["body"]["routing_key"] == "**********"
        for request in rendered.values():  # what PagerDuty would accept, the key put back
            assert (
                problems(json.dumps({**request["body"], "routing_key": ROUTING_KEY}).encode()) == []
            )

    async def test_a_state_mapped_to_none_renders_as_nothing_sent(
        self, make_handler: MakeHandler
    ) -> None:
        handler = await make_handler(pagerduty("https://events.pagerduty.com/v2/enqueue"))
        assert handler.render(notify("deregistered")) == (
            "nothing is sent: actions maps deregistered to none"
        )


class TestActions:
    async def test_by_default_deregistered_and_disabled_send_nothing_and_succeed(
        self, make_handler: MakeHandler, api: EventsApi, resources: HandlerResources
    ) -> None:
        handler = await make_handler(pagerduty(api.url))
        assert await handler.send(notify("deregistered")) is None
        assert await handler.send(notify("disabled")) is None
        assert api.received() == []
        assert [incidents(resources, a) for a in ("trigger", "acknowledge", "resolve")] == [0] * 3

    async def test_actions_changes_only_the_states_it_names(
        self, make_handler: MakeHandler, api: EventsApi, resources: HandlerResources
    ) -> None:
        handler = await make_handler(
            pagerduty(api.url, actions={"disabled": "acknowledge", "available": "none"})
        )
        await handler.send(notify("disabled"))
        assert await handler.send(notify("available")) is None
        await handler.send(notify("failed"))
        assert [r.action for r in api.accepted()] == ["acknowledge", "trigger"]
        acknowledge = api.accepted()[0].body
        assert set(acknowledge) == {"routing_key", "event_action", "dedup_key"}
        assert incidents(resources, "acknowledge") == 1
        assert incidents(resources, "trigger") == 1
        assert incidents(resources, "resolve") == 0

    async def test_a_severity_template_picks_the_severity_per_image(
        self, make_handler: MakeHandler, api: EventsApi
    ) -> None:
        severity = "{{ 'critical' if image.tags.Env == 'prod' else 'warning' }}"
        handler = await make_handler(pagerduty(api.url, severity=severity))
        await handler.send(notify("failed", {"tags": {"Env": "prod"}}))
        await handler.send(notify("failed", {"tags": {"Env": "dev"}}))
        assert [r.body["payload"]["severity"] for r in api.accepted()] == ["critical", "warning"]

    async def test_a_severity_template_rendering_no_severity_falls_back_to_error_and_counts(
        self, make_handler: MakeHandler, api: EventsApi, resources: HandlerResources
    ) -> None:
        handler = await make_handler(pagerduty(api.url, severity="{{ image.tags.Severity }}"))
        with capture_logs() as logs:
            await handler.send(notify("failed", {"tags": {"Severity": "sev1"}}))
        assert api.accepted()[0].body["payload"]["severity"] == "error"
        assert template_failures(resources, "oncall") == 1
        assert any(entry["event"] == "template failed; used the default" for entry in logs)

    async def test_a_dedup_key_rendering_empty_falls_back_to_the_default_key_and_counts(
        self, make_handler: MakeHandler, api: EventsApi, resources: HandlerResources
    ) -> None:
        handler = await make_handler(pagerduty(api.url, dedup_key="{{ image.tags.Pipeline }}"))
        await handler.send(notify("failed"))
        assert api.accepted()[0].dedup_key == "012345678901/us-east-1/ami-0123456789example"
        assert template_failures(resources, "oncall") == 1


class TestNotices:
    async def test_overdue_triggers_and_recovered_resolves_the_expectation_key(
        self, make_handler: MakeHandler, api: EventsApi, resources: HandlerResources
    ) -> None:
        # `actions` says nothing for notices: even with every state mapped to none.
        none = dict.fromkeys(("available", "failed", "deregistered", "disabled"), "none")
        handler = await make_handler(pagerduty(api.url, actions=none, dedup_key=PIPELINE_KEY))
        assert await handler.send(overdue()) == "amid/expectation/nightly-golden-ami"
        assert await handler.send(recovered()) == "amid/expectation/nightly-golden-ami"
        trigger, resolve = api.accepted()
        assert (trigger.action, resolve.action) == ("trigger", "resolve")
        payload = trigger.body["payload"]
        assert payload["summary"].startswith("⏰ nightly-golden-ami: no matching AMI event for 26h")
        assert payload["source"] == "nightly-golden-ami"
        assert payload["class"] == "overdue"
        assert payload["custom_details"]["status"] == "overdue"
        assert resolve.body == {
            "routing_key": ROUTING_KEY,
            "event_action": "resolve",
            "dedup_key": "amid/expectation/nightly-golden-ami",
        }
        assert incidents(resources, "trigger") == incidents(resources, "resolve") == 1

    async def test_a_severity_template_serves_a_notice_only_when_it_reads_expectation(
        self, make_handler: MakeHandler, api: EventsApi
    ) -> None:
        for severity, expected in (
            ("{{ 'critical' if image.tags.Env == 'prod' else 'info' }}", "error"),
            ("{{ 'warning' if expectation else 'info' }}", "warning"),
            ("critical", "critical"),
        ):
            handler = await make_handler(pagerduty(api.url, severity=severity))
            await handler.send(overdue())
            assert api.accepted()[-1].body["payload"]["severity"] == expected


class TestOutcomes:
    @pytest.mark.parametrize(
        ("status", "retryable"),
        [
            *[(status, True) for status in (429, 408, 500, 502, 503)],
            *[(status, False) for status in (400, 401, 403, 404, 413, 200)],
        ],
    )
    async def test_each_status_is_classified_as_spec_says(
        self, make_handler: MakeHandler, api: EventsApi, status: int, retryable: bool
    ) -> None:
        handler = await make_handler(pagerduty(api.url))
        api.script(Reply(status, {"Retry-After": "7"}))
        with pytest.raises(HandlerError) as raised:
            await handler.send(notify("failed"))
        assert raised.value.retryable is retryable
        assert raised.value.reason == f"http_{status}"
        assert raised.value.retry_after == (7.0 if retryable else None)

    async def test_a_refused_connection_is_retryable(
        self, make_handler: MakeHandler, closed_port_url: str
    ) -> None:
        handler = await make_handler(pagerduty(f"{closed_port_url}/v2/enqueue"))
        with pytest.raises(HandlerError) as raised:
            await handler.send(notify("failed"))
        assert raised.value.retryable and raised.value.reason == "connection"

    async def test_a_failed_request_counts_no_incident(
        self, make_handler: MakeHandler, api: EventsApi, resources: HandlerResources
    ) -> None:
        handler = await make_handler(pagerduty(api.url))
        api.script(500)
        with pytest.raises(HandlerError):
            await handler.send(notify("failed"))
        assert incidents(resources, "trigger") == 0


class TestSecret:
    async def test_an_error_echoing_the_routing_key_shows_it_nowhere(
        self, make_handler: MakeHandler, api: EventsApi, resources: HandlerResources
    ) -> None:
        handler = await make_handler(pagerduty(api.url))
        echo = json.dumps({"status": "invalid event", "errors": [f"bad key {ROUTING_KEY}"]})
        api.script(Reply(400, body=echo))
        with capture_logs() as logs, pytest.raises(HandlerError) as raised:
            await handler.send(notify("failed"))
        assert "bad key ***" in str(raised.value)
        assert ROUTING_KEY not in str(raised.value)
        assert ROUTING_KEY not in json.dumps(logs, default=str)
        assert ROUTING_KEY not in repr(handler)
        assert ROUTING_KEY.encode() not in generate_latest(resources.metrics.registry)


class TestConfig:
    def parse(self, **options: Any) -> Any:
        item = {"name": "oncall", "type": "pagerduty", "routing_key": ROUTING_KEY, **options}
        text = yaml.safe_dump({"queue": {"url": "http://127.0.0.1:1/1/q"}, "handlers": [item]})
        return parse_config(text, env={})

    def problems(self, **options: Any) -> list[str]:
        with pytest.raises(ConfigError) as raised:
            self.parse(**options)
        return raised.value.problems

    def test_a_digest_is_a_config_error_naming_its_path(self) -> None:
        assert self.problems(digest={"wait": "30s"}) == [
            "handlers[0].digest: a pagerduty handler takes no digest "
            "(PagerDuty groups alerts itself)"
        ]

    def test_an_action_for_a_state_that_does_not_exist_is_refused(self) -> None:
        (problem,) = self.problems(actions={"faild": "trigger"})
        assert problem.startswith("handlers[0].actions: 'faild' is not an AMI state")

    def test_an_unknown_action_is_refused(self) -> None:
        (problem,) = self.problems(actions={"failed": "page"})
        assert problem.startswith("handlers[0].actions.failed: ")

    def test_a_severity_that_is_neither_a_value_nor_a_template_is_refused(self) -> None:
        (problem,) = self.problems(severity="high")
        assert problem.startswith("handlers[0].severity: 'high' is not a severity")

    def test_a_dedup_key_that_does_not_compile_is_refused(self) -> None:
        (problem,) = self.problems(dedup_key="{{ image_id")
        assert problem.startswith("handlers[0].dedup_key: template does not compile")

    def test_the_routing_key_is_read_from_its_file_without_surrounding_white_space(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "key"
        path.write_text(f"  {ROUTING_KEY}\n")
        item = {"name": "oncall", "type": "pagerduty", "routing_key_file": str(path)}
        text = yaml.safe_dump({"queue": {"url": "http://127.0.0.1:1/1/q"}, "handlers": [item]})
        handler = parse_config(text, env={}).handlers[0]
        assert handler.routing_key.get_secret_value() == ROUTING_KEY
        assert ROUTING_KEY not in repr(handler)

    def test_exactly_one_of_routing_key_and_its_file(self, tmp_path: Path) -> None:
        (problem,) = self.problems(routing_key_file=str(tmp_path / "key"))
        assert problem == "handlers[0]: set exactly one of routing_key and routing_key_file"

    def test_the_defaults_are_the_ones_spec_gives(self) -> None:
        handler = self.parse().handlers[0]
        assert handler.dedup_key == "{{ account }}/{{ region }}/{{ image_id }}"
        assert handler.severity == "error"
        assert handler.events_url == "https://events.pagerduty.com/v2/enqueue"
        assert {s: handler.action_for(s) for s in ("failed", "available", "disabled", "new")} == {
            "failed": "trigger",
            "available": "resolve",
            "disabled": "none",
            "new": "none",
        }


class TestLedger:
    """Guarantee 2.12: an action is recorded per (event, handler) like any delivery."""

    async def test_a_redelivery_after_another_handler_failed_sends_no_second_trigger(
        self, api: EventsApi, resources: HandlerResources, closed_port_url: str
    ) -> None:
        text = yaml.safe_dump(
            {
                "queue": {"url": "http://127.0.0.1:1/123456789012/q"},
                "defaults": {"retry": {"attempts": 1}},
                "handlers": [
                    pagerduty(api.url),
                    {"name": "inventory", "type": "webhook", "url": closed_port_url},
                ],
            }
        )
        config = parse_config(text, env={})
        handlers = {h.name: build_handler(h, config, resources) for h in config.handlers}
        runtime = Runtime(config, Router(config.handlers), handlers)
        pipeline = Pipeline(
            ledger=MemoryStore(ttl=3600), metrics=resources.metrics, owner="me", lease=30
        )
        body = json.dumps(synthetic_event("failed"))
        outcomes = [await pipeline.process(body, runtime) for _ in range(3)]
        assert [o.label for o in outcomes] == ["retry"] * 3, "the webhook still fails"
        assert [r.action for r in api.received()] == ["trigger"]
        first = {r.handler: r for r in outcomes[0].results}
        assert (
            first["oncall"].delivered and first["oncall"].reference == api.received()[0].dedup_key
        )
        assert [r.handler for r in outcomes[2].results] == ["inventory"]
