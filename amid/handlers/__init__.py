"""Handler types: one module each, behind `Handler`, listed in one literal registry."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from amid.aws import AwsClients
from amid.config import Config, HandlerConfig
from amid.handlers import console, shell, slack, sns, webhook
from amid.handlers.base import Handler, HandlerError, Notification
from amid.metrics import Metrics

__all__ = ["Handler", "HandlerError", "HandlerResources", "Notification", "build_handler"]


@dataclass(frozen=True, slots=True)
class HandlerResources:
    """What handlers share: one HTTP session, the AWS clients, the metrics."""

    http: aiohttp.ClientSession
    aws: AwsClients
    metrics: Metrics


Factory = Callable[[Any, Config, HandlerResources], Handler]

REGISTRY: dict[str, Factory] = {
    "console": console.ConsoleHandler.from_config,
    "shell": shell.ShellHandler.from_config,
    "slack": slack.SlackHandler.from_config,
    "sns": sns.SnsHandler.from_config,
    "webhook": webhook.WebhookHandler.from_config,
}


def build_handler(handler: HandlerConfig, config: Config, resources: HandlerResources) -> Handler:
    return REGISTRY[handler.type](handler, config, resources)
