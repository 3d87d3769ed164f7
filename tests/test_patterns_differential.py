"""amid's matcher against a reference EventBridge: moto's standalone server.

moto 5.2.x answers `TestEventPattern` with an empty 200 (the operation is a stub), so
the reference is taken end to end instead: a rule holding the generated pattern sends
matching events to one SQS queue, a catch-all rule sends every event to another, and
`PutEvents` fills both. An event reached moto's verdict when it arrives in the first
queue; amid is held against the very event the catch-all queue received.

Where moto departs from EventBridge's documented semantics the generators stay out
of the way, and the cases below assert the documented behaviour for amid and moto's
behaviour for moto (so a moto upgrade that fixes one shows up here):

| case | EventBridge (and amid) | moto 5.2.5 | why moto differs |
| --- | --- | --- | --- |
| `[1]` vs `true` | no match | match | Python `True == 1` |
| `numeric [">", 0]` vs `true` | no match | match | `isinstance(True, int)` |
| `anything-but [1]` vs `true` | match | no match | `True in [1]` |
| `exists: true` vs `[]` | no match (no leaf value) | match | flattening keeps `[]` as a value |
| `exists: false` vs `[]` | match | no match | as above |
| `exists: true` vs `{}` | no match (not a leaf) | match | flattening keeps `{}` as a value |
| `{"items": {"name": ["a"]}}` vs `[{"name": "a"}]` | match | no match | arrays of objects unread |
| `["b"]` vs `[["a"], ["b"]]` | match (arrays crushed) | no match | nested arrays not flattened |
| `wildcard "a*b"` vs `"a\\nb"` | match | no match | `.*` without `re.DOTALL` |
| `{"contains": "x"}` | refused (unknown operator) | accepted, matches anything | yields true |

moto's `PutRule` validation only refuses empty arrays and non-array leaves, so it
accepts every other pattern EventBridge refuses (see `REFUSED_BY_EVENTBRIDGE`).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from hypothesis import event as label
from hypothesis import given, settings
from hypothesis import strategies as st

from amid.patterns import PatternError, compile_pattern
from tests.conftest import REGION
from tests.moto_server import MotoServer


class MotoEventBridge:
    """A rule under test and a catch-all rule on moto's default bus, each feeding a queue."""

    def __init__(self, url: str) -> None:
        self.events = boto3.client("events", region_name=REGION, endpoint_url=url)
        self.sqs = boto3.client("sqs", region_name=REGION, endpoint_url=url)
        suffix = uuid.uuid4().hex[:8]
        self.rule = f"amid-under-test-{suffix}"
        self.all_queue = self._rule_with_queue(
            f"amid-catch-all-{suffix}", {"source": [{"prefix": ""}]}
        )
        self.test_queue = self._rule_with_queue(self.rule, {"source": ["nothing-yet"]})

    def _rule_with_queue(self, name: str, pattern: dict[str, Any]) -> str:
        url = self.sqs.create_queue(QueueName=name)["QueueUrl"]
        arn = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        self.events.put_rule(Name=name, EventPattern=json.dumps(pattern))
        self.events.put_targets(Rule=name, Targets=[{"Id": "queue", "Arn": arn}])
        return url

    def accepts(self, pattern: Any) -> bool:
        try:
            self.events.put_rule(Name=self.rule, EventPattern=json.dumps(pattern))
        except ClientError:
            return False
        return True

    def route(
        self, pattern: dict[str, Any], entries: list[dict[str, Any]]
    ) -> list[tuple[dict[str, Any], bool]]:
        """Each event as moto built it, and whether moto's rule matched it."""
        assert self.accepts(pattern), pattern
        response = self.events.put_events(Entries=entries)
        ids = [entry["EventId"] for entry in response["Entries"]]
        built = {event["id"]: event for event in self._drain(self.all_queue)}
        matched = {event["id"] for event in self._drain(self.test_queue)}
        assert set(built) == set(ids)
        return [(built[event_id], event_id in matched) for event_id in ids]

    def _drain(self, queue_url: str) -> Iterator[dict[str, Any]]:
        # moto delivers to SQS inside PutEvents, so everything is already queued
        while True:
            messages = self.sqs.receive_message(
                QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0
            ).get("Messages", [])
            if not messages:
                return
            for message in messages:
                self.sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
                yield json.loads(message["Body"])


@pytest.fixture(scope="module")
def moto_eventbridge(moto_session_server: MotoServer) -> MotoEventBridge:
    moto_session_server.reset()
    return MotoEventBridge(moto_session_server.url)


