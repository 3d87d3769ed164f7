"""The enrich stage: what an event's image *is*, and whether that answer can be trusted.

`ImageEnricher.lookup` makes one `ec2:DescribeImages` per image (concurrent
events for one image share it; answers are cached for `enrich.cache_ttl`), in
the event's region, with amid's own credentials or, with `enrich.role_arn`, as
that role in the event's own account. It never raises (but on cancel): it
returns an `ImageLookup` that says whether its `image` is the truth.

- Described: the image's facts; with image memory on they are remembered
  (`enrich.remember` after this sighting).
- Not found (deregistered, or never there): the remembered facts, with
  `remembered: true`, else `{}`. Both are answers: routes may decide on them.
- Anything else (throttled, 5xx, timeout, network, STS refusing the role, access
  denied): not known. The pipeline leaves the handlers that route on `image`
  for redelivery; templates get the remembered facts, if any. Not cached.

`classify` is the pure rule for the last two; docs/routing.md has its table.
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import structlog
from botocore.exceptions import BotoCoreError, ClientError

from amid import templates
from amid.aws import AssumeRoleFailed, AwsClients
from amid.config import Config
from amid.metrics import Metrics
from amid.store.base import ImageMemory, LedgerUnavailable

_log = structlog.get_logger("amid.pipeline.enrich")

Image = dict[str, Any]
Outcome = Literal["described", "remembered", "not_found", "unavailable", "denied"]

# DescribeImages field -> the name templates and patterns see as `image.<name>`.
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
# The image is not there (and a malformed id never will be).
NOT_FOUND_CODES = frozenset(
    {"InvalidAMIID.NotFound", "InvalidAMIID.Unavailable", "InvalidAMIID.Malformed"}
)
# No retry helps until someone changes a policy, a trust or a region setting: still not
# routed on missing data, but logged as an error (the messages end in the dead-letter queue).
DENIED_CODES = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "UnauthorizedOperation",
        "AuthFailure",
        "InvalidClientTokenId",
        "SignatureDoesNotMatch",
        "OptInRequired",
        "RegionDisabledException",
        "ExpiredToken",
        "ExpiredTokenException",
    }
)


def image_details(description: Mapping[str, Any]) -> Image:
    """One DescribeImages `Images[]` item -> the `image` object of templates and patterns."""
    details: Image = {
        name: description[field] for field, name in _FIELDS.items() if field in description
    }
    details["tags"] = {tag["Key"]: tag.get("Value", "") for tag in description.get("Tags", [])}
    return details


def error_code(error: BaseException) -> str:
    """A bounded name for a failure: the AWS error code, else the exception's type."""
    if isinstance(error, AssumeRoleFailed):
        return error_code(error.cause)
    if isinstance(error, ClientError):
        return str(error.response.get("Error", {}).get("Code", "")) or "ClientError"
    return type(error).__name__


def classify(error: BaseException) -> Outcome:
    """What a failed DescribeImages (or the AssumeRole before it) means for routing:
    `not_found` (an answer), `denied` or `unavailable` (no answer: do not route on it)."""
    if isinstance(error, AssumeRoleFailed):
        return "denied" if error_code(error) in DENIED_CODES else "unavailable"
    code = error_code(error)
    if isinstance(error, ClientError) and code in NOT_FOUND_CODES:
        return "not_found"
    if isinstance(error, ClientError) and code in DENIED_CODES:
        return "denied"
    return "unavailable"  # throttling, 5xx, timeouts, connection errors, anything unknown


@dataclass(frozen=True, slots=True)
class ImageLookup:
    """`image` is the truth when `known`; when not, routes on `image` must wait."""

    image: Mapping[str, Any] = field(default_factory=dict)
    known: bool = True
    outcome: Outcome | None = None  # None: nothing was asked (enrichment is off)


NOT_ASKED = ImageLookup()


def settle(described: Image | None, remembered: Image | None) -> ImageLookup:
    """The answer from DescribeImages (None: not found) and the memory (None: nothing kept)."""
    if described is not None:
        return ImageLookup(described, True, "described")
    if remembered is not None:
        return ImageLookup({**remembered, "remembered": True}, True, "remembered")
    return ImageLookup({}, True, "not_found")


def role_for(template: str | None, account: str, region: str) -> str | None:
    """The role to describe an image of `account` with; None: amid's own credentials."""
    if template is None:
        return None
    rendered = templates.render(template, {"account": account, "region": region}).strip()
    return rendered or None


