"""EventBridge's event-pattern language: documented examples, validation, properties.

The examples follow AWS's "Content filtering in Amazon EventBridge event patterns"
and aws/event-ruler's README (the engine behind EventBridge); each comes with
events it must match and events it must not.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amid.patterns import PatternError, compile_pattern

SEED = Path("/work/shared/events/seed")


def ami_event(state: str = "failed", **detail: Any) -> dict[str, Any]:
    """A real-shaped AMI event; keyword arguments add or replace `detail` fields."""
    return {
        "version": "0",
        "id": "7bf73129-1428-4cd3-a780-95db273d1602",
        "detail-type": "EC2 AMI State Change",
        "source": "aws.ec2",
        "account": "012345678901",
        "time": "2024-05-02T18:43:48Z",
        "region": "us-east-1",
        "resources": ["arn:aws:ec2:us-east-1::image/ami-0123456789abcdef0"],
        "detail": {
            "RequestId": "2f4c2a5e-9dcc-40a6-aa77-7ce457d5442b",
            "ImageId": "ami-0123456789abcdef0",
            "State": state,
            "ErrorMessage": "Client.InternalError" if state == "failed" else "",
            **detail,
        },
    }


def with_detail(**detail: Any) -> dict[str, Any]:
    event = ami_event()
    event["detail"] = detail
    return event


# (name, pattern, events that match, events that do not)
CASES: list[tuple[str, dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]] = [
    (
        "exact strings: any value in the array",
        {"source": ["aws.ec2"], "detail": {"State": ["failed", "disabled"]}},
        [ami_event("failed"), ami_event("disabled")],
        [ami_event("available"), ami_event("Failed"), with_detail()],
    ),
    (
        "exact match is character by character",
        {"detail": {"ImageId": ["ami-0123456789abcdef0"]}},
        [ami_event()],
        [ami_event(ImageId="AMI-0123456789ABCDEF0"), ami_event(ImageId="ami-0123456789abcdef0 ")],
    ),
    (
        "numbers match by numeric value, not text",
        {"detail": {"Size": [300]}},
        [ami_event(Size=300), ami_event(Size=300.0), ami_event(Size=3.0e2)],
        [ami_event(Size="300"), ami_event(Size=301), ami_event()],
    ),
    (
        "booleans are not numbers",
        {"detail": {"Public": [True]}},
        [ami_event(Public=True)],
        [ami_event(Public=1), ami_event(Public="true"), ami_event(Public=False)],
    ),
    (
        "a number is not a boolean",
        {"detail": {"Count": [1]}},
        [ami_event(Count=1), ami_event(Count=1.0)],
        [ami_event(Count=True)],
    ),
    (
        "null matches null, not a missing field",
        {"detail": {"UserId": [None]}},
        [ami_event(UserId=None)],
        [ami_event(), ami_event(UserId=""), ami_event(UserId="null")],
    ),
    (
        "empty string matches an empty value",
        {"detail": {"ErrorMessage": [""]}},
        [ami_event("available")],
        [ami_event("failed"), with_detail(State="failed")],
    ),
    (
        "event arrays match when the intersection is not empty",
        {"resources": ["arn:aws:ec2:us-east-1::image/ami-0123456789abcdef0", "other"]},
        [
            ami_event(),
            {"resources": ["x", "arn:aws:ec2:us-east-1::image/ami-0123456789abcdef0"]},
        ],
        [{"resources": ["x", "y"]}, {"resources": []}, {"resources": "x"}],
    ),
    (
        "nested event arrays are crushed into one",
        {"detail": {"Tags": ["team:build"]}},
        [ami_event(Tags=[["env:prod"], ["team:build"]])],
        [ami_event(Tags=[["env:prod"]])],
    ),
    (
        "arrays of objects: one element must match the whole sub-pattern",
        {"detail": {"employees": {"firstName": ["Anna"], "lastName": ["Smith"]}}},
        [
            ami_event(
                employees=[
                    {"firstName": "John", "lastName": "Doe"},
                    {"firstName": "Anna", "lastName": "Smith"},
                ]
            ),
            ami_event(employees={"firstName": "Anna", "lastName": "Smith"}),
            ami_event(employees=[[{"firstName": "Anna", "lastName": "Smith"}], []]),
        ],
        [
            ami_event(
                employees=[
                    {"firstName": "Anna", "lastName": "Jones"},
                    {"firstName": "Peter", "lastName": "Smith"},
                ]
            ),
            ami_event(employees=[]),
        ],
    ),
    (
        "a nested pattern needs an object at that place",
        {"detail": {"Image": {"Name": ["web"]}}},
        [ami_event(Image={"Name": "web", "Owner": "me"})],
        [ami_event(Image="web"), ami_event(), ami_event(Image={"Name": "db"})],
    ),
    (
        "prefix",
        {"time": [{"prefix": "2024-05-02"}]},
        [ami_event()],
        [{**ami_event(), "time": "2024-05-03T00:00:00Z"}, {**ami_event(), "time": 20240502}],
    ),
    (
        "prefix on array elements (the image ARN)",
        {"resources": [{"prefix": "arn:aws:ec2:us-east-1::image/"}]},
        [ami_event()],
        [{**ami_event(), "resources": ["arn:aws:ec2:eu-west-1::image/ami-1"]}],
    ),
    (
        "prefix with equals-ignore-case",
        {"detail": {"service": [{"prefix": {"equals-ignore-case": "EventB"}}]}},
        [ami_event(service="eventbridge"), ami_event(service="EVENTBRIDGE")],
        [ami_event(service="sns"), ami_event(service="ventb")],
    ),
    (
        "suffix",
        {"detail": {"FileName": [{"suffix": ".png"}]}},
        [ami_event(FileName="image.png")],
        [ami_event(FileName="image.PNG"), ami_event(FileName="png.jpg")],
    ),
    (
        "suffix with equals-ignore-case",
        {"detail": {"FileName": [{"suffix": {"equals-ignore-case": ".png"}}]}},
        [ami_event(FileName="image.png"), ami_event(FileName="IMAGE.PNG")],
        [ami_event(FileName="image.jpg")],
    ),
    (
        "equals-ignore-case",
        {"detail": {"State": [{"equals-ignore-case": "FAILED"}]}},
        [ami_event("failed"), ami_event("Failed")],
        [ami_event("failed-ish"), ami_event("available")],
    ),
    (
        "anything-but a string",
        {"detail": {"State": [{"anything-but": "available"}]}},
        [ami_event("failed"), ami_event("deregistered"), ami_event(State=5)],
        [ami_event("available"), with_detail()],
    ),
    (
        "anything-but a number",
        {"detail": {"x-limit": [{"anything-but": 123}]}},
        [ami_event(**{"x-limit": 124}), ami_event(**{"x-limit": "123"})],
        [ami_event(**{"x-limit": 123}), ami_event(**{"x-limit": 123.0}), ami_event()],
    ),
    (
        "anything-but a list",
        {"detail": {"State": [{"anything-but": ["deregistered", "disabled"]}]}},
        [ami_event("available"), ami_event("failed")],
        [ami_event("deregistered"), ami_event("disabled")],
    ),
    (
        "anything-but a list of numbers; arrays match when any element is outside",
        {"detail": {"price": [{"anything-but": [100, 500]}]}},
        [ami_event(price=101), ami_event(price=100.1), ami_event(price=[100, 50])],
        [ami_event(price=100), ami_event(price=[100, 500])],
    ),
    (
        "anything-but prefix",
        {"detail": {"ImageId": [{"anything-but": {"prefix": "ami-0123"}}]}},
        [ami_event(ImageId="ami-ffff"), ami_event(ImageId=7)],
        [ami_event(), ami_event(ImageId="ami-0123")],
    ),
    (
        "anything-but suffix",
        {"detail": {"FileName": [{"anything-but": {"suffix": ".png"}}]}},
        [ami_event(FileName="a.jpg")],
        [ami_event(FileName="a.png")],
    ),
    (
        "anything-but equals-ignore-case, single and list",
        {"detail": {"State": [{"anything-but": {"equals-ignore-case": ["Failed", "DISABLED"]}}]}},
        [ami_event("available")],
        [ami_event("failed"), ami_event("FAILED"), ami_event("disabled")],
    ),
    (
        "anything-but wildcard",
        {"detail": {"FilePath": [{"anything-but": {"wildcard": "*/lib/*"}}]}},
        [ami_event(FilePath="/usr/bin/x")],
        [ami_event(FilePath="/usr/lib/x")],
    ),
    (
        "anything-but a list of wildcards",
        {"detail": {"FilePath": [{"anything-but": {"wildcard": ["*/lib/*", "*/bin/*"]}}]}},
        [ami_event(FilePath="/etc/x")],
        [ami_event(FilePath="/usr/lib/x"), ami_event(FilePath="/usr/bin/x")],
    ),
    (
        "numeric range",
        {"detail": {"c-count": [{"numeric": [">", 0, "<=", 5]}]}},
        [ami_event(**{"c-count": 5}), ami_event(**{"c-count": 0.5})],
        [
            ami_event(**{"c-count": 0}),
            ami_event(**{"c-count": 5.000001}),
            ami_event(**{"c-count": "3"}),
            ami_event(**{"c-count": True}),
        ],
    ),
    (
        "numeric single comparisons",
        {"detail": {"d-count": [{"numeric": ["<", 10]}], "e": [{"numeric": [">=", 10]}]}},
        [ami_event(**{"d-count": 9.99, "e": 10})],
        [ami_event(**{"d-count": 10, "e": 10}), ami_event(**{"d-count": 1, "e": 9})],
    ),
    (
        "numeric equals",
        {"detail": {"x-limit": [{"numeric": ["=", 3.018e2]}]}},
        [ami_event(**{"x-limit": 301.8})],
        [ami_event(**{"x-limit": 301.81})],
    ),
    (
        "exists true",
        {"detail": {"ErrorMessage": [{"exists": True}]}},
        [ami_event("failed"), ami_event("available"), ami_event(ErrorMessage=None)],
        [with_detail(State="failed"), ami_event(ErrorMessage=[])],
    ),
    (
        "exists false matches a missing field",
        {"detail": {"ErrorMessage": [{"exists": False}]}},
        [with_detail(State="failed"), ami_event(ErrorMessage=[])],
        [ami_event("available"), ami_event(ErrorMessage=None), ami_event(ErrorMessage=["x"])],
    ),
    (
        "exists works on leaves only: an object is not a value",
        {"detail": {"c-count": [{"exists": False}]}},
        [ami_event(**{"c-count": {"c1": 100}}), ami_event()],
        [ami_event(**{"c-count": 5})],
    ),
    (
        "exists false below a missing parent",
        {"detail": {"Image": {"Name": [{"exists": False}]}}},
        [ami_event(), ami_event(Image={"Owner": "me"})],
        [ami_event(Image={"Name": "web"})],
    ),
    (
        "wildcard",
        {"resources": [{"wildcard": "arn:aws:ec2:*::image/ami-*"}]},
        [ami_event()],
        [{**ami_event(), "resources": ["arn:aws:ec2:us-east-1::snapshot/snap-1"]}],
    ),
    (
        "wildcard with an escaped star and an escaped backslash",
        {"detail": {"Name": [{"wildcard": "a\\*b*c\\\\"}]}},
        [ami_event(Name="a*bXc\\"), ami_event(Name="a*bc\\")],
        [ami_event(Name="aXbXc\\"), ami_event(Name="a*bXc")],
    ),
    (
        "wildcard star spans newlines",
        {"detail": {"ErrorMessage": [{"wildcard": "Client.*Error"}]}},
        [ami_event(ErrorMessage="Client.\nInternal Error")],
        [ami_event(ErrorMessage="Server.InternalError")],
    ),
    (
        "cidr IPv4",
        {"detail": {"source-ip": [{"cidr": "10.0.0.0/24"}]}},
        [ami_event(**{"source-ip": "10.0.0.255"})],
        [
            ami_event(**{"source-ip": "10.0.1.0"}),
            ami_event(**{"source-ip": "not an ip"}),
            ami_event(**{"source-ip": 167772160}),
        ],
    ),
    (
        "cidr IPv6",
        {"detail": {"source-ip": [{"cidr": "2001:db8::/32"}]}},
        [ami_event(**{"source-ip": "2001:db8::1"})],
        [ami_event(**{"source-ip": "2001:db9::1"}), ami_event(**{"source-ip": "10.0.0.1"})],
    ),
    (
        "mixing exact values and operators in one array",
        {"detail": {"State": ["failed", {"prefix": "dis"}, {"exists": False}]}},
        [ami_event("failed"), ami_event("disabled"), with_detail()],
        [ami_event("available")],
    ),
    (
        "$or at the top level",
        {
            "source": ["aws.ec2"],
            "$or": [{"detail": {"State": ["failed"]}}, {"account": ["999999999999"]}],
        },
        [ami_event("failed"), {**ami_event("available"), "account": "999999999999"}],
        [ami_event("available"), {**ami_event("failed"), "source": "custom"}],
    ),
    (
        "$or nested with an and inside",
        {
            "detail": {
                "$or": [
                    {"State": ["failed"]},
                    {"State": ["deregistered"], "ImageId": [{"prefix": "ami-0123"}]},
                ]
            }
        },
        [ami_event("failed"), ami_event("deregistered")],
        [ami_event("deregistered", ImageId="ami-ffff"), ami_event("available")],
    ),
    (
        "parallel $or groups all must hold",
        {
            "$or": [{"region": ["us-east-1"]}, {"region": ["eu-west-1"]}],
            "detail": {"$or": [{"State": ["failed"]}, {"State": ["disabled"]}]},
        },
        [ami_event("failed"), {**ami_event("disabled"), "region": "eu-west-1"}],
        [ami_event("available"), {**ami_event("failed"), "region": "ap-south-1"}],
    ),
]


@pytest.mark.parametrize(
    ("pattern", "matching", "non_matching"),
    [pytest.param(p, m, n, id=name) for name, p, m, n in CASES],
)
def test_documented_examples_match_and_do_not_match(
    pattern: dict[str, Any], matching: list[dict[str, Any]], non_matching: list[dict[str, Any]]
) -> None:
    compiled = compile_pattern(pattern)
    for event in matching:
        assert compiled.matches(event), json.dumps(event)
        assert compiled.explain(event) is None
    for event in non_matching:
        assert not compiled.matches(event), json.dumps(event)
        assert compiled.explain(event)


def test_seed_events_route_by_state() -> None:
    pattern = compile_pattern(
        {
            "source": ["aws.ec2"],
            "detail-type": ["EC2 AMI State Change"],
            "detail": {"State": ["failed"]},
        }
    )
    results = {
        path.stem: pattern.matches(json.loads(path.read_text())) for path in SEED.glob("*.json")
    }
    assert results == {
        "available": False,
        "deregistered": False,
        "disabled": False,
        "failed": True,
    }


def test_matching_does_not_change_the_event() -> None:
    event = ami_event(Tags=[["a"], ["b"]], items=[{"x": 1}])
    before = copy.deepcopy(event)
    compile_pattern({"detail": {"Tags": ["b"], "items": {"x": [1]}}}).matches(event)
    assert event == before


# --- explain -------------------------------------------------------------------


def test_explain_names_the_failing_field_and_the_value() -> None:
    pattern = compile_pattern({"source": ["aws.ec2"], "detail": {"State": ["failed", "disabled"]}})
    assert (
        pattern.explain(ami_event("available"))
        == 'detail.State: "available" does not match ["failed", "disabled"]'
    )


def test_explain_says_when_the_field_is_missing() -> None:
    pattern = compile_pattern({"detail": {"Name": [{"prefix": "prod-"}]}})
    assert pattern.explain(ami_event()) == 'detail.Name: missing, wanted [{"prefix": "prod-"}]'


def test_explain_lists_each_failed_or_alternative() -> None:
    pattern = compile_pattern(
        {"$or": [{"detail": {"State": ["failed"]}}, {"region": ["eu-west-1"]}]}
    )
    reason = pattern.explain(ami_event("available"))
    assert reason is not None
    assert reason.startswith("$or: no alternative matches (")
    assert '$or[0].detail.State: "available"' in reason
    assert '$or[1].region: "us-east-1"' in reason


def test_explain_names_the_array_of_objects_that_had_no_match() -> None:
    pattern = compile_pattern({"detail": {"items": {"name": ["a"]}}})
    reason = pattern.explain(ami_event(items=[{"name": "b"}, {"name": "c"}]))
    assert (
        reason == 'no element of detail.items matches (detail.items.name: "b" does not match ["a"])'
    )


# --- validation -----------------------------------------------------------------

INVALID: list[tuple[Any, str, str]] = [
    ([], "", "must be a JSON object"),
    ({}, "", "empty objects are not allowed"),
    ({"detail": {}}, "detail", "empty objects are not allowed"),
    ({"source": "aws.ec2"}, "source", "must be an array of match values or an object"),
    ({"detail": {"State": 5}}, "detail.State", "must be an array"),
    ({"detail": {"State": []}}, "detail.State", "empty arrays are not allowed"),
    ({"detail": {"State": [["failed"]]}}, "detail.State[0]", "cannot be nested"),
    (
        {"detail": {"State": [{"contains": "x"}]}},
        "detail.State[0].contains",
        "unrecognized match type",
    ),
    ({"detail": {"State": [{}]}}, "detail.State[0]", "exactly one key, got 0"),
    (
        {"detail": {"State": [{"prefix": "a", "suffix": "b"}]}},
        "detail.State[0]",
        "exactly one key, got 2",
    ),
    ({"detail": {"State": [{"prefix": 5}]}}, "detail.State[0].prefix", "must be a string"),
    ({"detail": {"State": [{"prefix": ["a"]}]}}, "detail.State[0].prefix", "must be a string"),
    (
        {"detail": {"State": [{"prefix": {"ignore-case": "a"}}]}},
        "detail.State[0].prefix",
        "equals-ignore-case",
    ),
    (
        {"detail": {"State": [{"suffix": {"equals-ignore-case": 1}}]}},
        "detail.State[0].suffix.equals-ignore-case",
        "must be a string",
    ),
    (
        {"detail": {"State": [{"equals-ignore-case": ["a"]}]}},
        "detail.State[0].equals-ignore-case",
        "must be a string",
    ),
    ({"detail": {"State": [{"exists": "true"}]}}, "detail.State[0].exists", "true or false"),
    ({"detail": {"n": [{"numeric": [">", "0"]}]}}, "detail.n[0].numeric[1]", "is not a number"),
    ({"detail": {"n": [{"numeric": [">", True]}]}}, "detail.n[0].numeric[1]", "is not a number"),
    ({"detail": {"n": [{"numeric": ["!=", 1]}]}}, "detail.n[0].numeric[0]", "unrecognized numeric"),
    ({"detail": {"n": [{"numeric": []}]}}, "detail.n[0].numeric", "takes an array"),
    ({"detail": {"n": [{"numeric": 5}]}}, "detail.n[0].numeric", "takes an array"),
    ({"detail": {"n": [{"numeric": [">"]}]}}, "detail.n[0].numeric", "operator, number pairs"),
    (
        {"detail": {"n": [{"numeric": [">", 0, "<", 5, "<", 6]}]}},
        "detail.n[0].numeric",
        "at most two comparisons",
    ),
    (
        {"detail": {"n": [{"numeric": ["<", 5, ">", 0]}]}},
        "detail.n[0].numeric[0]",
        "starts with > or >=",
    ),
    (
        {"detail": {"n": [{"numeric": [">", 0, ">", 5]}]}},
        "detail.n[0].numeric[2]",
        "ends with < or <=",
    ),
    ({"detail": {"n": [{"numeric": ["=", 1, "<", 5]}]}}, "detail.n[0].numeric[0]", "starts with"),
    (
        {"detail": {"n": [{"numeric": [">", 5, "<", 5]}]}},
        "detail.n[0].numeric",
        "lower bound",
    ),
    (
        {"detail": {"n": [{"numeric": [">", 5e10]}]}},
        "detail.n[0].numeric[1]",
        "between -5e9 and 5e9",
    ),
    ({"detail": {"n": [float("nan")]}}, "detail.n[0]", "not a JSON number"),
    ({"detail": {"w": [{"wildcard": "a**b"}]}}, "detail.w[0].wildcard", "consecutive wildcard"),
    ({"detail": {"w": [{"wildcard": "a\\\\**"}]}}, "detail.w[0].wildcard", "consecutive wildcard"),
    ({"detail": {"w": [{"wildcard": "a\\b"}]}}, "detail.w[0].wildcard", "backslash"),
    ({"detail": {"w": [{"wildcard": "ab\\"}]}}, "detail.w[0].wildcard", "backslash"),
    ({"detail": {"w": [{"wildcard": 5}]}}, "detail.w[0].wildcard", "must be a string"),
    ({"detail": {"ip": [{"cidr": "10.0.0.300/24"}]}}, "detail.ip[0].cidr", "not a CIDR block"),
    ({"detail": {"ip": [{"cidr": "10.0.0.1"}]}}, "detail.ip[0].cidr", "not a CIDR block"),
    ({"detail": {"ip": [{"cidr": "10.0.0.0/33"}]}}, "detail.ip[0].cidr", "not a CIDR block"),
    ({"detail": {"ip": [{"cidr": ["10.0.0.0/8"]}]}}, "detail.ip[0].cidr", "must be a string"),
    ({"detail": {"s": [{"anything-but": []}]}}, "detail.s[0].anything-but", "empty arrays"),
    (
        {"detail": {"s": [{"anything-but": ["a", 1]}]}},
        "detail.s[0].anything-but",
        "only strings or only numbers",
    ),
    ({"detail": {"s": [{"anything-but": True}]}}, "detail.s[0].anything-but", "strings or numbers"),
    (
        {"detail": {"s": [{"anything-but": [None]}]}},
        "detail.s[0].anything-but[0]",
        "strings or numbers",
    ),
    (
        {"detail": {"s": [{"anything-but": {"numeric": [">", 1]}}]}},
        "detail.s[0].anything-but.numeric",
        "unsupported anything-but match type",
    ),
    (
        {"detail": {"s": [{"anything-but": {"prefix": ["a"]}}]}},
        "detail.s[0].anything-but.prefix",
        "must be a string",
    ),
    (
        {"detail": {"s": [{"anything-but": {"wildcard": ["a**"]}}]}},
        "detail.s[0].anything-but.wildcard",
        "consecutive wildcard",
    ),
    ({"$or": {"source": ["a"]}}, "$or", "at least two pattern objects"),
    ({"$or": [{"source": ["a"]}]}, "$or", "at least two alternatives, got 1"),
    ({"detail": {"$or": []}}, "detail.$or", "at least two alternatives, got 0"),
    ({"$or": [{"source": ["a"]}, ["b"]]}, "$or[1]", "must be a pattern object"),
    ({"$or": [{"source": ["a"]}, {}]}, "$or[1]", "empty objects are not allowed"),
    (
        {"$or": [{"source": ["a"]}, {"detail": {"State": [{"prefix": 1}]}}]},
        "$or[1].detail.State[0].prefix",
        "must be a string",
    ),
    ({"detail": {1: ["a"]}}, "detail", "field names must be strings"),
]


@pytest.mark.parametrize(
    ("pattern", "path", "problem"),
    [
        pytest.param(p, path, problem, id=f"{path or 'root'}: {problem}")
        for p, path, problem in INVALID
    ],
)
def test_patterns_eventbridge_refuses_are_errors_naming_the_path(
    pattern: Any, path: str, problem: str
) -> None:
    with pytest.raises(PatternError) as caught:
        compile_pattern(pattern)
    assert caught.value.path == path
    assert problem in caught.value.problem
    assert str(caught.value) == (
        f"{path}: {caught.value.problem}" if path else caught.value.problem
    )


def test_error_paths_start_at_the_given_prefix() -> None:
    with pytest.raises(PatternError) as caught:
        compile_pattern({"detail": {"State": []}}, path="handlers[2].match")
    assert str(caught.value) == "handlers[2].match.detail.State: empty arrays are not allowed"


@pytest.mark.parametrize(
    "pattern",
    [
        {"detail": {"State": [{"prefix": ""}]}},
        {"detail": {"n": [{"numeric": [">=", -5e9, "<=", 5e9]}]}},
        {"detail": {"n": [{"numeric": ["=", 0]}]}},
        {"detail": {"w": [{"wildcard": "*"}]}},
        {"detail": {"w": [{"wildcard": "\\**\\\\*"}]}},
        {"detail": {"ip": [{"cidr": "10.0.0.7/24"}]}},
        {"detail": {"s": [{"anything-but": {"equals-ignore-case": "x"}}]}},
        {"detail": {"s": [True, False, None, 0, -1.5, "", {"exists": True}]}},
    ],
)
def test_edge_patterns_eventbridge_accepts_compile(pattern: dict[str, Any]) -> None:
    assert compile_pattern(pattern).source == pattern


# --- properties -------------------------------------------------------------------

KEYS = st.sampled_from(["State", "ImageId", "Name", "Size", "Tags", "Ip"])
TEXT = st.text(alphabet="abAB-*\\.", min_size=0, max_size=6)
WORD = st.text(alphabet="abAB-.", min_size=1, max_size=6)
WILDCARD_PART = st.text(alphabet="abAB-*\\.", min_size=1, max_size=4)
NUMBER = st.integers(min_value=-1000, max_value=1000) | st.sampled_from([0.5, -2.25, 1e3])


def _escape_wildcard(text: str) -> str:
    return text.replace("\\", "\\\\").replace("*", "\\*")


@st.composite
def leaf_and_witness(draw: st.DrawFn) -> tuple[list[Any], Any]:
    """A match array and a value (or None: leave the field out) that it must match."""
    kind = draw(
        st.sampled_from(
            [
                "exact",
                "number",
                "prefix",
                "suffix",
                "prefix-ic",
                "ignore-case",
                "anything-but",
                "anything-but-prefix",
                "numeric",
                "range",
                "exists",
                "absent",
                "wildcard",
                "cidr",
                "constant",
            ]
        )
    )
    if kind == "exact":
        value = draw(TEXT)
        return [value, *draw(st.lists(TEXT, max_size=2))], value
    if kind == "number":
        number = draw(NUMBER)
        return [number], float(number)
    if kind == "prefix":
        prefix, rest = draw(TEXT), draw(TEXT)
        return [{"prefix": prefix}], prefix + rest
    if kind == "suffix":
        suffix, rest = draw(TEXT), draw(TEXT)
        return [{"suffix": suffix}], rest + suffix
    if kind == "prefix-ic":
        prefix, rest = draw(WORD), draw(TEXT)
        return [{"prefix": {"equals-ignore-case": prefix}}], prefix.swapcase() + rest
    if kind == "ignore-case":
        value = draw(WORD)
        return [{"equals-ignore-case": value}], value.swapcase()
    if kind == "anything-but":
        excluded = draw(st.lists(WORD, min_size=1, max_size=3))
        return [{"anything-but": excluded}], "".join(excluded) + "!"
    if kind == "anything-but-prefix":
        prefix = draw(WORD)
        return [{"anything-but": {"prefix": prefix}}], "!" + prefix
    if kind == "numeric":
        bound = draw(NUMBER)
        return [{"numeric": [">=", bound]}], bound + 1
    if kind == "range":
        low, width = draw(NUMBER), draw(st.integers(min_value=1, max_value=100))
        return [{"numeric": [">", low, "<", low + width]}], low + width / 2
    if kind == "exists":
        return [{"exists": True}], draw(TEXT | NUMBER)
    if kind == "absent":
        return [{"exists": False}], None
    if kind == "wildcard":
        parts = draw(st.lists(WILDCARD_PART, min_size=1, max_size=3))
        glob = "*".join(_escape_wildcard(part) for part in parts)
        return [{"wildcard": glob}], "".join(parts)
    if kind == "cidr":
        return [{"cidr": "10.1.0.0/16"}], "10.1.200.3"
    constant = draw(st.sampled_from([True, False, None]))
    return [constant], constant


@st.composite
def pattern_and_witness(draw: st.DrawFn, depth: int = 0) -> tuple[dict[str, Any], dict[str, Any]]:
    """A pattern and an event built from it."""
    pattern: dict[str, Any] = {}
    event: dict[str, Any] = {}
    for key in draw(st.lists(KEYS, min_size=1, max_size=3, unique=True)):
        leaf, witness = draw(leaf_and_witness())
        pattern[key] = leaf
        if witness is not None or leaf != [{"exists": False}]:
            event[key] = witness
        if draw(st.booleans()):
            # the witness may also sit among other values in an event array
            if key in event:
                event[key] = [draw(st.sampled_from(["zz", 99999])), event[key]]
    if depth < 2 and draw(st.booleans()):
        child, child_event = draw(pattern_and_witness(depth=depth + 1))
        pattern["Child"] = child
        event["Child"] = child_event
    if depth < 2 and draw(st.booleans()):
        # $or keys live apart from their siblings so one alternative can always hold
        first, first_event = draw(pattern_and_witness(depth=2))
        second, _ = draw(pattern_and_witness(depth=2))
        pattern["$or"] = [{"Alt": first}, {"Alt": second}]
        event["Alt"] = first_event
    return pattern, event


@settings(max_examples=300, deadline=None)
@given(pattern_and_witness())
def test_a_pattern_matches_an_event_built_from_it(
    case: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    pattern, event = case
    compiled = compile_pattern(pattern)
    assert compiled.explain(event) is None, (pattern, event)
    assert compiled.matches(event)


EVENT_VALUES = st.recursive(
    TEXT | NUMBER | st.booleans() | st.none() | st.sampled_from(["10.1.2.3", "2001:db8::1"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3),
    max_leaves=8,
)
EVENTS = st.dictionaries(KEYS | st.just("Child"), EVENT_VALUES, max_size=5)


@settings(max_examples=300, deadline=None)
@given(pattern_and_witness(), KEYS, leaf_and_witness(), EVENTS)
def test_adding_a_field_to_a_pattern_never_widens_it(
    case: tuple[dict[str, Any], dict[str, Any]],
    extra_key: str,
    extra: tuple[list[Any], Any],
    event: dict[str, Any],
) -> None:
    pattern, witness = case
    narrower = {**pattern, f"Extra{extra_key}": extra[0]}
    broad, narrow = compile_pattern(pattern), compile_pattern(narrower)
    for candidate in (event, witness, {**witness, **event}):
        if narrow.matches(candidate):
            assert broad.matches(candidate), (narrower, candidate)


@settings(max_examples=200, deadline=None)
@given(pattern_and_witness(), EVENTS)
def test_explain_is_none_exactly_when_the_event_matches(
    case: tuple[dict[str, Any], dict[str, Any]], event: dict[str, Any]
) -> None:
    compiled = compile_pattern(case[0])
    for candidate in (event, case[1]):
        reason = compiled.explain(candidate)
        assert (reason is None) == compiled.matches(candidate)
        assert reason is None or (isinstance(reason, str) and reason)
