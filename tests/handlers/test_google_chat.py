"""The google_chat handler: Chat API shapes, threading, escaping, templates, outcomes and rate
limit, on a local server."""

from __future__ import annotations

import html.parser
import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml
from structlog.testing import capture_logs

from amid import jsoncodec
from amid.config import ConfigError, parse_config
from amid.handlers import HandlerError, HandlerResources, Notification
from amid.handlers.google_chat import with_reply_option
from tests.google_chat_schema import assert_valid_chat_payload, problems
from tests.handlers.chat_helpers import IMAGE, LARGEST_IMAGE, burst_gaps, chat_item
from tests.handlers.conftest import (
    GOLDEN,
    MakeHandler,
    Receiver,
    assert_golden,
    notify,
    seed_digest,
    seed_event,
    template_failures,
)
from tests.handlers.test_notices import overdue, recovered

KEY = "AIzaSyDdI0hCZtE6vySjMm-WEfRq3CPzqKqqsHI"
TOKEN = "s3cr3tT0k3n-XXXXXXXXXXXXXXXXXXXXXXXXXXX%3D"
SECRET_PATH = f"/v1/spaces/AAAAxyz/messages?key={KEY}&token={TOKEN}"
HOSTILE = {
    "name": "<users/all> <https://evil.example|click> <b>bold</b>",
    "description": '<a href="https://evil.example">d</a> & more',
    "tags": {"owner": "<font color=red>x</font>", "<i>k</i>": "*bold* _it_"},
}


def chat(receiver: Receiver | None = None, **options: Any) -> dict[str, Any]:
    return chat_item(
        "google_chat", "ops-chat", "https://chat.googleapis.com", SECRET_PATH, receiver, options
    )


def html_texts(payload: Any) -> list[str]:
    """Every card text Chat reads as HTML: textParagraph and decoratedText `text`."""
    found: list[str] = []
    for item in payload.get("cardsV2", []):
        for section in item["card"]["sections"]:
            for widget in section["widgets"]:
                for kind in ("textParagraph", "decoratedText"):
                    if kind in widget:
                        found.append(widget[kind]["text"])
    return found


class _Tags(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)


def tags_in(text: str) -> list[str]:
    parser = _Tags()
    parser.feed(text)
    return parser.tags


