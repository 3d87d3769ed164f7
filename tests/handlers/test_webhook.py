"""The webhook handler against a local HTTP receiver: request shape, outcomes, secrets."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from structlog.testing import capture_logs

from amid.handlers import HandlerError, HandlerResources
from tests.handlers.conftest import (
    EVENT_ID,
    MakeHandler,
    Receiver,
    assert_golden,
    notify,
    template_failures,
)

TOKEN = "Bearer tok-9f8e7d6c5b4a"
API_KEY = "key-0a1b2c3d4e5f"
URL_SECRET = "sig=abcdef0123456789"


def webhook(base_url: str, **options: Any) -> dict[str, Any]:
    return {
        "name": "inventory",
        "type": "webhook",
        "url": f"{base_url}/api/ami-events?{URL_SECRET}",
        "headers": {"Authorization": TOKEN, "X-Api-Key": API_KEY},
        **options,
    }


class TestRequest:
    async def test_send_delivers_one_request_with_event_json_and_headers(
        self, make_handler: MakeHandler, receiver: Receiver
    ) -> None:
        handler = await make_handler(webhook(receiver.url, method="PUT"))
        notification = notify("deregistered")
        await handler.send(notification)
        assert len(receiver.requests) == 1
        request = receiver.requests[0]
        assert (request.method, request.path_qs) == ("PUT", f"/api/ami-events?{URL_SECRET}")
        assert request.headers["Authorization"] == TOKEN
        assert request.headers["X-Api-Key"] == API_KEY
        assert request.headers["Content-Type"] == "application/json"
        assert request.headers["X-Amid-Event-Id"] == EVENT_ID
        assert request.json() == notification.event.raw

    async def test_body_template_is_sent_with_its_content_type(
        self, make_handler: MakeHandler, receiver: Receiver
    ) -> None:
        handler = await make_handler(
            webhook(
                receiver.url,
                body="{{ image_id }} {{ state }} {{ image.name }}",
                content_type="text/plain",
            )
        )
        await handler.send(notify("available", {"name": "web"}))
        request = receiver.requests[0]
        assert request.body == b"ami-0123456789example available web"
        assert request.headers["Content-Type"] == "text/plain"

    async def test_configured_content_type_header_wins_over_the_default(
        self, make_handler: MakeHandler, receiver: Receiver
    ) -> None:
        handler = await make_handler(
            webhook(receiver.url, headers={"content-type": "application/cloudevents+json"})
        )
        await handler.send(notify())
        assert receiver.requests[0].headers["Content-Type"] == "application/cloudevents+json"

    async def test_json_body_template_that_renders_invalid_json_falls_back_and_is_counted(
        self, make_handler: MakeHandler, receiver: Receiver, resources: HandlerResources
    ) -> None:
        handler = await make_handler(webhook(receiver.url, body='{"error": "{{ error_message }}'))
        notification = notify("failed")
        await handler.send(notification)
        assert receiver.requests[0].json() == notification.event.raw
        assert template_failures(resources, "inventory") == 1

    async def test_sandbox_escape_in_body_is_refused_and_falls_back(
        self, make_handler: MakeHandler, receiver: Receiver, resources: HandlerResources
    ) -> None:
        handler = await make_handler(
            webhook(receiver.url, body="{{ ''.__class__.__mro__[1].__subclasses__() }}")
        )
        notification = notify("failed")
        await handler.send(notification)
        assert receiver.requests[0].json() == notification.event.raw
        assert template_failures(resources, "inventory") == 1

    async def test_render_masks_header_values_and_leaves_out_the_url(
        self, make_handler: MakeHandler, receiver: Receiver
    ) -> None:
        handler = await make_handler(webhook(receiver.url))
        rendered = handler.render(notify("available"))
        assert_golden("webhook_available.json", rendered)
        text = json.dumps(rendered)
        assert TOKEN not in text and API_KEY not in text and URL_SECRET not in text


class TestOutcomes:
    @pytest.mark.parametrize(
        ("status", "retryable"),
        [
            (500, True),
            (502, True),
            (503, True),
            (408, True),
            (429, True),
            (404, False),
            (400, False),
            (401, False),
            (410, False),
            (301, False),
        ],
    )
    async def test_status_is_classified(
        self, status: int, retryable: bool, make_handler: MakeHandler, receiver: Receiver
    ) -> None:
        receiver.then(status, "nope", {"Location": "http://127.0.0.1:1/"} if status == 301 else {})
        handler = await make_handler(webhook(receiver.url))
        with pytest.raises(HandlerError) as caught:
            await handler.send(notify())
        assert (caught.value.retryable, caught.value.reason) == (retryable, f"http_{status}")
        assert len(receiver.requests) == 1  # one try, and a redirect is not followed

    async def test_2xx_other_than_200_is_success(
        self, make_handler: MakeHandler, receiver: Receiver
    ) -> None:
        receiver.then(202, "")
        handler = await make_handler(webhook(receiver.url))
        await handler.send(notify())
        assert len(receiver.requests) == 1

    async def test_http_429_retry_after_seconds_is_passed_on(
        self, make_handler: MakeHandler, receiver: Receiver
    ) -> None:
        receiver.then(429, "", {"Retry-After": "2"})
        handler = await make_handler(webhook(receiver.url))
        with pytest.raises(HandlerError) as caught:
            await handler.send(notify())
        assert caught.value.retry_after == 2

    async def test_http_503_retry_after_date_is_passed_on_as_seconds(
        self, make_handler: MakeHandler, receiver: Receiver
    ) -> None:
        receiver.then(503, "", {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})
        handler = await make_handler(webhook(receiver.url))
        with pytest.raises(HandlerError) as caught:
            await handler.send(notify())
        assert caught.value.retry_after == 0  # a date in the past means: now

    async def test_hanging_receiver_is_cancelled_by_timeout_and_the_connection_closed(
        self, make_handler: MakeHandler, receiver: Receiver
    ) -> None:
        receiver.then_hang()
        handler = await make_handler(webhook(receiver.url))
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await handler.send(notify())
        async with asyncio.timeout(5):
            await receiver.disconnected.wait()

    async def test_connection_refused_is_retryable(
        self, make_handler: MakeHandler, closed_port_url: str
    ) -> None:
        handler = await make_handler(webhook(closed_port_url))
        with pytest.raises(HandlerError) as caught:
            await handler.send(notify())
        assert (caught.value.retryable, caught.value.reason) == (True, "connection")


class TestSecrets:
    async def test_url_and_header_values_never_appear_in_logs_or_errors(
        self, make_handler: MakeHandler, receiver: Receiver, closed_port_url: str
    ) -> None:
        # The receiver echoes the request's secrets in its error body, as some do.
        receiver.then(400, f"bad request: Authorization={TOKEN} X-Api-Key={API_KEY} {URL_SECRET}")
        receiver.then(500, "")
        failing_template = webhook(receiver.url, body="{{ missing() }}")
        refused = webhook(closed_port_url, name="refused")
        errors: list[str] = []
        with capture_logs() as logs:
            for item in (webhook(receiver.url, name="echo"), failing_template, refused):
                handler = await make_handler(item)
                with pytest.raises(HandlerError) as caught:
                    await handler.send(notify("failed"))
                errors.append(f"{caught.value!s} {caught.value!r} {handler!r}")
        assert logs, "the template failure is logged"
        text = repr(logs) + " ".join(errors)
        for secret in (TOKEN, "tok-9f8e7d6c5b4a", API_KEY, URL_SECRET, "/api/ami-events"):
            assert secret not in text
        assert "bad request" in errors[0]  # the receiver's reason is kept, its echo scrubbed

    async def test_repr_of_config_hides_url_and_header_values(
        self, make_handler: MakeHandler, receiver: Receiver
    ) -> None:
        handler = await make_handler(webhook(receiver.url))
        text = repr(handler) + repr(handler._config)
        assert TOKEN not in text and API_KEY not in text and URL_SECRET not in text
