"""The pipeline's enrich step on its own (a scripted enricher): when it asks, what waits."""

from __future__ import annotations

import json
from typing import Any

from amid.config import parse_config
from amid.metrics import Metrics
from amid.pipeline.enrich import ImageLookup
from amid.pipeline.process import Pipeline, Runtime
from amid.pipeline.routing import Router
from amid.tools.offline import synthetic_event
from tests.test_pipeline import GatedHandler, SpyLedger

TEAM = {"detail": {"State": ["failed"]}, "image": {"tags": {"Team": ["payments"]}}}
UNAVAILABLE = ImageLookup({}, False, "unavailable")
PAYMENTS = ImageLookup({"name": "payments-api", "tags": {"Team": "payments"}}, True, "described")


class ScriptedEnricher:
    """Answers lookups from a list, in order; notes every image asked about."""

    def __init__(self, *answers: ImageLookup) -> None:
        self.answers = list(answers)
        self.asked: list[str] = []

    async def lookup(self, image_id: str, region: str, account: str = "") -> ImageLookup:
        self.asked.append(image_id)
        return self.answers.pop(0)


def runtime(handlers: dict[str, dict[str, Any] | None]) -> tuple[Runtime, dict[str, GatedHandler]]:
    config = parse_config(
        json.dumps(
            {
                "queue": {"url": "https://sqs.us-east-1.amazonaws.com/1/q"},
                "enrich": {"describe_images": True},
                "handlers": [
                    {"name": name, "type": "console", **({"match": m} if m else {})}
                    for name, m in handlers.items()
                ],
            }
        ),
        env={},
    )
    gated = {name: GatedHandler(name) for name in handlers}
    return Runtime(config, Router(config.handlers), dict(gated)), gated


def pipeline(enricher: ScriptedEnricher, metrics: Metrics | None = None) -> Pipeline:
    return Pipeline(
        ledger=SpyLedger(), metrics=metrics or Metrics(), owner="me", lease=30, enricher=enricher
    )


async def test_without_the_image_its_routes_wait_and_the_others_deliver_once() -> None:
    metrics = Metrics()
    run, handlers = runtime({"team": TEAM, "everything": None})
    stage = pipeline(ScriptedEnricher(UNAVAILABLE, PAYMENTS), metrics)
    body = json.dumps(synthetic_event("failed"))
    first = await stage.process(body, run)
    assert (first.label, first.reason, first.delete) == ("retry", "enrich_unavailable", False)
    assert (handlers["team"].sent, handlers["everything"].sent) == (0, 1)
    second = await stage.process(body, run)
    assert (second.label, second.delete) == ("handled", True)
    assert (handlers["team"].sent, handlers["everything"].sent) == (1, 1)
    retries = metrics.registry.get_sample_value(
        "amid_event_retries_total", {"reason": "enrich_unavailable"}
    )
    assert retries == 1


async def test_an_event_only_image_routes_could_take_waits_whole() -> None:
    run, handlers = runtime({"team": TEAM})
    outcome = await pipeline(ScriptedEnricher(UNAVAILABLE)).process(
        json.dumps(synthetic_event("failed")), run
    )
    assert (outcome.label, outcome.reason) == ("retry", "enrich_unavailable")
    assert handlers["team"].sent == 0


async def test_an_empty_answer_is_an_answer_the_image_route_does_not_take() -> None:
    run, handlers = runtime({"team": TEAM, "everything": None})
    unknown = ImageLookup({}, True, "not_found")
    outcome = await pipeline(ScriptedEnricher(unknown)).process(
        json.dumps(synthetic_event("failed")), run
    )
    assert (outcome.label, outcome.delete) == ("handled", True)
    assert (handlers["team"].sent, handlers["everything"].sent) == (0, 1)


async def test_an_event_no_image_route_could_take_is_not_held_by_a_failure() -> None:
    run, handlers = runtime({"team": TEAM, "everything": None})
    outcome = await pipeline(ScriptedEnricher(UNAVAILABLE)).process(
        json.dumps(synthetic_event("available")), run
    )
    assert (outcome.label, outcome.delete) == ("handled", True)
    assert handlers["everything"].sent == 1


async def test_nothing_is_described_when_every_handler_already_succeeded() -> None:
    run, _ = runtime({"team": TEAM})
    enricher = ScriptedEnricher(PAYMENTS)
    stage = pipeline(enricher)
    body = json.dumps(synthetic_event("failed"))
    await stage.process(body, run)
    duplicate = await stage.process(body, run)
    assert duplicate.label == "duplicate"
    assert len(enricher.asked) == 1


async def test_image_routes_without_an_enricher_wait_rather_than_route_on_nothing() -> None:
    # A SIGHUP may add image routes to a daemon started without describe_images: the
    # enrich section needs a restart, and until then those routes wait.
    run, handlers = runtime({"team": TEAM, "everything": None})
    stage = Pipeline(ledger=SpyLedger(), metrics=Metrics(), owner="me", lease=30)
    outcome = await stage.process(json.dumps(synthetic_event("failed")), run)
    assert (outcome.label, outcome.reason) == ("retry", "enrich_unavailable")
    assert (handlers["team"].sent, handlers["everything"].sent) == (0, 1)
