"""DynamoDB store: run-time silences (`amid silence add`), in the ledger's table.

    pk       sk    attributes
    silence  <id>  match (S, the pattern as JSON), handlers (S, a JSON list; empty:
                   every handler), starts (N), ends (N), author (S), comment (S),
                   expires_at (N: the end + 7 days, for DynamoDB's TTL)

All silences share one partition, so every replica's refresh is one strongly
consistent Query (a page holds hundreds of silences), never a Scan; `add` is a
PutItem on condition that the id is new and `expire` an UpdateItem of `ends`:
the calls the ledger is granted already. A mixin of `DynamoStore` (its `_call`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from typing import Any

from amid.store.base import SILENCE_KEPT, SilenceRecord

SILENCE_PK = "silence"
_EXPIRES = "expires_at"


class DynamoSilences:
    _table: str
    _clock: Callable[[], float]

    async def _call(self, operation: str, **params: Any) -> dict[str, Any]:
        raise NotImplementedError  # DynamoStore's retrying call

    async def add_silence(self, silence: SilenceRecord) -> None:
        from amid.store.dynamodb.store import _ConditionFailed

        item = {
            "pk": {"S": SILENCE_PK},
            "sk": {"S": silence.id},
            "match": {"S": json.dumps(silence.match, sort_keys=True)},
            "handlers": {"S": json.dumps(list(silence.handlers))},
            "starts": _n(silence.starts),
            "ends": _n(silence.ends),
            "author": {"S": silence.author},
            "comment": {"S": silence.comment},
            _EXPIRES: {"N": str(math.ceil(silence.ends + SILENCE_KEPT))},
        }
        try:
            await self._call(
                "put_item",
                TableName=self._table,
                Item=item,
                ConditionExpression="attribute_not_exists(pk)",
            )
        except _ConditionFailed:
            raise ValueError(f"a silence with id {silence.id} exists") from None

    async def silences(self) -> list[SilenceRecord]:
        found = [record for record in await self._query_silences() if record is not None]
        return sorted(found, key=lambda record: (record.ends, record.id))

    async def expire_silence(self, silence_id: str, at: float) -> SilenceRecord | None:
        from amid.store.dynamodb.store import _ConditionFailed

        try:
            await self._call(
                "update_item",
                TableName=self._table,
                Key={"pk": {"S": SILENCE_PK}, "sk": {"S": silence_id}},
                UpdateExpression="SET #ends = :at, #exp = :exp",
                ConditionExpression="attribute_exists(pk) AND #ends > :at",
                ExpressionAttributeNames={"#ends": "ends", "#exp": _EXPIRES},
                ExpressionAttributeValues={
                    ":at": _n(at),
                    ":exp": {"N": str(math.ceil(at + SILENCE_KEPT))},
                },
            )
        except _ConditionFailed:
            pass  # no such silence, or it had ended already: read what there is
        found = await self._query_silences(silence_id)
        return found[0] if found else None

    async def _query_silences(self, silence_id: str | None = None) -> list[SilenceRecord | None]:
        """The live silence items (one, with `silence_id`); expired ones read as None."""
        params: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": {"S": SILENCE_PK}},
            "ConsistentRead": True,
        }
        if silence_id is not None:
            params["KeyConditionExpression"] = "pk = :pk AND sk = :sk"
            params["ExpressionAttributeValues"][":sk"] = {"S": silence_id}
        now = self._clock()
        records: list[SilenceRecord | None] = []
        while True:
            page = await self._call("query", **params)
            records += [_record(item, now) for item in page.get("Items", [])]
            if "LastEvaluatedKey" not in page:
                return [record for record in records if record is not None]
            params["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def _n(value: float) -> dict[str, str]:
    return {"N": f"{value:.6f}"}


def _record(item: Mapping[str, Any], now: float) -> SilenceRecord | None:
    """The silence an item holds; None once TTL should have removed it (TTL is lazy), or for
    the ledger's items of an event whose id happens to be `silence`."""
    if "match" not in item or float(item[_EXPIRES]["N"]) <= now:
        return None
    return SilenceRecord(
        id=item["sk"]["S"],
        match=json.loads(item["match"]["S"]),
        handlers=tuple(json.loads(item["handlers"]["S"])),
        starts=float(item["starts"]["N"]),
        ends=float(item["ends"]["N"]),
        author=item["author"]["S"],
        comment=item["comment"]["S"],
    )
