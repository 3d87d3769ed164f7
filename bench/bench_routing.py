"""Routing cost: one AMI event against 50 handlers' patterns, amid vs moto's EventPattern.

    .venv/bin/python bench/bench_routing.py

Prints the median microseconds per event (all 50 patterns evaluated) for amid's
compiled patterns and for moto's matcher, and their ratio. Both are first checked
to give the same verdicts on every pattern and event, so they do the same work.
"""

from __future__ import annotations

import copy
import json
import statistics
import sys
import timeit
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from moto.events.models import EventPattern

from amid.patterns import compile_pattern

ACCOUNTS = ["111122223333", "444455556666", "012345678901", "777788889999", "123456789012"]
REGIONS = ["us-east-1", "us-west-2", "eu-west-1", "ap-southeast-2", "eu-central-1"]
STATES = ["available", "failed", "deregistered", "disabled"]


def realistic_patterns() -> list[dict[str, Any]]:
    """50 routes of the kind an AMI pipeline has: by state, account, region, image, ARN."""
    base = {"source": ["aws.ec2"], "detail-type": ["EC2 AMI State Change"]}
    patterns: list[dict[str, Any]] = []
    for index in range(10):
        account, region = ACCOUNTS[index % 5], REGIONS[index % 5]
        state = STATES[index % 4]
        patterns += [
            {**base, "account": [account], "detail": {"State": [state]}},
            {
                **base,
                "region": [{"prefix": region[:3]}],
                "detail": {"State": ["failed"], "ErrorMessage": [{"anything-but": ""}]},
            },
            {
                **base,
                "resources": [{"wildcard": f"arn:aws:ec2:{region}::image/ami-0{index}*"}],
                "detail": {"State": [{"anything-but": ["available", "disabled"]}]},
            },
            {
                "source": ["aws.ec2"],
                "$or": [
                    {"detail": {"State": ["deregistered"]}},
                    {"account": [account], "detail": {"ImageId": [{"prefix": f"ami-0{index}"}]}},
                ],
            },
            {
                **base,
                "detail": {
                    "State": [{"equals-ignore-case": state.upper()}],
                    "ErrorMessage": [{"exists": True}],
                    "ImageId": [{"suffix": "example"}, {"prefix": "ami-1"}],
                },
            },
        ]
    return patterns


def realistic_events() -> list[dict[str, Any]]:
    seeds = sorted(Path("/work/shared/events/seed").glob("*.json"))
    if not seeds:
        seeds = sorted((Path(__file__).resolve().parent.parent / "events/seed").glob("*.json"))
    events = []
    for index, path in enumerate(seeds * 2):
        event = json.loads(path.read_text())
        event = copy.deepcopy(event)
        event["id"] = f"7bf73129-1428-4cd3-a780-95db273d16{index:02d}"
        event["time"] = "2024-05-02T18:43:48Z"
        event["account"] = ACCOUNTS[index % 5]
        event["region"] = REGIONS[index % 5]
        image = f"ami-0{index}23456789abcdef"
        event["resources"] = [f"arn:aws:ec2:{event['region']}::image/{image}"]
        event["detail"]["ImageId"] = image
        if event["detail"]["State"] == "failed":
            event["detail"]["ErrorMessage"] = "Client.InternalError: snapshot copy failed"
        events.append(event)
    return events


def median_us_per_event(route: Any, events: list[dict[str, Any]], number: int) -> float:
    per_event = []
    for event in events:
        runs = timeit.repeat(lambda event=event: route(event), number=number, repeat=5)
        per_event.append(min(runs) / number * 1e6)
    return statistics.median(per_event)


def main() -> None:
    patterns = realistic_patterns()
    events = realistic_events()
    amid = [compile_pattern(pattern) for pattern in patterns]
    moto = [EventPattern.load(json.dumps(pattern)) for pattern in patterns]

    matched = 0
    for event in events:
        ours = [p.matches(event) for p in amid]
        theirs = [p.matches_event(event) for p in moto]
        if ours != theirs:
            raise SystemExit(f"amid and moto disagree on {event['id']}")
        matched += sum(ours)

    def route_amid(event: dict[str, Any]) -> list[bool]:
        return [p.matches(event) for p in amid]

    def route_moto(event: dict[str, Any]) -> list[bool]:
        return [p.matches_event(event) for p in moto]

    amid_us = median_us_per_event(route_amid, events, number=2000)
    moto_us = median_us_per_event(route_moto, events, number=100)
    print(f"{len(patterns)} patterns x {len(events)} events, {matched} matches, verdicts agree")
    print(f"{'matcher':<8} {'median µs/event':>16}")
    print(f"{'amid':<8} {amid_us:>16.1f}")
    print(f"{'moto':<8} {moto_us:>16.1f}")
    print(f"moto / amid = {moto_us / amid_us:.0f}x")


if __name__ == "__main__":
    main()