def entry(detail: dict[str, Any], **envelope: Any) -> dict[str, Any]:
    return {
        "Source": envelope.get("source", "aws.ec2"),
        "DetailType": envelope.get("detail_type", "EC2 AMI State Change"),
        "Resources": envelope.get(
            "resources", ["arn:aws:ec2:us-east-1::image/ami-0123456789abcdef0"]
        ),
        "Detail": json.dumps(detail),
    }


# --- generators ------------------------------------------------------------------

STATES = ["available", "failed", "deregistered", "disabled", "pending"]
IMAGE_IDS = ["ami-0123456789abcdef0", "ami-0fedcba987654321", "AMI-0123ABC", "snap-1"]
ERRORS = ["", "Client.InternalError", "Server.InternalError", "client.internalerror"]
NAMES = ["prod-web", "prod-db", "dev-web", "Prod-API", "web*1", "a\\b"]
TAGS = ["env:prod", "env:dev", "team:build", "TEAM:Build"]
IPS = ["10.0.0.1", "10.0.1.255", "192.168.1.1", "2001:db8::1", "2001:db9::1", "not-an-ip"]
SIZES = [0, 1, 5, 5.0, 8, 100, -3, 2.5, 300.0]
RESOURCES = [
    "arn:aws:ec2:us-east-1::image/ami-0123456789abcdef0",
    "arn:aws:ec2:eu-west-1::image/ami-0fedcba987654321",
    "arn:aws:s3:::bucket",
]
CIDRS = ["10.0.0.0/24", "10.0.0.0/8", "192.168.0.0/16", "2001:db8::/32"]

DETAILS = st.fixed_dictionaries(
    {},
    optional={
        "State": st.sampled_from(STATES),
        "ImageId": st.sampled_from(IMAGE_IDS),
        "ErrorMessage": st.sampled_from(ERRORS),
        "Size": st.sampled_from(SIZES),
        "Public": st.sampled_from([True, False, None]),
        "Tags": st.lists(st.sampled_from(TAGS), min_size=1, max_size=3),
        "SourceIp": st.sampled_from(IPS),
        "Image": st.fixed_dictionaries({"Name": st.sampled_from(NAMES)}),
    },
)
ENTRIES = st.builds(
    entry,
    DETAILS,
    source=st.sampled_from(["aws.ec2", "custom.ami"]),
    detail_type=st.sampled_from(["EC2 AMI State Change", "Other"]),
    resources=st.lists(st.sampled_from(RESOURCES), min_size=1, max_size=2),
)


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("*", "\\*")


@st.composite
def string_condition(draw: st.DrawFn, pool: list[str]) -> Any:
    value = draw(st.sampled_from(pool))
    cut = draw(st.integers(min_value=0, max_value=len(value)))
    kind = draw(
        st.sampled_from(
            [
                "exact",
                "prefix",
                "suffix",
                "prefix-ic",
                "suffix-ic",
                "ignore-case",
                "wildcard",
                "anything-but",
                "anything-but-list",
                "anything-but-prefix",
                "anything-but-suffix",
                "anything-but-ic",
                "anything-but-wildcard",
                "exists",
            ]
        )
    )
    if kind == "exact":
        return value
    if kind == "prefix":
        return {"prefix": value[:cut]}
    if kind == "suffix":
        return {"suffix": value[cut:]}
    if kind == "prefix-ic":
        return {"prefix": {"equals-ignore-case": value[:cut].swapcase()}}
    if kind == "suffix-ic":
        return {"suffix": {"equals-ignore-case": value[cut:].swapcase()}}
    if kind == "ignore-case":
        return {"equals-ignore-case": value.swapcase()}
    if kind == "wildcard":
        end = draw(st.integers(min_value=cut, max_value=len(value)))
        return {"wildcard": _escape(value[:cut]) + "*" + _escape(value[end:])}
    if kind == "anything-but":
        return {"anything-but": value}
    if kind == "anything-but-list":
        return {"anything-but": draw(st.lists(st.sampled_from(pool), min_size=1, max_size=3))}
    if kind == "anything-but-prefix":
        return {"anything-but": {"prefix": value[:cut]}}
    if kind == "anything-but-suffix":
        return {"anything-but": {"suffix": value[cut:]}}
    if kind == "anything-but-ic":
        return {"anything-but": {"equals-ignore-case": value.swapcase()}}
    if kind == "anything-but-wildcard":
        return {"anything-but": {"wildcard": _escape(value[:cut]) + "*"}}
    return {"exists": draw(st.booleans())}


