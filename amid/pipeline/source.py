"""SQS: long-poll receive, batched delete, visibility changes and the heartbeat."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from amid.config import QueueConfig
from amid.logs import get_logger
from amid.metrics import Metrics

SQS_BATCH = 10
_DELETE_LINGER = 0.005  # seconds a delete waits for others to share its batch call


class SqsUnavailable(Exception):
    """An SQS call failed; the caller backs off and reports not-ready."""


@dataclass(slots=True)
class Message:
    message_id: str
    receipt_handle: str
    body: str
    receive_count: int
    received_at: float = field(default_factory=time.monotonic)
    extended_at: float = field(default_factory=time.monotonic)
    event_id: str | None = None  # set once the pipeline holds the event's lease


class SqsSource:
    def __init__(self, client: Any, queue: QueueConfig, metrics: Metrics) -> None:
        self._client = client
        self._queue = queue
        self._url = queue.url
        self._metrics = metrics
        self._log = get_logger(queue=queue.url)
        self._deletes: asyncio.Queue[tuple[Message, asyncio.Future[bool]]] = asyncio.Queue()
        self._delete_task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> SqsSource:
        self._delete_task = asyncio.create_task(self._delete_batches(), name="amid-sqs-delete")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        task, self._delete_task = self._delete_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _call(self, operation: str, **kwargs: Any) -> Any:
        method = getattr(self._client, _snake(operation))
        try:
            response = await method(QueueUrl=self._url, **kwargs)
        except (TimeoutError, ClientError, BotoCoreError, OSError) as error:
            self._metrics.sqs_requests.labels(operation, "error").inc()
            raise SqsUnavailable(f"{operation}: {_describe(error)}") from error
        self._metrics.sqs_requests.labels(operation, "success").inc()
        return response

    async def receive(self, max_messages: int) -> list[Message]:
        response = await self._call(
            "ReceiveMessage",
            MaxNumberOfMessages=max_messages,
            WaitTimeSeconds=round(self._queue.wait_time),
            VisibilityTimeout=round(self._queue.visibility_timeout),
            MessageSystemAttributeNames=["ApproximateReceiveCount"],
        )
        messages = [
            Message(
                message_id=item["MessageId"],
                receipt_handle=item["ReceiptHandle"],
                body=item.get("Body", ""),
                receive_count=int(item.get("Attributes", {}).get("ApproximateReceiveCount", 1)),
            )
            for item in response.get("Messages", [])
        ]
        self._metrics.messages_received.inc(len(messages))
        return messages

    async def delete(self, message: Message) -> bool:
        """Delete (batched with concurrent deletes); False when SQS refused this one."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        await self._deletes.put((message, future))
        return await future

    async def _delete_batches(self) -> None:
        while True:
            batch = [await self._deletes.get()]
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_DELETE_LINGER):
                    while len(batch) < SQS_BATCH:
                        batch.append(await self._deletes.get())
            results = await self._delete_batch([message for message, _ in batch])
            for (_, future), ok in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(ok)

    async def _delete_batch(self, messages: Sequence[Message]) -> list[bool]:
        entries = [
            {"Id": str(index), "ReceiptHandle": message.receipt_handle}
            for index, message in enumerate(messages)
        ]
        try:
            response = await self._call("DeleteMessageBatch", Entries=entries)
        except SqsUnavailable as error:
            self._log.error(
                "delete failed; messages will be redelivered and deduped", error=str(error)
            )
            return [False] * len(messages)
        failed = {item["Id"]: item for item in response.get("Failed", [])}
        for index, item in failed.items():
            self._log.warning(
                "delete refused; the message will be redelivered and deduped",
                message_id=messages[int(index)].message_id,
                code=item.get("Code"),
            )
        deleted = len(messages) - len(failed)
        self._metrics.messages_deleted.inc(deleted)
        return [str(index) not in failed for index in range(len(messages))]

    async def change_visibility(self, message: Message, seconds: float) -> bool:
        try:
            await self._call(
                "ChangeMessageVisibility",
                ReceiptHandle=message.receipt_handle,
                VisibilityTimeout=max(0, min(round(seconds), 12 * 3600)),
            )
        except SqsUnavailable as error:
            self._log.warning(
                "visibility change failed", message_id=message.message_id, error=str(error)
            )
            return False
        return True

    async def extend(self, messages: Sequence[Message], seconds: float) -> None:
        """The heartbeat's call: keep `messages` invisible for another `seconds`."""
        for start in range(0, len(messages), SQS_BATCH):
            chunk = messages[start : start + SQS_BATCH]
            entries = [
                {
                    "Id": str(i),
                    "ReceiptHandle": m.receipt_handle,
                    "VisibilityTimeout": round(seconds),
                }
                for i, m in enumerate(chunk)
            ]
            try:
                response = await self._call("ChangeMessageVisibilityBatch", Entries=entries)
            except SqsUnavailable as error:
                self._log.warning("heartbeat failed", error=str(error), messages=len(chunk))
                continue
            failed = {item["Id"] for item in response.get("Failed", [])}
            now = time.monotonic()
            for index, message in enumerate(chunk):
                if str(index) not in failed:
                    message.extended_at = now

    async def attributes(self, url: str | None = None) -> dict[str, str]:
        """GetQueueAttributes (All) of the main queue, or of `url`."""
        operation = self._client.get_queue_attributes
        try:
            response = await operation(QueueUrl=url or self._url, AttributeNames=["All"])
        except (TimeoutError, ClientError, BotoCoreError, OSError) as error:
            self._metrics.sqs_requests.labels("GetQueueAttributes", "error").inc()
            raise SqsUnavailable(f"GetQueueAttributes: {_describe(error)}") from error
        self._metrics.sqs_requests.labels("GetQueueAttributes", "success").inc()
        attributes: dict[str, str] = response.get("Attributes", {})
        return attributes

    async def dead_letter_queue_url(self, attributes: dict[str, str]) -> str | None:
        """The DLQ's URL from the redrive policy, or None when there is none."""
        policy = attributes.get("RedrivePolicy")
        if not policy:
            return None
        arn = json.loads(policy).get("deadLetterTargetArn", "")
        parts = arn.split(":")
        if len(parts) != 6:
            return None
        try:
            response = await self._client.get_queue_url(
                QueueName=parts[5], QueueOwnerAWSAccountId=parts[4]
            )
        except (ClientError, BotoCoreError, OSError) as error:
            self._log.warning("dead-letter queue not reachable", error=_describe(error))
            return None
        url: str = response["QueueUrl"]
        return url


