"""The config file: typed, frozen, strict models and the one loader.

`load_config(path)` is used by `amid run`, by SIGHUP reload and by
`amid check-config`, so what the check accepts is exactly what the daemon runs.
Every problem is reported as one `path: problem` line naming the YAML path.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlparse
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from cronsim import CronSim, CronSimError
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from amid import patterns, templates

DEFAULT_CONFIG_PATH = Path("/etc/amid/amid.yaml")
MAX_CONFIG_BYTES = 1024 * 1024


class ConfigError(Exception):
    """The config file cannot be used; `problems` holds one `path: problem` line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


# --- durations -------------------------------------------------------------

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: object) -> float:
    """`500ms`, `20s`, `5m`, `2h`, `7d` or a plain number of seconds -> seconds."""
    if isinstance(value, bool):
        raise ValueError(
            "a duration is a number of seconds or a string like 500ms, 20s, 5m, 2h, 7d"
        )
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    raise ValueError(
        f"{value!r} is not a duration (use 500ms, 20s, 5m, 2h, 7d or a number of seconds)"
    )


Duration = Annotated[float, BeforeValidator(parse_duration)]


def _not_bool(value: object) -> object:
    if isinstance(value, bool):
        raise ValueError("expected a number, not true/false")
    return value


Count = Annotated[int, BeforeValidator(_not_bool)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- sections --------------------------------------------------------------


class RedeliveryConfig(_Model):
    initial: Duration = 10.0
    max: Duration = 300.0

    @model_validator(mode="after")
    def _ordered(self) -> RedeliveryConfig:
        if self.initial > self.max:
            raise ValueError("initial must not be longer than max")
        if self.max > 12 * 3600:
            raise ValueError("max cannot exceed 12h, SQS's longest visibility timeout")
        return self


class QueueConfig(_Model):
    url: str
    region: str | None = None
    endpoint_url: str | None = None
    wait_time: Duration = Field(default=20.0, ge=0, le=20)
    max_messages: Count = Field(default=10, ge=1, le=10)
    pollers: Count = Field(default=2, ge=1, le=64)
    max_in_flight: Count = Field(default=64, ge=1, le=10_000)
    visibility_timeout: Duration = Field(default=60.0, ge=1, le=12 * 3600)
    redelivery: RedeliveryConfig = RedeliveryConfig()
    on_invalid: Literal["keep", "delete"] = "keep"

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parsed = urlparse(value)
        if (
            parsed.scheme not in ("http", "https")
            or not parsed.netloc
            or not parsed.path.strip("/")
        ):
            raise ValueError(
                f"{value!r} is not an SQS queue URL (https://sqs.<region>.amazonaws.com/<account>/<name>)"
            )
        return value

    @property
    def resolved_region(self) -> str | None:
        """`region`, else the one in an AWS queue URL, else None (the SDK environment decides)."""
        if self.region:
            return self.region
        match = re.match(r"^sqs\.([a-z0-9-]+)\.amazonaws\.com", urlparse(self.url).netloc)
        return match.group(1) if match else None


class DedupeConfig(_Model):
    backend: Literal["memory", "sqlite", "dynamodb"] = "sqlite"
    path: Path = Path("/var/lib/amid/dedupe.sqlite3")
    table: str = "amid-dedupe"
    ttl: Duration = Field(default=7 * 86400.0, gt=0)
    memory_max_events: Count = Field(default=100_000, ge=100)


def _check_role_arn(value: str | None) -> str | None:
    if value is not None and not value.strip():
        return None
    if value is not None:
        templates.compile_template(value)
    return value


class EnrichConfig(_Model):
    describe_images: bool = False
    cache_ttl: Duration = Field(default=600.0, ge=0)
    # A template (`account`, `region`): the role assumed to describe images in the event's own
    # account. None, or a rendering that is empty: amid's own credentials.
    role_arn: str | None = None
    remember: Duration = Field(default=90 * 86400.0, ge=0)  # 0: no image memory

    _role_arn = field_validator("role_arn")(_check_role_arn)


class MetricsConfig(_Model):
    listen: str = "0.0.0.0:9102"
    queue_depth_interval: Duration = Field(default=60.0, ge=0)
    # The status page and /api/v1/events (SPEC 3h): off, as they show account ids, image
    # names and tags; turn on only where the listener is private.
    ui: bool = False

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        _, sep, port = value.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"{value!r} is not HOST:PORT")
        return value

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]") or "0.0.0.0"  # noqa: S104

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


