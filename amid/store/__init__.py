"""What amid must remember: one Protocol per kind of state (base.py), one module per backend."""

from __future__ import annotations

from amid.aws import AwsClients
from amid.config import DedupeConfig
from amid.store.base import (
    Claim,
    ExpectationState,
    ExpectationStore,
    ImageMemory,
    LeaseLost,
    Ledger,
    LedgerUnavailable,
    SilenceRecord,
    SilenceStore,
    Store,
)
from amid.store.memory import MemoryStore
from amid.store.sqlite import SqliteStore

__all__ = [
    "Claim",
    "ExpectationState",
    "ExpectationStore",
    "ImageMemory",
    "LeaseLost",
    "Ledger",
    "LedgerUnavailable",
    "SilenceRecord",
    "SilenceStore",
    "Store",
    "open_store",
]


async def open_store(config: DedupeConfig, aws: AwsClients, region: str | None) -> Store:
    """Open the configured backend; raises LedgerUnavailable when it cannot be used."""
    if config.backend == "memory":
        return MemoryStore(config.ttl, config.memory_max_events)
    if config.backend == "sqlite":
        return await SqliteStore.open(config.path, config.ttl)
    from amid.store.dynamodb import DynamoStore

    client = await aws.client("dynamodb", region=region)
    return DynamoStore(client, config.table, config.ttl)
