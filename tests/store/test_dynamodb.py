"""DynamoDB specifics: retries, an unreachable store, the table and its layout, lost races."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from aiohttp import web
from structlog.testing import capture_logs

from amid.store.base import Claim, LeaseLost, LedgerUnavailable
from amid.store.dynamodb import DynamoStore, create_table
from tests.conftest import REGION
from tests.moto_server import free_port
from tests.store.conftest import LEASE, TABLE, TTL, FakeClock

EVENT = "7f1c0b8e-0000-4000-8000-000000000001"
# One HTTP try per call: the ledger's own retry loop is what these tests watch.
SINGLE_TRY = AioConfig(retries={"total_max_attempts": 1}, connect_timeout=1, read_timeout=5)
_NOT_FORWARDED = {"content-length", "transfer-encoding", "content-encoding", "connection"}


def error_body(code: str, **extra: Any) -> dict[str, Any]:
    return {"__type": f"com.amazonaws.dynamodb.v20120810#{code}", "message": code, **extra}


THROTTLED = error_body("ThrottlingException") | {"message": "Rate exceeded"}


class FlakyProxy:
    """Forwards DynamoDB requests to moto, answering queued failures instead while any remain."""

    def __init__(self, upstream: str, session: aiohttp.ClientSession) -> None:
        self.upstream = upstream
        self.session = session
        self.url = ""
        self.failures: list[tuple[str | None, int, dict[str, Any]]] = []
        self.refused: list[str] = []
        self.forwarded: list[str] = []

    def fail(
        self, times: int, body: dict[str, Any], status: int = 400, operation: str | None = None
    ) -> None:
        """Answer the next `times` requests (of `operation`, or any) with `body`."""
        self.failures.extend([(operation, status, body)] * times)

    async def handle(self, request: web.Request) -> web.Response:
        operation = request.headers.get("X-Amz-Target", "").rpartition(".")[2]
        body = await request.read()
        if self.failures and self.failures[0][0] in (None, operation):
            _, status, answer = self.failures.pop(0)
            self.refused.append(operation)
            return web.Response(
                status=status, body=json.dumps(answer), content_type="application/x-amz-json-1.0"
            )
        self.forwarded.append(operation)
        async with self.session.request(
            request.method, self.upstream + request.path_qs, headers=request.headers, data=body
        ) as response:
            headers = {
                name: value
                for name, value in response.headers.items()
                if name.lower() not in _NOT_FORWARDED
            }
            return web.Response(status=response.status, body=await response.read(), headers=headers)


@pytest.fixture
async def proxy(moto_url: str) -> AsyncIterator[FlakyProxy]:
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        flaky = FlakyProxy(moto_url, session)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", flaky.handle)
        runner = web.AppRunner(app)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        flaky.url = f"http://127.0.0.1:{port}"
        try:
            yield flaky
        finally:
            await runner.cleanup()


ClientFactory = Callable[[str], Awaitable[Any]]


@pytest.fixture
async def client_for() -> AsyncIterator[ClientFactory]:
    """DynamoDB clients on any endpoint, with botocore's own retries off."""
    async with contextlib.AsyncExitStack() as stack:

        async def create(endpoint: str) -> Any:
            return await stack.enter_async_context(
                get_session().create_client(
                    "dynamodb", region_name=REGION, endpoint_url=endpoint, config=SINGLE_TRY
                )
            )

        yield create


@pytest.fixture
async def moto_client(client_for: ClientFactory, moto_url: str) -> Any:
    client = await client_for(moto_url)
    await create_table(client, TABLE)
    return client


def quick_ledger(client: Any, clock: FakeClock | None = None, attempts: int = 5) -> DynamoStore:
    return DynamoStore(
        client,
        TABLE,
        TTL,
        clock or FakeClock(),
        attempts=attempts,
        initial_backoff=0.001,
        max_backoff=0.01,
    )