class Heartbeat:
    """Keeps in-flight messages invisible (and their ledger leases alive) while handlers run."""

    def __init__(
        self,
        source: SqsSource,
        visibility_timeout: float,
        extend_lease: Callable[[str], Any] | None = None,
    ) -> None:
        self._source = source
        self._visibility = visibility_timeout
        self._extend_lease = extend_lease
        self._messages: dict[str, Message] = {}

    def track(self, message: Message) -> None:
        self._messages[message.receipt_handle] = message

    def untrack(self, message: Message) -> None:
        self._messages.pop(message.receipt_handle, None)

    @property
    def tracked(self) -> list[Message]:
        return list(self._messages.values())

    async def run(self) -> None:
        # Extend a message once half its visibility has passed; wake four times per period.
        tick = max(self._visibility / 4, 0.25)
        while True:
            await asyncio.sleep(tick)
            await self.beat()

    async def beat(self) -> None:
        now = time.monotonic()
        due = [m for m in self._messages.values() if now - m.extended_at >= self._visibility / 2]
        if not due:
            return
        leases = [m.event_id for m in due if m.event_id is not None]
        if self._extend_lease is not None and leases:
            await asyncio.gather(
                self._source.extend(due, self._visibility),
                *(self._extend_lease(event_id) for event_id in leases),
            )
        else:
            await self._source.extend(due, self._visibility)


async def approximate_count(client: Any, url: str) -> int:
    """Visible plus in-flight messages on a queue, as SQS approximates them."""
    response = await client.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )
    attributes = response["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(
        attributes["ApproximateNumberOfMessagesNotVisible"]
    )


def _snake(operation: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in operation).lstrip("_")


def _describe(error: BaseException) -> str:
    if isinstance(error, ClientError):
        code = error.response.get("Error", {}).get("Code", "Unknown")
        return f"{code}: {error.response.get('Error', {}).get('Message', '')}".strip()
    return f"{type(error).__name__}: {error}"
