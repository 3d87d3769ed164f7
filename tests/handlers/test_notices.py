"""Expectation notices (SPEC 3c) in every handler type: pure payloads against golden files,
then sent for real (a local HTTP server, moto's SNS, a hook process)."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from amid.expectations.watch import notice_id
from amid.handlers.base import ExpectationNotice
from amid.handlers.notice import notice_document, notice_sentence
from tests.handlers.conftest import MakeHandler, Receiver, assert_golden, template_failures
from tests.handlers.test_sns import received, topic_with_queue

LAST = datetime(2026, 11, 24, 4, 0, tzinfo=UTC)
DUE = LAST + timedelta(hours=26)  # every 24h, grace 2h
BACK = DUE + timedelta(hours=3, minutes=12)


def overdue(last_seen: datetime | None = LAST) -> ExpectationNotice:
    return ExpectationNotice(
        expectation="nightly-golden-ami",
        status="overdue",
        last_seen=last_seen,
        due=DUE,
        expected="every 24h",
        id=notice_id("nightly-golden-ami", DUE.timestamp(), "overdue"),
        since=last_seen or DUE - timedelta(hours=26),
        checked=DUE + timedelta(seconds=2),
    )


def recovered() -> ExpectationNotice:
    return ExpectationNotice(
        expectation="nightly-golden-ami",
        status="recovered",
        last_seen=BACK,
        due=DUE,
        expected="every 24h",
        id=notice_id("nightly-golden-ami", DUE.timestamp(), "recovered"),
        since=BACK,
        checked=BACK + timedelta(seconds=3),
    )


SLACK = {"name": "ops-slack", "type": "slack", "webhook_url": "https://hooks.slack.test/T/B/x"}
SNS = {"name": "audit", "type": "sns", "topic_arn": "arn:aws:sns:us-east-1:123456789012:ami-audit"}
WEBHOOK = {"name": "inventory", "type": "webhook", "url": "http://127.0.0.1:1/ami"}
SHELL = {
    "name": "hook",
    "type": "shell",
    "command": ["/usr/local/bin/expected", "{{ expectation.status }}"],
}
CONSOLE = {"name": "console", "type": "console"}


class TestWords:
    def test_the_overdue_sentence_is_the_one_spec_shows(self) -> None:
        assert notice_sentence(overdue()) == (
            "⏰ nightly-golden-ami: no matching AMI event for 26h (expected every 24h)"
        )

    def test_with_no_event_ever_the_sentence_says_since_when_amid_watches(self) -> None:
        assert notice_sentence(overdue(last_seen=None)) == (
            "⏰ nightly-golden-ami: no matching AMI event for 26h since amid began watching "
            "(expected every 24h)"
        )

    def test_the_recovered_sentence_says_how_late_the_event_came(self) -> None:
        assert notice_sentence(recovered()) == (
            "✅ nightly-golden-ami: a matching AMI event came, 3h after it was due "
            "(expected every 24h)"
        )

    def test_the_document_holds_the_fields_spec_names(self) -> None:
        document = notice_document(overdue(last_seen=None))
        assert document["expectation"] == "nightly-golden-ami"
        assert document["status"] == "overdue"
        assert document["last_seen"] is None
        assert document["due"] == "2026-11-25T06:00:00Z"


@pytest.mark.parametrize(
    ("item", "golden"),
    [
        (SLACK, "slack"),
        (SNS, "sns"),
        (WEBHOOK, "webhook"),
        (SHELL, "shell"),
        (CONSOLE, "console"),
    ],
)
@pytest.mark.parametrize("status", ["overdue", "recovered"])
async def test_every_handler_type_renders_a_notice_as_its_golden_file(
    make_handler: MakeHandler, item: dict[str, Any], golden: str, status: str
) -> None:
    handler = await make_handler(item)
    notice = overdue() if status == "overdue" else recovered()
    assert_golden(f"notice_{golden}_{status}.json", handler.render(notice))


class TestTemplates:
    async def test_a_slack_template_that_reads_expectation_renders_the_notice(
        self, make_handler: MakeHandler
    ) -> None:
        handler = await make_handler(
            {
                **SLACK,
                "template": "{% if expectation %}{{ expectation.expectation }} is {{ expectation.status }}{% else %}AMI {{ image_id }}{% endif %}",
            }
        )
        assert handler.render(overdue())["text"] == "nightly-golden-ami is overdue"

    async def test_an_event_only_template_is_left_to_events(
        self, make_handler: MakeHandler
    ) -> None:
        handler = await make_handler({**SLACK, "template": "AMI {{ image_id }} {{ state }}"})
        assert handler.render(overdue())["text"].startswith("⏰ nightly-golden-ami: ")

    async def test_an_sns_subject_template_sees_the_expectation(
        self, make_handler: MakeHandler
    ) -> None:
        handler = await make_handler(
            {**SNS, "subject": "{{ expectation.expectation }}: {{ expectation.status }}"}
        )
        assert handler.render(overdue())["Subject"] == "nightly-golden-ami: overdue"

    async def test_a_webhook_body_that_fails_falls_back_to_the_document_and_is_counted(
        self, make_handler: MakeHandler, resources: Any, receiver: Receiver
    ) -> None:
        handler = await make_handler(
            {**WEBHOOK, "url": f"{receiver.url}/ami", "body": "{{ expectation.status.nope() }}"}
        )
        await handler.send(overdue())
        (request,) = receiver.requests
        assert request.json() == notice_document(overdue())
        assert template_failures(resources, "inventory") == 1


class TestSent:
    async def test_a_webhook_posts_the_document_with_the_notice_id_header(
        self, make_handler: MakeHandler, receiver: Receiver
    ) -> None:
        handler = await make_handler({**WEBHOOK, "url": f"{receiver.url}/ami"})
        await handler.send(overdue())
        (request,) = receiver.requests
        assert request.json()["status"] == "overdue"
        assert request.headers["X-Amid-Event-Id"] == overdue().id

    async def test_slack_gets_the_sentence(
        self, make_handler: MakeHandler, receiver: Receiver
    ) -> None:
        handler = await make_handler({**SLACK, "webhook_url": f"{receiver.url}/slack"})
        await handler.send(recovered())
        (request,) = receiver.requests
        assert request.json()["text"].startswith("✅ nightly-golden-ami: a matching AMI event came")

    async def test_sns_publishes_the_document_with_filterable_attributes(
        self, make_handler: MakeHandler, sns: Any, sqs: Any, moto_url: str
    ) -> None:
        topic, queue = await topic_with_queue(sns, sqs, "notices")
        handler = await make_handler({**SNS, "topic_arn": topic, "endpoint_url": moto_url})
        await handler.send(overdue())
        (message,) = await received(sqs, queue)
        envelope = json.loads(message["Body"])
        assert json.loads(envelope["Message"])["expectation"] == "nightly-golden-ami"
        assert envelope["Subject"] == "AMI expectation nightly-golden-ami overdue"
        assert envelope["MessageAttributes"]["status"]["Value"] == "overdue"

    async def test_a_hook_gets_the_document_on_stdin_and_the_expectation_in_its_environment(
        self, make_handler: MakeHandler, tmp_path: Path
    ) -> None:
        out = tmp_path / "notice.json"
        script = (
            "import json, os, sys; "
            f"open({str(out)!r}, 'w').write(json.dumps({{'stdin': json.load(sys.stdin), "
            "'argv': sys.argv[1:], 'env': {k: v for k, v in os.environ.items() if k.startswith('AMID_')}}))"
        )
        handler = await make_handler(
            {
                "name": "hook",
                "type": "shell",
                "command": [sys.executable, "-c", script, "{{ expectation.status }}"],
            }
        )
        await handler.send(overdue())
        seen = json.loads(out.read_text())
        assert seen["stdin"] == notice_document(overdue())
        assert seen["argv"] == ["overdue"]
        assert seen["env"]["AMID_EXPECTATION"] == "nightly-golden-ami"
        assert seen["env"]["AMID_EXPECTATION_STATUS"] == "overdue"
        assert "AMID_EVENT_ID" not in seen["env"]