class LoggingConfig(_Model):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "console"] = "json"

    @field_validator("level", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value


class RetryConfig(_Model):
    attempts: Count = Field(default=5, ge=1, le=100)
    initial_backoff: Duration = 1.0
    max_backoff: Duration = 60.0

    @model_validator(mode="after")
    def _ordered(self) -> RetryConfig:
        if self.initial_backoff > self.max_backoff:
            raise ValueError("initial_backoff must not be longer than max_backoff")
        return self


class DefaultsConfig(_Model):
    timeout: Duration = Field(default=10.0, gt=0)
    retry: RetryConfig = RetryConfig()


# --- handlers --------------------------------------------------------------


def _compile_pattern(value: object) -> object:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ValueError("match must be a mapping (an EventBridge event pattern)")
    try:
        patterns.compile_pattern(value)
    except patterns.PatternError as error:
        raise ValueError(str(error)) from None
    return value


def _check_template(value: str | None) -> str | None:
    if value is not None:
        templates.compile_template(value)
    return value


def _read_secret_file(path: Path, key: str) -> SecretStr:
    try:
        return SecretStr(path.read_text(encoding="utf-8").strip())
    except OSError as error:
        raise ValueError(f"{key}: cannot read {path}: {error.strerror}") from None


_HANDLER_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"

# --- digests ---------------------------------------------------------------

DIGEST_MAX_WAIT = 3600.0  # far inside SQS's 12-hour visibility limit
DIGEST_MAX_EVENTS = 100  # one DynamoDB transaction records a whole digest
DEFAULT_GROUP_BY = ("account", "region", "detail.State")
_GROUP_PATH = re.compile(r"^[^.\s]+(\.[^.\s]+)*$")


def _group_path(path: str) -> str:
    if not _GROUP_PATH.match(path):
        raise ValueError(f"{path!r} is not a dotted path into the event, such as detail.State")
    return path


class DigestConfig(_Model):
    """One message for a burst (SPEC 3b): events with equal `group_by` values are sent together."""

    wait: Duration = 30.0
    max_events: Count = 50
    group_by: tuple[Annotated[str, AfterValidator(_group_path)], ...] = DEFAULT_GROUP_BY

    @field_validator("wait")
    @classmethod
    def _wait(cls, value: float) -> float:
        if not 0 < value <= DIGEST_MAX_WAIT:
            raise ValueError("must be more than 0 and at most 1h")
        return value

    @field_validator("max_events")
    @classmethod
    def _max_events(cls, value: int) -> int:
        if not 2 <= value <= DIGEST_MAX_EVENTS:
            raise ValueError(f"must be from 2 to {DIGEST_MAX_EVENTS}")
        return value

    @field_validator("group_by")
    @classmethod
    def _distinct(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(value)) != len(value):
            raise ValueError("names a path twice")
        return value


class _HandlerBase(_Model):
    name: str = Field(pattern=_HANDLER_NAME)
    match: Annotated[dict[str, Any] | None, BeforeValidator(_compile_pattern)] = None
    timeout: Duration | None = Field(default=None, gt=0)
    retry: RetryConfig | None = None
    digest: DigestConfig | None = None


class ShellHandlerConfig(_HandlerBase):
    type: Literal["shell"]
    command: list[str] = Field(min_length=1)
    env: dict[str, str] = {}
    cwd: Path | None = None

    @field_validator("command")
    @classmethod
    def _templates(cls, value: list[str]) -> list[str]:
        for argument in value:
            templates.compile_template(argument)
        return value


class ConsoleHandlerConfig(_HandlerBase):
    """Prints one line per event on stdout: the demo's handler, handy for a first try."""

    type: Literal["console"]
    template: str | None = None

    _template = field_validator("template")(_check_template)


class SlackHandlerConfig(_HandlerBase):
    type: Literal["slack"]
    webhook_url: SecretStr | None = None
    webhook_url_file: Path | None = None
    # App mode (SPEC 3d): a bot token, one living conversation per `thread_by` key.
    token: SecretStr | None = None
    token_file: Path | None = None
    thread_by: str = "{{ image_id }}"
    api_url: str = "https://slack.com/api/"
    template: str | None = None
    payload_template: str | None = None
    username: str | None = None
    icon_emoji: str | None = None
    channel: str | None = None
    rate_limit: Annotated[float, BeforeValidator(_not_bool)] = Field(
        default=1.0, gt=0, description="messages per second per webhook, or per channel"
    )

    _templates = field_validator("template", "payload_template", "thread_by")(_check_template)

    @property
    def app(self) -> bool:
        """App mode: a bot token and the Web API, not an incoming webhook."""
        return self.token is not None

    @model_validator(mode="after")
    def _secret(self) -> SlackHandlerConfig:
        given = [
            key
            for key in ("webhook_url", "webhook_url_file", "token", "token_file")
            if getattr(self, key) is not None
        ]
        if len(given) != 1:
            raise ValueError("set exactly one of webhook_url, webhook_url_file, token, token_file")
        if self.token_file is not None:
            object.__setattr__(self, "token", _read_secret_file(self.token_file, "token_file"))
        if self.token is not None:
            if not self.token.get_secret_value():
                raise ValueError("token: is empty")
            if not self.channel:
                raise ValueError("channel: required with a token (a channel id, C0123456789)")
            if not self.api_url.startswith(("https://", "http://")):
                raise ValueError("api_url: must be an http(s) URL")
            if not self.api_url.endswith("/"):
                object.__setattr__(self, "api_url", self.api_url + "/")
            return self
        _read_webhook_url(self)
        return self


def _read_webhook_url(model: SlackHandlerConfig | ChatWebhookConfig) -> None:
    """`webhook_url_file` read into `webhook_url` (one of the two is set); it must be http(s)."""
    if model.webhook_url_file is not None:
        secret = _read_secret_file(model.webhook_url_file, "webhook_url_file")
        object.__setattr__(model, "webhook_url", secret)
    assert model.webhook_url is not None  # noqa: S101 - one of the two is set
    if not model.webhook_url.get_secret_value().startswith(("https://", "http://")):
        raise ValueError("webhook_url must be an http(s) URL")


class ChatWebhookConfig(_HandlerBase):
    """What `teams` and `google_chat` share (SPEC 3f): a secret webhook URL, templates, a pace."""

    webhook_url: SecretStr | None = None
    webhook_url_file: Path | None = None
    template: str | None = None
    payload_template: str | None = None
    rate_limit: Annotated[float, BeforeValidator(_not_bool)] = Field(
        default=1.0, gt=0, description="messages per second per webhook"
    )

    _templates = field_validator("template", "payload_template")(_check_template)

    @model_validator(mode="after")
    def _secret(self) -> ChatWebhookConfig:
        if (self.webhook_url is None) == (self.webhook_url_file is None):
            raise ValueError("set exactly one of webhook_url and webhook_url_file")
        _read_webhook_url(self)
        return self


class TeamsHandlerConfig(ChatWebhookConfig):
    type: Literal["teams"]


class GoogleChatHandlerConfig(ChatWebhookConfig):
    type: Literal["google_chat"]
    thread_by: str = "{{ image_id }}"  # the thread key: one image's messages share a thread

    _thread_by = field_validator("thread_by")(_check_template)


class SnsHandlerConfig(_HandlerBase):
    type: Literal["sns"]
    topic_arn: str = Field(
        pattern=r"^arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_-]+(\.fifo)?$"
    )
    template: str | None = None
    subject: str | None = None
    endpoint_url: str | None = None

    _templates = field_validator("template", "subject")(_check_template)

    @property
    def region(self) -> str:
        return self.topic_arn.split(":")[3]


class WebhookHandlerConfig(_HandlerBase):
    type: Literal["webhook"]
    url: SecretStr | None = None
    url_file: Path | None = None
    method: Literal["POST", "PUT", "PATCH"] = "POST"
    headers: dict[str, SecretStr] = {}
    headers_file: Path | None = None
    body: str | None = None
    content_type: str = "application/json"

    _templates = field_validator("body")(_check_template)

    @model_validator(mode="after")
    def _secret(self) -> WebhookHandlerConfig:
        if (self.url is None) == (self.url_file is None):
            raise ValueError("set exactly one of url and url_file")
        if self.url_file is not None:
            object.__setattr__(self, "url", _read_secret_file(self.url_file, "url_file"))
        assert self.url is not None  # noqa: S101 - narrowed by the check above
        if not self.url.get_secret_value().startswith(("https://", "http://")):
            raise ValueError("url must be an http(s) URL")
        if self.headers_file is not None:
            loaded = _load_yaml_mapping(self.headers_file, "headers_file")
            merged = {**{k: SecretStr(str(v)) for k, v in loaded.items()}, **self.headers}
            object.__setattr__(self, "headers", merged)
        return self


PAGERDUTY_EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"
PAGERDUTY_SEVERITIES = ("critical", "error", "warning", "info")
PagerDutyAction = Literal["trigger", "acknowledge", "resolve", "none"]
PAGERDUTY_ACTIONS: dict[str, PagerDutyAction] = {
    "available": "resolve",
    "failed": "trigger",
    "deregistered": "none",
    "disabled": "none",
}


class PagerDutyHandlerConfig(_HandlerBase):
    """Events API v2 (SPEC 3e): a failed build triggers an incident, the next good one
    resolves it."""

    type: Literal["pagerduty"]
    routing_key: SecretStr | None = None
    routing_key_file: Path | None = None
    dedup_key: str = "{{ account }}/{{ region }}/{{ image_id }}"
    actions: dict[str, PagerDutyAction] = {}  # only the states it changes; see action_for
    severity: str = "error"  # one of PAGERDUTY_SEVERITIES, or a template rendering one
    events_url: str = PAGERDUTY_EVENTS_URL

    _templates = field_validator("dedup_key")(_check_template)

    @field_validator("digest")
    @classmethod
    def _no_digest(cls, value: DigestConfig | None) -> DigestConfig | None:
        if value is not None:
            raise ValueError("a pagerduty handler takes no digest (PagerDuty groups alerts itself)")
        return value

    @field_validator("actions")
    @classmethod
    def _states(cls, value: dict[str, PagerDutyAction]) -> dict[str, PagerDutyAction]:
        for state in value:
            if state not in PAGERDUTY_ACTIONS:
                raise ValueError(
                    f"{state!r} is not an AMI state; use {', '.join(PAGERDUTY_ACTIONS)}"
                )
        return value

    @field_validator("severity")
    @classmethod
    def _severity(cls, value: str) -> str:
        if "{{" in value or "{%" in value:
            templates.compile_template(value)
        elif value not in PAGERDUTY_SEVERITIES:
            raise ValueError(
                f"{value!r} is not a severity; use {', '.join(PAGERDUTY_SEVERITIES)} or a template"
            )
        return value

    @field_validator("events_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError("events_url must be an http(s) URL")
        return value

    @model_validator(mode="after")
    def _secret(self) -> PagerDutyHandlerConfig:
        if (self.routing_key is None) == (self.routing_key_file is None):
            raise ValueError("set exactly one of routing_key and routing_key_file")
        if self.routing_key_file is not None:
            secret = _read_secret_file(self.routing_key_file, "routing_key_file")
            object.__setattr__(self, "routing_key", secret)
        assert self.routing_key is not None  # noqa: S101 - narrowed by the check above
        if not self.routing_key.get_secret_value().strip():
            raise ValueError("routing_key is empty")
        return self

    def summary(self) -> str:
        """For check-config: the key, what each state does, the severity, where it goes."""
        acts = ", ".join(f"{state} -> {self.action_for(state)}" for state in PAGERDUTY_ACTIONS)
        return (
            f"pagerduty: dedup_key {self.dedup_key}; {acts}; severity {self.severity}; "
            f"to {self.events_url}"
        )

    def action_for(self, state: str) -> PagerDutyAction:
        """What an event of `state` does: `actions`, else the default (none for a new state)."""
        return self.actions.get(state) or PAGERDUTY_ACTIONS.get(state, "none")


def _load_yaml_mapping(path: Path, key: str) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ValueError(f"{key}: cannot read {path}: {error.strerror}") from None
    except (yaml.YAMLError, RecursionError, UnicodeDecodeError) as error:
        raise ValueError(f"{key}: {path} is not YAML: {describe_yaml_error(error)}") from None
    if not isinstance(loaded, dict):
        raise ValueError(f"{key}: {path} must hold a mapping of header names to values")
    return loaded


HandlerConfig = Annotated[
    ShellHandlerConfig
    | SlackHandlerConfig
    | SnsHandlerConfig
    | WebhookHandlerConfig
    | ConsoleHandlerConfig
    | TeamsHandlerConfig
    | GoogleChatHandlerConfig
    | PagerDutyHandlerConfig,
    Field(discriminator="type"),
]


# --- expectations ----------------------------------------------------------


def _check_cron(value: str | None) -> str | None:
    if value is None:
        return None
    if len(value.split()) != 5:
        raise ValueError(
            f"{value!r} is not a five-field cron expression (minute hour day month weekday)"
        )
    try:
        CronSim(value, datetime(2000, 1, 1, tzinfo=UTC))
    except CronSimError as error:
        raise ValueError(f"{value!r} is not a cron expression: {error}") from None
    return value


def _check_zone(value: str | None) -> str | None:
    if value is not None:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"{value!r} is not an IANA time zone (e.g. UTC, Europe/Berlin)"
            ) from None
    return value


class ExpectationConfig(_Model):
    """An AMI event that must come (SPEC 3c): every `every`, or between two `schedule` times."""

    name: str = Field(pattern=_HANDLER_NAME)
    match: Annotated[dict[str, Any] | None, BeforeValidator(_compile_pattern)] = None
    every: Duration | None = Field(default=None, ge=1)
    schedule: str | None = None
    timezone: str | None = None  # with schedule only; UTC when unset
    grace: Duration = Field(default=0.0, ge=0)
    notify: list[str] = Field(min_length=1)
    recovery: bool = True

    _cron = field_validator("schedule")(_check_cron)
    _zone = field_validator("timezone")(_check_zone)

    @model_validator(mode="after")
    def _one_clock(self) -> ExpectationConfig:
        if (self.every is None) == (self.schedule is None):
            raise ValueError("set exactly one of every and schedule")
        if self.timezone is not None and self.schedule is None:
            raise ValueError("timezone applies to schedule only; every counts from the last event")
        return self

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone or "UTC")


