"""What the daemon holds in memory: start-up's freed heap goes back to the system, start-up
objects are frozen, and packages only some configs need are imported only then."""

from __future__ import annotations

import gc
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import amid.daemon
from amid import footprint
from tests.helpers import hook_handler, make_config, make_queue, running_daemon

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")


def _rss_anon_kib() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("RssAnon:"))


@glibc
def test_freed_heap_pages_go_back_to_the_system() -> None:
    # 64 KiB blocks come from malloc's heap (below its mmap threshold); the last one kept
    # pins the heap's top, so free() alone cannot shrink it.
    blocks = [bytearray(64 * 1024) for _ in range(512)]
    kept = blocks[-1]
    del blocks
    before = _rss_anon_kib()
    assert footprint.trim_heap() is True
    assert before - _rss_anon_kib() > 16 * 1024
    assert len(kept) == 64 * 1024


def test_without_malloc_trim_nothing_is_done(monkeypatch: pytest.MonkeyPatch) -> None:
    class NoTrim:
        def __init__(self, name: Any) -> None:
            pass

    monkeypatch.setattr(footprint.ctypes, "CDLL", NoTrim)
    assert footprint.trim_heap() is False

    def unloadable(name: Any) -> Any:
        raise OSError("no C library")

    monkeypatch.setattr(footprint.ctypes, "CDLL", unloadable)
    assert footprint.trim_heap() is False


async def test_the_daemon_trims_once_when_started(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    calls: list[bool] = []
    monkeypatch.setattr(amid.daemon, "trim_heap", lambda: calls.append(True) or True)
    # An SQS that cannot be reached: the daemon starts and backs off, as the bench runs it.
    config = make_config(
        "http://127.0.0.1:1/000000000000/q", "http://127.0.0.1:1", hook_handler(tmp_path / "r")
    )
    async with running_daemon(config) as daemon:
        assert daemon.started.is_set()
        assert calls == [True]
    assert calls == [True]


async def test_start_up_objects_are_frozen_while_the_daemon_serves_and_thawed_after(
    sqs: Any, moto_url: str
) -> None:
    queue, _ = await make_queue(sqs)
    assert gc.get_freeze_count() == 0
    async with running_daemon(make_config(queue, moto_url, hook_handler(Path("/dev/null")))):
        frozen = gc.get_freeze_count()
        assert frozen > 10_000, "start-up's objects are frozen"
        # A full collection no longer walks them: it sees only the objects made since.
        assert len(gc.get_objects()) < frozen
    assert gc.get_freeze_count() == 0


@pytest.mark.parametrize("package", ["jinja2", "slack_sdk"])
def test_the_daemon_imports_what_only_some_configs_need_only_when_they_do(package: str) -> None:
    # Jinja2 (~1.9 MiB) serves templates and the status page; slack-sdk the Slack app
    # mode: a fresh interpreter that loads the daemon and its command line has neither.
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import sys, amid.cli, amid.daemon; print({package!r} in sys.modules)",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert loaded.stdout.strip() == "False"
