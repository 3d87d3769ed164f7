"""SQLite store: the default; survives restarts of a single host (the design: `store.py`)."""

from amid.store.sqlite.store import SqliteStore

__all__ = ["SqliteStore"]