class TestMessage:
    @pytest.mark.parametrize("state", ["available", "failed", "deregistered", "disabled"])
    async def test_each_state_renders_as_the_golden_file(
        self, state: str, make_handler: MakeHandler
    ) -> None:
        handler = await make_handler(chat())
        assert_golden(f"google_chat_{state}.json", handler.render(notify(state)))

    async def test_digests_notices_and_enriched_events_render_as_the_golden_files(
        self, make_handler: MakeHandler
    ) -> None:
        handler = await make_handler(chat())
        assert_golden("google_chat_failed_enriched.json", handler.render(notify("failed", IMAGE)))
        assert_golden("google_chat_digest_deregistered.json", handler.render(seed_digest(3)))
        assert_golden(
            "google_chat_digest_failed_more.json", handler.render(seed_digest(25, "failed"))
        )
        assert_golden("notice_google_chat_overdue.json", handler.render(overdue()))
        assert_golden("notice_google_chat_recovered.json", handler.render(recovered()))

    @pytest.mark.parametrize(
        "path",
        sorted([*GOLDEN.glob("google_chat_*.json"), *GOLDEN.glob("notice_google_chat_*.json")]),
        ids=lambda p: p.stem,
    )
    def test_every_golden_payload_has_the_shape_the_chat_api_documents(self, path: Path) -> None:
        assert_valid_chat_payload(json.loads(path.read_text()))

    def test_the_schema_rejects_payloads_chat_would_refuse(self) -> None:
        good = json.loads((GOLDEN / "google_chat_failed.json").read_text())
        card = good["cardsV2"][0]["card"]
        button = {"text": "x", "onClick": {}}
        broken = [
            {**good, "cards": []},  # the retired v1 field
            {"thread": {"threadKey": "k"}},  # neither text nor a card
            {**good, "text": "x" * 4097},
            {**good, "cardsV2": [{"cardId": "a", "card": {**card, "header": {"subtitle": "s"}}}]},
            {**good, "cardsV2": [{"card": {"sections": [{"widgets": [{"textParagraph": {}}]}]}}]},
            {
                **good,
                "cardsV2": [
                    {
                        "card": {
                            "sections": [
                                {"widgets": [{"textParagraph": {"text": "a"}, "divider": {}}]}
                            ]
                        }
                    }
                ],
            },
            {
                **good,
                "cardsV2": [
                    {"card": {"sections": [{"widgets": [{"buttonList": {"buttons": [button]}}]}]}}
                ],
            },
            {
                **good,
                "cardsV2": [
                    {"card": {"sections": [{"widgets": [{"textParagraph": {"text": "a"}}] * 101}]}}
                ],
            },
        ]
        assert problems(good) == []
        assert all(problems(payload) for payload in broken), [problems(p) for p in broken]

    async def test_a_digest_names_the_count_lists_twenty_and_counts_the_rest(
        self, make_handler: MakeHandler
    ) -> None:
        handler = await make_handler(chat())
        digest = seed_digest(25, "failed")
        payload = handler.render(digest)
        assert payload["text"].startswith("❌ 25 AMIs failed in")
        texts = html_texts(payload)
        listed = [text for text in texts if text.startswith("• ")]
        assert len(listed) == 20
        assert texts[-1] == "and 5 more"
        for notification in digest.notifications[:20]:
            assert sum(notification.event.image_id in text for text in listed) == 1

    async def test_an_overdue_notice_says_the_spec_sentence(
        self, make_handler: MakeHandler
    ) -> None:
        handler = await make_handler(chat())
        payload = handler.render(overdue())
        assert payload["text"] == (
            "⏰ nightly-golden-ami: no matching AMI event for 26h (expected every 24h)"
        )


class TestThreads:
    async def test_one_image_s_messages_share_a_thread_keyed_by_its_id(
        self, make_handler: MakeHandler
    ) -> None:
        handler = await make_handler(chat())
        keys = {
            handler.render(notify(state))["thread"]["threadKey"]
            for state in ("available", "disabled")
        }
        assert keys == {"ami-0123456789example"}

    async def test_thread_by_is_a_template(self, make_handler: MakeHandler) -> None:
        handler = await make_handler(chat(thread_by="{{ account }}/{{ image.name }}"))
        payload = handler.render(notify("failed", IMAGE))
        assert payload["thread"] == {"threadKey": "012345678901/web-2025-05-01"}

    async def test_a_failing_thread_by_falls_back_to_the_image_id_and_is_counted(
        self, make_handler: MakeHandler, receiver: Receiver, resources: HandlerResources
    ) -> None:
        handler = await make_handler(chat(receiver, thread_by="{{ nope() }}"))
        await handler.send(notify("failed"))
        assert receiver.requests[0].json()["thread"] == {"threadKey": "ami-0123456789example"}
        assert template_failures(resources, "ops-chat") == 1

    async def test_an_expectation_s_notices_share_a_thread(self, make_handler: MakeHandler) -> None:
        handler = await make_handler(chat())
        assert (
            handler.render(overdue())["thread"]
            == handler.render(recovered())["thread"]
            == {"threadKey": "expectation-nightly-golden-ami"}
        )

    def test_the_reply_option_is_added_and_the_url_s_own_parameters_kept_byte_for_byte(
        self,
    ) -> None:
        url = "https://chat.googleapis.com" + SECRET_PATH
        posted = with_reply_option(url)
        assert posted == url + "&messageReplyOption=REPLY_MESSAGE_FALLBACK_TO_NEW_THREAD"
        again = with_reply_option(url + "&messageReplyOption=REPLY_MESSAGE_OR_FAIL")
        assert again == posted
        bare = with_reply_option("https://chat.example/v1/spaces/A/messages")
        assert bare.endswith("/messages?messageReplyOption=REPLY_MESSAGE_FALLBACK_TO_NEW_THREAD")


