"""The teams handler: Adaptive Cards checked by Microsoft's library, escaping, templates,
outcomes and rate limit, on a local server."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from amid import jsoncodec
from amid.handlers import HandlerError, HandlerResources, Notification
from tests.adaptive_cards import assert_valid_teams_payloads, cards_of, check_cards
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

WORKFLOWS = "https://prod-00.westeurope.logic.azure.com"  # a Power Automate host
SECRET_PATH = "/workflows/0123abcd/triggers/manual/paths/invoke?sig=s3cr3tS1gXXXXXXXX"
HOSTILE = {
    "name": "[click me](http://evil.example) <b>bold</b>",
    "description": "**loud** [d](http://evil.example/d)",
    "tags": {"owner": "[x](http://evil.example/x)", "<i>k</i>": "_em_ `code` &amp;"},
}


def teams(receiver: Receiver | None = None, **options: Any) -> dict[str, Any]:
    return chat_item("teams", "ops-teams", WORKFLOWS, SECRET_PATH, receiver, options)


def text_runs(node: Any) -> list[str]:
    if isinstance(node, list):
        return [text for item in node for text in text_runs(item)]
    if isinstance(node, dict):
        own = [node["text"]] if node.get("type") == "TextRun" else []
        return own + [text for value in node.values() for text in text_runs(value)]
    return []


class TestCard:
    @pytest.mark.parametrize("state", ["available", "failed", "deregistered", "disabled"])
    async def test_each_state_renders_as_the_golden_file(
        self, state: str, make_handler: MakeHandler
    ) -> None:
        handler = await make_handler(teams())
        assert_golden(f"teams_{state}.json", handler.render(notify(state)))

    async def test_an_enriched_failure_renders_name_error_description_and_tags(
        self, make_handler: MakeHandler
    ) -> None:
        handler = await make_handler(teams())
        payload = handler.render(notify("failed", IMAGE))
        assert_golden("teams_failed_enriched.json", payload)
        [card] = cards_of(payload)
        assert card["version"] == "1.4"
        assert card["body"][0]["text"] == "❌ AMI web-2025-05-01 failed"
        facts = {f["title"]: f["value"] for f in card["body"][1]["facts"]}
        assert set(facts) == {"Image", "State", "Account", "Region", "Time", "Name"}
        assert "Description of failure" in text_runs(card)
        assert card["actions"] == [
            {
                "type": "Action.OpenUrl",
                "title": "Open in the EC2 console",
                "url": notify("failed").event.console_url,
            }
        ]

    async def test_digests_and_notices_render_as_the_golden_files(
        self, make_handler: MakeHandler
    ) -> None:
        handler = await make_handler(teams())
        assert_golden("teams_digest_deregistered.json", handler.render(seed_digest(3)))
        assert_golden("teams_digest_failed_more.json", handler.render(seed_digest(25, "failed")))
        assert_golden("notice_teams_overdue.json", handler.render(overdue()))
        assert_golden("notice_teams_recovered.json", handler.render(recovered()))

    def test_every_teams_golden_card_is_valid_for_adaptive_cards_1_4(self) -> None:
        paths = sorted([*GOLDEN.glob("teams_*.json"), *GOLDEN.glob("notice_teams_*.json")])
        assert len(paths) == 9
        assert_valid_teams_payloads([json.loads(path.read_text()) for path in paths])

    def test_the_validator_rejects_broken_cards(self) -> None:
        good = cards_of(json.loads((GOLDEN / "teams_failed.json").read_text()))[0]
        broken = [
            {**good, "version": "1.5"},  # later than every Teams client renders
            {**good, "body": [*good["body"], {"type": "Table", "columns": []}]},  # 1.5 element
            {**good, "body": [{"type": "TextBlock", "txt": "typo"}]},  # unknown property
            {**good, "body": [{"type": "TextBlock", "text": "x", "weight": "Heavy"}]},  # enum
            {**good, "actions": [{"type": "Action.OpenUrl", "title": "no url"}]},
            {**good, "body": [{"type": "FactSet", "facts": [{"title": "no value"}]}]},
            {**good, "type": "MessageCard"},  # the retired connector format
        ]
        checks = check_cards([good, *broken])
        assert checks[0].problems == []
        assert all(check.problems for check in checks[1:]), [c.problems for c in checks]

    async def test_a_digest_names_the_count_lists_twenty_and_counts_the_rest(
        self, make_handler: MakeHandler
    ) -> None:
        handler = await make_handler(teams())
        digest = seed_digest(25, "failed")
        [card] = cards_of(handler.render(digest))
        texts = [block.get("text", "") for block in card["body"]]
        assert texts[0].startswith("❌ 25 AMIs failed in")
        listed = [t for t in texts if t.startswith("• ")]
        assert len(listed) == 20
        assert texts[-1] == "and 5 more"
        for notification in digest.notifications[:20]:
            assert sum(notification.event.image_id in t for t in listed) == 1

    async def test_an_overdue_notice_says_the_spec_sentence(
        self, make_handler: MakeHandler
    ) -> None:
        handler = await make_handler(teams())
        [card] = cards_of(handler.render(overdue()))
        assert card["body"][0]["text"].startswith("⏰ nightly-golden-ami: no matching AMI event")


class TestEscaping:
    async def test_markdown_and_html_from_events_and_images_never_render_as_links_or_markup(
        self, make_handler: MakeHandler
    ) -> None:
        handler = await make_handler(teams())
        event = seed_event("failed", ErrorMessage="see [here](http://evil.example/e) <b>x</b>")
        payloads = [
            handler.render(Notification(event, HOSTILE)),
            handler.render(seed_digest(2, "failed", image=HOSTILE)),
        ]
        checks = assert_valid_teams_payloads(payloads)
        for check in checks:
            for path, rendered in check.markdown.items():
                assert "<a " not in rendered, (path, rendered)
                assert not re.search(r"<(b|i|em|code)>", rendered), (path, rendered)  # strong: ours
        runs = text_runs(cards_of(payloads[0]))
        assert "see [here](http://evil.example/e) <b>x</b>" in runs, "free text is kept as is"

    async def test_a_template_replaces_the_text_and_keeps_its_own_markdown(
        self, make_handler: MakeHandler
    ) -> None:
        handler = await make_handler(teams(template="**{{ image_id }}** is {{ state }}"))
        payload = handler.render(notify("disabled"))
        [card] = cards_of(payload)
        assert card["body"] == [
            {"type": "TextBlock", "text": "**ami-0123456789example** is disabled", "wrap": True}
        ]
        assert_valid_teams_payloads([payload])


class TestTemplates:
    async def test_payload_template_renders_the_whole_body(self, make_handler: MakeHandler) -> None:
        template = '{"type": "message", "summary": {{ image_id | tojson }}, "attachments": []}'
        handler = await make_handler(teams(payload_template=template))
        assert handler.render(notify("failed")) == {
            "type": "message",
            "summary": "ami-0123456789example",
            "attachments": [],
        }

    async def test_a_failing_template_falls_back_to_the_card_and_is_counted(
        self, make_handler: MakeHandler, receiver: Receiver, resources: HandlerResources
    ) -> None:
        handler = await make_handler(teams(receiver, payload_template='{"type": "{{ state }}'))
        await handler.send(notify("failed"))
        assert receiver.requests[0].json() == json.loads((GOLDEN / "teams_failed.json").read_text())
        assert template_failures(resources, "ops-teams") == 1

    async def test_a_digest_template_sees_the_digest_context(
        self, make_handler: MakeHandler
    ) -> None:
        handler = await make_handler(teams(template="{{ count }} images: {{ group.account }}"))
        [card] = cards_of(handler.render(seed_digest(4)))
        assert card["body"][0]["text"] == "4 images: 012345678901"

    async def test_an_event_template_does_not_serve_a_notice(
        self, make_handler: MakeHandler
    ) -> None:
        handler = await make_handler(teams(template="{{ image_id }}"))
        assert handler.render(overdue()) == json.loads(
            (GOLDEN / "notice_teams_overdue.json").read_text()
        )


class TestSend:
    async def test_posts_one_json_request_and_202_is_success(
        self, make_handler: MakeHandler, receiver: Receiver
    ) -> None:
        receiver.then(202)
        handler = await make_handler(teams(receiver))
        assert await handler.send(notify("failed")) is None
        [request] = receiver.requests
        assert (request.method, request.path_qs) == ("POST", SECRET_PATH)
        assert request.headers["Content-Type"].startswith("application/json")
        assert request.json() == handler.render(notify("failed"))
        assert request.body == jsoncodec.dumps(handler.render(notify("failed"))).encode()

    @pytest.mark.parametrize(
        ("status", "retryable"), [(500, True), (502, True), (429, True), (400, False), (404, False)]
    )
    async def test_failures_are_classified_as_for_the_webhook_handler(
        self, status: int, retryable: bool, make_handler: MakeHandler, receiver: Receiver
    ) -> None:
        receiver.then(status, "no", {"Retry-After": "3"})
        handler = await make_handler(teams(receiver))
        with pytest.raises(HandlerError) as caught:
            await handler.send(notify())
        assert (caught.value.retryable, caught.value.reason) == (retryable, f"http_{status}")
        assert caught.value.retry_after == (3 if retryable else None)

    async def test_connection_refused_is_retryable_and_names_no_url(
        self, make_handler: MakeHandler, closed_port_url: str
    ) -> None:
        item = teams()
        item["webhook_url"] = closed_port_url + SECRET_PATH
        handler = await make_handler(item)
        with pytest.raises(HandlerError) as caught:
            await handler.send(notify())
        assert (caught.value.retryable, caught.value.reason) == (True, "connection")
        assert "s3cr3t" not in str(caught.value) and "127.0.0.1" not in str(caught.value)

    async def test_a_burst_to_one_webhook_is_spaced_by_the_rate_limit(
        self, make_handler: MakeHandler, receiver: Receiver
    ) -> None:
        handler = await make_handler(teams(receiver, rate_limit=10))
        gaps = await burst_gaps(handler, receiver, 6)
        assert len(gaps) == 5
        assert min(gaps) >= 0.1 - 0.03, gaps


class TestSecrets:
    async def test_webhook_url_from_a_file_never_appears_in_logs_errors_or_reprs(
        self, make_handler: MakeHandler, receiver: Receiver, tmp_path: Path
    ) -> None:
        secret = tmp_path / "teams-url"
        secret.write_text(receiver.url + SECRET_PATH + "\n")
        item = teams(template="{{ nope() }}")
        del item["webhook_url"]
        item["webhook_url_file"] = str(secret)
        receiver.then(500, f"echo {SECRET_PATH}")
        handler = await make_handler(item)
        with capture_logs() as logs, pytest.raises(HandlerError) as caught:
            await handler.send(notify("failed"))
        assert logs, "the template failure is logged"
        text = f"{logs!r} {caught.value!s} {caught.value!r} {handler!r} {handler._config!r}"
        assert "s3cr3t" not in text and "/workflows/" not in text


class TestSize:
    async def test_the_largest_event_stays_far_below_teams_28_kb(
        self, make_handler: MakeHandler
    ) -> None:
        handler = await make_handler(teams())
        image = LARGEST_IMAGE
        event = seed_event("failed", ErrorMessage="e" * 20_000)
        payload = handler.render(Notification(event, image))
        assert len(json.dumps(payload, ensure_ascii=False).encode()) < 20_000
        [card] = cards_of(payload)
        assert (
            card["body"][-2]["text"].startswith("and ") and "more tags" in card["body"][-2]["text"]
        )
        assert_valid_teams_payloads([payload])
        digest = handler.render(seed_digest(100, "failed", image=image, ErrorMessage="e" * 5000))
        assert len(json.dumps(digest, ensure_ascii=False).encode()) < 20_000
        assert_valid_teams_payloads([digest])
