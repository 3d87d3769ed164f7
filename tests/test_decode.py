"""Decoding message bodies: EventBridge events, SNS envelopes, and everything else."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from amid.events import AmiStateChange, IgnoredEvent
from amid.pipeline.decode import DecodeError, decode

SEED = Path(__file__).parent.parent.parent / "shared" / "events" / "seed"


def seed(state: str) -> dict[str, object]:
    path = SEED / f"{state}.json"
    if path.exists():
        return json.loads(path.read_text())  # type: ignore[no-any-return]
    return {  # the same shape, for a checkout without shared/ beside it
        "version": "0",
        "id": "example-9f07-51db-246b-d8b8441bcdf0",
        "detail-type": "EC2 AMI State Change",
        "source": "aws.ec2",
        "account": "012345678901",
        "time": "yyyy-mm-ddThh:mm:ssZ",
        "region": "us-east-1",
        "resources": ["arn:aws:ec2:us-east-1::image/ami-0123456789example"],
        "detail": {
            "RequestId": "example-9dcc-40a6-aa77-7ce457d5442b",
            "ImageId": "ami-0123456789example",
            "State": state,
            "ErrorMessage": "Description of failure" if state == "failed" else "",
        },
    }


@pytest.mark.parametrize("state", ["available", "failed", "deregistered", "disabled"])
def test_aws_documented_examples_decode(state: str):
    event = decode(json.dumps(seed(state)))
    assert isinstance(event, AmiStateChange)
    assert event.state == state
    assert event.image_id == "ami-0123456789example"
    assert event.state_label == state


def test_the_placeholder_time_does_not_stop_an_event():
    event = decode(json.dumps(seed("available")))
    assert isinstance(event, AmiStateChange)
    assert event.occurred_at is None


def test_an_unknown_state_is_handled_with_the_label_other():
    document = seed("available")
    document["detail"]["State"] = "pending-archive"  # type: ignore[index]
    event = decode(json.dumps(document))
    assert isinstance(event, AmiStateChange)
    assert (event.state, event.state_label) == ("pending-archive", "other")


def test_extra_fields_are_kept():
    document = seed("failed")
    document["detail"]["Future"] = {"x": 1}  # type: ignore[index]
    document["extra"] = True
    event = decode(json.dumps(document))
    assert isinstance(event, AmiStateChange)
    assert event.raw["extra"] is True and event.detail["Future"] == {"x": 1}


def test_an_sns_envelope_is_unwrapped():
    envelope = {"Type": "Notification", "Message": json.dumps(seed("failed"))}
    event = decode(json.dumps(envelope))
    assert isinstance(event, AmiStateChange)
    assert event.error_message == "Description of failure"


def test_another_detail_type_is_ignored():
    document = seed("available")
    document["detail-type"] = "EC2 Instance State-change Notification"
    assert isinstance(decode(json.dumps(document)), IgnoredEvent)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("not json", "not_json"),
        ("", "not_json"),
        ("[1]", "not_object"),
        ('"text"', "not_object"),
        ("{}", "no_id"),
        ('{"id": 5}', "no_id"),
        ('{"id": "x", "detail-type": "EC2 AMI State Change", "source": "aws.ec2"}', "no_detail"),
        (
            '{"id": "x", "detail-type": "EC2 AMI State Change", "source": "aws.ec2", "detail": {}}',
            "bad_field",
        ),
        (
            '{"id": "x", "detail-type": "EC2 AMI State Change", "source": "aws.ec2", "detail": {"ImageId": 1, "State": "x"}}',
            "bad_field",
        ),
        ('{"Type": "Notification", "Message": "not json"}', "bad_envelope"),
        ('{"Type": "Notification", "Message": 3}', "bad_envelope"),
        ('{"Type": "Notification", "Message": "[]"}', "bad_envelope"),
        ("[" * 100_000, "not_json"),
        ("x" * 300_000, "not_json"),
    ],
)
def test_invalid_bodies_raise_decode_error_with_a_bounded_reason(body: str, reason: str):
    with pytest.raises(DecodeError) as caught:
        decode(body)
    assert caught.value.reason == reason
