"""Slack's app mode on the command line: check-config's summary, test-event --dry-run (both
calls, the token redacted), and replay, which threads through the dedupe store as the
daemon does."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from amid.tools.offline import synthetic_event
from tests.slack_api import CHANNEL, TOKEN, SlackApi
from tests.test_cli_offline import amid


@pytest.fixture
async def api() -> AsyncIterator[SlackApi]:
    server = await SlackApi().start()
    yield server
    await server.stop()


def write_config(tmp_path: Path, api: SlackApi) -> Path:
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    config = tmp_path / "amid.yaml"
    config.write_text(
        f"""
queue: {{url: "https://sqs.us-east-1.amazonaws.com/123456789012/amid"}}
dedupe: {{backend: sqlite, path: {tmp_path / "ledger.sqlite3"}}}
defaults: {{timeout: 2s, retry: {{attempts: 2, initial_backoff: 10ms, max_backoff: 20ms}}}}
handlers:
  - name: ops-slack
    type: slack
    token_file: {token}
    channel: {CHANNEL}
    api_url: {api.api_url}
    rate_limit: 100
"""
    )
    return config


async def test_check_config_summarises_the_app_mode(tmp_path: Path, api: SlackApi) -> None:
    code, out, _ = await amid("check-config", "-c", str(write_config(tmp_path, api)))
    assert code == 0, out
    assert f"slack app: channel {CHANNEL}, one conversation per '{{{{ image_id }}}}'" in out
    assert "kept 90d after last use" in out
    assert TOKEN not in out


async def test_test_event_dry_run_shows_both_calls_with_the_token_redacted(
    tmp_path: Path, api: SlackApi
) -> None:
    config = write_config(tmp_path, api)
    code, out, err = await amid("test-event", "-c", str(config), "--dry-run")
    assert code == 0, out + err
    assert '"method": "chat.postMessage"' in out and '"method": "chat.update"' in out
    assert "Bearer ***" in out and TOKEN not in out + err
    assert api.calls == []


async def test_replay_threads_through_the_dedupe_store(tmp_path: Path, api: SlackApi) -> None:
    config = write_config(tmp_path, api)
    for state in ("available", "deregistered"):
        dump = tmp_path / f"{state}.json"
        dump.write_text(json.dumps(synthetic_event(state, "ami-0123456789abcdef0")))
        code, out, err = await amid("replay", "-c", str(config), str(dump))
        assert code == 0, out + err
    [parent] = api.parents()
    assert len(api.replies(parent.ts)) == 1 and parent.edits == 1


async def test_test_event_posts_a_parent(tmp_path: Path, api: SlackApi) -> None:
    config = write_config(tmp_path, api)
    code, out, err = await amid("test-event", "-c", str(config), "--state", "failed")
    assert code == 0, out + err
    assert "✓ ops-slack" in out
    [parent] = api.parents()
    assert "failed" in parent.text
