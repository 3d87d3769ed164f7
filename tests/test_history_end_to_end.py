"""What amid did, end to end: `amid run` against moto with real images (name, tags, one
tag holding markup), then `amid history`, the API and the status page in a real browser.

The page is loaded by Debian's chromium (`scripts/ensure-chromium`, run by `make test`)
with `--headless --dump-dom`: the DOM it dumps is what a person's browser would build.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from amid.tools.offline import synthetic_event
from tests.harness import (
    AmidConfig,
    AmidProcess,
    Behaviour,
    Receiver,
    Webhook,
    make_queue,
    wait_until,
)
from tests.images import make_image

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
MARKUP = (
    "<script>document.title='pwned'</script>"
    "<img src=x onerror=\"document.body.setAttribute('data-pwned','yes')\">"
)
PAYMENTS = {"image": {"tags": {"Team": ["payments"]}}}
SEARCH = {"image": {"tags": {"Team": ["search"]}}}


@dataclass(frozen=True, slots=True)
class UiConfig(AmidConfig):
    """The harness's config with enrichment on, image routes, and `metrics.ui`."""

    ui: bool = True
    matches: Mapping[str, Mapping[str, Any]] = ()  # type: ignore[assignment]

    def to_dict(self) -> dict[str, Any]:
        document = AmidConfig.to_dict(self)
        document["enrich"] = {"describe_images": True}
        document["metrics"]["ui"] = self.ui
        for handler in document["handlers"]:
            if handler["name"] in dict(self.matches):
                handler["match"] = dict(dict(self.matches)[handler["name"]])
        return document


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as server:
        yield server


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - 127.0.0.1
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as error:
        return int(error.code), error.read().decode(errors="replace")


def api(amid: AmidProcess, query: str = "") -> list[dict[str, Any]]:
    status, body = get(f"{amid.url}/api/v1/events{query}")
    assert status == 200, body
    events: list[dict[str, Any]] = json.loads(body)["events"]
    return events


def history(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "amid", "history", "-c", str(config), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def dump_dom(url: str, profile: Path) -> str:
    assert shutil.which(CHROMIUM), "chromium is missing: run scripts/ensure-chromium"
    done = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--dump-dom",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={profile}",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout


async def send(sqs: Any, queue_url: str, event: Mapping[str, Any]) -> None:
    await sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps(event))


