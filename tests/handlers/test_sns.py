"""The sns handler against moto's SNS, read back through a subscribed SQS queue."""

from __future__ import annotations

import json
from typing import Any

import pytest
from botocore.exceptions import ClientError

from amid.handlers import HandlerError, HandlerResources
from amid.handlers.sns import classify, subject_line
from tests.handlers.conftest import (
    EVENT_ID,
    MakeHandler,
    Receiver,
    assert_golden,
    notify,
    template_failures,
)

ACCOUNT = "123456789012"  # moto's account
THROTTLED = (
    '<ErrorResponse xmlns="http://sns.amazonaws.com/doc/2010-03-31/"><Error><Type>Sender</Type>'
    "<Code>Throttling</Code><Message>Rate exceeded</Message></Error>"
    "<RequestId>r-1</RequestId></ErrorResponse>"
)
INTERNAL = THROTTLED.replace("Sender", "Receiver").replace("Throttling", "InternalError")


def sns_handler(topic_arn: str, endpoint_url: str, **options: Any) -> dict[str, Any]:
    return {
        "name": "audit",
        "type": "sns",
        "topic_arn": topic_arn,
        "endpoint_url": endpoint_url,
        **options,
    }


async def topic_with_queue(sns: Any, sqs: Any, name: str) -> tuple[str, str]:
    """A topic and an SQS queue subscribed to it (SNS envelope, so Subject is visible)."""
    fifo = name.endswith(".fifo")
    topic = await sns.create_topic(Name=name, Attributes={"FifoTopic": "true"} if fifo else {})
    queue = await sqs.create_queue(QueueName=name, Attributes={"FifoQueue": "true"} if fifo else {})
    arn = await sqs.get_queue_attributes(QueueUrl=queue["QueueUrl"], AttributeNames=["QueueArn"])
    await sns.subscribe(
        TopicArn=topic["TopicArn"], Protocol="sqs", Endpoint=arn["Attributes"]["QueueArn"]
    )
    return topic["TopicArn"], queue["QueueUrl"]


async def received(sqs: Any, queue_url: str) -> list[dict[str, Any]]:
    answer = await sqs.receive_message(
        QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1, AttributeNames=["All"]
    )
    return list(answer.get("Messages", []))


class TestPublish:
    async def test_publishes_event_json_subject_and_attributes_once(
        self, make_handler: MakeHandler, sns: Any, sqs: Any, moto_url: str
    ) -> None:
        topic, queue = await topic_with_queue(sns, sqs, "ami-audit")
        handler = await make_handler(sns_handler(topic, moto_url))
        notification = notify("failed")
        reference = await handler.send(notification)
        messages = await received(sqs, queue)
        assert len(messages) == 1
        envelope = json.loads(messages[0]["Body"])
        assert reference == envelope["MessageId"]  # the record's reference to the delivery
        assert json.loads(envelope["Message"]) == notification.event.raw
        assert envelope["Subject"] == "AMI ami-0123456789example failed"
        assert envelope["MessageAttributes"] == {
            "state": {"Type": "String", "Value": "failed"},
            "image_id": {"Type": "String", "Value": "ami-0123456789example"},
        }

    async def test_fifo_topic_gets_image_group_and_event_deduplication_id(
        self, make_handler: MakeHandler, sns: Any, sqs: Any, moto_url: str
    ) -> None:
        topic, queue = await topic_with_queue(sns, sqs, "ami-audit.fifo")
        handler = await make_handler(sns_handler(topic, moto_url))
        await handler.send(notify("available"))
        messages = await received(sqs, queue)
        assert len(messages) == 1
        assert messages[0]["Attributes"]["MessageGroupId"] == "ami-0123456789example"
        assert messages[0]["Attributes"]["MessageDeduplicationId"] == EVENT_ID

    async def test_templates_set_message_and_subject(
        self, make_handler: MakeHandler, sns: Any, sqs: Any, moto_url: str
    ) -> None:
        topic, queue = await topic_with_queue(sns, sqs, "ami-audit")
        handler = await make_handler(
            sns_handler(
                topic,
                moto_url,
                template="{{ image_id }} is {{ state }}: {{ error_message }}",
                subject="[{{ account }}] {{ image_id }} {{ state | upper }}",
            )
        )
        await handler.send(notify("failed"))
        envelope = json.loads((await received(sqs, queue))[0]["Body"])
        assert envelope["Message"] == "ami-0123456789example is failed: Description of failure"
        assert envelope["Subject"] == "[012345678901] ami-0123456789example FAILED"

    async def test_failing_subject_template_falls_back_and_is_counted(
        self,
        make_handler: MakeHandler,
        resources: HandlerResources,
        sns: Any,
        sqs: Any,
        moto_url: str,
    ) -> None:
        topic, queue = await topic_with_queue(sns, sqs, "ami-audit")
        handler = await make_handler(
            sns_handler(topic, moto_url, subject="{{ ''.__class__.__mro__ }}")
        )
        await handler.send(notify("available"))
        envelope = json.loads((await received(sqs, queue))[0]["Body"])
        assert envelope["Subject"] == "AMI ami-0123456789example available"
        assert template_failures(resources, "audit") == 1


