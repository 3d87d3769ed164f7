"""Digest payloads of every handler type (SPEC 3b): pure renders against golden files,
Slack's limits held with the Block Kit models of slack-sdk, sends to real local receivers."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from amid.handlers.base import Digest
from amid.handlers.console import digest_lines
from amid.handlers.slack import DIGEST_LINES, digest_payload
from amid.handlers.sns import DIGEST_MESSAGE_MAX, digest_messages, digest_subject
from amid.templates import digest_context
from tests.handlers.conftest import GOLDEN, MakeHandler, Receiver, assert_golden, seed_digest
from tests.slack_blocks import assert_valid_slack_payload

IMAGE = {"name": "web-2025-05-01", "tags": {"team": "platform"}}
TOPIC = "arn:aws:sns:us-east-1:123456789012:ami-audit"


def slack(receiver: Receiver | None = None, **options: Any) -> dict[str, Any]:
    url = receiver.url if receiver is not None else "https://hooks.slack.com"
    return {
        "name": "ops-slack",
        "type": "slack",
        "webhook_url": url + "/services/T0/B0/secret",
        "rate_limit": 100,
        **options,
    }


def image_ids(text: str, digest: Digest) -> list[str]:
    return [e.image_id for e in digest.events if e.image_id in text]


class TestSlack:
    def test_a_digest_renders_as_the_golden_file(self) -> None:
        payload = digest_payload(seed_digest(3, image=IMAGE))
        assert_valid_slack_payload(payload)
        assert_golden("slack_digest_deregistered.json", payload)

    def test_the_message_names_the_count_and_the_group(self) -> None:
        payload = digest_payload(seed_digest(120))
        assert payload["text"] == ":wastebasket: 120 AMIs deregistered in 012345678901 us-east-1"
        assert payload["blocks"][0]["text"]["text"] == payload["text"]

    def test_twenty_events_are_listed_and_the_rest_counted(self) -> None:
        digest = seed_digest(25, "failed")
        payload = digest_payload(digest)
        assert_valid_slack_payload(payload)
        assert_golden("slack_digest_failed_more.json", payload)
        body = json.dumps(payload["blocks"])
        assert len(image_ids(body, digest)) == DIGEST_LINES
        assert payload["blocks"][-1]["elements"][0]["text"] == "and 5 more"
        assert body.count("Description of failure") == DIGEST_LINES

    def test_each_event_of_a_group_of_twenty_is_named_exactly_once(self) -> None:
        digest = seed_digest(20)
        body = json.dumps(digest_payload(digest)["blocks"])
        assert all(body.count(f"|{e.image_id}>") == 1 for e in digest.events)
        assert "more" not in body

    def test_huge_names_and_errors_stay_within_slacks_limits(self) -> None:
        digest = seed_digest(100, "failed", image={"name": "n" * 5000}, ErrorMessage="e" * 20_000)
        payload = digest_payload(digest)
        assert_valid_slack_payload(payload)
        assert len(payload["blocks"]) <= 50
        assert len(image_ids(json.dumps(payload), digest)) == DIGEST_LINES

    def test_a_group_of_several_states_names_the_state_per_line(self) -> None:
        digest = seed_digest(4, states=["failed", "deregistered"])
        payload = digest_payload(digest)
        assert_valid_slack_payload(payload)
        assert payload["text"] == ":package: 4 AMIs changed state in 012345678901 us-east-1"
        assert "(failed)" in json.dumps(payload) and "(deregistered)" in json.dumps(payload)

    def test_values_from_events_cannot_mention_anyone(self) -> None:
        digest = seed_digest(2, "failed", image={"name": "<!channel>"}, ErrorMessage="<!here>")
        body = json.dumps(digest_payload(digest))
        assert "<!channel>" not in body and "<!here>" not in body
        assert "&lt;!channel&gt;" in body

    async def test_a_template_sees_the_digest_context(self, make_handler: MakeHandler) -> None:
        template = "{% if digest %}{{ count }}: {{ events | map(attribute='image_id') | join(', ') }}{% endif %}"
        handler = await make_handler(slack(template=template))
        payload = handler.render(seed_digest(2))
        assert_valid_slack_payload(payload)
        assert payload["text"] == "2: ami-00000000000000000, ami-00000000000000001"

    async def test_a_failing_template_falls_back_to_the_digest_message(
        self, make_handler: MakeHandler
    ) -> None:
        handler = await make_handler(slack(template="{{ events[99].image_id.upper() }}"))
        payload = handler.render(seed_digest(2))
        assert payload == digest_payload(seed_digest(2))

    async def test_a_digest_is_posted_once_to_the_webhook(
        self, make_handler: MakeHandler, receiver: Receiver
    ) -> None:
        handler = await make_handler(slack(receiver, username="amid"))
        await handler.send(seed_digest(3))
        [request] = receiver.requests
        posted = request.json()
        assert_valid_slack_payload(posted)
        assert posted == {**digest_payload(seed_digest(3)), "username": "amid"}

    @pytest.mark.parametrize("path", sorted(GOLDEN.glob("slack_*.json")), ids=lambda p: p.stem)
    def test_every_slack_golden_payload_is_valid_block_kit(self, path: Path) -> None:
        assert_valid_slack_payload(json.loads(path.read_text()))


class TestSns:
    async def test_a_digest_renders_as_the_golden_file(self, make_handler: MakeHandler) -> None:
        handler = await make_handler({"name": "audit", "type": "sns", "topic_arn": TOPIC})
        assert_golden("sns_digest.json", handler.render(seed_digest(2)))

    def test_the_message_is_count_group_and_events(self) -> None:
        digest = seed_digest(3)
        [message] = digest_messages(digest)
        assert json.loads(message) == {
            "count": 3,
            "group": dict(digest.group),
            "events": [e.raw for e in digest.events],
        }
        assert digest_subject(digest) == "AMI digest: 3 AMIs deregistered in 012345678901 us-east-1"

    def test_a_digest_past_256_kib_is_split_into_parts_below_it(self) -> None:
        digest = seed_digest(100, "failed", ErrorMessage="x" * 10_000)
        messages = digest_messages(digest)
        parts = [json.loads(m) for m in messages]
        assert len(messages) >= 4
        assert all(len(m.encode()) <= DIGEST_MESSAGE_MAX < 256 * 1024 for m in messages)
        assert [e["id"] for p in parts for e in p["events"]] == [e.id for e in digest.events]
        assert [p["count"] for p in parts] == [len(p["events"]) for p in parts]
        assert [(p["part"], p["parts"]) for p in parts] == [
            (n, len(parts)) for n in range(1, len(parts) + 1)
        ]

    async def test_split_parts_are_published_with_their_counts(
        self, make_handler: MakeHandler
    ) -> None:
        handler = await make_handler({"name": "audit", "type": "sns", "topic_arn": TOPIC})
        requests = handler.render(seed_digest(60, "failed", ErrorMessage="x" * 10_000))
        counts = [int(r["MessageAttributes"]["count"]["StringValue"]) for r in requests]
        assert sum(counts) == 60 and len(counts) > 1
        assert requests[0]["Subject"].endswith(f"(1/{len(requests)})")

    async def test_attributes_name_the_state_only_when_the_group_has_one(
        self, make_handler: MakeHandler
    ) -> None:
        handler = await make_handler({"name": "audit", "type": "sns", "topic_arn": TOPIC})
        [one] = handler.render(seed_digest(2))
        [mixed] = handler.render(seed_digest(2, states=["failed", "available"]))
        assert one["MessageAttributes"] == {
            "count": {"DataType": "Number", "StringValue": "2"},
            "state": {"DataType": "String", "StringValue": "deregistered"},
        }
        assert mixed["MessageAttributes"] == {"count": {"DataType": "Number", "StringValue": "2"}}

    async def test_a_fifo_topic_deduplicates_a_repeated_part(
        self, make_handler: MakeHandler
    ) -> None:
        handler = await make_handler({"name": "audit", "type": "sns", "topic_arn": TOPIC + ".fifo"})
        first, again = handler.render(seed_digest(3)), handler.render(seed_digest(3))
        assert first[0]["MessageDeduplicationId"] == again[0]["MessageDeduplicationId"]
        other = handler.render(seed_digest(4))
        assert other[0]["MessageDeduplicationId"] != first[0]["MessageDeduplicationId"]

    async def test_a_digest_is_published_to_a_real_topic(
        self, make_handler: MakeHandler, sns: Any, sqs: Any, moto_url: str
    ) -> None:
        topic = (await sns.create_topic(Name="ami-digests"))["TopicArn"]
        queue = (await sqs.create_queue(QueueName="digests"))["QueueUrl"]
        arn = (await sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"]))[
            "Attributes"
        ]["QueueArn"]
        await sns.subscribe(
            TopicArn=topic,
            Protocol="sqs",
            Endpoint=arn,
            Attributes={"RawMessageDelivery": "true"},
        )
        handler = await make_handler(
            {"name": "audit", "type": "sns", "topic_arn": topic, "endpoint_url": moto_url}
        )
        await handler.send(seed_digest(3))
        received = await sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=1)
        [message] = received["Messages"]
        assert json.loads(message["Body"])["count"] == 3


class TestWebhook:
    async def test_a_digest_renders_as_the_golden_file(self, make_handler: MakeHandler) -> None:
        handler = await make_handler(
            {"name": "inventory", "type": "webhook", "url": "https://inventory.internal/x"}
        )
        assert_golden("webhook_digest.json", handler.render(seed_digest(2)))

    async def test_the_default_body_is_the_digest_json(
        self, make_handler: MakeHandler, receiver: Receiver
    ) -> None:
        handler = await make_handler({"name": "inventory", "type": "webhook", "url": receiver.url})
        digest = seed_digest(3)
        await handler.send(digest)
        [request] = receiver.requests
        assert request.json() == digest.document()
        assert request.headers["X-Amid-Digest-Count"] == "3"

    async def test_a_body_template_sees_the_digest_context(
        self, make_handler: MakeHandler, receiver: Receiver
    ) -> None:
        body = '{"n": {{ count }}, "state": {{ group["detail.State"] | tojson }}}'
        handler = await make_handler(
            {"name": "inventory", "type": "webhook", "url": receiver.url, "body": body}
        )
        await handler.send(seed_digest(2))
        assert receiver.requests[0].json() == {"n": 2, "state": "deregistered"}


class TestShell:
    async def test_a_digest_renders_as_the_golden_file(self, make_handler: MakeHandler) -> None:
        handler = await make_handler(
            {"name": "hook", "type": "shell", "command": ["/bin/hook", "{{ count }}"]}
        )
        rendered = handler.render(seed_digest(2))
        assert rendered["env"] == {"AMID_DIGEST_COUNT": "2", "AMID_HANDLER": "hook"}
        assert_golden("shell_digest.json", rendered)

    async def test_the_hook_gets_the_digest_json_on_stdin_and_the_count(
        self, make_handler: MakeHandler, tmp_path: Path
    ) -> None:
        out = tmp_path / "got.json"
        script = (
            "import json, os, sys; "
            f"json.dump({{'stdin': json.load(sys.stdin), 'count': os.environ['AMID_DIGEST_COUNT'],"
            f" 'argv': sys.argv[1:]}}, open({str(out)!r}, 'w'))"
        )
        handler = await make_handler(
            {
                "name": "hook",
                "type": "shell",
                "command": [sys.executable, "-c", script, "{{ count }}"],
            }
        )
        digest = seed_digest(4)
        await handler.send(digest)
        got = json.loads(out.read_text())
        assert got == {"stdin": digest.document(), "count": "4", "argv": ["4"]}


class TestConsole:
    def test_a_header_line_and_a_line_per_event(self) -> None:
        text = digest_lines(seed_digest(3, "failed"))
        assert_golden("console_digest.json", text.splitlines())
        lines = text.splitlines()
        assert lines[0] == "❌ 3 AMIs failed in 012345678901 us-east-1 (digest)"
        assert len(lines) == 4


class TestTemplateContext:
    def test_a_digest_context_holds_events_count_group_and_digest(self) -> None:
        digest = seed_digest(2, image=IMAGE)
        context = digest_context(digest)
        assert context["count"] == 2 and context["digest"] is True
        assert context["group"] == dict(digest.group)
        assert [e["image_id"] for e in context["events"]] == [e.image_id for e in digest.events]
        assert context["events"][0]["image"] == IMAGE
        assert context["events"][0]["digest"] is False
