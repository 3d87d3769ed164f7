"""`AMID_HISTORY=off` (the bench's switch, amid.daemon.HISTORY_ENV): the daemon delivers and
keeps its ledger as ever, but writes no delivery record; unset, it writes one. The real
daemon in process against moto's SQS, the sqlite store read back after it drained."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from amid.daemon import HISTORY_ENV, history_on
from amid.store.base import HistoryQuery
from amid.store.sqlite import SqliteStore
from amid.tools.offline import synthetic_event
from tests.harness import sqlite_recorded
from tests.helpers import hook_handler, make_config, make_queue, records, running_daemon, wait_for

IMAGE = "ami-0123456789abcdef0"


def test_only_off_switches_the_record_off() -> None:
    assert history_on({}) and history_on({HISTORY_ENV: ""}) and history_on({HISTORY_ENV: "on"})
    assert not history_on({HISTORY_ENV: "off"}) and not history_on({HISTORY_ENV: " OFF "})


@pytest.mark.parametrize("setting", [None, "off"])
async def test_the_daemon_writes_the_record_unless_it_is_off(
    setting: str | None, sqs: Any, moto_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if setting is None:
        monkeypatch.delenv(HISTORY_ENV, raising=False)
    else:
        monkeypatch.setenv(HISTORY_ENV, setting)
    queue, _ = await make_queue(sqs)
    calls, path = tmp_path / "calls.jsonl", tmp_path / "dedupe.sqlite3"
    event = synthetic_event("available", IMAGE)
    await sqs.send_message(QueueUrl=queue, MessageBody=json.dumps(event))
    config = make_config(
        queue, moto_url, hook_handler(calls), dedupe=f"backend: sqlite, path: {path}"
    )
    async with running_daemon(config):
        await wait_for(lambda: len(records(calls)) == 1)
    # Drained: the delivery is in the ledger either way; the record only when it is on.
    assert sqlite_recorded(path) == {(event["id"], "hook")}
    store = await SqliteStore.open(path, ttl=3600)
    try:
        recorded = [r.event_id for r in await store.events(HistoryQuery(image_id=IMAGE))]
    finally:
        await store.aclose()
    assert recorded == ([] if setting == "off" else [event["id"]])