@st.composite
def number_condition(draw: st.DrawFn) -> Any:
    low, high = sorted(draw(st.lists(st.sampled_from(SIZES), min_size=2, max_size=2, unique=True)))
    kind = draw(st.sampled_from(["exact", "compare", "range", "anything-but", "exists"]))
    if kind == "exact":
        return low
    if kind == "compare":
        return {"numeric": [draw(st.sampled_from(["=", "<", "<=", ">", ">="])), low]}
    if kind == "range" and low < high:
        return {
            "numeric": [
                draw(st.sampled_from([">", ">="])),
                low,
                draw(st.sampled_from(["<", "<="])),
                high,
            ]
        }
    if kind == "anything-but":
        return {"anything-but": draw(st.sampled_from([low, [low, high]]))}
    return {"exists": draw(st.booleans())}


def conditions(condition: st.SearchStrategy[Any]) -> st.SearchStrategy[list[Any]]:
    return st.lists(condition, min_size=1, max_size=3)


IP_CONDITION = st.one_of(
    st.sampled_from(CIDRS).map(lambda cidr: {"cidr": cidr}),
    st.just({"prefix": "10."}),
    st.builds(lambda flag: {"exists": flag}, st.booleans()),
)
DETAIL_FIELDS: dict[str, st.SearchStrategy[list[Any]]] = {
    "State": conditions(string_condition(STATES)),
    "ImageId": conditions(string_condition(IMAGE_IDS)),
    "ErrorMessage": conditions(string_condition(ERRORS)),
    "Size": conditions(number_condition()),
    "Public": conditions(st.sampled_from([True, False, None, {"exists": True}, {"exists": False}])),
    "Tags": conditions(string_condition(TAGS)),
    "SourceIp": conditions(IP_CONDITION),
}


@st.composite
def detail_pattern(draw: st.DrawFn, depth: int = 0) -> dict[str, Any]:
    keys = draw(
        st.lists(st.sampled_from([*DETAIL_FIELDS, "Image"]), min_size=1, max_size=3, unique=True)
    )
    pattern: dict[str, Any] = {}
    for key in keys:
        if key == "Image":
            pattern[key] = {"Name": draw(conditions(string_condition(NAMES)))}
        else:
            pattern[key] = draw(DETAIL_FIELDS[key])
    if depth == 0 and draw(st.integers(min_value=0, max_value=3)) == 0:
        pattern["$or"] = draw(st.lists(detail_pattern(depth=1), min_size=2, max_size=3))
    return pattern


ENVELOPE_FIELDS: dict[str, st.SearchStrategy[list[Any]]] = {
    "source": conditions(string_condition(["aws.ec2", "custom.ami"])),
    "detail-type": conditions(string_condition(["EC2 AMI State Change", "Other"])),
    "resources": conditions(string_condition(RESOURCES)),
    "region": conditions(string_condition([REGION, "eu-west-1"])),
}


@st.composite
def event_pattern(draw: st.DrawFn) -> dict[str, Any]:
    keys = draw(
        st.lists(st.sampled_from([*ENVELOPE_FIELDS, "detail"]), min_size=1, max_size=3, unique=True)
    )
    pattern: dict[str, Any] = {}
    for key in keys:
        pattern[key] = draw(detail_pattern()) if key == "detail" else draw(ENVELOPE_FIELDS[key])
    if draw(st.integers(min_value=0, max_value=4)) == 0:
        pattern["$or"] = [
            {"source": draw(ENVELOPE_FIELDS["source"])},
            {"detail": draw(detail_pattern(depth=1))},
        ]
    return pattern


# --- the differential ------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(pattern=event_pattern(), entries=st.lists(ENTRIES, min_size=1, max_size=4))
def test_amid_agrees_with_moto_on_every_generated_case(
    moto_eventbridge: MotoEventBridge, pattern: dict[str, Any], entries: list[dict[str, Any]]
) -> None:
    compiled = compile_pattern(pattern)
    for event, moto_matched in moto_eventbridge.route(pattern, entries):
        label("match" if moto_matched else "no match")
        assert compiled.matches(event) == moto_matched, (pattern, event, compiled.explain(event))


def test_the_differential_sees_both_verdicts(moto_eventbridge: MotoEventBridge) -> None:
    pattern = {"source": ["aws.ec2"], "detail": {"State": [{"anything-but": "available"}]}}
    routed = moto_eventbridge.route(
        pattern, [entry({"State": "failed"}), entry({"State": "available"})]
    )
    compiled = compile_pattern(pattern)
    assert [(compiled.matches(event), matched) for event, matched in routed] == [
        (True, True),
        (False, False),
    ]


