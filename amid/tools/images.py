"""`amid images sync`: fill the image memory with the images that exist now.

For each region, the images amid's own account owns (`DescribeImages Owners=self`)
and, for each `--account`, those of that account through `enrich.role_arn`, page by
page into the dedupe store, so a `deregistered` event for an image amid never saw
`available` still routes by its name and tags. Remembering an image again only
renews it: the command is safe to re-run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from amid.aws import AwsClients
from amid.config import Config
from amid.pipeline.enrich import image_details, role_for
from amid.store.base import ImageMemory

_PAGE = 200


class SyncRefused(Exception):
    """This config cannot keep what a sync would learn (exit 2)."""


@dataclass
class SyncSummary:
    images: int = 0
    pages: int = 0
    sources: list[str] = field(default_factory=list)  # "region account" done

    def line(self) -> str:
        return (
            f"remembered {self.images} image(s) from {len(self.sources)} source(s)"
            f" ({', '.join(self.sources) or 'none'})"
        )


def check_syncable(config: Config) -> None:
    """Raise SyncRefused when the memory would be lost or is turned off."""
    if config.dedupe.backend == "memory":
        raise SyncRefused(
            "dedupe.backend is memory: it forgets at exit, so there is nothing to fill; "
            "use sqlite or dynamodb"
        )
    if config.enrich.remember <= 0:
        raise SyncRefused("enrich.remember is 0: image memory is off")


def sources(
    config: Config, regions: Sequence[str], accounts: Sequence[str]
) -> list[tuple[str, str, str | None]]:
    """(region, who, role ARN or None) to sync; `who` is `self` or the account id."""
    chosen = list(regions) or [config.queue.resolved_region or "us-east-1"]
    plan: list[tuple[str, str, str | None]] = []
    for region in chosen:
        if not accounts:
            plan.append((region, "self", None))
        for account in accounts:
            role = role_for(config.enrich.role_arn, account, region)
            plan.append((region, account, role))
    return plan


async def sync_images(
    config: Config,
    aws: AwsClients,
    memory: ImageMemory,
    *,
    regions: Sequence[str] = (),
    accounts: Sequence[str] = (),
    progress: Callable[[str], None] = print,
) -> SyncSummary:
    """Describe every image owned by each source, remember each page as it comes."""
    summary = SyncSummary()
    keep = config.enrich.remember
    for region, who, role in sources(config, regions, accounts):
        ec2 = await aws.client("ec2", region=region, role_arn=role)
        paginator = ec2.get_paginator("describe_images")
        count = 0
        async for page in paginator.paginate(
            Owners=["self"],
            IncludeDeprecated=True,
            IncludeDisabled=True,
            PaginationConfig={"PageSize": _PAGE},
        ):
            images = {item["ImageId"]: image_details(item) for item in page.get("Images", [])}
            await memory.remember_many(region, images, keep)
            count += len(images)
            summary.pages += 1
            progress(f"{region} {who}: {count} image(s)")
        summary.images += count
        summary.sources.append(f"{region} {who}")
    return summary