class TestRetries:
    async def test_throttled_requests_are_retried_and_logged_until_they_succeed(
        self, moto_client: Any, proxy: FlakyProxy, client_for: ClientFactory
    ) -> None:
        proxy.fail(3, THROTTLED)
        ledger = quick_ledger(await client_for(proxy.url), attempts=5)
        with capture_logs() as logs:
            assert await ledger.claim(EVENT, "a", LEASE) == Claim(frozenset())
        assert proxy.refused == ["Query"] * 3
        assert proxy.forwarded == ["Query", "PutItem"]
        assert [(entry["operation"], entry["error"]) for entry in logs] == [
            ("query", "ThrottlingException")
        ] * 3

    @pytest.mark.parametrize(
        ("code", "status"),
        [
            ("ProvisionedThroughputExceededException", 400),
            ("RequestLimitExceeded", 400),
            ("InternalServerError", 500),
        ],
    )
    async def test_every_throttling_and_server_error_is_retried(
        self,
        moto_client: Any,
        proxy: FlakyProxy,
        client_for: ClientFactory,
        code: str,
        status: int,
    ) -> None:
        proxy.fail(2, error_body(code), status=status)
        ledger = quick_ledger(await client_for(proxy.url))
        assert await ledger.claim(EVENT, "a", LEASE) == Claim(frozenset())
        assert len(proxy.refused) == 2

    async def test_a_transaction_conflict_in_record_delivery_is_retried(
        self, moto_client: Any, proxy: FlakyProxy, client_for: ClientFactory
    ) -> None:
        ledger = quick_ledger(await client_for(proxy.url))
        await ledger.claim(EVENT, "a", LEASE)
        conflict = error_body(
            "TransactionCanceledException",
            CancellationReasons=[{"Code": "TransactionConflict"}, {"Code": "None"}],
        )
        proxy.fail(2, conflict, operation="TransactWriteItems")
        await ledger.record_delivery(EVENT, "slack", "a")
        await ledger.release(EVENT, "a")
        assert proxy.refused == ["TransactWriteItems"] * 2
        assert await ledger.claim(EVENT, "b", LEASE) == Claim(frozenset({"slack"}))

    async def test_throttling_beyond_the_budget_raises_ledger_unavailable(
        self, moto_client: Any, proxy: FlakyProxy, client_for: ClientFactory
    ) -> None:
        proxy.fail(100, THROTTLED)
        ledger = quick_ledger(await client_for(proxy.url), attempts=3)
        with pytest.raises(LedgerUnavailable, match="ThrottlingException"):
            await ledger.claim(EVENT, "a", LEASE)
        assert len(proxy.refused) == 3

    async def test_a_missing_table_raises_ledger_unavailable_without_retrying(
        self, moto: object, proxy: FlakyProxy, client_for: ClientFactory
    ) -> None:
        ledger = quick_ledger(await client_for(proxy.url))
        with pytest.raises(LedgerUnavailable, match="ResourceNotFoundException"):
            await ledger.claim(EVENT, "a", LEASE)
        assert proxy.forwarded == ["Query"]

    async def test_a_store_that_is_down_raises_ledger_unavailable_within_the_budget(
        self, client_for: ClientFactory
    ) -> None:
        closed_port = free_port()
        ledger = quick_ledger(await client_for(f"http://127.0.0.1:{closed_port}"), attempts=3)
        started = time.monotonic()
        async with asyncio.timeout(10):
            with pytest.raises(LedgerUnavailable, match="Could not connect"):
                await ledger.claim(EVENT, "a", LEASE)
        assert time.monotonic() - started < 5

    async def test_a_closed_ledger_raises_ledger_unavailable(self, moto_client: Any) -> None:
        ledger = quick_ledger(moto_client)
        await ledger.aclose()
        with pytest.raises(LedgerUnavailable, match="closed"):
            await ledger.claim(EVENT, "a", LEASE)


