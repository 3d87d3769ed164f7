"""Slack conversations in the sqlite store (SPEC 3d): one row per (handler, key).

The row holds the conversation as JSON; a change reads, steps and writes it back in one
transaction of the store's group commit, so two copies on the host never both claim a key.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from typing import TypeVar

from amid.store.base import Conversation, ConversationStep

_T = TypeVar("_T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    handler    TEXT NOT NULL,
    key        TEXT NOT NULL,
    doc        TEXT NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (handler, key)
);
CREATE INDEX IF NOT EXISTS conversations_expiry ON conversations (expires_at);
"""


class SqliteConversations:
    """`ConversationStore` for `SqliteStore`, which supplies `_transact`."""

    async def _transact(self, body: Callable[[sqlite3.Connection, float], _T]) -> _T:
        raise NotImplementedError

    async def conversation(self, handler: str, key: str) -> Conversation | None:
        return await self._transact(lambda db, now: _read(db, handler, key, now))

    async def change_conversation(
        self, handler: str, key: str, step: ConversationStep, keep: float
    ) -> Conversation:
        def body(db: sqlite3.Connection, now: float) -> Conversation:
            conversation = step(_read(db, handler, key, now), now)
            db.execute(
                "INSERT OR REPLACE INTO conversations (handler, key, doc, expires_at)"
                " VALUES (?, ?, ?, ?)",
                (handler, key, json.dumps(conversation.document()), now + keep),
            )
            return conversation

        return await self._transact(body)


def _read(db: sqlite3.Connection, handler: str, key: str, now: float) -> Conversation | None:
    row = db.execute(
        "SELECT doc FROM conversations WHERE handler = ? AND key = ? AND expires_at > ?",
        (handler, key, now),
    ).fetchone()
    return Conversation.from_document(json.loads(row[0])) if row is not None else None
