"""Routing on `image` (SPEC 3a), pure: the router, the pattern helpers, the config checks."""

from __future__ import annotations

import json
from typing import Any

import pytest

from amid.config import ConfigError, parse_config
from amid.patterns import names_field, without_field
from amid.pipeline.decode import decode
from amid.pipeline.routing import Router
from amid.tools.offline import synthetic_event

QUEUE = "queue: {url: http://127.0.0.1:1/123456789012/q}\n"
TEAM = {"image": {"tags": {"Team": ["payments"]}}, "detail": {"State": ["failed"]}}
PROD = {"image": {"name": [{"prefix": "prod-"}]}, "detail": {"State": ["deregistered"]}}
PAYMENTS = {"name": "payments-api", "tags": {"Team": "payments"}}


def router(**matches: dict[str, Any] | None) -> Router:
    handlers = [
        {"name": name, "type": "console", **({"match": match} if match else {})}
        for name, match in matches.items()
    ]
    config = parse_config(
        QUEUE + "enrich: {describe_images: true}\n" + "handlers: " + json.dumps(handlers),
        env={},
    )
    return Router(config.handlers)


def event(state: str = "failed", **extra: Any) -> Any:
    raw = synthetic_event(state)
    raw.update(extra)
    decoded = decode(json.dumps(raw))
    return decoded


class TestRoute:
    def test_a_tag_pattern_matches_the_images_tags_as_a_map(self) -> None:
        routes = router(team=TEAM, other=None)
        assert routes.route(event("failed"), PAYMENTS) == ("team", "other")
        assert routes.route(event("failed"), {"tags": {"Team": "search"}}) == ("other",)

    def test_a_name_prefix_matches_the_image_name(self) -> None:
        routes = router(audit=PROD)
        assert routes.route(event("deregistered"), {"name": "prod-web", "tags": {}}) == ("audit",)
        assert routes.route(event("deregistered"), {"name": "dev-web", "tags": {}}) == ()

    def test_an_empty_image_matches_only_what_needs_no_image_field(self) -> None:
        routes = router(team=TEAM, absent={"image": {"name": [{"exists": False}]}})
        assert routes.route(event("failed"), {}) == ("absent",)

    def test_amids_image_replaces_an_image_field_the_event_brings(self) -> None:
        routes = router(team=TEAM)
        spoofed = event("failed", image={"tags": {"Team": ["payments"]}})
        assert routes.route(spoofed, {"tags": {"Team": "search"}}) == ()

    def test_without_the_image_the_routes_that_need_it_are_left_out(self) -> None:
        routes = router(team=TEAM, failures={"detail": {"State": ["failed"]}})
        assert routes.route(event("failed"), None) == ("failures",)

    def test_an_or_naming_image_is_decided_with_the_image(self) -> None:
        either = {"$or": [{"image": {"tags": {"Team": ["payments"]}}}, {"account": ["999"]}]}
        routes = router(either=either)
        assert routes.route(event("available"), PAYMENTS) == ("either",)
        assert routes.route(event("available", account="999"), {}) == ("either",)
        assert routes.route(event("available"), {}) == ()


class TestNeedsImage:
    def test_only_routes_whose_other_fields_fit_wait_for_the_image(self) -> None:
        routes = router(team=TEAM, audit=PROD, plain={"detail": {"State": ["failed"]}})
        assert routes.needs_image(event("failed")) == ("team",)
        assert routes.needs_image(event("deregistered")) == ("audit",)
        assert routes.needs_image(event("available")) == ()

    def test_a_config_without_image_patterns_never_needs_the_image(self) -> None:
        routes = router(a={"detail": {"State": ["failed"]}}, b=None)
        assert routes.image_routes == ()
        assert routes.needs_image(event("failed")) == ()

    def test_a_pattern_on_the_image_alone_needs_it_for_every_event(self) -> None:
        routes = router(only={"image": {"name": [{"prefix": "prod-"}]}})
        assert routes.needs_image(event("available")) == ("only",)