class TestTable:
    async def test_create_table_is_idempotent_and_enables_ttl_on_expires_at(
        self, moto: object, client_for: ClientFactory, moto_url: str
    ) -> None:
        client = await client_for(moto_url)
        await create_table(client, TABLE)
        await create_table(client, TABLE)
        table = (await client.describe_table(TableName=TABLE))["Table"]
        ttl = (await client.describe_time_to_live(TableName=TABLE))["TimeToLiveDescription"]
        assert table["TableStatus"] == "ACTIVE"
        assert table["KeySchema"] == [
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ]
        assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
        assert ttl == {"TimeToLiveStatus": "ENABLED", "AttributeName": "expires_at"}

    async def test_create_table_refuses_a_table_with_another_key_schema(
        self, moto: object, client_for: ClientFactory, moto_url: str
    ) -> None:
        client = await client_for(moto_url)
        await client.create_table(
            TableName=TABLE,
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        with pytest.raises(ValueError, match="key schema"):
            await create_table(client, TABLE)

    async def test_items_follow_the_documented_layout(self, moto_client: Any) -> None:
        clock = FakeClock(1_750_000_000.5)
        ledger = quick_ledger(moto_client, clock)
        await ledger.claim(EVENT, "a", LEASE)
        await ledger.record_delivery(EVENT, "slack", "a")
        await ledger.complete(EVENT, "a")
        items = (await moto_client.scan(TableName=TABLE))["Items"]
        by_sk = {item["sk"]["S"]: item for item in items}
        assert set(by_sk) == {"event", "handler#slack"}
        assert all(item["pk"] == {"S": EVENT} for item in items)
        expires_at = str(int(clock.now + TTL) + 1)  # whole seconds, rounded up
        assert by_sk["event"]["done"] == {"BOOL": True}
        assert "owner" not in by_sk["event"]
        assert by_sk["event"]["expires_at"] == {"N": expires_at}
        assert by_sk["handler#slack"]["owner"] == {"S": "a"}
        assert by_sk["handler#slack"]["expires_at"] == {"N": expires_at}

    async def test_expired_items_still_in_the_table_are_ignored(self, moto_client: Any) -> None:
        clock = FakeClock()
        ledger = quick_ledger(moto_client, clock)
        await ledger.claim(EVENT, "a", LEASE)
        await ledger.record_delivery(EVENT, "slack", "a")
        await ledger.complete(EVENT, "a")
        clock.advance(TTL + 2)
        # DynamoDB deletes expired items lazily; they are all still here.
        assert len((await moto_client.scan(TableName=TABLE))["Items"]) == 2
        assert await ledger.claim(EVENT, "b", LEASE) == Claim(frozenset())


class _AfterFirstQuery:
    """A client that runs `meanwhile` once, right after its first Query returns."""

    def __init__(self, client: Any, meanwhile: Callable[[], Awaitable[None]]) -> None:
        self._client = client
        self._meanwhile: Callable[[], Awaitable[None]] | None = meanwhile

    async def query(self, **params: Any) -> Any:
        response = await self._client.query(**params)
        if self._meanwhile is not None:
            meanwhile, self._meanwhile = self._meanwhile, None
            await meanwhile()
        return response

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


class TestLostRaces:
    """Another replica acts between a claim's read and its conditional write."""

    async def test_a_claim_overtaken_by_a_delivery_is_refused(self, moto_client: Any) -> None:
        clock = FakeClock()
        other = quick_ledger(moto_client, clock)
        await other.claim(EVENT, "a", LEASE)
        await other.release(EVENT, "a")

        async def claim_and_deliver() -> None:
            await other.claim(EVENT, "a", LEASE)
            await other.record_delivery(EVENT, "slack", "a")
            await other.release(EVENT, "a")

        late = quick_ledger(_AfterFirstQuery(moto_client, claim_and_deliver), clock)
        # The read saw a free event with nothing delivered; handing that out would
        # deliver to slack twice.
        assert await late.claim(EVENT, "b", LEASE) is None
        assert await late.claim(EVENT, "b", LEASE) == Claim(frozenset({"slack"}))

    async def test_a_claim_overtaken_by_a_completion_is_done(self, moto_client: Any) -> None:
        clock = FakeClock()
        other = quick_ledger(moto_client, clock)

        async def deliver_and_complete() -> None:
            await other.claim(EVENT, "a", LEASE)
            await other.record_delivery(EVENT, "slack", "a")
            await other.complete(EVENT, "a")

        late = quick_ledger(_AfterFirstQuery(moto_client, deliver_and_complete), clock)
        assert await late.claim(EVENT, "b", LEASE) == Claim(frozenset({"slack"}), done=True)


def transaction_sizes(client: Any) -> list[int]:
    """The item count of every TransactWriteItems `client` sends from now on."""
    sizes: list[int] = []

    def seen(params: dict[str, Any], **_: Any) -> None:
        sizes.append(len(params["TransactItems"]))

    client.meta.events.register("before-parameter-build.dynamodb.TransactWriteItems", seen)
    return sizes


class TestCompletionsTogether:
    """The completions of one turn of the loop share one TransactWriteItems."""

    EVENTS = tuple(f"7f1c0b8e-0000-4000-8000-{n:012d}" for n in range(10))

    async def test_ten_completions_are_one_transaction(self, moto_client: Any) -> None:
        ledger = quick_ledger(moto_client)
        for event in self.EVENTS:
            await ledger.claim(event, "a", LEASE)
        sizes = transaction_sizes(moto_client)
        await asyncio.gather(*(ledger.complete(e, "a", delivered=["slack"]) for e in self.EVENTS))
        assert sizes == [20]  # each event's done mark and its handler record
        for event in self.EVENTS:
            assert await ledger.claim(event, "b", LEASE) == Claim(frozenset({"slack"}), done=True)

    async def test_a_lost_lease_fails_alone_and_the_others_are_sent_again(
        self, moto_client: Any
    ) -> None:
        ledger = quick_ledger(moto_client)
        for event in self.EVENTS:
            await ledger.claim(event, "a", LEASE)
        taken = self.EVENTS[3]
        await ledger.release(taken, "a")
        await ledger.claim(taken, "b", LEASE)  # another replica holds it now
        sizes = transaction_sizes(moto_client)
        results = await asyncio.gather(
            *(ledger.complete(e, "a", delivered=["slack"]) for e in self.EVENTS),
            return_exceptions=True,
        )
        assert [type(r).__name__ for r in results] == [
            "LeaseLost" if e == taken else "NoneType" for e in self.EVENTS
        ]
        assert isinstance(results[3], LeaseLost)
        assert sizes == [20, 18]  # refused whole (nothing written), then without the lost one
        assert await ledger.claim(taken, "b", LEASE) == Claim(frozenset())  # still b's, undone
        for event in self.EVENTS:
            if event != taken:
                expected = Claim(frozenset({"slack"}), done=True)
                assert await ledger.claim(event, "c", LEASE) == expected