class TestEscaping:
    async def test_html_and_chat_markup_from_events_and_images_are_shown_not_rendered(
        self, make_handler: MakeHandler
    ) -> None:
        handler = await make_handler(chat())
        event = seed_event("failed", ErrorMessage="<users/all> <a href='x'>y</a> & z")
        payloads = [
            handler.render(Notification(event, HOSTILE)),
            handler.render(seed_digest(2, "failed", image=HOSTILE)),
        ]
        for payload in payloads:
            assert_valid_chat_payload(payload)
            assert "<users/" not in payload["text"] and "<https:" not in payload["text"]
            for text in html_texts(payload):
                assert set(tags_in(text)) <= {"b", "i", "font", "br"}, text  # amid's own only
                assert "<users/" not in text and "<a " not in text
        rendered = " ".join(html_texts(payloads[0]))
        assert "&lt;users/all&gt; &lt;a href='x'&gt;y&lt;/a&gt; &amp; z" in rendered
        assert "&lt;font color=red&gt;x&lt;/font&gt;" in rendered


class TestTemplates:
    async def test_template_replaces_the_text_and_the_message_is_threaded(
        self, make_handler: MakeHandler
    ) -> None:
        handler = await make_handler(chat(template="*{{ image_id }}* is {{ state }}"))
        assert handler.render(notify("disabled")) == {
            "text": "*ami-0123456789example* is disabled",
            "thread": {"threadKey": "ami-0123456789example"},
        }

    async def test_payload_template_renders_the_body_and_may_name_its_own_thread(
        self, make_handler: MakeHandler
    ) -> None:
        template = '{"text": {{ image_id | tojson }}, "thread": {"threadKey": "all"}}'
        handler = await make_handler(chat(payload_template=template))
        assert handler.render(notify("failed")) == {
            "text": "ami-0123456789example",
            "thread": {"threadKey": "all"},
        }

    async def test_a_payload_template_that_is_not_a_message_falls_back_and_is_counted(
        self, make_handler: MakeHandler, receiver: Receiver, resources: HandlerResources
    ) -> None:
        handler = await make_handler(chat(receiver, payload_template='{"blocks": []}'))
        await handler.send(notify("failed"))
        expected = json.loads((GOLDEN / "google_chat_failed.json").read_text())
        assert receiver.requests[0].json() == expected
        assert template_failures(resources, "ops-chat") == 1


class TestSend:
    async def test_posts_one_message_to_the_webhook_with_the_reply_option(
        self, make_handler: MakeHandler, receiver: Receiver
    ) -> None:
        handler = await make_handler(chat(receiver))
        assert await handler.send(notify("failed")) is None
        [request] = receiver.requests
        assert request.method == "POST"
        query = parse_qs(urlsplit(request.path_qs).query)
        assert query == {
            "key": [KEY],
            "token": [TOKEN.replace("%3D", "=")],
            "messageReplyOption": ["REPLY_MESSAGE_FALLBACK_TO_NEW_THREAD"],
        }
        assert request.headers["Content-Type"].startswith("application/json")
        assert request.json() == handler.render(notify("failed"))
        assert request.body == jsoncodec.dumps(handler.render(notify("failed"))).encode()

    @pytest.mark.parametrize(
        ("status", "retryable"), [(500, True), (503, True), (429, True), (400, False), (403, False)]
    )
    async def test_failures_are_classified_as_for_the_webhook_handler(
        self, status: int, retryable: bool, make_handler: MakeHandler, receiver: Receiver
    ) -> None:
        receiver.then(status, "no", {"Retry-After": "3"})
        handler = await make_handler(chat(receiver))
        with pytest.raises(HandlerError) as caught:
            await handler.send(notify())
        assert (caught.value.retryable, caught.value.reason) == (retryable, f"http_{status}")

    async def test_a_burst_to_one_webhook_is_spaced_by_the_rate_limit(
        self, make_handler: MakeHandler, receiver: Receiver
    ) -> None:
        handler = await make_handler(chat(receiver, rate_limit=10))
        gaps = await burst_gaps(handler, receiver, 6)
        assert len(gaps) == 5
        assert min(gaps) >= 0.1 - 0.03, gaps


