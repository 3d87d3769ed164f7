"""moto's DynamoDB as its own server process, fit for thousands of ledger transactions.

Stock moto does work in proportion to the whole table on two calls the ledger
makes all the time: `TransactWriteItems` deep-copies every table it touches
(for its rollback), and `Query` sorts every item of the table before picking
the partition's. At 2,000 events (6,000 items) each takes ~0.05 to 0.4 s and a
scale run would take half an hour. Here a transaction checks every condition
first and writes only if all hold (the same all-or-nothing result, at the cost
of the items it names), and a query on the table's key reads its partition
only. Requests are read on threads (with
keep-alive) but handled one at a time, under one lock, so each call is atomic
as DynamoDB's conditional writes are; moto's threaded server can interleave two
conditional writes on one item.

Run as `python tests/scale/dynamodb_server.py PORT`; `DynamoDBServer` in conftest.py does that.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Any


def _transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
    """DynamoDBBackend.transact_write_items: validate every item, then write all or none."""
    from moto.dynamodb.comparisons import get_filter_expression
    from moto.dynamodb.exceptions import (
        MultipleTransactionsException,
        TooManyTransactionsException,
        TransactionCanceledException,
        TransactWriteSingleOpException,
    )

    if len(transact_items) > 100:
        raise TooManyTransactionsException()
    seen: set[tuple[str, str]] = set()
    reasons: list[tuple[str | None, str | None, dict[str, Any] | None]] = []
    writes: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
    for item in transact_items:
        if len(item) != 1:
            raise TransactWriteSingleOpException()
        op_type, op = next(iter(item.items()))
        if op_type not in {"ConditionCheck", "Put", "Delete", "Update"}:
            raise ValueError(f"unsupported transaction operation {op_type}")
        table = self.get_table(op["TableName"])
        if op_type == "Put":
            key = {table.hash_key_attr: op["Item"][table.hash_key_attr]}
            if table.range_key_attr is not None:
                key[table.range_key_attr] = op["Item"][table.range_key_attr]
        else:
            key = op["Key"]
        identity = (op["TableName"], repr(sorted(key.items())))
        if identity in seen:
            raise MultipleTransactionsException()
        seen.add(identity)
        current = self.get_item(op["TableName"], key)
        condition = op.get("ConditionExpression")
        if condition is not None and not get_filter_expression(
            condition, op.get("ExpressionAttributeNames"), op.get("ExpressionAttributeValues")
        ).expr(current):
            old = None
            if current is not None and op.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD":
                old = current.to_json()["Attributes"]
            reasons.append(("ConditionalCheckFailed", "The conditional request failed", old))
            continue
        reasons.append((None, None, None))
        if op_type != "ConditionCheck":
            writes.append((op_type, op, key))
    if any(code is not None for code, _, _ in reasons):
        raise TransactionCanceledException(reasons)
    # Each item is named once and nothing ran in between: every condition still holds.
    for op_type, op, key in writes:
        condition_args = {
            "condition_expression": op.get("ConditionExpression"),
            "expression_attribute_names": op.get("ExpressionAttributeNames"),
            "expression_attribute_values": op.get("ExpressionAttributeValues"),
        }
        if op_type == "Put":
            self.put_item(op["TableName"], op["Item"], **condition_args)
        elif op_type == "Delete":
            self.delete_item(op["TableName"], key, **condition_args)
        else:
            self.update_item(
                op["TableName"], key, update_expression=op["UpdateExpression"], **condition_args
            )


def _patch_query(table_class: Any) -> None:
    """Table.query on the table's own key: `all_items` yields the queried partition only."""
    query, all_items = table_class.query, table_class.all_items

    def partition_query(self: Any, hash_key: Any, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("index_name"):
            return query(self, hash_key, *args, **kwargs)
        self.queried_partition = hash_key
        try:
            return query(self, hash_key, *args, **kwargs)
        finally:
            self.queried_partition = None

    def partition_items(self: Any) -> list[Any]:
        partition = getattr(self, "queried_partition", None)
        if partition is None or not self.range_key_attr:
            return list(all_items(self))
        items = self.items.get(partition, {})
        return sorted(items.values(), key=lambda item: item.range_key)

    table_class.query = partition_query
    table_class.all_items = partition_items


def serve(port: int) -> None:
    from moto.dynamodb.models import DynamoDBBackend
    from moto.dynamodb.models.table import Table
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import run_simple

    DynamoDBBackend.transact_write_items = _transact_write_items  # type: ignore[method-assign]
    _patch_query(Table)
    os.environ.setdefault("MOTO_PORT", str(port))
    app = DomainDispatcherApplication(create_backend_app)
    lock = threading.Lock()

    def one_at_a_time(environ: Any, start_response: Any) -> list[bytes]:
        with lock:
            return list(app(environ, start_response))

    run_simple("127.0.0.1", port, one_at_a_time, threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    serve(int(sys.argv[1]))