# --- silences --------------------------------------------------------------

SILENCE_LONGEST = 90 * 86400.0  # SPEC 3g: no silence lasts longer


class SilenceConfig(_Model):
    """A recurring quiet window (SPEC 3g): from each `schedule` time, for `duration`."""

    name: str = Field(pattern=_HANDLER_NAME)
    match: Annotated[dict[str, Any] | None, BeforeValidator(_compile_pattern)] = None
    expectations: list[str] | None = Field(default=None, min_length=1)
    schedule: Annotated[str, AfterValidator(_check_cron)]
    duration: Duration = Field(gt=0)
    timezone: Annotated[str, AfterValidator(_check_zone)] = "UTC"
    handlers: list[str] | None = Field(default=None, min_length=1)  # None: every handler

    @field_validator("duration")
    @classmethod
    def _at_most_90_days(cls, value: float) -> float:
        if value > SILENCE_LONGEST:
            raise ValueError("a silence lasts at most 90d")
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> SilenceConfig:
        if (self.match is None) == (self.expectations is None):
            raise ValueError("set exactly one of match (events) and expectations")
        return self

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


class Config(_Model):
    queue: QueueConfig
    shutdown_timeout: Duration = Field(default=20.0, ge=0)
    dedupe: DedupeConfig = DedupeConfig()
    enrich: EnrichConfig = EnrichConfig()
    metrics: MetricsConfig = MetricsConfig()
    logging: LoggingConfig = LoggingConfig()
    defaults: DefaultsConfig = DefaultsConfig()
    handlers: list[HandlerConfig] = Field(min_length=1)
    expectations: list[ExpectationConfig] = []
    silences: list[SilenceConfig] = []

    @field_validator("handlers")
    @classmethod
    def _unique_names(cls, handlers: list[HandlerConfig]) -> list[HandlerConfig]:
        seen: set[str] = set()
        for index, handler in enumerate(handlers):
            if handler.name in seen:
                raise ValueError(
                    f"handlers[{index}].name {handler.name!r} is used twice; names must be unique"
                )
            seen.add(handler.name)
        return handlers

    @field_validator("expectations")
    @classmethod
    def _expectations_refer(
        cls, expectations: list[ExpectationConfig], info: ValidationInfo
    ) -> list[ExpectationConfig]:
        handlers = {h.name for h in info.data.get("handlers") or ()}
        seen: set[str] = set()
        for index, expectation in enumerate(expectations):
            if expectation.name in seen:
                raise ValueError(
                    f"expectations[{index}].name: {expectation.name!r} is used twice; "
                    "names must be unique"
                )
            seen.add(expectation.name)
            unknown = [name for name in expectation.notify if name not in handlers]
            # Without a valid handlers list, its own errors say what is wrong.
            if unknown and "handlers" in info.data:
                raise ValueError(
                    f"expectations[{index}].notify: no handler named "
                    + ", ".join(repr(name) for name in unknown)
                )
        return expectations

    @field_validator("silences")
    @classmethod
    def _silences_refer(
        cls, silences: list[SilenceConfig], info: ValidationInfo
    ) -> list[SilenceConfig]:
        known = {
            "handlers": {h.name for h in info.data.get("handlers") or ()},
            "expectations": {e.name for e in info.data.get("expectations") or ()},
        }
        seen: set[str] = set()
        for index, silence in enumerate(silences):
            if silence.name in seen:
                raise ValueError(
                    f"silences[{index}].name: {silence.name!r} is used twice; names must be unique"
                )
            seen.add(silence.name)
            for key, names in (
                ("handlers", silence.handlers),
                ("expectations", silence.expectations),
            ):
                unknown = [name for name in names or () if name not in known[key]]
                # Without a valid list to refer to, that list's own errors say what is wrong.
                if unknown and key in info.data:
                    raise ValueError(
                        f"silences[{index}].{key}: no {key[:-1]} named "
                        + ", ".join(repr(name) for name in unknown)
                    )
        return silences

    @model_validator(mode="after")
    def _cross_checks(self) -> Config:
        if not self.enrich.describe_images:
            for index, handler in enumerate(self.handlers):
                if handler.match is not None and patterns.names_field(handler.match, "image"):
                    raise ValueError(
                        f"handlers[{index}].match.image: matching on the image needs "
                        "enrich.describe_images: true"
                    )
            for index, silence in enumerate(self.silences):
                if silence.match is not None and patterns.names_field(silence.match, "image"):
                    raise ValueError(
                        f"silences[{index}].match.image: matching on the image needs "
                        "enrich.describe_images: true"
                    )
        if self.dedupe.ttl < self.queue.redelivery.max * 2:
            raise ValueError(
                "dedupe.ttl must be at least twice queue.redelivery.max, "
                "or a redelivered event could be forgotten and notified twice"
            )
        return self

    def timeout_for(self, handler: _HandlerBase) -> float:
        return handler.timeout if handler.timeout is not None else self.defaults.timeout

    def retry_for(self, handler: _HandlerBase) -> RetryConfig:
        return handler.retry if handler.retry is not None else self.defaults.retry

    def restart_sections(self) -> dict[str, Any]:
        """The sections a SIGHUP cannot change: a difference here needs a restart."""
        return {
            "queue": self.queue,
            "dedupe": self.dedupe,
            "metrics": self.metrics,
            "enrich": self.enrich,
            "shutdown_timeout": self.shutdown_timeout,
        }


