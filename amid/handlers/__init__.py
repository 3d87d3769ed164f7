"""Handler types: one module each, behind `Handler`, listed in one literal registry."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from amid.aws import AwsClients
from amid.config import Config, HandlerConfig
from amid.handlers.base import Handler, HandlerError, Notification
from amid.metrics import Metrics
from amid.store.base import ConversationStore

__all__ = ["Handler", "HandlerError", "HandlerResources", "Notification", "build_handler"]


@dataclass(frozen=True, slots=True)
class HandlerResources:
    """What handlers share: one HTTP session, the AWS clients, the metrics, and for the
    handlers that remember (Slack's app mode) the store's narrow door."""

    http: aiohttp.ClientSession
    aws: AwsClients
    metrics: Metrics
    conversations: ConversationStore | None = None


Factory = Callable[[Any, Config, HandlerResources], Handler]

# type -> (module, class): a module is imported when a config first uses its type, so a
# daemon with one webhook does not carry the Slack, SNS and shell code in memory.
REGISTRY: dict[str, tuple[str, str]] = {
    "console": ("amid.handlers.console", "ConsoleHandler"),
    "google_chat": ("amid.handlers.google_chat", "GoogleChatHandler"),
    "pagerduty": ("amid.handlers.pagerduty", "PagerDutyHandler"),
    "shell": ("amid.handlers.shell", "ShellHandler"),
    "slack": ("amid.handlers.slack", "SlackHandler"),
    "sns": ("amid.handlers.sns", "SnsHandler"),
    "teams": ("amid.handlers.teams", "TeamsHandler"),
    "webhook": ("amid.handlers.webhook", "WebhookHandler"),
}


def factory(kind: str) -> Factory:
    module, name = REGISTRY[kind]
    built: Factory = getattr(importlib.import_module(module), name).from_config
    return built


def build_handler(handler: HandlerConfig, config: Config, resources: HandlerResources) -> Handler:
    return factory(handler.type)(handler, config, resources)
