"""The slack handler: default message, templates, outcomes and rate limit, on a local server."""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any

import pytest
from structlog.testing import capture_logs

from amid.handlers import HandlerError, HandlerResources, Notification
from tests.handlers.conftest import (
    MakeHandler,
    Receiver,
    assert_golden,
    notify,
    seed_event,
    template_failures,
)

SECRET_PATH = "/services/T0000/B0000/s3cr3tT0k3nXXXXXXXXXXXX"
IMAGE = {
    "name": "web-2025-05-01",
    "description": "Web tier, Amazon Linux 2023",
    "owner": "012345678901",
    "creation_date": "2025-05-01T12:20:00.000Z",
    "tags": {"team": "platform", "build": "1234"},
}


def slack(receiver: Receiver, **options: Any) -> dict[str, Any]:
    return {
        "name": "ops-slack",
        "type": "slack",
        "webhook_url": receiver.url + SECRET_PATH,
        "rate_limit": 100,
        **options,
    }


def mrkdwn_texts(node: Any) -> list[str]:
    """Every mrkdwn text object in a Block Kit structure: what Slack parses for mentions."""
    if isinstance(node, list):
        return [text for item in node for text in mrkdwn_texts(item)]
    if isinstance(node, dict):
        if node.get("type") == "mrkdwn":
            return [node["text"]]
        return [text for value in node.values() for text in mrkdwn_texts(value)]
    return []


class TestDefaultMessage:
    @pytest.mark.parametrize("state", ["available", "failed", "deregistered", "disabled"])
    async def test_renders_as_the_golden_file(
        self, state: str, make_handler: MakeHandler, receiver: Receiver
    ) -> None:
        handler = await make_handler(slack(receiver))
        assert_golden(f"slack_{state}.json", handler.render(notify(state)))

    async def test_enriched_message_matches_golden_file_with_name_and_tags(
        self, make_handler: MakeHandler, receiver: Receiver
    ) -> None:
        handler = await make_handler(slack(receiver))
        payload = handler.render(notify("available", IMAGE))
        assert_golden("slack_available_enriched.json", payload)
        blocks = json.dumps(payload["blocks"])
        assert "web-2025-05-01" in blocks
        assert "`team`: platform" in blocks

    async def test_fallback_text_names_image_state_region_and_error(
        self, make_handler: MakeHandler, receiver: Receiver
    ) -> None:
        handler = await make_handler(slack(receiver))
        text = handler.render(notify("failed"))["text"]
        for part in ("ami-0123456789example", "failed", "us-east-1", "Description of failure"):
            assert part in text

    async def test_links_to_the_ami_in_the_ec2_console(
        self, make_handler: MakeHandler, receiver: Receiver
    ) -> None:
        handler = await make_handler(slack(receiver))
        notification = notify("available")
        assert notification.event.console_url in json.dumps(handler.render(notification))

    async def test_event_values_are_escaped_so_they_cannot_mention_or_link(
        self, make_handler: MakeHandler, receiver: Receiver
    ) -> None:
        handler = await make_handler(slack(receiver))
        image = {"name": "<!channel>", "tags": {"owner": "<@U123> & <https://evil|x>"}}
        payload = handler.render(notify("available", image))
        parsed = [payload["text"], *mrkdwn_texts(payload["blocks"])]  # plain_text is never parsed
        assert not any("<!channel>" in text or "<@U123>" in text for text in parsed)
        assert any("&lt;!channel&gt;" in text for text in parsed)

    async def test_long_error_message_is_cut_to_slack_block_limits(
        self, make_handler: MakeHandler, receiver: Receiver
    ) -> None:
        handler = await make_handler(slack(receiver))
        big = Notification(event=seed_event("failed", ErrorMessage="x" * 10_000), image={})
        payload = handler.render(big)
        assert len(payload["text"]) <= 4000
        for block in payload["blocks"]:
            if block["type"] == "section" and "text" in block:
                assert len(block["text"]["text"]) <= 3000

    async def test_username_icon_and_channel_are_added_when_set(
        self, make_handler: MakeHandler, receiver: Receiver
    ) -> None:
        handler = await make_handler(
            slack(receiver, username="amid", icon_emoji=":robot_face:", channel="#ami")
        )
        payload = handler.render(notify("available"))
        assert (payload["username"], payload["icon_emoji"], payload["channel"]) == (
            "amid",
            ":robot_face:",
            "#ami",
        )


