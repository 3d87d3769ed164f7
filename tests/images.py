"""Real images in moto: RunInstances + CreateImage + CreateTags, in amid's account or another.

moto keeps accounts apart by credentials: an image made with the credentials of a role
assumed in another account exists only there, and amid's own credentials cannot see it.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
from aiobotocore.session import get_session
from aiohttp import web

from tests.harness import _LoopThread

REGION = "us-east-1"
OWN_ACCOUNT = "123456789012"  # moto's default account: amid's own
OTHER_ACCOUNT = "111122223333"
ROLE_NAME = "amid-describe-images"
ROLE_TEMPLATE = "arn:aws:iam::{{ account }}:role/" + ROLE_NAME


def role_arn(account: str) -> str:
    return f"arn:aws:iam::{account}:role/{ROLE_NAME}"


async def make_image(ec2: Any, name: str, tags: Mapping[str, str] | None = None) -> str:
    """An image made from a running instance, as a build pipeline would; returns its id."""
    base = (await ec2.describe_images(Owners=["amazon"], MaxResults=5))["Images"][0]["ImageId"]
    instance = (
        await ec2.run_instances(ImageId=base, MinCount=1, MaxCount=1, InstanceType="t3.micro")
    )["Instances"][0]["InstanceId"]
    image: str = (await ec2.create_image(InstanceId=instance, Name=name))["ImageId"]
    if tags:
        await ec2.create_tags(
            Resources=[image], Tags=[{"Key": k, "Value": v} for k, v in tags.items()]
        )
    return image


@contextlib.asynccontextmanager
async def ec2_in(account: str, endpoint: str, region: str = REGION) -> AsyncIterator[Any]:
    """An EC2 client acting in `account`, through a role assumed there (moto's STS)."""
    session = get_session()
    async with session.create_client("sts", region_name=region, endpoint_url=endpoint) as sts:
        credentials = (
            await sts.assume_role(RoleArn=role_arn(account), RoleSessionName="test-setup")
        )["Credentials"]
    async with session.create_client(
        "ec2",
        region_name=region,
        endpoint_url=endpoint,
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"],
    ) as ec2:
        yield ec2


# --- a throttling proxy in front of moto ----------------------------------------------------


_THROTTLED = (
    '<?xml version="1.0" encoding="UTF-8"?><Response><Errors><Error>'
    "<Code>RequestLimitExceeded</Code><Message>Request limit exceeded.</Message>"
    "</Error></Errors><RequestID>throttled-by-test</RequestID></Response>"
)
_HOP_BY_HOP = {"content-length", "transfer-encoding", "content-encoding", "connection", "host"}


class ThrottlingProxy:
    """An HTTP proxy on 127.0.0.1 to moto that answers EC2 DescribeImages with 503
    RequestLimitExceeded while `throttling` is set, and passes everything else through."""

    def __init__(self, upstream: str) -> None:
        self._upstream = upstream.rstrip("/")
        self._thread: _LoopThread | None = None
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None
        self.throttling = threading.Event()
        self.throttled = 0  # DescribeImages answered with 503
        self.passed = 0  # DescribeImages passed to moto
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ThrottlingProxy:
        self._thread = _LoopThread("throttling-proxy")
        self.port = self._thread.call(self._serve())
        return self

    def __exit__(self, *exc_info: object) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            with contextlib.suppress(Exception):
                thread.call(self._shutdown(), timeout=15)
            thread.stop()

    async def _serve(self) -> int:
        self._http = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port: int = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return port

    async def _shutdown(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._http is not None:
            await self._http.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        describe = b"Action=DescribeImages" in body
        if describe and self.throttling.is_set():
            self.throttled += 1
            return web.Response(status=503, text=_THROTTLED, content_type="text/xml")
        self.passed += describe
        assert self._http is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        async with self._http.request(
            request.method, self._upstream + request.path_qs, headers=headers, data=body
        ) as answer:
            payload = await answer.read()
            reply = {k: v for k, v in answer.headers.items() if k.lower() not in _HOP_BY_HOP}
            return web.Response(status=answer.status, body=payload, headers=reply)
