"""`amid doctor`'s Slack checks (app mode) against a local Slack-compatible Web API server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import yaml

from amid.config import parse_config
from amid.tools.doctor import report
from amid.tools.slack_checks import slack_checks
from tests.slack_api import CHANNEL, TOKEN, Scripted, SlackApi


@pytest.fixture
async def api() -> AsyncIterator[SlackApi]:
    server = await SlackApi().start()
    yield server
    await server.stop()


async def doctor(api: SlackApi, token: str = TOKEN, channel: str = CHANNEL) -> tuple[str, bool]:
    item = {"name": "ops-slack", "type": "slack", "token": token, "channel": channel}
    text = yaml.safe_dump(
        {
            "queue": {"url": "http://127.0.0.1:1/123456789012/q"},
            "handlers": [{**item, "api_url": api.api_url}],
        }
    )
    return report(await slack_checks(parse_config(text, env={})))


async def test_a_working_token_in_its_channel_passes(api: SlackApi) -> None:
    text, healthy = await doctor(api)
    assert healthy, text
    assert "2 checks, 0 problem(s)" in text
    assert [call.method for call in api.calls] == ["auth.test", "conversations.info"]


async def test_a_bad_token_is_named_by_slacks_code_never_shown(api: SlackApi) -> None:
    text, healthy = await doctor(api, token="xoxb-revoked-s3cr3t")
    assert not healthy
    assert "invalid_auth" in text and "chat:write" in text
    assert "s3cr3t" not in text
    assert not api.of("conversations.info"), "the channel check needs a working token"


async def test_a_bot_outside_its_channel_is_told_to_invite_it(api: SlackApi) -> None:
    text, healthy = await doctor(api, channel="C0000000002")
    assert not healthy
    assert "not in C0000000002" in text and "/invite" in text


async def test_a_missing_scope_names_the_scope_to_add(api: SlackApi) -> None:
    api.then("conversations.info", Scripted("missing_scope"))
    text, healthy = await doctor(api)
    assert not healthy
    assert "missing_scope" in text and "channels:read" in text


async def test_webhook_handlers_are_not_checked(api: SlackApi) -> None:
    text = yaml.safe_dump(
        {
            "queue": {"url": "http://127.0.0.1:1/123456789012/q"},
            "handlers": [{"name": "s", "type": "slack", "webhook_url": api.url + "/hook"}],
        }
    )
    assert await slack_checks(parse_config(text, env={})) == []