class TestTemplates:
    async def test_template_replaces_the_text_and_the_blocks_carry_it(
        self, make_handler: MakeHandler, receiver: Receiver
    ) -> None:
        handler = await make_handler(slack(receiver, template="{{ image_id }} is {{ state }}"))
        payload = handler.render(notify("disabled"))
        assert payload["text"] == "ami-0123456789example is disabled"
        assert payload["blocks"] == [
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": "ami-0123456789example is disabled"},
            }
        ]

    async def test_payload_template_renders_the_whole_body(
        self, make_handler: MakeHandler, receiver: Receiver
    ) -> None:
        template = '{"text": {{ ("AMI " ~ image_id ~ ": " ~ error_message) | tojson }}}'
        handler = await make_handler(slack(receiver, payload_template=template, username="amid"))
        payload = handler.render(notify("failed"))
        assert payload == {
            "text": "AMI ami-0123456789example: Description of failure",
            "username": "amid",
        }

    async def test_payload_template_that_is_not_json_falls_back_and_is_counted(
        self, make_handler: MakeHandler, receiver: Receiver, resources: HandlerResources
    ) -> None:
        handler = await make_handler(slack(receiver, payload_template='{"text": "{{ state }}'))
        await handler.send(notify("failed"))
        assert receiver.requests[0].json()["text"] == handler.render(notify("failed"))["text"]
        assert "Description of failure" in receiver.requests[0].json()["text"]
        assert template_failures(resources, "ops-slack") == 1

    async def test_template_failing_at_run_time_falls_back_and_is_counted(
        self, make_handler: MakeHandler, receiver: Receiver, resources: HandlerResources
    ) -> None:
        handler = await make_handler(slack(receiver, template="{{ image.tags.missing.deeper }}"))
        await handler.send(notify("available"))
        assert "ami-0123456789example is available" in receiver.requests[0].json()["text"]
        assert template_failures(resources, "ops-slack") == 1

    @pytest.mark.parametrize(
        "template",
        [
            "{{ ''.__class__.__mro__[1].__subclasses__() }}",
            "{{ cycler.__init__.__globals__ }}",
            "{{ self.__init__.__globals__ }}",
            "{{ lipsum.__globals__['os'].popen('id').read() }}",
            "{{ namespace.__init__.__globals__ }}",
        ],
    )
    async def test_template_escaping_the_sandbox_is_refused_and_falls_back(
        self,
        template: str,
        make_handler: MakeHandler,
        receiver: Receiver,
        resources: HandlerResources,
    ) -> None:
        handler = await make_handler(slack(receiver, template=template))
        await handler.send(notify("failed"))
        body = receiver.requests[0].body.decode()
        assert "subclasses" not in body and "__globals__" not in body and "uid=" not in body
        assert "Description of failure" in receiver.requests[0].json()["text"]
        assert template_failures(resources, "ops-slack") == 1


class TestSend:
    async def test_send_posts_exactly_one_json_request_with_the_rendered_body(
        self, make_handler: MakeHandler, receiver: Receiver
    ) -> None:
        handler = await make_handler(slack(receiver))
        await handler.send(notify("failed"))
        assert len(receiver.requests) == 1
        request = receiver.requests[0]
        assert (request.method, request.path_qs) == ("POST", SECRET_PATH)
        assert request.headers["Content-Type"].startswith("application/json")
        assert request.json() == handler.render(notify("failed"))

    async def test_http_500_is_a_retryable_error(
        self, make_handler: MakeHandler, receiver: Receiver
    ) -> None:
        receiver.then(500, "rollup_error")
        handler = await make_handler(slack(receiver))
        with pytest.raises(HandlerError) as caught:
            await handler.send(notify())
        assert (caught.value.retryable, caught.value.reason) == (True, "http_500")

    async def test_http_429_retry_after_is_passed_on(
        self, make_handler: MakeHandler, receiver: Receiver
    ) -> None:
        receiver.then(429, "rate_limited", {"Retry-After": "2"})
        handler = await make_handler(slack(receiver))
        with pytest.raises(HandlerError) as caught:
            await handler.send(notify())
        assert caught.value.retryable is True
        assert caught.value.reason == "http_429"
        assert caught.value.retry_after == 2

    async def test_http_404_is_permanent_and_quotes_slack_reason(
        self, make_handler: MakeHandler, receiver: Receiver
    ) -> None:
        receiver.then(404, "no_service")
        handler = await make_handler(slack(receiver))
        with pytest.raises(HandlerError) as caught:
            await handler.send(notify())
        assert (caught.value.retryable, caught.value.reason) == (False, "http_404")
        assert "no_service" in str(caught.value)

    async def test_connection_refused_is_retryable_and_names_no_url(
        self, make_handler: MakeHandler, closed_port_url: str
    ) -> None:
        handler = await make_handler(
            {"name": "ops-slack", "type": "slack", "webhook_url": closed_port_url + SECRET_PATH}
        )
        with pytest.raises(HandlerError) as caught:
            await handler.send(notify())
        assert (caught.value.retryable, caught.value.reason) == (True, "connection")
        assert "s3cr3t" not in str(caught.value) and "127.0.0.1" not in str(caught.value)
        assert caught.value.__cause__ is None and caught.value.__suppress_context__

    async def test_hanging_webhook_is_cancelled_by_timeout_and_the_connection_closed(
        self, make_handler: MakeHandler, receiver: Receiver
    ) -> None:
        receiver.then_hang()
        handler = await make_handler(slack(receiver))
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await handler.send(notify())
        async with asyncio.timeout(5):
            await receiver.disconnected.wait()
        await handler.send(notify())  # the session is still usable
        assert len(receiver.requests) == 2


