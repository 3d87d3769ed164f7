"""SQS message body -> event. Pure; raises DecodeError with a bounded reason."""

from __future__ import annotations

from typing import Any

from amid import jsoncodec
from amid.events import DETAIL_TYPE, SOURCE, AmiStateChange, IgnoredEvent

MAX_BODY_BYTES = 256 * 1024  # SQS's own limit; a longer body cannot be a real message


class DecodeError(ValueError):
    """The body is not a usable event. `reason` is a metric label from SPEC section 5."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _parse_json(text: str | bytes, reason: str) -> Any:
    try:
        return jsoncodec.loads(text)
    except (ValueError, RecursionError):
        raise DecodeError(reason, "the body is not JSON") from None


def _unwrap_sns(document: dict[str, Any]) -> dict[str, Any]:
    """An SNS notification envelope (no raw delivery) carries the event as a JSON string."""
    message = document.get("Message")
    if not isinstance(message, str):
        raise DecodeError("bad_envelope", "an SNS notification without a string Message")
    inner = _parse_json(message, "bad_envelope")
    if not isinstance(inner, dict):
        raise DecodeError("bad_envelope", "the SNS Message is not a JSON object")
    return inner


def _text(detail: dict[str, Any], key: str, *, required: bool) -> str:
    value = detail.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise DecodeError("bad_field", f"detail.{key} must be a string")
    return value


def decode(body: str | bytes) -> AmiStateChange | IgnoredEvent:
    """Decode an EventBridge event, bare or inside an SNS notification envelope."""
    if len(body) > MAX_BODY_BYTES:
        raise DecodeError("not_json", f"the body is larger than {MAX_BODY_BYTES} bytes")
    document = _parse_json(body, "not_json")
    if not isinstance(document, dict):
        raise DecodeError("not_object", "the body is not a JSON object")
    if document.get("Type") == "Notification" and "Message" in document:
        document = _unwrap_sns(document)

    event_id = document.get("id")
    if not isinstance(event_id, str) or not event_id:
        raise DecodeError("no_id", "the event has no id")
    detail_type, source = document.get("detail-type"), document.get("source")
    if detail_type != DETAIL_TYPE or source != SOURCE:
        if isinstance(detail_type, str) and isinstance(source, str):
            return IgnoredEvent(event_id, detail_type, source)
        raise DecodeError("bad_field", "detail-type and source must be strings")

    detail = document.get("detail")
    if not isinstance(detail, dict):
        raise DecodeError("no_detail", "the event has no detail object")
    image_id = _text(detail, "ImageId", required=True)
    if not image_id:
        raise DecodeError("bad_field", "detail.ImageId is empty")
    state = _text(detail, "State", required=True)
    error_message = _text(detail, "ErrorMessage", required=False)
    envelope = {key: document.get(key, "") for key in ("account", "region", "time")}
    for key, value in envelope.items():
        if not isinstance(value, str):
            raise DecodeError("bad_field", f"{key} must be a string")
    return AmiStateChange(
        id=event_id,
        image_id=image_id,
        state=state,
        error_message=error_message,
        account=envelope["account"],
        region=envelope["region"],
        time=envelope["time"],
        raw=document,
    )
