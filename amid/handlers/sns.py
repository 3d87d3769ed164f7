"""`sns`: Publish the event to an SNS topic, with attributes subscriptions can filter on."""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import structlog
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ParamValidationError,
    ReadTimeoutError,
)

from amid import jsoncodec
from amid.aws import AwsClients
from amid.config import Config, SnsHandlerConfig
from amid.handlers.base import (
    Digest,
    ExpectationNotice,
    HandlerError,
    Notification,
    Sendable,
    log_context,
    report_template_failures,
    single_event,
)
from amid.handlers.notice import notice_context, notice_document
from amid.metrics import Metrics
from amid.templates import TemplateError, digest_context, mentions, render, template_context

if TYPE_CHECKING:
    from amid.handlers import HandlerResources

_log = structlog.get_logger("amid.handlers.sns")

SUBJECT_MAX = 99  # SNS: "less than 100 characters"
_NOT_SUBJECT = re.compile(r"[^\x20-\x7e]+")  # SNS subjects are printable ASCII, one line
_DEDUP_ID = re.compile(r"^[\x21-\x7e]{1,128}$")

# SNS error codes -> (retryable, metric reason). Unknown codes go by HTTP status.
_ERRORS: dict[str, tuple[bool, str]] = {
    "NotFound": (False, "not_found"),
    "NotFoundException": (False, "not_found"),
    "AuthorizationError": (False, "authorization"),
    "AccessDenied": (False, "authorization"),
    "AccessDeniedException": (False, "authorization"),
    "InvalidClientTokenId": (False, "authorization"),
    "InvalidParameter": (False, "invalid_parameter"),
    "InvalidParameterValue": (False, "invalid_parameter"),
    "ValidationError": (False, "invalid_parameter"),
    "EndpointDisabled": (False, "endpoint_disabled"),
    "KMSDisabled": (False, "kms"),
    "KMSInvalidState": (False, "kms"),
    "KMSNotFound": (False, "kms"),
    "KMSAccessDenied": (False, "kms"),
    "KMSOptInRequired": (False, "kms"),
    "KMSThrottling": (True, "throttled"),
    "Throttling": (True, "throttled"),
    "ThrottlingException": (True, "throttled"),
    "ThrottledException": (True, "throttled"),
    "RequestLimitExceeded": (True, "throttled"),
    "InternalError": (True, "server_error"),
    "InternalFailure": (True, "server_error"),
    "ServiceUnavailable": (True, "server_error"),
    "ExpiredToken": (True, "credentials"),  # refreshed by the credential chain
    "RequestExpired": (True, "credentials"),
}


