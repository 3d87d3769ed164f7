"""`amid check-config --explain`: which handlers an event reaches, and why the others do not."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from amid.config import Config, ConfigError, parse_config
from amid.tools.explain import RouteExplanation, explain_routes, format_explanation

SEED = Path("/work/shared/events/seed")

CONFIG = """
queue: {url: "http://127.0.0.1:1/123456789012/q"}
handlers:
  - name: everything
    type: console
  - name: failures
    type: console
    match: {detail: {State: [failed]}}
  - name: prod-deregistrations
    type: console
    match:
      detail: {State: [deregistered]}
      resources: [{wildcard: "arn:aws:ec2:*::image/ami-*"}]
  - name: not-us
    type: console
    match: {region: [{anything-but: {prefix: "us-"}}]}
"""


@pytest.fixture
def config() -> Config:
    return parse_config(CONFIG, env={})


def seed(state: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((SEED / f"{state}.json").read_text())
    return event


def test_each_handler_gets_one_result_in_config_order(config: Config) -> None:
    results = explain_routes(config, seed("failed"))
    assert [result.handler for result in results] == [
        "everything",
        "failures",
        "prod-deregistrations",
        "not-us",
    ]


def test_a_handler_without_match_takes_every_ami_event(config: Config) -> None:
    for state in ("available", "failed", "deregistered", "disabled"):
        assert explain_routes(config, seed(state))[0] == RouteExplanation("everything", True, None)


def test_a_failed_event_reaches_the_failure_handler_only_among_matchers(config: Config) -> None:
    results = {result.handler: result.matched for result in explain_routes(config, seed("failed"))}
    assert results == {
        "everything": True,
        "failures": True,
        "prod-deregistrations": False,
        "not-us": False,
    }


def test_the_reason_names_the_part_of_the_pattern_that_failed(config: Config) -> None:
    results = {result.handler: result for result in explain_routes(config, seed("available"))}
    assert results["failures"].reason == 'detail.State: "available" does not match ["failed"]'
    assert results["not-us"].reason == (
        'region: "us-east-1" does not match [{"anything-but": {"prefix": "us-"}}]'
    )
    assert results["everything"].reason is None


def test_an_event_of_another_type_reaches_no_handler(config: Config) -> None:
    event = {**seed("failed"), "detail-type": "EC2 Instance State-change Notification"}
    results = explain_routes(config, event)
    assert not any(result.matched for result in results)
    assert all(
        result.reason is not None and result.reason.startswith("ignored before routing")
        for result in results
    )


def test_format_prints_one_tick_or_cross_line_per_handler(config: Config) -> None:
    text = format_explanation(explain_routes(config, seed("deregistered")))
    assert text.splitlines() == [
        "✓ everything",
        '✗ failures: detail.State: "deregistered" does not match ["failed"]',
        "✓ prod-deregistrations",
        '✗ not-us: region: "us-east-1" does not match [{"anything-but": {"prefix": "us-"}}]',
    ]


def test_format_of_no_results_is_empty() -> None:
    assert format_explanation([]) == ""


def test_a_match_eventbridge_refuses_is_a_config_error_naming_the_path() -> None:
    text = CONFIG.replace(
        "{detail: {State: [failed]}}", "{detail: {State: [{numeric: ['<', 1, '>', 0]}]}}"
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(text, env={})
    assert caught.value.problems == [
        "handlers[1].match: detail.State[0].numeric[0]: a numeric range starts with > or >="
    ]


# --- patterns on `image` (SPEC 3a) ---

IMAGE_CONFIG = """
queue: {url: "http://127.0.0.1:1/123456789012/q"}
enrich: {describe_images: true, role_arn: "arn:aws:iam::{{ account }}:role/amid-describe-images"}
handlers:
  - name: payments
    type: console
    match: {detail: {State: [failed]}, image: {tags: {Team: [payments]}}}
  - name: prod-audit
    type: console
    match: {detail: {State: [deregistered]}, image: {name: [{prefix: prod-}]}}
"""


def check_config(*args: str) -> tuple[int, str]:
    """`amid check-config ARGS` in process: (exit code, stdout)."""
    import contextlib
    import io

    from amid.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["check-config", *args])
    return code, out.getvalue()


def test_an_image_route_is_explained_against_the_image_given() -> None:
    config = parse_config(IMAGE_CONFIG, env={})
    image = {"name": "payments-api", "tags": {"Team": "search"}}
    results = explain_routes(config, seed("failed"), image)
    assert results[0].handler == "payments" and not results[0].matched
    assert "image.tags.Team" in str(results[0].reason)
    good = explain_routes(config, seed("failed"), {"tags": {"Team": "payments"}})
    assert good[0] == RouteExplanation("payments", True, None)


def test_without_an_image_it_says_the_daemon_would_describe_it(tmp_path: Path) -> None:
    config_file = tmp_path / "amid.yaml"
    config_file.write_text(IMAGE_CONFIG)
    event = seed("failed")
    event["account"] = "111122223333"
    (tmp_path / "event.json").write_text(json.dumps(event))
    code, output = check_config("-c", str(config_file), "--explain", str(tmp_path / "event.json"))
    lines = output.splitlines()
    assert code == 0
    assert lines[0] == (
        f"image: not given (--image FILE); amid would describe {event['detail']['ImageId']} in "
        f"{event['region']} as arn:aws:iam::111122223333:role/amid-describe-images"
    )
    assert lines[1] == "? payments: decided by the image, which amid would describe"
    assert lines[2].startswith("✗ prod-audit: detail.State")


def test_with_an_image_file_the_cli_shows_the_image_it_used(tmp_path: Path) -> None:
    config_file = tmp_path / "amid.yaml"
    config_file.write_text(IMAGE_CONFIG)
    (tmp_path / "event.json").write_text(json.dumps(seed("deregistered")))
    (tmp_path / "image.json").write_text(json.dumps({"name": "prod-web", "tags": {}}))
    code, output = check_config(
        "-c", str(config_file), "--explain", str(tmp_path / "event.json"),
        "--image", str(tmp_path / "image.json"),
    )  # fmt: skip
    assert code == 0
    assert output.splitlines() == [
        'image (given): {"name": "prod-web", "tags": {}}',
        '✗ payments: detail.State: "deregistered" does not match ["failed"]',
        "✓ prod-audit",
    ]