async def test_history_the_api_and_the_page_tell_who_was_told(
    sqs: Any, ec2: Any, moto_url: str, receiver: Receiver, tmp_path: Path
) -> None:
    web = await make_image(ec2, "prod-web-7", {"Team": "payments", "Note": MARKUP})
    batch = await make_image(ec2, "batch-runner-3", {"Team": "search"})
    receiver.script("broken", Behaviour(fail=1.0, fail_status=500))
    queue_url, _ = await make_queue(sqs)
    settings = UiConfig(
        queue_url=queue_url,
        sqs_endpoint=moto_url,
        receiver=receiver,
        handlers=[Webhook("ops"), Webhook("payments"), Webhook("broken")],
        dedupe={"backend": "sqlite", "path": str(tmp_path / "amid.sqlite3")},
        matches={"payments": PAYMENTS, "broken": SEARCH},
    )
    first = synthetic_event("available", web)
    second = synthetic_event("deregistered", web)
    failing = synthetic_event("failed", batch)
    async with AmidProcess(settings, tmp_path, aws_endpoint=moto_url) as amid:
        await amid.wait_ready()
        await send(sqs, queue_url, first)
        await wait_until(
            lambda: [e["outcome"] for e in api(amid, f"?image_id={web}")] == ["handled"],
            timeout=60,
            what="the first event recorded",
        )
        await send(sqs, queue_url, second)
        await send(sqs, queue_url, failing)
        await send(sqs, queue_url, first)  # a duplicate copy
        await wait_until(
            lambda: (
                [
                    (e["event_id"], e["outcome"], e["duplicates"])
                    for e in api(amid, f"?image_id={web}")
                ]
                == [(second["id"], "handled", 0), (first["id"], "handled", 1)]
            ),
            timeout=60,
            what="the second event and the duplicate recorded",
        )
        await wait_until(
            lambda: [e["outcome"] for e in api(amid, f"?image_id={batch}")] == ["retry"],
            timeout=60,
            what="the failing event recorded",
        )

        # By image, newest first; the duplicate shows as one event, counted.
        by_image = history(amid.config_path, "--image-id", web)
        assert by_image.returncode == 0, by_image.stderr
        text = by_image.stdout
        assert text.index(second["id"]) < text.index(first["id"])
        assert text.count(first["id"]) == 1 and "+1 duplicate copy" in text
        assert batch not in text
        assert "prod-web-7" in text
        assert all(len(line) <= 100 for line in text.splitlines())
        assert "-> payments         delivered" in text

        # By event: the failed handler shows its error; the others their outcome.
        by_event = history(amid.config_path, "--event-id", failing["id"])
        assert by_event.returncode == 0, by_event.stderr
        assert "retry" in by_event.stdout
        broken = next(line for line in by_event.stdout.splitlines() if "-> broken" in line)
        assert "failed" in broken and "HTTP 500" in broken
        ops = next(line for line in by_event.stdout.splitlines() if "-> ops" in line)
        assert "delivered" in ops

        # By handler, with a limit, as JSON lines.
        by_handler = history(amid.config_path, "--handler", "payments", "--json")
        records = [json.loads(line) for line in by_handler.stdout.splitlines()]
        assert [r["event_id"] for r in records] == [second["id"], first["id"]]
        assert records[1]["image_tags"] == {"Team": "payments", "Note": MARKUP}
        assert records[1]["handlers"]["payments"]["outcome"] == "delivered"
        assert records[1]["handlers"]["payments"]["attempts"] == 1
        limited = history(amid.config_path, "--limit", "1", "--json", "--handler", "payments")
        assert [json.loads(line)["event_id"] for line in limited.stdout.splitlines()] == [
            second["id"]
        ]
        failed_json = history(amid.config_path, "--event-id", failing["id"], "--json")
        (failed_record,) = [json.loads(line) for line in failed_json.stdout.splitlines()]
        assert failed_record["handlers"]["broken"]["outcome"] == "failed"
        assert failed_record["handlers"]["broken"]["attempts"] >= settings.retry_attempts
        assert "HTTP 500" in failed_record["handlers"]["broken"]["error"]
        assert history(amid.config_path, "--since", "soon").returncode == 2

        # The API gives the same records as the CLI.
        assert api(amid, f"?image_id={web}") == [
            json.loads(line)
            for line in history(amid.config_path, "--image-id", web, "--json").stdout.splitlines()
        ]
        assert [e["event_id"] for e in api(amid, f"?image_id={web}&limit=1")] == [second["id"]]
        assert api(amid, f"?since=1h&image_id={web}")[0]["event_id"] == second["id"]
        assert get(f"{amid.url}/api/v1/events?limit=many")[0] == 400

        # The page, in a real browser: the events, the markup as text, no script run.
        status, page = get(f"{amid.url}/")
        assert status == 200
        assert '<meta http-equiv="refresh" content="30">' in page
        assert "<script" not in page.split("</head>")[1]
        dom = dump_dom(f"{amid.url}/", tmp_path / "chromium-profile")
        assert first["id"] in dom and second["id"] in dom and failing["id"] in dom
        assert "prod-web-7" in dom
        assert "&lt;script&gt;document.title='pwned'&lt;/script&gt;" in dom
        assert "&lt;img src=x onerror=" in dom
        assert "<title>amid: what happened</title>" in dom
        assert "data-pwned" not in dom.replace("data-pwned','yes')", "")  # only as text
        assert "<img" not in dom
        assert "<script" not in dom
        assert "HTTP 500" in dom  # the handler's recent failure

        metrics_status, _ = get(f"{amid.url}/metrics")
        assert metrics_status == 200
        cli_all = history(amid.config_path, "--json").stdout + history(amid.config_path).stdout
        assert await amid.terminate() == 0

    # No secret (the webhook URLs) in the page, the API or the CLI.
    for shown in (page, dom, json.dumps(api_snapshot := records), cli_all, text):
        assert receiver.url not in shown
        assert f":{receiver.port}/" not in shown
    assert api_snapshot


async def test_with_the_ui_off_the_page_and_the_api_are_not_served(
    sqs: Any, moto_url: str, receiver: Receiver, tmp_path: Path
) -> None:
    queue_url, _ = await make_queue(sqs)
    settings = UiConfig(
        queue_url=queue_url,
        sqs_endpoint=moto_url,
        receiver=receiver,
        handlers=[Webhook("ops")],
        dedupe={"backend": "memory"},
        ui=False,
    )
    async with AmidProcess(settings, tmp_path, aws_endpoint=moto_url) as amid:
        await amid.wait_ready()
        assert get(f"{amid.url}/")[0] == 404
        assert get(f"{amid.url}/api/v1/events")[0] == 404
        assert get(f"{amid.url}/metrics")[0] == 200
        assert await amid.terminate() == 0
    done = history(amid.config_path)
    assert done.returncode == 2
    assert "memory" in done.stderr