class TestPatternHelpers:
    def test_names_field_sees_the_top_level_and_or_alternatives(self) -> None:
        assert names_field({"image": {}}, "image")
        assert names_field({"$or": [{"detail": {}}, {"image": {}}]}, "image")
        assert not names_field({"detail": {"image": ["x"]}}, "image")

    def test_without_field_drops_the_field_and_an_or_that_names_it(self) -> None:
        assert without_field(TEAM, "image") == {"detail": {"State": ["failed"]}}
        either = {"$or": [{"image": {}}, {"account": ["1"]}], "region": ["us-east-1"]}
        assert without_field(either, "image") == {"region": ["us-east-1"]}
        assert without_field({"image": {"name": ["x"]}}, "image") is None


class TestConfig:
    def test_a_pattern_on_image_without_describe_images_is_an_error_naming_the_handler(
        self,
    ) -> None:
        text = QUEUE + (
            "handlers:\n  - {name: a, type: console}\n"
            "  - {name: team, type: console, match: {image: {tags: {Team: [payments]}}}}\n"
        )
        with pytest.raises(ConfigError) as error:
            parse_config(text, env={})
        assert error.value.problems == [
            "handlers[1].match.image: matching on the image needs enrich.describe_images: true"
        ]

    def test_an_image_pattern_is_checked_like_any_other(self) -> None:
        text = QUEUE + (
            "enrich: {describe_images: true}\n"
            "handlers:\n  - {name: team, type: console, match: {image: {name: [{prefix: 1}]}}}\n"
        )
        with pytest.raises(ConfigError) as error:
            parse_config(text, env={})
        assert error.value.problems[0].startswith("handlers[0].match: image.name[0].prefix")

    def test_role_arn_must_be_a_template_that_compiles(self) -> None:
        text = (
            QUEUE + "enrich: {role_arn: 'arn:{{ account'}\nhandlers: [{name: a, type: console}]\n"
        )
        with pytest.raises(ConfigError) as error:
            parse_config(text, env={})
        assert error.value.problems[0].startswith("enrich.role_arn: template does not compile")

    def test_the_defaults_remember_90_days_with_amids_own_credentials(self) -> None:
        config = parse_config(QUEUE + "handlers: [{name: a, type: console}]\n", env={})
        assert (config.enrich.remember, config.enrich.role_arn) == (90 * 86400.0, None)

    def test_remember_may_be_turned_off_but_not_negative(self) -> None:
        off = parse_config(QUEUE + "enrich: {remember: 0}\nhandlers: [{name: a, type: console}]\n")
        assert off.enrich.remember == 0
        with pytest.raises(ConfigError) as error:
            parse_config(QUEUE + "enrich: {remember: -1}\nhandlers: [{name: a, type: console}]\n")
        assert error.value.problems[0].startswith("enrich.remember")


class TestDocumentedRoutes:
    """The image routes shown in README.md and docs/routing.md are configs amid accepts."""

    @pytest.mark.parametrize("doc", ["README.md", "docs/routing.md"])
    def test_the_documented_config_validates_and_routes_as_it_says(self, doc: str) -> None:
        from pathlib import Path

        text = (Path(__file__).parent.parent / doc).read_text()
        block = next(b for b in text.split("```yaml")[1:] if "image: {tags" in b)
        yaml_text = block.split("```")[0].replace(
            "webhook_url_file: /run/secrets/", "webhook_url: https://hooks.slack.com/"
        )
        config = parse_config(QUEUE + yaml_text, env={})
        routes = Router(config.handlers)
        payments = {"name": "payments-api", "tags": {"Team": "payments"}}
        assert "payments-failures" in routes.route(event("failed"), payments)
        gone = routes.route(event("deregistered"), {"name": "prod-web", "remembered": True})
        assert "prod-deregistration-audit" in gone
        assert routes.needs_image(event("available")) == ()