async def paced_send(handler: Any) -> None:
    """What deliver() does per try: wait for a turn, then send."""
    await handler.pace()
    await handler.send(notify())


class TestRateLimit:
    async def test_waiting_for_a_turn_does_not_count_against_the_timeout(
        self, make_handler: MakeHandler, receiver: Receiver
    ) -> None:
        from amid.config import RetryConfig
        from amid.metrics import Metrics
        from amid.pipeline.deliver import deliver

        handler = await make_handler(slack(receiver, rate_limit=10))
        results = await asyncio.gather(
            *(
                deliver(
                    handler, notify(), timeout=0.5, retry=RetryConfig(attempts=1), metrics=Metrics()
                )
                for _ in range(12)
            )
        )
        assert all(result.delivered for result in results), "the last waits 1.1 s for its turn"
        assert len(receiver.requests) == 12

    async def test_burst_to_one_webhook_is_spaced_by_the_rate_limit(
        self, make_handler: MakeHandler, receiver: Receiver
    ) -> None:
        handler = await make_handler(slack(receiver, rate_limit=5))
        await asyncio.gather(*(paced_send(handler) for _ in range(20)))
        arrivals = [request.at for request in receiver.requests]
        assert len(arrivals) == 20
        gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals)]
        assert min(gaps) >= 0.2 - 0.03, gaps

    async def test_two_handlers_on_one_webhook_share_the_limit(
        self, make_handler: MakeHandler, receiver: Receiver
    ) -> None:
        first = await make_handler(slack(receiver, rate_limit=10))
        second = await make_handler(slack(receiver, name="audit-slack", rate_limit=10))
        await asyncio.gather(*(paced_send(h) for h in [first, second] * 4))
        arrivals = [request.at for request in receiver.requests]
        gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals)]
        assert len(arrivals) == 8
        assert min(gaps) >= 0.1 - 0.03, gaps

    async def test_handlers_on_different_webhooks_do_not_wait_for_each_other(
        self, make_handler: MakeHandler, receiver: Receiver
    ) -> None:
        first = await make_handler(slack(receiver, rate_limit=1))
        other = slack(receiver, name="other", rate_limit=1)
        other["webhook_url"] = receiver.url + "/services/T0000/B1111/another"
        second = await make_handler(other)
        async with asyncio.timeout(0.5):
            await asyncio.gather(paced_send(first), paced_send(second))
        assert len(receiver.requests) == 2


class TestSecrets:
    async def test_repr_of_handler_and_config_hide_the_webhook_url(
        self, make_handler: MakeHandler, receiver: Receiver
    ) -> None:
        handler = await make_handler(slack(receiver))
        assert "s3cr3t" not in repr(handler)
        assert "s3cr3t" not in repr(handler._config)

    async def test_webhook_url_never_appears_in_logs_or_errors(
        self, make_handler: MakeHandler, receiver: Receiver, closed_port_url: str
    ) -> None:
        broken = slack(receiver, template="{{ nope() }}")
        refused = slack(receiver, name="refused")
        refused["webhook_url"] = closed_port_url + SECRET_PATH
        receiver.then(500, f"echo {SECRET_PATH}")
        errors: list[str] = []
        with capture_logs() as logs:
            for item in (broken, refused):
                handler = await make_handler(item)
                with pytest.raises(HandlerError) as caught:
                    await handler.send(notify("failed"))
                errors.append(f"{caught.value!s} {caught.value!r}")
        assert logs, "the template failure is logged"
        text = repr(logs) + " ".join(errors)
        assert "s3cr3t" not in text
        assert "/services/" not in text
