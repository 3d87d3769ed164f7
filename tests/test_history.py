"""The delivery record said once (pipeline/record.py), `amid history`'s table, and the
status page's routes on a real aiohttp server on 127.0.0.1 over the memory store."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from amid.config import Config, parse_config
from amid.pipeline.decode import decode
from amid.pipeline.deliver import DeliveryResult
from amid.pipeline.record import event_record
from amid.store.base import EventRecord, HistoryQuery
from amid.store.memory import MemoryStore
from amid.tools.history import json_lines, lines
from amid.tools.offline import synthetic_event
from amid.web.status import ActiveSilence, StatusPage

IMAGE = "ami-0123456789abcdef0"
NOW = 1_750_000_000.0


def an_event(state: str = "available") -> Any:
    return decode(json.dumps(synthetic_event(state, IMAGE)))


class TestRecord:
    def test_each_handler_says_what_became_of_it(self) -> None:
        record = event_record(
            an_event(),
            received=NOW,
            outcome="retry",
            matched=["ops", "hook", "digest", "quiet"],
            results=[
                DeliveryResult("ops", True, 1, reference="msg-1"),
                DeliveryResult("hook", False, 3, "http_500", error="webhook answered HTTP 500"),
                DeliveryResult("digest", True, 1),
                DeliveryResult("quiet", True, 0, silence="sunday-cleanup"),
            ],
            digests=["digest"],
            waiting=["by-image"],
            image={"name": "prod-web", "tags": {"Team": "payments"}},
        )
        outcomes = {name: (h.outcome, h.attempts) for name, h in record.handlers.items()}
        assert outcomes == {
            "ops": ("delivered", 1),
            "hook": ("failed", 3),
            "digest": ("digest", 1),
            "quiet": ("silenced", 0),
            "by-image": ("waiting", 0),
        }
        assert record.handlers["ops"].reference == "msg-1"
        assert record.handlers["hook"].error == "webhook answered HTTP 500"
        assert record.handlers["quiet"].silence == "sunday-cleanup"
        assert (record.image_name, record.image_tags) == ("prod-web", {"Team": "payments"})
        assert record.matched == ("digest", "hook", "ops", "quiet")

    def test_an_event_every_handler_of_which_was_held_is_silenced(self) -> None:
        record = event_record(
            an_event(),
            received=NOW,
            outcome="handled",
            matched=["ops"],
            results=[DeliveryResult("ops", True, 0, silence="s1")],
        )
        assert record.outcome == "silenced"

    def test_a_failure_without_text_keeps_its_reason(self) -> None:
        record = event_record(
            an_event(),
            received=NOW,
            outcome="retry",
            matched=["ops"],
            results=[DeliveryResult("ops", False, 1, "ledger_unavailable")],
        )
        assert record.handlers["ops"].error == "ledger_unavailable"

    def test_the_image_is_unknown_when_it_was_not_described(self) -> None:
        record = event_record(an_event(), received=NOW, outcome="handled", image=None)
        assert (record.image_name, record.image_tags) == (None, None)


def a_record(**changes: Any) -> EventRecord:
    record = event_record(
        an_event(),
        received=NOW,
        outcome="handled",
        matched=["ops", "a-handler-with-a-rather-long-name"],
        results=[
            DeliveryResult("ops", True, 1, reference="arn:aws:sns:us-east-1:1:t/" + "x" * 80),
            DeliveryResult(
                "a-handler-with-a-rather-long-name", False, 2, error="answered HTTP 500: " * 10
            ),
        ],
        image={"name": "prod-web-" + "y" * 120, "tags": {}},
    )
    return EventRecord(**{**{f: getattr(record, f) for f in record.__slots__}, **changes})


class TestTable:
    def test_every_line_fits_100_columns(self) -> None:
        shown = list(lines([a_record(), a_record(event_id="e2", duplicates=3)]))
        assert all(len(line) <= 100 for line in shown), shown
        assert any("+3 duplicate copies" in line for line in shown)
        assert any("-> ops" in line and "delivered" in line for line in shown)

    def test_json_lines_are_one_object_each_with_rfc3339_times(self) -> None:
        (line,) = json_lines([a_record()])
        shown = json.loads(line)
        assert shown["received"] == "2025-06-15T15:06:40Z"
        assert shown["handlers"]["ops"]["outcome"] == "delivered"


def config() -> Config:
    return parse_config(
        json.dumps(
            {
                "queue": {"url": "https://sqs.us-east-1.amazonaws.com/1/q"},
                "handlers": [{"name": "ops", "type": "console"}],
                "expectations": [
                    {"name": "nightly", "match": {"detail": {"State": ["available"]}},
                     "every": "24h", "notify": ["ops"]}
                ],
            }
        ),
        env={},
    )  # fmt: skip


@pytest.fixture
async def page() -> AsyncIterator[tuple[str, StatusPage, MemoryStore]]:
    store = MemoryStore(3600.0, clock=lambda: NOW)
    status = StatusPage(store, config, clock=lambda: NOW)
    app = web.Application()
    status.add_routes(app)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}", status, store
    finally:
        await runner.cleanup()


async def fetch(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        return response.status, await response.text()


class TestPage:
    async def test_active_silences_come_from_the_hook_escaped(
        self, page: tuple[str, StatusPage, MemoryStore]
    ) -> None:
        url, status, _ = page

        async def silences() -> Sequence[ActiveSilence]:
            return [
                ActiveSilence("s<b>1</b>", NOW + 7200, "account 111122223333", ("ops",), "patch")
            ]

        status.silences = silences
        code, html = await fetch(url + "/")
        assert code == 200
        assert (
            "s&lt;b&gt;1&lt;/b&gt;" in html
            and "2h left" in html
            and "No active silences" not in html
        )

    async def test_without_silences_or_events_the_page_says_so(
        self, page: tuple[str, StatusPage, MemoryStore]
    ) -> None:
        code, html = await fetch(page[0] + "/")
        assert code == 200
        assert "No active silences" in html and "No events recorded yet" in html
        assert "nightly" in html  # the expectation, as `amid expectations` computes it

    async def test_the_api_reads_what_the_store_keeps(
        self, page: tuple[str, StatusPage, MemoryStore]
    ) -> None:
        url, _, store = page
        assert await store.claim("e1", "me", 30) is not None
        await store.complete("e1", "me", ["ops"], record=a_record(event_id="e1"))
        code, body = await fetch(url + f"/api/v1/events?image_id={IMAGE}&since=1h&limit=5")
        assert code == 200
        assert [e["event_id"] for e in json.loads(body)["events"]] == ["e1"]
        assert await store.events(HistoryQuery(image_id="ami-0fffffffffffffff0")) == []
        code, body = await fetch(url + "/api/v1/events?image_id=ami-0fffffffffffffff0")
        assert json.loads(body) == {"events": []}

    @pytest.mark.parametrize("query", ["limit=0", "limit=x", "limit=100000", "since=soon"])
    async def test_a_bad_parameter_is_a_400_naming_it(
        self, page: tuple[str, StatusPage, MemoryStore], query: str
    ) -> None:
        code, body = await fetch(page[0] + "/api/v1/events?" + query)
        assert code == 400
        assert json.loads(body)["error"].startswith(query.split("=")[0] + ":")


class TestPageSilences:
    """Without a hook, the page shows the config's open windows and the store's run-time
    silences, read when the page is asked for."""

    async def test_config_windows_open_now_and_run_time_silences_in_the_store_are_shown(
        self,
    ) -> None:
        from amid.store.base import SilenceRecord

        with_silence = parse_config(
            json.dumps(
                {
                    "queue": {"url": "https://sqs.us-east-1.amazonaws.com/1/q"},
                    "handlers": [{"name": "ops", "type": "console"}],
                    "silences": [
                        {"name": "always-quiet", "match": {"account": ["111122223333"]},
                         "schedule": "* * * * *", "duration": "1h"},
                        {"name": "sunday-night", "match": {"account": ["111122223333"]},
                         "schedule": "0 2 * * 0", "duration": "1m"},
                    ],
                }
            ),
            env={},
        )  # fmt: skip
        store = MemoryStore(3600.0, clock=lambda: NOW)
        await store.add_silence(
            SilenceRecord("a1b2", {"detail": {"ImageId": [IMAGE]}}, ("ops",), NOW - 60,
                          NOW + 600, "alice", "rebuild <b>now</b>")
        )  # fmt: skip
        await store.add_silence(
            SilenceRecord("old1", {"account": ["1"]}, (), NOW - 900, NOW - 60, "bob", "done")
        )
        status = StatusPage(store, lambda: with_silence, clock=lambda: NOW)
        shown = await status.silences()
        assert [s.name for s in shown] == ["always-quiet", "a1b2"]
        assert shown[1].comment == "rebuild <b>now</b>" and shown[1].author == "alice"
        assert IMAGE in shown[1].covers
