"""Hostile message bodies: `decode` is total, and the daemon counts what it cannot use.

SPEC 2.6: invalid input is logged and counted, never crashes the daemon. The
property tests feed `decode` generated bodies (random bytes and text, deep
JSON, huge strings, a wrong type in every field of the event and of the SNS
envelope); the end-to-end test feeds a running daemon a batch of such bodies
mixed with valid events, through moto's SQS.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from amid.events import AmiStateChange, IgnoredEvent
from amid.metrics import INVALID_REASONS
from amid.pipeline.decode import MAX_BODY_BYTES, DecodeError, decode
from amid.tools.offline import synthetic_event
from tests.helpers import (
    hook_handler,
    make_config,
    make_queue,
    queue_count,
    records,
    running_daemon,
    wait_for,
)

SETTINGS = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)

ENVELOPE_KEYS = (
    "version",
    "id",
    "detail-type",
    "source",
    "account",
    "time",
    "region",
    "resources",
    "detail",
)
DETAIL_KEYS = ("RequestId", "ImageId", "State", "ErrorMessage")
_DELETE = object()

# --------------------------------------------------------------------------- strategies

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


def _valid_event(seed: int) -> dict[str, Any]:
    event = synthetic_event("failed", f"ami-{seed:017x}")
    event["detail"]["ErrorMessage"] = "boom"
    return event


@st.composite
def event_with_a_wrong_field(draw: st.DrawFn) -> dict[str, Any]:
    """A valid event with one envelope or detail field replaced by any JSON value, or removed."""
    event = _valid_event(draw(st.integers(0, 2**32)))
    replacement = draw(st.one_of(st.just(_DELETE), json_values))
    if draw(st.booleans()):
        key = draw(st.sampled_from(ENVELOPE_KEYS))
        target = event
    else:
        key = draw(st.sampled_from(DETAIL_KEYS))
        target = event["detail"]
    if replacement is _DELETE:
        target.pop(key, None)
    else:
        target[key] = replacement
    return event


@st.composite
def sns_envelope(draw: st.DrawFn) -> dict[str, Any]:
    """An SNS notification whose Message (or Type) is wrong in some way, or right."""
    inner = draw(event_with_a_wrong_field() | st.builds(_valid_event, st.integers(0, 2**32)))
    message: Any = draw(
        st.one_of(
            st.just(json.dumps(inner)),  # right
            st.just(inner),  # an object, not a string
            json_values,  # any other type
            st.text(max_size=50),  # a string that is rarely JSON
            json_values.map(json.dumps),  # JSON, rarely an object
        )
    )
    envelope: dict[str, Any] = {
        "Type": draw(st.sampled_from(["Notification", "Notification", None, 1, ["Notification"]])),
        "MessageId": "4c4b8d62-0000-0000-0000-000000000000",
        "TopicArn": "arn:aws:sns:us-east-1:123456789012:ami-events",
        "Message": message,
    }
    if draw(st.booleans()):
        envelope.pop("Message")
    return envelope


def _deep(depth: int, kind: str) -> str:
    if kind == "list":
        return "[" * depth + "]" * depth
    if kind == "object":
        return '{"a":' * depth + "1" + "}" * depth
    if kind == "unbalanced":
        return "[" * depth
    inner = _valid_event(depth)
    inner["detail"]["nested"] = 0
    text = json.dumps(inner)
    return text.replace('"nested": 0', '"nested": ' + "[" * depth + "]" * depth)


deep_json = st.builds(
    _deep, st.integers(1, 120_000), st.sampled_from(["list", "object", "unbalanced", "in-detail"])
)
huge_strings = st.builds(
    lambda size, where: json.dumps(
        {**_valid_event(size), where: "x" * size}
        if where != "detail"
        else {**_valid_event(size), "detail": {"ImageId": "a" * size, "State": "failed"}}
    ),
    st.integers(0, MAX_BODY_BYTES + 50_000),
    st.sampled_from(["id", "account", "detail"]),
)
huge_numbers = st.builds(lambda digits: '{"id": ' + "9" * digits + "}", st.integers(1, 20_000))

bodies = st.one_of(
    st.binary(max_size=2048),
    st.text(max_size=2048),
    json_values.map(json.dumps),
    event_with_a_wrong_field().map(json.dumps),
    sns_envelope().map(json.dumps),
    deep_json,
    huge_strings,
    huge_numbers,
)


def assert_total(body: str | bytes) -> AmiStateChange | IgnoredEvent | str:
    """Decode `body`: a usable event, or a DecodeError whose reason is a bounded label."""
    try:
        result = decode(body)
    except DecodeError as error:
        assert error.reason in INVALID_REASONS, error.reason
        return error.reason
    assert isinstance(result, AmiStateChange | IgnoredEvent)
    if isinstance(result, AmiStateChange):
        fields = (result.id, result.image_id, result.state, result.error_message)
        assert all(isinstance(value, str) for value in fields)
        assert result.id and result.image_id
    return result


# --------------------------------------------------------------------------- properties


@SETTINGS
@given(bodies)
def test_decode_raises_nothing_but_decode_error_with_a_bounded_reason(body: str | bytes) -> None:
    assert_total(body)
    if isinstance(body, str):
        assert_total(body.encode("utf-8", "surrogatepass"))


@SETTINGS
@given(event_with_a_wrong_field())
def test_an_event_wrapped_in_an_sns_envelope_decodes_as_it_does_bare(event: dict[str, Any]) -> None:
    bare = assert_total(json.dumps(event))
    wrapped = assert_total(json.dumps({"Type": "Notification", "Message": json.dumps(event)}))
    assert type(bare) is type(wrapped)
    if isinstance(bare, str):
        assert wrapped == bare, "an invalid inner event keeps its own reason"
    else:
        assert not isinstance(wrapped, str)
        assert wrapped.id == bare.id


# --------------------------------------------------------------------------- the daemon

_SQS_ALLOWED = {0x9, 0xA, 0xD} | set(range(0x20, 0xD800)) | set(range(0xE000, 0xFFFE))


def _sendable(text: str) -> str:
    """What SQS accepts in a message body (its documented character set)."""
    return "".join(ch for ch in text if ord(ch) in _SQS_ALLOWED or ord(ch) >= 0x10000)


def hostile_bodies(rng: random.Random, count: int) -> list[str]:
    """Invalid (and the odd ignored) bodies of every kind, reproducible from `rng`."""
    makers = [
        lambda: "".join(chr(rng.randrange(0x20, 0x3000)) for _ in range(rng.randrange(1, 300))),
        lambda: bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300))).decode("latin-1"),
        lambda: json.dumps(rng.choice([[], [1, 2], "text", 12, None, True, 1.5])),
        lambda: _deep(rng.randrange(2_000, 50_000), rng.choice(["list", "object", "unbalanced"])),
        lambda: "{" + "x" * rng.randrange(1, 200_000),
        lambda: '{"id": ' + "9" * rng.randrange(5_000, 20_000) + "}",
        lambda: json.dumps({"detail": {"ImageId": "ami-1"}}),
        lambda: json.dumps({"id": "x", "detail-type": "EC2 AMI State Change", "source": "aws.ec2"}),
        lambda: json.dumps(
            {**_valid_event(rng.randrange(10**6)), "detail": {"ImageId": 5, "State": "failed"}}
        ),
        lambda: json.dumps(
            {**_valid_event(rng.randrange(10**6)), "detail": {"ImageId": "", "State": "failed"}}
        ),
        lambda: json.dumps({**_valid_event(rng.randrange(10**6)), "region": ["us-east-1"]}),
        lambda: json.dumps({**_valid_event(rng.randrange(10**6)), "source": 7}),
        lambda: json.dumps(
            {"Type": "Notification", "Message": rng.choice([None, 5, "not json", "[1]", {"id": 1}])}
        ),
        lambda: json.dumps({"Type": "Notification", "Message": json.dumps({"detail": {}})}),
        lambda: json.dumps({**_valid_event(rng.randrange(10**6)), "detail-type": "Something Else"}),
    ]
    return [_sendable(rng.choice(makers)()) or "?" for _ in range(count)]


def _reason(body: str) -> str | None:
    try:
        decode(body)
    except DecodeError as error:
        return error.reason
    return None


async def test_a_daemon_fed_hostile_bodies_counts_each_one_and_delivers_the_valid_events(
    sqs: Any, moto_url: str, tmp_path: Path
) -> None:
    queue, dlq = await make_queue(sqs, max_receive=5)
    rng = random.Random(8)
    hostile = hostile_bodies(rng, 60)
    valid = [json.dumps(_valid_event(i)) for i in range(8)]
    messages = hostile + valid
    rng.shuffle(messages)
    expected = Counter(reason for body in hostile if (reason := _reason(body)) is not None)
    assert len(expected) >= 5, f"the batch covers most reasons: {expected}"
    for start in range(0, len(messages), 10):
        entries = [
            {"Id": str(i), "MessageBody": body}
            for i, body in enumerate(messages[start : start + 10])
        ]
        response = await sqs.send_message_batch(QueueUrl=queue, Entries=entries)
        assert not response.get("Failed"), response.get("Failed")

    record = tmp_path / "calls.jsonl"
    config = make_config(queue, moto_url, hook_handler(record), queue_extra="  on_invalid: delete")
    async with running_daemon(config) as daemon:

        async def drained() -> bool:
            return await queue_count(sqs, queue) == 0

        await wait_for(drained, timeout=60)
        await wait_for(lambda: len(records(record)) == len(valid))
        registry = daemon.metrics.registry
        assert daemon.health.live, "every poller is still running"

    counted = {
        reason: registry.get_sample_value("amid_messages_invalid_total", {"reason": reason}) or 0
        for reason in INVALID_REASONS
    }
    print(f"invalid bodies sent by reason: {dict(expected)}; counted: {counted}")
    # SQS delivers at least once (moto too, under concurrent pollers): a message received
    # twice is counted twice. Every count beyond what was sent is such an extra receive.
    received = registry.get_sample_value("amid_messages_received_total") or 0
    extra_receives = received - len(messages)
    assert all(counted[reason] >= expected.get(reason, 0) for reason in INVALID_REASONS), counted
    assert 0 <= sum(counted.values()) - sum(expected.values()) <= extra_receives
    delivered = sorted(call["event_id"] for call in records(record))
    assert delivered == sorted(json.loads(body)["id"] for body in valid), "each valid event once"
    assert registry.get_sample_value("amid_messages_deleted_total") == received
    assert await queue_count(sqs, dlq) == 0


def _deepest_decodable() -> int:
    """The deepest nesting `decode` accepts from here (it depends on the stack in use)."""
    low, high = 1, 5_000
    while low < high:
        middle = (low + high + 1) // 2
        if isinstance(_reason(_deep(middle, "in-detail")), str):
            high = middle - 1
        else:
            low = middle
    return low


async def test_an_event_nested_just_under_the_parser_limit_is_never_a_crash(
    sqs: Any, moto_url: str, tmp_path: Path
) -> None:
    """Extra fields are kept (SPEC 1), however deep: such an event is delivered, not a crash."""
    queue, _ = await make_queue(sqs, max_receive=2)
    depth = _deepest_decodable() - 5
    body = _deep(depth, "in-detail")
    print(f"nesting depth {depth}")
    await sqs.send_message(QueueUrl=queue, MessageBody=body)
    record = tmp_path / "calls.jsonl"
    async with running_daemon(make_config(queue, moto_url, hook_handler(record))) as daemon:
        await wait_for(lambda: len(records(record)) == 1 or _settled(daemon), timeout=30)
        assert daemon.health.live
    assert [call["event_id"] for call in records(record)] == [json.loads(body)["id"]]


def _settled(daemon: Any) -> bool:
    registry = daemon.metrics.registry
    failed = registry.get_sample_value(
        "amid_notifications_total", {"handler": "hook", "outcome": "failed"}
    )
    invalid = sum(
        registry.get_sample_value("amid_messages_invalid_total", {"reason": reason}) or 0
        for reason in INVALID_REASONS
    )
    return bool(failed) or invalid > 0
