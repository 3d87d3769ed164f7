"""`amid doctor`'s checks of Slack's app mode: the token works (auth.test) and the bot is in
its channel (conversations.info, `is_member`; needs the channels:read scope, or
groups:read for a private channel). Slack's error codes are shown, never the token."""

from __future__ import annotations

from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError

from amid.config import Config, SlackHandlerConfig
from amid.tools.checks import Check

_AUTH_FIX = (
    "give the handler a bot token (xoxb-...) of an app installed in the workspace, "
    "with the chat:write scope (docs/handlers.md, Conversations)"
)


async def slack_checks(config: Config) -> list[Check]:
    handlers = [h for h in config.handlers if isinstance(h, SlackHandlerConfig) and h.app]
    if not handlers:
        return []
    checks: list[Check] = []
    async with aiohttp.ClientSession() as session:
        for handler in handlers:
            checks.extend(await _check(handler, session))
    return checks


async def _check(handler: SlackHandlerConfig, session: aiohttp.ClientSession) -> list[Check]:
    from amid.handlers.slack_app import web_client

    client = web_client(handler, session)
    name = f"Slack token of {handler.name}"
    try:
        auth = (await client.auth_test()).data
    except (SlackApiError, aiohttp.ClientError, TimeoutError) as error:
        return [Check(name, False, _why(error), _AUTH_FIX)]
    team = _field(auth, "team") or _field(auth, "team_id")
    checks = [Check(name, True, f"a bot of {team} ({_field(auth, 'user')})")]
    name = f"Slack channel of {handler.name}"
    try:
        info = (await client.conversations_info(channel=handler.channel or "")).data
    except (SlackApiError, aiohttp.ClientError, TimeoutError) as error:
        why = _why(error)
        fix = (
            "add the channels:read scope (groups:read for a private channel) and reinstall "
            "the app, so amid doctor can see whether the bot is in the channel"
            if "missing_scope" in why
            else "set channel to the channel's id (C0123456789: the channel's details show it)"
        )
        return [*checks, Check(name, False, f"{handler.channel}: {why}", fix)]
    channel = info.get("channel") if isinstance(info, dict) else None
    if isinstance(channel, dict) and channel.get("is_member"):
        checks.append(Check(name, True, f"the bot is in {handler.channel}"))
    else:
        checks.append(
            Check(
                name,
                False,
                f"the bot is not in {handler.channel}: Slack answers not_in_channel",
                "invite the app to the channel (/invite @your-app in the channel)",
            )
        )
    return checks


def _field(data: Any, key: str) -> str:
    return str(data.get(key, "")) if isinstance(data, dict) else ""


def _why(error: BaseException) -> str:
    if isinstance(error, SlackApiError):
        data = getattr(error.response, "data", None)
        code = data.get("error") if isinstance(data, dict) else None
        status = getattr(error.response, "status_code", "")
        return f"Slack answered {code}" if code else f"Slack answered HTTP {status}"
    return f"cannot reach Slack: {type(error).__name__}"
