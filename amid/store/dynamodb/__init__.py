"""DynamoDB store: one table shared by every replica (the table's layout: `store.py`)."""

from amid.store.dynamodb.store import HANDLER_PREFIX, DynamoStore, create_table

__all__ = ["HANDLER_PREFIX", "DynamoStore", "create_table"]