class ImageEnricher:
    def __init__(
        self,
        aws: AwsClients,
        *,
        ttl: float = 600.0,
        role_arn: str | None = None,
        memory: ImageMemory | None = None,
        remember: float = 0.0,
        metrics: Metrics | None = None,
        endpoint_url: str | None = None,
        call_timeout: float = 5.0,
        max_entries: int = 4096,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._aws = aws
        self._ttl = ttl
        self._role_arn = role_arn
        self._memory = memory if remember > 0 else None
        self._remember = remember
        self._metrics = metrics
        self._endpoint_url = endpoint_url
        self._call_timeout = call_timeout
        self._max_entries = max_entries
        self._clock = clock
        self._cache: dict[tuple[str, str], tuple[float, ImageLookup]] = {}
        self._pending: dict[tuple[str, str], asyncio.Task[ImageLookup]] = {}

    @classmethod
    def from_config(
        cls,
        config: Config,
        aws: AwsClients,
        *,
        memory: ImageMemory | None = None,
        metrics: Metrics | None = None,
    ) -> ImageEnricher:
        enrich = config.enrich
        return cls(
            aws,
            ttl=enrich.cache_ttl,
            role_arn=enrich.role_arn,
            memory=memory,
            remember=enrich.remember,
            metrics=metrics,
        )

    async def lookup(self, image_id: str, region: str, account: str = "") -> ImageLookup:
        """What the image is, and whether that is known. Never raises (but on cancel)."""
        key = (region, image_id)
        cached = self._cache.get(key)
        if cached is not None and cached[0] > self._clock():
            return copy.deepcopy(cached[1])
        task = self._pending.get(key)
        if task is None:
            task = asyncio.create_task(
                self._fetch(image_id, region, account), name=f"describe {image_id}"
            )
            self._pending[key] = task
            task.add_done_callback(lambda done: self._settle(key, done))
        # shield: one caller's timeout must not cancel the call others wait on.
        return copy.deepcopy(await asyncio.shield(task))  # callers never change the cache

    def _settle(self, key: tuple[str, str], task: asyncio.Task[ImageLookup]) -> None:
        self._pending.pop(key, None)
        if task.cancelled() or task.exception() is not None or self._ttl <= 0:
            return
        lookup = task.result()
        if not lookup.known:
            return
        self._cache.pop(key, None)
        self._cache[key] = (self._clock() + self._ttl, lookup)
        while len(self._cache) > self._max_entries:
            del self._cache[next(iter(self._cache))]  # the oldest entry

    async def _fetch(self, image_id: str, region: str, account: str) -> ImageLookup:
        log = _log.bind(image_id=image_id, region=region, account=account)
        try:
            described = await self._describe(image_id, region, account)
        except Exception as error:  # noqa: BLE001 - every failure is classified, none raised
            outcome = classify(error)
            if outcome != "not_found":
                return self._count(await self._unknown(image_id, region, outcome, error, log))
            described = None
        if described is not None:
            await self._keep(region, image_id, described, log)
            return self._count(settle(described, None))
        try:
            remembered = await self._recall(region, image_id)
        except LedgerUnavailable as error:
            log.warning("image not found, and the image memory cannot be read", error=str(error))
            return self._count(ImageLookup({}, False, "unavailable"))
        lookup = settle(None, remembered)
        log.debug("image not found", remembered=lookup.outcome == "remembered")
        return self._count(lookup)

    async def _describe(self, image_id: str, region: str, account: str) -> Image | None:
        """The image's details; None when DescribeImages answers with no image."""
        role = role_for(self._role_arn, account, region)
        async with asyncio.timeout(self._call_timeout):
            client = await self._aws.client(
                "ec2", region=region or None, endpoint_url=self._endpoint_url, role_arn=role
            )
            answer = await client.describe_images(
                ImageIds=[image_id], IncludeDeprecated=True, IncludeDisabled=True
            )
        images = answer.get("Images") or []
        return image_details(images[0]) if images else None

    async def _unknown(
        self, image_id: str, region: str, outcome: Outcome, error: BaseException, log: Any
    ) -> ImageLookup:
        code = error_code(error)
        if outcome == "denied":
            log.error("DescribeImages refused; routes on image wait for redelivery", code=code)
        elif isinstance(error, ClientError | BotoCoreError | TimeoutError | AssumeRoleFailed):
            log.warning("DescribeImages failed; routes on image wait for redelivery", code=code)
        else:
            log.warning("DescribeImages failed unexpectedly", code=code, exc_info=True)
        try:
            remembered = await self._recall(region, image_id)
        except LedgerUnavailable:
            remembered = None
        # Templates may show what was last known; routing does not decide on it.
        image = {**remembered, "remembered": True} if remembered is not None else {}
        return ImageLookup(image, False, outcome)

    async def _recall(self, region: str, image_id: str) -> Image | None:
        if self._memory is None:
            return None
        return await self._memory.recall(region, image_id)

    async def _keep(self, region: str, image_id: str, image: Image, log: Any) -> None:
        if self._memory is None:
            return
        try:
            await self._memory.remember(region, image_id, image, self._remember)
        except LedgerUnavailable as error:
            log.warning("cannot remember the image; routing goes on", error=str(error))

    def _count(self, lookup: ImageLookup) -> ImageLookup:
        if self._metrics is not None and lookup.outcome is not None:
            self._metrics.image_lookups.labels(lookup.outcome).inc()
        return lookup

    async def aclose(self) -> None:
        """Cancel calls still in flight; idempotent."""
        tasks = list(self._pending.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._pending.clear()
        self._cache.clear()