# --- where moto departs from EventBridge -------------------------------------------

# (name, pattern, detail, EventBridge's verdict = amid's, moto's verdict)
MOTO_DIFFERS: list[tuple[str, dict[str, Any], dict[str, Any], bool, bool]] = [
    ("number vs boolean", {"Count": [1]}, {"Count": True}, False, True),
    ("numeric vs boolean", {"Count": [{"numeric": [">", 0]}]}, {"Count": True}, False, True),
    (
        "anything-but number vs boolean",
        {"Count": [{"anything-but": [1]}]},
        {"Count": True},
        True,
        False,
    ),
    ("exists true vs empty array", {"Tags": [{"exists": True}]}, {"Tags": []}, False, True),
    ("exists false vs empty array", {"Tags": [{"exists": False}]}, {"Tags": []}, True, False),
    ("exists true vs empty object", {"Image": [{"exists": True}]}, {"Image": {}}, False, True),
    (
        "array of objects",
        {"items": {"name": ["a"]}},
        {"items": [{"name": "b"}, {"name": "a"}]},
        True,
        False,
    ),
    ("nested arrays are crushed", {"Tags": ["b"]}, {"Tags": [["a"], ["b"]]}, True, False),
    ("wildcard spans a newline", {"Msg": [{"wildcard": "a*b"}]}, {"Msg": "a\nb"}, True, False),
]


@pytest.mark.parametrize(
    ("detail_pattern", "detail", "documented", "moto_says"),
    [pytest.param(p, d, doc, m, id=name) for name, p, d, doc, m in MOTO_DIFFERS],
)
def test_amid_follows_eventbridge_where_moto_differs(
    moto_eventbridge: MotoEventBridge,
    detail_pattern: dict[str, Any],
    detail: dict[str, Any],
    documented: bool,
    moto_says: bool,
) -> None:
    pattern = {"detail": detail_pattern}
    ((event, moto_matched),) = moto_eventbridge.route(pattern, [entry(detail)])
    assert compile_pattern(pattern).matches(event) is documented
    assert moto_matched is moto_says


def test_moto_treats_an_unknown_operator_as_match_anything(
    moto_eventbridge: MotoEventBridge,
) -> None:
    pattern = {"detail": {"State": [{"contains": "zzz"}]}}
    ((_, moto_matched),) = moto_eventbridge.route(pattern, [entry({"State": "failed"})])
    assert moto_matched is True
    with pytest.raises(
        PatternError, match=r"detail\.State\[0\]\.contains: unrecognized match type"
    ):
        compile_pattern(pattern)


REFUSED_BY_EVENTBRIDGE: list[dict[str, Any]] = [
    {},
    {"detail": {}},
    {"detail": {"State": [{"prefix": "a", "suffix": "b"}]}},
    {"detail": {"State": [{"exists": "true"}]}},
    {"detail": {"Size": [{"numeric": [">", 5, "<", 1]}]}},
    {"detail": {"Size": [{"numeric": [">", "5"]}]}},
    {"detail": {"Size": [{"numeric": [">", 0, "<", 5, "<", 6]}]}},
    {"detail": {"Name": [{"wildcard": "a**b"}]}},
    {"detail": {"Name": [{"wildcard": "a\\b"}]}},
    {"detail": {"SourceIp": [{"cidr": "10.0.0.300/24"}]}},
    {"detail": {"State": [{"anything-but": ["a", 1]}]}},
    {"$or": [{"source": ["aws.ec2"]}]},
    {"detail": {"State": [["failed"]]}},
]


@pytest.mark.parametrize("pattern", REFUSED_BY_EVENTBRIDGE, ids=json.dumps)
def test_amid_refuses_patterns_moto_accepts_but_eventbridge_refuses(
    moto_eventbridge: MotoEventBridge, pattern: dict[str, Any]
) -> None:
    assert moto_eventbridge.accepts(pattern)
    with pytest.raises(PatternError):
        compile_pattern(pattern)


@pytest.mark.parametrize(
    "pattern",
    [{"detail": {"State": []}}, {"detail": {"State": "failed"}}],
    ids=json.dumps,
)
def test_amid_and_moto_both_refuse_what_moto_checks(
    moto_eventbridge: MotoEventBridge, pattern: dict[str, Any]
) -> None:
    assert not moto_eventbridge.accepts(pattern)
    with pytest.raises(PatternError):
        compile_pattern(pattern)