def subject_line(text: str) -> str:
    """Made valid for SNS: ASCII (accents folded), one line, printable, under 100 characters."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return " ".join(_NOT_SUBJECT.sub(" ", ascii_text).split())[:SUBJECT_MAX].rstrip()


def default_subject(notification: Notification) -> str:
    event = notification.event
    return subject_line(f"AMI {event.image_id} {event.state}")


def default_message(notification: Notification) -> str:
    return jsoncodec.dumps(notification.event.raw)


# --- digests ---

# SNS takes up to 256 KiB per Publish, attributes and subject included: keep clear of it.
DIGEST_MESSAGE_MAX = 256 * 1024 - 8 * 1024


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def digest_messages(digest: Digest, limit: int = DIGEST_MESSAGE_MAX) -> list[str]:
    """`{"count": N, "group": {...}, "events": [...]}`, split into parts (each with its own
    count and `part`/`parts`) where one Message would pass `limit` bytes."""
    document = digest.document()
    whole = _json(document)
    if len(whole.encode("utf-8")) <= limit:
        return [whole]
    # Room for the envelope around the events, then events while they fit.
    envelope = len(_json({**document, "events": [], "part": 100, "parts": 100}).encode()) + 16
    parts: list[list[Any]] = [[]]
    size = envelope
    for event in document["events"]:
        length = len(_json(event).encode("utf-8")) + 1
        if parts[-1] and size + length > limit:
            parts.append([])
            size = envelope
        parts[-1].append(event)
        size += length
    return [
        _json({**document, "count": len(events), "events": events, "part": i, "parts": len(parts)})
        for i, events in enumerate(parts, start=1)
    ]


def digest_subject(digest: Digest) -> str:
    return subject_line(f"AMI digest: {digest.summary()}")


def digest_attributes(digest: Digest, count: int) -> dict[str, Any]:
    attributes: dict[str, Any] = {"count": {"DataType": "Number", "StringValue": str(count)}}
    if digest.state:
        attributes["state"] = {"DataType": "String", "StringValue": digest.state}
    return attributes


def classify(error: Exception) -> HandlerError:
    """A failed Publish -> HandlerError, by the SNS error code, else by HTTP status."""
    if isinstance(error, ClientError):
        code = str(error.response.get("Error", {}).get("Code", ""))
        status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        known = _ERRORS.get(code)
        if known is not None:
            retryable, reason = known
        elif status >= 500:
            retryable, reason = True, "server_error"
        elif status == 429:
            retryable, reason = True, "throttled"
        else:
            retryable, reason = False, f"http_{status}" if status else "client_error"
        return HandlerError(
            f"SNS Publish failed: {code or 'error'} (HTTP {status})",
            retryable=retryable,
            reason=reason,
        )
    if isinstance(error, ConnectTimeoutError | ReadTimeoutError):
        return HandlerError(
            f"SNS Publish timed out: {type(error).__name__}", retryable=True, reason="timeout"
        )
    if isinstance(error, EndpointConnectionError):
        return HandlerError(
            "SNS Publish failed: cannot connect to the endpoint",
            retryable=True,
            reason="connection",
        )
    if isinstance(error, NoCredentialsError):
        return HandlerError(
            "SNS Publish failed: no AWS credentials found", retryable=True, reason="credentials"
        )
    if isinstance(error, ParamValidationError):
        return HandlerError(
            f"SNS Publish refused the request: {error}", retryable=False, reason="invalid_parameter"
        )
    return HandlerError(
        f"SNS Publish failed: {type(error).__name__}", retryable=True, reason="aws_sdk"
    )


class SnsHandler:
    def __init__(self, config: SnsHandlerConfig, aws: AwsClients, metrics: Metrics) -> None:
        self.name = config.name
        self._config = config
        self._aws = aws
        self._metrics = metrics
        self._fifo = config.topic_arn.endswith(".fifo")

    @classmethod
    def from_config(
        cls, handler: SnsHandlerConfig, config: Config, resources: HandlerResources
    ) -> SnsHandler:
        return cls(handler, resources.aws, resources.metrics)

    def __repr__(self) -> str:
        return f"SnsHandler(name={self.name!r})"

    def render(self, message: Sendable) -> dict[str, Any] | list[dict[str, Any]]:
        """The Publish request's parameters (a digest: each Publish's, in order)."""
        if isinstance(message, Digest):
            return self._compose_digest(message)[0]
        if isinstance(message, ExpectationNotice):
            return self._compose_notice(message)[0]
        notification = single_event(self.name, message)
        request, _ = self._compose(notification)
        return request

    async def pace(self) -> None:
        return None

    async def send(self, message: Sendable) -> str | None:
        if isinstance(message, Digest):
            requests, failures = self._compose_digest(message)
        elif isinstance(message, ExpectationNotice):
            request, failures = self._compose_notice(message)
            requests = [request]
        else:
            request, failures = self._compose(single_event(self.name, message))
            requests = [request]
        report_template_failures(
            self._metrics,
            _log,
            self.name,
            failures,
            log_context(self.name, message),
            "published the default instead",
        )
        client = await self._aws.client(
            "sns", region=self._config.region, endpoint_url=self._config.endpoint_url
        )
        # A digest split in parts is retried whole: a part may then go out twice
        # (on a FIFO topic, its deduplication id drops the repeat).
        message_ids: list[str] = []
        for request in requests:
            try:
                answer = await client.publish(**request)
            except (ClientError, BotoCoreError) as error:
                raise classify(error) from None
            message_ids.append(str(answer.get("MessageId", "")))
        return " ".join(message_ids) or None  # the record's reference: SNS's MessageId(s)

    async def aclose(self) -> None:
        return None  # the AWS client belongs to AwsClients

    def _compose(self, notification: Notification) -> tuple[dict[str, Any], list[str]]:
        event = notification.event
        failures: list[str] = []
        context = template_context(event, dict(notification.image))
        message = default_message(notification)
        if self._config.template is not None:
            try:
                message = _render_nonblank(self._config.template, context)
            except TemplateError as error:
                failures.append(f"template: {error}")
        subject = default_subject(notification)
        if self._config.subject is not None:
            try:
                subject = _render_nonblank(self._config.subject, context, subject_line)
            except TemplateError as error:
                failures.append(f"subject: {error}")
        attributes = {
            key: {"DataType": "String", "StringValue": value}
            for key, value in (("state", event.state), ("image_id", event.image_id))
            if value  # SNS refuses an empty attribute value
        }
        request: dict[str, Any] = {
            "TopicArn": self._config.topic_arn,
            "Message": message,
            "Subject": subject,
            "MessageAttributes": attributes,
        }
        if self._fifo:
            request["MessageGroupId"] = event.image_id
            request["MessageDeduplicationId"] = deduplication_id(event.id)
        return request, failures

    def _compose_digest(self, digest: Digest) -> tuple[list[dict[str, Any]], list[str]]:
        failures: list[str] = []
        context = digest_context(digest)
        messages = digest_messages(digest)
        if self._config.template is not None:
            try:
                messages = [_render_nonblank(self._config.template, context)]
            except TemplateError as error:
                failures.append(f"template: {error}")
        subject = digest_subject(digest)
        if self._config.subject is not None:
            try:
                subject = _render_nonblank(self._config.subject, context, subject_line)
            except TemplateError as error:
                failures.append(f"subject: {error}")
        ids = sorted(event.id for event in digest.events)
        requests = []
        for number, message in enumerate(messages, start=1):
            count = json.loads(message)["count"] if len(messages) > 1 else digest.count
            request: dict[str, Any] = {
                "TopicArn": self._config.topic_arn,
                "Message": message,
                "Subject": subject_line(f"{subject} ({number}/{len(messages)})")
                if len(messages) > 1
                else subject,
                "MessageAttributes": digest_attributes(digest, count),
            }
            if self._fifo:
                group = _json(dict(digest.group))
                request["MessageGroupId"] = hashlib.sha256(group.encode()).hexdigest()
                request["MessageDeduplicationId"] = hashlib.sha256(
                    f"{number}:{','.join(ids)}".encode()
                ).hexdigest()
            requests.append(request)
        return requests, failures

    # --- expectation notices ---

    def _compose_notice(self, notice: ExpectationNotice) -> tuple[dict[str, Any], list[str]]:
        """`notice_request`, with the handler's templates where they read `expectation`."""
        request = notice_request(self._config.topic_arn, notice)
        failures: list[str] = []
        context = notice_context(notice)
        for key, source, clean in (
            ("Message", self._config.template, str),
            ("Subject", self._config.subject, subject_line),
        ):
            if source is not None and mentions(source, "expectation"):
                try:
                    request[key] = _render_nonblank(source, context, clean)
                except TemplateError as error:
                    failures.append(f"{key.lower()}: {error}")
        return request, failures


