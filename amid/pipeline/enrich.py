"""Image details for messages: one `ec2:DescribeImages` per image, cached, never failing.

Enrichment is a nicety. A deregistered image (`InvalidAMIID.NotFound`), a
throttled or unreachable EC2 API or missing permissions give `{}` and a log
line; the notification goes out without the details. Concurrent events for one
image share one call; answers are cached for `enrich.cache_ttl`, and a "not
found" too (it will not come back), but not a transient failure.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import structlog
from botocore.exceptions import BotoCoreError, ClientError

from amid.aws import AwsClients
from amid.config import Config

_log = structlog.get_logger("amid.pipeline.enrich")

Image = dict[str, Any]

# DescribeImages field -> the name templates see as `image.<name>`.
_FIELDS = {
    "Name": "name",
    "Description": "description",
    "OwnerId": "owner",
    "ImageOwnerAlias": "owner_alias",
    "CreationDate": "creation_date",
    "Architecture": "architecture",
    "PlatformDetails": "platform",
    "ImageType": "image_type",
    "State": "state",
    "Public": "public",
    "RootDeviceType": "root_device_type",
    "VirtualizationType": "virtualization_type",
    "BootMode": "boot_mode",
    "DeprecationTime": "deprecation_time",
    "SourceImageId": "source_image_id",
    "SourceImageRegion": "source_region",
}
_NOT_FOUND = frozenset(
    {"InvalidAMIID.NotFound", "InvalidAMIID.Unavailable", "InvalidAMIID.Malformed"}
)


def image_details(description: dict[str, Any]) -> Image:
    """One DescribeImages `Images[]` item -> the `image` dict of the template context."""
    details: Image = {
        name: description[field] for field, name in _FIELDS.items() if field in description
    }
    details["tags"] = {tag["Key"]: tag.get("Value", "") for tag in description.get("Tags", [])}
    return details


class ImageEnricher:
    def __init__(
        self,
        aws: AwsClients,
        *,
        ttl: float = 600.0,
        endpoint_url: str | None = None,
        call_timeout: float = 5.0,
        max_entries: int = 4096,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._aws = aws
        self._ttl = ttl
        self._endpoint_url = endpoint_url
        self._call_timeout = call_timeout
        self._max_entries = max_entries
        self._clock = clock
        self._cache: dict[tuple[str, str], tuple[float, Image]] = {}
        self._pending: dict[tuple[str, str], asyncio.Task[tuple[Image, bool]]] = {}

    @classmethod
    def from_config(cls, config: Config, aws: AwsClients) -> ImageEnricher:
        return cls(aws, ttl=config.enrich.cache_ttl)

    async def describe(self, image_id: str, region: str | None = None) -> Image:
        """The image's details, or `{}` when they cannot be had. Never raises (but on cancel)."""
        key = (region or "", image_id)
        cached = self._cache.get(key)
        if cached is not None and cached[0] > self._clock():
            return dict(cached[1])
        task = self._pending.get(key)
        if task is None:
            task = asyncio.create_task(self._fetch(image_id, region), name=f"describe {image_id}")
            self._pending[key] = task
            task.add_done_callback(lambda done: self._settle(key, done))
        # shield: one caller's timeout must not cancel the call others wait on.
        image, _ = await asyncio.shield(task)
        return dict(image)

    def _settle(self, key: tuple[str, str], task: asyncio.Task[tuple[Image, bool]]) -> None:
        self._pending.pop(key, None)
        if task.cancelled() or task.exception() is not None or self._ttl <= 0:
            return
        image, cacheable = task.result()
        if not cacheable:
            return
        self._cache.pop(key, None)
        self._cache[key] = (self._clock() + self._ttl, image)
        while len(self._cache) > self._max_entries:
            del self._cache[next(iter(self._cache))]  # the oldest entry

    async def _fetch(self, image_id: str, region: str | None) -> tuple[Image, bool]:
        """(details, cacheable)."""
        log = _log.bind(image_id=image_id, region=region)
        try:
            async with asyncio.timeout(self._call_timeout):
                client = await self._aws.client(
                    "ec2", region=region or None, endpoint_url=self._endpoint_url
                )
                answer = await client.describe_images(
                    ImageIds=[image_id], IncludeDeprecated=True, IncludeDisabled=True
                )
        except ClientError as error:
            code = str(error.response.get("Error", {}).get("Code", ""))
            if code in _NOT_FOUND:
                log.debug("image not found; no details to add", code=code)
                return {}, True
            log.warning("DescribeImages failed; sending without image details", code=code)
            return {}, False
        except TimeoutError:
            log.warning("DescribeImages timed out; sending without image details")
            return {}, False
        except BotoCoreError as error:
            log.warning(
                "DescribeImages failed; sending without image details", error=type(error).__name__
            )
            return {}, False
        except Exception as error:  # noqa: BLE001 - enrichment must never stop a notification
            log.warning(
                "DescribeImages failed unexpectedly; sending without image details",
                error=type(error).__name__,
            )
            return {}, False
        images = answer.get("Images") or []
        if not images:
            log.debug("image not found; no details to add")
            return {}, True
        return image_details(images[0]), True

    async def aclose(self) -> None:
        """Cancel calls still in flight; idempotent."""
        tasks = list(self._pending.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._pending.clear()
        self._cache.clear()