class TestSecrets:
    async def test_the_key_and_token_never_appear_in_logs_errors_or_reprs(
        self, make_handler: MakeHandler, receiver: Receiver, closed_port_url: str
    ) -> None:
        # A receiver that echoes the token alone, decoded, as an error body might.
        receiver.then(400, f"bad token {TOKEN.replace('%3D', '=')} for key {KEY}")
        echoed = await make_handler(chat(receiver, thread_by="{{ nope() }}"))
        refused_item = chat(name="refused")
        refused_item["webhook_url"] = closed_port_url + SECRET_PATH
        refused = await make_handler(refused_item)
        errors: list[str] = []
        with capture_logs() as logs:
            for handler in (echoed, refused):
                with pytest.raises(HandlerError) as caught:
                    await handler.send(notify("failed"))
                errors.append(f"{caught.value!s} {caught.value!r} {handler!r} {handler._config!r}")
        assert logs, "the thread_by failure is logged"
        text = repr(logs) + " ".join(errors)
        assert "s3cr3t" not in text and KEY not in text and "AAAAxyz" not in text


class TestConfig:
    """The config models of both chat handlers, through the real loader."""

    @pytest.mark.parametrize("kind", ["teams", "google_chat"])
    @pytest.mark.parametrize(
        ("changes", "problem"),
        [
            ({}, "handlers[0]: set exactly one of webhook_url and webhook_url_file"),
            (
                {"webhook_url": "ftp://x", "rate_limit": 1},
                "handlers[0]: webhook_url must be an http(s) URL",
            ),
            (
                {"webhook_url": "https://x", "rate_limit": 0},
                "handlers[0].rate_limit: Input should be greater than 0",
            ),
            ({"webhook_url": "https://x", "template": "{{ x"}, "handlers[0].template: "),
            ({"webhook_url": "https://x", "colour": "red"}, "handlers[0].colour: unknown key"),
        ],
    )
    def test_a_bad_handler_is_one_line_naming_its_path(
        self, kind: str, changes: dict[str, Any], problem: str
    ) -> None:
        item = {"name": "chat", "type": kind, **changes}
        text = yaml.safe_dump({"queue": {"url": "http://127.0.0.1:1/1/q"}, "handlers": [item]})
        with pytest.raises(ConfigError) as caught:
            parse_config(text, env={})
        [line] = caught.value.problems
        assert line.startswith(problem), line

    def test_a_thread_by_that_does_not_compile_is_a_config_error(self) -> None:
        item = {**chat(), "thread_by": "{% if %}"}
        text = yaml.safe_dump({"queue": {"url": "http://127.0.0.1:1/1/q"}, "handlers": [item]})
        with pytest.raises(ConfigError) as caught:
            parse_config(text, env={})
        assert caught.value.problems[0].startswith("handlers[0].thread_by: ")
        assert KEY not in str(caught.value)

    def test_the_url_file_is_read_and_trimmed(self, tmp_path: Path) -> None:
        secret = tmp_path / "url"
        secret.write_text("  https://chat.googleapis.com" + SECRET_PATH + "\n")
        item = {"name": "chat", "type": "google_chat", "webhook_url_file": str(secret)}
        text = yaml.safe_dump({"queue": {"url": "http://127.0.0.1:1/1/q"}, "handlers": [item]})
        [handler] = parse_config(text, env={}).handlers
        assert handler.webhook_url.get_secret_value() == "https://chat.googleapis.com" + SECRET_PATH
        assert KEY not in repr(handler)


class TestSize:
    async def test_the_largest_event_and_digest_stay_within_chat_s_limits(
        self, make_handler: MakeHandler
    ) -> None:
        handler = await make_handler(chat())
        image = LARGEST_IMAGE
        event = seed_event("failed", ErrorMessage="e" * 20_000)
        for payload in (
            handler.render(Notification(event, image)),
            handler.render(seed_digest(100, "failed", image=image, ErrorMessage="e" * 5000)),
        ):
            assert_valid_chat_payload(payload)
            assert len(json.dumps(payload, ensure_ascii=False).encode()) < 32_000  # Chat's limit