class TestRender:
    async def test_default_publish_request_matches_golden_file(
        self, make_handler: MakeHandler
    ) -> None:
        topic = f"arn:aws:sns:us-east-1:{ACCOUNT}:ami-audit"
        handler = await make_handler(sns_handler(topic, "http://127.0.0.1:1"))
        assert_golden("sns_available.json", handler.render(notify("available")))

    async def test_fifo_publish_request_matches_golden_file(
        self, make_handler: MakeHandler
    ) -> None:
        topic = f"arn:aws:sns:us-east-1:{ACCOUNT}:ami-audit.fifo"
        handler = await make_handler(sns_handler(topic, "http://127.0.0.1:1"))
        assert_golden("sns_failed_fifo.json", handler.render(notify("failed")))

    def test_subject_is_made_valid_for_sns(self) -> None:
        subject = subject_line("Ünïcode\r\nline\ttab " + "x" * 200)
        assert subject.startswith("Unicode line tab xxx")
        assert len(subject) < 100
        assert subject.isascii() and subject.isprintable()


class TestErrors:
    async def test_missing_topic_is_permanent(
        self, make_handler: MakeHandler, moto_url: str
    ) -> None:
        handler = await make_handler(
            sns_handler(f"arn:aws:sns:us-east-1:{ACCOUNT}:does-not-exist", moto_url)
        )
        with pytest.raises(HandlerError) as caught:
            await handler.send(notify())
        assert (caught.value.retryable, caught.value.reason) == (False, "not_found")

    async def test_unreachable_endpoint_is_retryable(
        self, make_handler: MakeHandler, closed_port_url: str
    ) -> None:
        handler = await make_handler(
            sns_handler(f"arn:aws:sns:us-east-1:{ACCOUNT}:t", closed_port_url)
        )
        with pytest.raises(HandlerError) as caught:
            await handler.send(notify())
        assert (caught.value.retryable, caught.value.reason) == (True, "connection")

    @pytest.mark.parametrize(
        ("status", "body", "reason"),
        [(400, THROTTLED, "throttled"), (500, INTERNAL, "server_error")],
    )
    async def test_throttling_and_server_errors_are_retryable(
        self,
        status: int,
        body: str,
        reason: str,
        make_handler: MakeHandler,
        receiver: Receiver,
    ) -> None:
        receiver.default.status, receiver.default.body = status, body  # botocore retries too
        handler = await make_handler(
            sns_handler(f"arn:aws:sns:us-east-1:{ACCOUNT}:t", receiver.url)
        )
        with pytest.raises(HandlerError) as caught:
            await handler.send(notify())
        assert (caught.value.retryable, caught.value.reason) == (True, reason)

    @pytest.mark.parametrize(
        ("code", "status", "retryable", "reason"),
        [
            ("NotFound", 404, False, "not_found"),
            ("AuthorizationError", 403, False, "authorization"),
            ("InvalidParameter", 400, False, "invalid_parameter"),
            ("KMSAccessDenied", 400, False, "kms"),
            ("KMSThrottling", 400, True, "throttled"),
            ("Throttling", 400, True, "throttled"),
            ("InternalError", 500, True, "server_error"),
            ("SomethingNew", 503, True, "server_error"),
            ("SomethingNew", 400, False, "http_400"),
        ],
    )
    def test_client_error_codes_are_classified(
        self, code: str, status: int, retryable: bool, reason: str
    ) -> None:
        error = ClientError(
            {
                "Error": {"Code": code, "Message": "m"},
                "ResponseMetadata": {"HTTPStatusCode": status},
            },
            "Publish",
        )
        classified = classify(error)
        assert (classified.retryable, classified.reason) == (retryable, reason)
