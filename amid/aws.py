"""AWS clients from the standard SDK environment, owned by one exit stack.

A client may also act as a role (`role_arn`): amid's own credentials assume it
through STS, and the role's credentials are renewed by aiobotocore's
refreshable credentials before they expire (15 minutes ahead; they last 1 h).
"""

from __future__ import annotations

import contextlib
import platform
from collections.abc import Callable
from datetime import datetime
from typing import Any

import aiobotocore
import botocore
from aiobotocore.config import AioConfig
from aiobotocore.credentials import AioCredentialResolver, AioDeferredRefreshableCredentials
from aiobotocore.session import AioSession
from botocore.credentials import CredentialProvider, _local_now

from amid import __version__
from amid.endpoints import lean_endpoint_resolver

# Short connect timeouts so a dead endpoint is noticed and backed off from, not waited on.
_CLIENT_CONFIG = AioConfig(
    # Names amid in CloudTrail and access logs. Given whole, it is also sent as it is:
    # botocore's own header is rebuilt per request, about an eighth of an SQS call's CPU.
    user_agent=(
        f"amid/{__version__} aiobotocore/{aiobotocore.__version__}"
        f" botocore/{botocore.__version__} Python/{platform.python_version()}"
    ),
    connect_timeout=5,
    read_timeout=30,
    retries={"max_attempts": 3, "mode": "standard"},
    max_pool_connections=64,
)
# SQS is the hot path (two calls per ten messages) and amid forms those parameters itself,
# so botocore's client-side check of them is skipped (SQS still checks); other services
# keep it, for its clearer errors (the SNS handler reports them as such).
_UNCHECKED_SERVICES = frozenset({"sqs"})


def client_config(service: str, read_timeout: float | None = None) -> AioConfig:
    """amid's settings for a `service` client (the bench's limits use them too)."""
    config = _CLIENT_CONFIG
    if service in _UNCHECKED_SERVICES:
        config = config.merge(AioConfig(parameter_validation=False))
    if read_timeout is not None:
        config = config.merge(AioConfig(read_timeout=read_timeout))
    return config


class Session(AioSession):  # type: ignore[misc]  # aiobotocore is untyped
    """An AioSession whose endpoint table holds only amid's services (see amid.endpoints)."""

    def _register_endpoint_resolver(self) -> None:  # botocore's hook for this component
        self._internal_components.lazy_register_component(
            "endpoint_resolver", lambda: lean_endpoint_resolver(self.get_component("data_loader"))
        )


ROLE_SESSION_NAME = "amid"
ROLE_SESSION_SECONDS = 3600  # STS's default; every role allows at least this


class AssumeRoleFailed(Exception):
    """STS would not give the role's credentials now; `cause` is STS's (or the network's) error."""

    def __init__(self, role_arn: str, cause: BaseException) -> None:
        super().__init__(f"cannot assume {role_arn}: {cause}")
        self.role_arn = role_arn
        self.cause = cause


class _RoleProvider(CredentialProvider):  # type: ignore[misc]  # botocore is untyped
    """The one credential source of a role's session: the role's refreshable credentials."""

    METHOD = "amid-assume-role"
    CANONICAL_NAME = "custom-amid-assume-role"

    def __init__(self, credentials: AioDeferredRefreshableCredentials) -> None:
        super().__init__()
        self._credentials = credentials

    async def load(self) -> AioDeferredRefreshableCredentials:  # awaited by the resolver
        return self._credentials


class AwsClients:
    """Creates each (service, region, endpoint, role) client once and closes them all on exit.

    Credentials, region and `AWS_ENDPOINT_URL[_<SERVICE>]` come from the
    standard SDK environment; an explicit `endpoint_url` overrides it.
    `clock` (an aware datetime) decides when a role's credentials are renewed.
    """

    def __init__(
        self,
        session: AioSession | None = None,
        *,
        clock: Callable[[], datetime] = _local_now,
    ) -> None:
        self._session = session or Session()
        self._clock = clock
        self._stack = contextlib.AsyncExitStack()
        self._clients: dict[tuple[str, str | None, str | None, str | None], Any] = {}
        self._roles: dict[str, AioSession] = {}
        self.assumed: dict[str, int] = {}  # role ARN -> AssumeRole calls made

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
        role_arn: str | None = None,
    ) -> Any:
        """The client; with `role_arn`, acting as that role (assumed on first use)."""
        key = (service, region, endpoint_url, role_arn)
        if key not in self._clients:
            config = client_config(service, read_timeout)
            session = self._session if role_arn is None else self._role_session(role_arn, region)
            creator = session.create_client(
                service, region_name=region, endpoint_url=endpoint_url, config=config
            )
            self._clients[key] = await self._stack.enter_async_context(creator)
        return self._clients[key]

    def _role_session(self, role_arn: str, region: str | None) -> AioSession:
        """One session per role, its credentials from STS (in `region`, the first one asked)."""
        if role_arn not in self._roles:

            async def assume() -> dict[str, Any]:
                sts = await self.client("sts", region=region)
                self.assumed[role_arn] = self.assumed.get(role_arn, 0) + 1
                try:
                    answer = await sts.assume_role(
                        RoleArn=role_arn,
                        RoleSessionName=ROLE_SESSION_NAME,
                        DurationSeconds=ROLE_SESSION_SECONDS,
                    )
                except Exception as error:
                    raise AssumeRoleFailed(role_arn, error) from error
                credentials = answer["Credentials"]
                return {
                    "access_key": credentials["AccessKeyId"],
                    "secret_key": credentials["SecretAccessKey"],
                    "token": credentials["SessionToken"],
                    "expiry_time": credentials["Expiration"].isoformat(),
                }

            credentials = AioDeferredRefreshableCredentials(
                refresh_using=assume, method="amid-assume-role", time_fetcher=self._clock
            )
            session = Session()
            session.register_component(
                "credential_provider", AioCredentialResolver([_RoleProvider(credentials)])
            )
            self._roles[role_arn] = session
        return self._roles[role_arn]

    async def aclose(self) -> None:
        self._clients.clear()
        self._roles.clear()
        await self._stack.aclose()
