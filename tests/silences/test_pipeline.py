"""The silence stage on the road: what a held handler gets, and what the ledger records."""

from __future__ import annotations

import json
from typing import Any

from amid.config import parse_config
from amid.handlers.base import HandlerError, Notification
from amid.metrics import Metrics
from amid.pipeline.deliver import DeliveryResult
from amid.pipeline.process import Pipeline, Runtime
from amid.pipeline.routing import Router
from amid.silences import Silences
from amid.silences.refresh import RunTimeSilences
from amid.store.base import SilenceRecord
from amid.tools.offline import synthetic_event
from tests.test_pipeline import SpyLedger

ACCOUNT = "111122223333"
IMAGE = "ami-0aaaaaaaaaaaaaaa1"


class Handler:
    def __init__(self, name: str, fail: bool = False) -> None:
        self.name = name
        self.fail = fail
        self.sent: list[str] = []

    def render(self, notification: Notification) -> Any:
        return {}

    async def pace(self) -> None:
        return None

    async def send(self, notification: Notification) -> None:
        if self.fail:
            raise HandlerError("down", retryable=False, reason="http_500")
        self.sent.append(notification.event.id)

    async def aclose(self) -> None:
        return None


def runtime_with(*handlers: Handler, silences: list[dict[str, Any]] | None = None) -> Runtime:
    config = parse_config(
        json.dumps(
            {
                "queue": {"url": "https://sqs.us-east-1.amazonaws.com/1/q"},
                "handlers": [{"name": h.name, "type": "console"} for h in handlers],
                "silences": silences or [],
            }
        ),
        env={},
    )
    return Runtime(
        config,
        Router(config.handlers),
        {h.name: h for h in handlers},
        silences=Silences(config.silences),
    )


CLEANUP = {
    "name": "sunday-cleanup",
    "match": {"account": [ACCOUNT], "detail": {"State": ["deregistered"]}},
    "schedule": "* * * * *",
    "duration": "2h",  # always active
    "handlers": ["ops-slack"],
}


def body(account: str = ACCOUNT, state: str = "deregistered") -> str:
    return json.dumps(synthetic_event(state, IMAGE, account=account))


async def test_a_held_handler_is_not_sent_to_and_is_recorded_with_the_others() -> None:
    ledger, metrics = SpyLedger(), Metrics()
    slack, audit = Handler("ops-slack"), Handler("audit")
    pipeline = Pipeline(ledger=ledger, metrics=metrics, owner="me", lease=30)
    outcome = await pipeline.process(body(), runtime_with(slack, audit, silences=[CLEANUP]))
    assert outcome.label == "handled" and outcome.delete
    assert slack.sent == [] and len(audit.sent) == 1
    assert DeliveryResult("ops-slack", True, 0, silence="sunday-cleanup") in outcome.results
    assert ledger.writes == [("complete", ("ops-slack", "audit"))]
    assert (
        metrics.registry.get_sample_value(
            "amid_notifications_total", {"handler": "ops-slack", "outcome": "silenced"}
        )
        == 1
    )
    assert (
        metrics.registry.get_sample_value(
            "amid_events_total", {"state": "deregistered", "outcome": "handled"}
        )
        == 1
    )


async def test_an_event_every_handler_of_is_held_is_handled_without_a_send() -> None:
    ledger = SpyLedger()
    slack = Handler("ops-slack")
    pipeline = Pipeline(ledger=ledger, metrics=Metrics(), owner="me", lease=30)
    outcome = await pipeline.process(body(), runtime_with(slack, silences=[CLEANUP]))
    assert (outcome.label, outcome.delete, slack.sent) == ("handled", True, [])
    assert ledger.writes == [("complete", ("ops-slack",))]


async def test_an_event_the_silence_does_not_cover_goes_to_every_handler() -> None:
    slack, audit = Handler("ops-slack"), Handler("audit")
    pipeline = Pipeline(ledger=SpyLedger(), metrics=Metrics(), owner="me", lease=30)
    runtime = runtime_with(slack, audit, silences=[CLEANUP])
    await pipeline.process(body(account="999988887777"), runtime)
    await pipeline.process(body(state="available"), runtime)
    assert len(slack.sent) == 2 and len(audit.sent) == 2


async def test_a_held_handler_stays_recorded_when_another_fails_and_the_silence_ends() -> None:
    ledger, metrics = SpyLedger(), Metrics()
    silences = RunTimeSilences(ledger, metrics)
    await ledger.add_silence(
        SilenceRecord("c0ffee", {"detail": {"ImageId": [IMAGE]}}, ("ops-slack",), 0, 4e9, "a", "c")
    )
    await silences.refresh()
    slack, audit = Handler("ops-slack"), Handler("audit", fail=True)
    pipeline = Pipeline(ledger=ledger, metrics=metrics, owner="me", lease=30, silences=silences)
    runtime = runtime_with(slack, audit)
    message = body()
    first = await pipeline.process(message, runtime)
    assert (first.label, first.delete) == ("retry", False)
    assert ("record", ("ops-slack",)) in ledger.writes

    await ledger.expire_silence("c0ffee", 1.0)
    await silences.refresh()
    assert silences.current == ()
    audit.fail = False
    second = await pipeline.process(message, runtime)
    assert (second.label, second.delete) == ("handled", True)
    assert slack.sent == [], "held once, never sent on a redelivery"
    assert len(audit.sent) == 1
    assert await pipeline.process(message, runtime) == second.__class__(
        "duplicate", delete=True, event=second.event
    )
