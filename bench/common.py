"""What every part of the bench shares: paths, the SQS client, events, /proc readings, stats."""

from __future__ import annotations

import contextlib
import json
import os
import random
import statistics
import sys
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
PEER = BENCH / "peer"
RESULTS = BENCH / "results"
DOCS = ROOT / "docs"
PYTHON = sys.executable
REGION = "us-east-1"
STATES = ("available", "failed", "deregistered", "disabled")
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

# moto accepts any credentials; fixed ones keep every client off the real credential chain.
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
    "AWS_EC2_METADATA_DISABLED": "true",
}


def aws_environ() -> dict[str, str]:
    """This process's environment with the bench's fixed AWS settings on top."""
    return {**os.environ, **AWS_ENV}


@contextlib.asynccontextmanager
async def sqs_client(endpoint: str) -> AsyncIterator[Any]:
    from aiobotocore.session import get_session

    from amid.aws import client_config

    config = client_config("sqs")  # amid's own: the limits pay what amid pays per call
    async with get_session().create_client(
        "sqs",
        region_name=REGION,
        endpoint_url=endpoint,
        aws_access_key_id=AWS_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=AWS_ENV["AWS_SECRET_ACCESS_KEY"],
        config=config,
    ) as client:
        yield client


async def queue_depth(sqs: Any, url: str) -> int:
    """Visible plus in-flight messages."""
    response = await sqs.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )
    attributes = response["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(
        attributes["ApproximateNumberOfMessagesNotVisible"]
    )


# ---------------------------------------------------------------------------- events


def make_event(rng: random.Random, sent: float | None = None) -> dict[str, Any]:
    """A real-shaped `EC2 AMI State Change`; `bench_sent` (epoch s) rides along, an extra field."""
    state = rng.choice(STATES)
    image_id = f"ami-{rng.getrandbits(68):017x}"
    now = time.time() if sent is None else sent
    return {
        "version": "0",
        "id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "detail-type": "EC2 AMI State Change",
        "source": "aws.ec2",
        "account": "123456789012",
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
        "region": REGION,
        "resources": [f"arn:aws:ec2:{REGION}::image/{image_id}"],
        "detail": {
            "RequestId": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "ImageId": image_id,
            "State": state,
            "ErrorMessage": "Image build failed" if state == "failed" else "",
        },
        "bench_sent": now,
    }


def burst_bodies(total: int, duplicate_share: float, seed: int = 7) -> list[str]:
    """`total` message bodies; `duplicate_share` of them are copies of an earlier event,
    placed 1-300 messages after it (some overlap the original's handling, most follow it)."""
    rng = random.Random(seed)
    duplicates = round(total * duplicate_share)
    originals = [json.dumps(make_event(rng)) for _ in range(total - duplicates)]
    keyed = [(float(index), body) for index, body in enumerate(originals)]
    for _ in range(duplicates):
        index = rng.randrange(len(originals))
        keyed.append((index + rng.uniform(1, 300), originals[index]))
    keyed.sort(key=lambda item: item[0])
    return [body for _, body in keyed]


# ---------------------------------------------------------------------------- /proc


@dataclass(frozen=True, slots=True)
class ProcSample:
    cpu: float  # user + system seconds
    rss: int  # bytes
    peak_rss: int  # bytes (VmHWM)


def proc_sample(pid: int) -> ProcSample:
    """CPU seconds (utime + stime) and resident memory of one process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    kb = {line.split(":")[0]: int(line.split()[1]) for line in status if line.startswith("Vm")}
    return ProcSample(cpu=cpu, rss=kb.get("VmRSS", 0) * 1024, peak_rss=kb.get("VmHWM", 0) * 1024)


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process and its live descendants (the node peer, npm shims)."""
    total = 0.0
    pending = [pid]
    while pending:
        current = pending.pop()
        with contextlib.suppress(OSError):
            total += proc_sample(current).cpu
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
            pending.extend(int(child) for child in children)
    return total


# ---------------------------------------------------------------------------- stats


@dataclass(frozen=True, slots=True)
class Spread:
    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        clean = [v for v in values if v == v]  # drop NaN
        if not clean:
            return cls(float("nan"), float("nan"), float("nan"))
        return cls(statistics.median(clean), min(clean), max(clean))

    def as_dict(self) -> dict[str, float]:
        return {"median": self.median, "min": self.low, "max": self.high}


def percentile(values: Sequence[float], share: float) -> float:
    """Nearest-rank percentile; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(share * len(ordered) + 0.5) - 1))
    return ordered[rank]
