"""AWS clients from the standard SDK environment, owned by one exit stack."""

from __future__ import annotations

import contextlib
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession, get_session

from amid import __version__

# Short connect timeouts so a dead endpoint is noticed and backed off from, not waited on.
_CLIENT_CONFIG = AioConfig(
    user_agent_extra=f"amid/{__version__}",  # names amid in CloudTrail and access logs
    connect_timeout=5,
    read_timeout=30,
    retries={"max_attempts": 3, "mode": "standard"},
    max_pool_connections=64,
)


class AwsClients:
    """Creates each (service, region, endpoint) client once and closes them all on exit.

    Credentials, region and `AWS_ENDPOINT_URL[_<SERVICE>]` come from the
    standard SDK environment; an explicit `endpoint_url` overrides it.
    """

    def __init__(self, session: AioSession | None = None) -> None:
        self._session = session or get_session()
        self._stack = contextlib.AsyncExitStack()
        self._clients: dict[tuple[str, str | None, str | None], Any] = {}

    async def __aenter__(self) -> AwsClients:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def client(
        self,
        service: str,
        region: str | None = None,
        endpoint_url: str | None = None,
        read_timeout: float | None = None,
    ) -> Any:
        key = (service, region, endpoint_url)
        if key not in self._clients:
            config = _CLIENT_CONFIG
            if read_timeout is not None:
                config = config.merge(AioConfig(read_timeout=read_timeout))
            creator = self._session.create_client(
                service, region_name=region, endpoint_url=endpoint_url, config=config
            )
            self._clients[key] = await self._stack.enter_async_context(creator)
        return self._clients[key]

    async def aclose(self) -> None:
        self._clients.clear()
        await self._stack.aclose()