def notice_request(topic_arn: str, notice: ExpectationNotice) -> dict[str, Any]:
    """Publish of an expectation notice: the JSON document, filterable by its attributes."""
    request: dict[str, Any] = {
        "TopicArn": topic_arn,
        "Message": json.dumps(notice_document(notice), ensure_ascii=False, separators=(",", ":")),
        "Subject": subject_line(f"AMI expectation {notice.expectation} {notice.status}"),
        "MessageAttributes": {
            "expectation": {"DataType": "String", "StringValue": notice.expectation},
            "status": {"DataType": "String", "StringValue": notice.status},
        },
    }
    if topic_arn.endswith(".fifo"):
        request["MessageGroupId"] = notice.expectation
        request["MessageDeduplicationId"] = deduplication_id(notice.id or notice.expectation)
    return request


def _render_nonblank(
    source: str, context: dict[str, Any], clean: Callable[[str], str] = str
) -> str:
    text = clean(render(source, context))
    if not text.strip():
        raise TemplateError("template rendered nothing")  # SNS refuses an empty value
    return text


def deduplication_id(event_id: str) -> str:
    """The event id, which EventBridge makes unique; hashed if SNS would refuse its shape."""
    if _DEDUP_ID.match(event_id):
        return event_id
    return hashlib.sha256(event_id.encode("utf-8")).hexdigest()