# --- loading ---------------------------------------------------------------

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys and alias expansion bombs."""


_MERGE_TAG = "tag:yaml.org,2002:merge"


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    keys: set[object] = set()
    for key_node, _ in node.value:
        if key_node.tag == _MERGE_TAG:  # `<<: *anchor` merges; its keys may be overridden
            continue
        key = loader.construct_object(key_node, deep=deep)
        if key in keys:
            mark = key_node.start_mark
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (line {mark.line + 1})", mark
            )
        keys.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)

_MAX_ALIASES = 100


def describe_yaml_error(error: BaseException) -> str:
    """The problem and where, never the snippet of the line: it may hold a secret."""
    if isinstance(error, RecursionError):
        return "nested too deeply"
    if isinstance(error, UnicodeDecodeError):
        return "not UTF-8 text"
    problem = getattr(error, "problem", None) or getattr(error, "context", None)
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    text = str(problem) if problem else " ".join(str(error).split())
    if mark is not None:
        text += f" (line {mark.line + 1}, column {mark.column + 1})"
    return text


def _parse_yaml(text: str) -> Any:
    # A YAML bomb is a small file whose aliases expand exponentially; configs never need many.
    aliases = sum(1 for token in yaml.scan(text) if isinstance(token, yaml.AliasToken))
    if aliases > _MAX_ALIASES:
        raise yaml.YAMLError(f"{aliases} aliases; at most {_MAX_ALIASES} are allowed")
    return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass


_MAX_NODES = 100_000


class _TooLarge(Exception):
    pass


class _Budget:
    """Counts values as aliases expand: a bomb under the alias cap still stops here."""

    def __init__(self) -> None:
        self.left = _MAX_NODES

    def spend(self) -> None:
        self.left -= 1
        if self.left < 0:
            raise _TooLarge


def _interpolate(
    node: Any, path: str, env: Mapping[str, str], problems: list[str], budget: _Budget
) -> Any:
    budget.spend()
    if isinstance(node, str):

        def replace(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            problems.append(f"{path or '<root>'}: environment variable {name} is not set")
            return ""

        return _VAR.sub(replace, node)
    if isinstance(node, dict):
        return {
            key: _interpolate(value, f"{path}.{key}" if path else str(key), env, problems, budget)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [
            _interpolate(item, f"{path}[{index}]", env, problems, budget)
            for index, item in enumerate(node)
        ]
    return node


def _error_path(location: tuple[int | str, ...], document: Any) -> str:
    """pydantic's location -> YAML path, without the discriminator's type tags."""
    parts: list[str] = []
    node = document
    for item in location:
        if isinstance(item, int):
            parts.append(f"[{item}]")
            node = node[item] if isinstance(node, list) and item < len(node) else None
            continue
        if isinstance(node, dict) and item not in node and item not in ("match",):
            # a discriminated union inserts the tag ("slack") as a location step
            if isinstance(node.get("type"), str) and node.get("type") == item:
                continue
        parts.append(f".{item}" if parts else str(item))
        node = node.get(item) if isinstance(node, dict) else None
    return "".join(parts) or "<root>"


_PATHED = re.compile(r"^[A-Za-z_][\w.$\[\]-]*: ")


def _format_errors(error: ValidationError, document: Any) -> list[str]:
    problems = []
    for item in error.errors(include_url=False, include_input=False):
        path = _error_path(item["loc"], document)
        message = item["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key"
        elif item["type"] == "union_tag_invalid":
            message = (
                "unknown handler type; use one of shell, slack, sns, webhook, console, "
                "teams, google_chat, pagerduty"
            )
        elif item["type"] == "union_tag_not_found":
            message = (
                "missing key 'type' (shell, slack, sns, webhook, console, teams, google_chat "
                "or pagerduty)"
            )
        if (path == "<root>" and _PATHED.match(message)) or (
            message.startswith((f"{path}[", f"{path}.")) and ": " in message
        ):
            problems.append(message)  # a cross-check that names its own path
            continue
        problems.append(f"{path}: {message}")
    return problems


def parse_config(text: str, env: Mapping[str, str] | None = None, source: str = "config") -> Config:
    """Validate config text; raises ConfigError with one `path: problem` line per error."""
    if len(text.encode("utf-8", "replace")) > MAX_CONFIG_BYTES:
        raise ConfigError(
            [f"{source}: larger than {MAX_CONFIG_BYTES // 1024} KiB; not a config file"]
        )
    try:
        document = _parse_yaml(text)
    except yaml.YAMLError as error:
        raise ConfigError([f"{source}: YAML syntax error: {describe_yaml_error(error)}"]) from None
    except RecursionError:
        raise ConfigError([f"{source}: nested too deeply to be a config file"]) from None
    if document is None:
        raise ConfigError([f"{source}: the file is empty"])
    if not isinstance(document, dict):
        raise ConfigError(
            [f"<root>: expected a mapping of sections, got {type(document).__name__}"]
        )
    problems: list[str] = []
    try:
        document = _interpolate(
            document, "", os.environ if env is None else env, problems, _Budget()
        )
    except RecursionError:
        raise ConfigError([f"{source}: nested too deeply to be a config file"]) from None
    except _TooLarge:
        raise ConfigError(
            [f"{source}: more than {_MAX_NODES} values once aliases expand (a YAML bomb?)"]
        ) from None
    if problems:
        raise ConfigError(problems)
    try:
        return Config.model_validate(document)
    except ValidationError as error:
        raise ConfigError(_format_errors(error, document)) from None
    except RecursionError:
        raise ConfigError([f"{source}: nested too deeply to be a config file"]) from None


def load_config(path: Path, env: Mapping[str, str] | None = None) -> Config:
    """Read and validate the config file at `path`."""
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_CONFIG_BYTES + 1)
    except OSError as error:
        raise ConfigError([f"{path}: cannot read the config file: {error.strerror}"]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError([f"{path}: not UTF-8 text"]) from None
    return parse_config(text, env, source=str(path))


def default_config_path(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    return Path(env["AMID_CONFIG"]) if env.get("AMID_CONFIG") else DEFAULT_CONFIG_PATH
