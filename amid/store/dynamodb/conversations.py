"""Slack conversations in the DynamoDB table (SPEC 3d), beside the ledger's items:

    pk                                sk             attributes
    conversation#<handler>#<key>      conversation   doc (S, the conversation as JSON),
                                                     version (N), expires_at (N)

A key longer than 200 characters is kept as its SHA-256 (a pk holds at most 2 KiB).
A change reads the item (strongly consistent), steps it and puts it back on condition
that `version` is still the one read; a replica that lost the race reads and steps
again. So two replicas never both claim a key. The same calls as the ledger's (Query,
PutItem), so the IAM policy needs nothing more.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping
from typing import Any

from amid.store.base import Conversation, ConversationStep, LedgerUnavailable

CONVERSATION_PREFIX = "conversation#"
CONVERSATION_SK = "conversation"
_RACES = 20  # optimistic tries before a write counts as the store being unavailable
_KEY_MAX = 200


def conversation_pk(handler: str, key: str) -> str:
    if len(key) > _KEY_MAX:
        key = "sha256:" + hashlib.sha256(key.encode("utf-8")).hexdigest()
    return f"{CONVERSATION_PREFIX}{handler}#{key}"


class DynamoConversations:
    """`ConversationStore` for `DynamoStore`, which supplies `_call`, `_table`, `_clock`."""

    _table: str
    _clock: Callable[[], float]

    async def _call(self, operation: str, **params: Any) -> dict[str, Any]:
        raise NotImplementedError

    async def _read_conversation(
        self, handler: str, key: str
    ) -> tuple[Conversation | None, float, float]:
        """The live conversation, its version (0 when there is no item) and the read's time."""
        now = self._clock()
        response = await self._call(
            "query",
            TableName=self._table,
            KeyConditionExpression="pk = :pk AND sk = :sk",
            ExpressionAttributeValues={
                ":pk": {"S": conversation_pk(handler, key)},
                ":sk": {"S": CONVERSATION_SK},
            },
            ConsistentRead=True,
        )
        items = response.get("Items") or []
        if not items:
            return None, 0.0, now
        item: Mapping[str, Any] = items[0]
        version = float(item["version"]["N"]) if "version" in item else 0.0
        if float(item.get("expires_at", {}).get("N", "0")) <= now:
            return None, version, now  # expired, not yet deleted by DynamoDB's TTL
        return Conversation.from_document(json.loads(item["doc"]["S"])), version, now

    async def conversation(self, handler: str, key: str) -> Conversation | None:
        found, _, _ = await self._read_conversation(handler, key)
        return found

    async def change_conversation(
        self, handler: str, key: str, step: ConversationStep, keep: float
    ) -> Conversation:
        from amid.store.dynamodb.store import _ConditionFailed

        for _ in range(_RACES):
            old, version, now = await self._read_conversation(handler, key)
            conversation = step(old, now)
            write: dict[str, Any] = {
                "TableName": self._table,
                "Item": {
                    "pk": {"S": conversation_pk(handler, key)},
                    "sk": {"S": CONVERSATION_SK},
                    "doc": {"S": json.dumps(conversation.document())},
                    "version": {"N": str(int(version) + 1)},
                    "expires_at": {"N": str(math.ceil(now + keep))},
                },
            }
            if version == 0:
                write["ConditionExpression"] = "attribute_not_exists(pk)"
            else:
                write["ConditionExpression"] = "version = :seen"
                write["ExpressionAttributeValues"] = {":seen": {"N": str(int(version))}}
            try:
                await self._call("put_item", **write)
            except _ConditionFailed:
                continue  # another replica wrote in between: read its conversation, step again
            return conversation
        raise LedgerUnavailable(
            f"dynamodb table {self._table}: conversation of {handler}: too many concurrent writes"
        )
