"""Every series amid exports, on an injected registry (tests read values from it)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any

import prometheus_client
from prometheus_client import CollectorRegistry

from amid import __version__

INVALID_REASONS = ("not_json", "not_object", "no_id", "no_detail", "bad_envelope", "bad_field")
EVENT_OUTCOMES = ("handled", "duplicate", "ignored", "retry", "deferred")
STATES = ("available", "failed", "deregistered", "disabled", "other")
SQS_OPERATIONS = (
    "ReceiveMessage",
    "DeleteMessageBatch",
    "ChangeMessageVisibility",
    "ChangeMessageVisibilityBatch",
    "GetQueueAttributes",
)

LOOKUP_OUTCOMES = ("described", "remembered", "not_found", "unavailable", "denied")
INCIDENT_ACTIONS = ("trigger", "acknowledge", "resolve")
CONVERSATION_ACTIONS = ("started", "replied", "updated", "restarted")
RETRY_REASONS = ("handler_failed", "ledger_unavailable", "enrich_unavailable")

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_DIGEST_BUCKETS = (1, 2, 5, 10, 20, 50, 100)
_LAG_BUCKETS = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600, 24 * 3600)


class _CachedLabels:
    """`labels(*values)` resolved once per label set: prometheus_client looks the child up
    under a lock on every call, and the hot path asks for the same few children per event."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._cached: dict[tuple[str, ...], Any] = {}

    def labels(self, *values: Any, **named: Any) -> Any:
        if named:
            return super().labels(*values, **named)  # type: ignore[misc]
        child = self._cached.get(values)
        if child is None:
            child = self._cached[values] = super().labels(*values)  # type: ignore[misc]
        return child

    def remove(self, *values: Any) -> None:
        self._cached.pop(values, None)
        super().remove(*values)  # type: ignore[misc]

    def clear(self) -> None:
        self._cached.clear()
        super().clear()  # type: ignore[misc]


class Counter(_CachedLabels, prometheus_client.Counter):
    pass


class Gauge(_CachedLabels, prometheus_client.Gauge):
    pass


class Histogram(_CachedLabels, prometheus_client.Histogram):
    pass


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.build_info = Gauge("amid_build_info", "amid's version.", ["version"], registry=r)
        self.build_info.labels(__version__).set(1)
        self.messages_received = Counter(
            "amid_messages_received_total", "SQS messages received.", registry=r
        )
        self.messages_deleted = Counter(
            "amid_messages_deleted_total", "SQS messages deleted after handling.", registry=r
        )
        self.messages_invalid = Counter(
            "amid_messages_invalid_total",
            "Messages that are not valid events.",
            ["reason"],
            registry=r,
        )
        self.events = Counter(
            "amid_events_total",
            "Events by AMI state and what became of them.",
            ["state", "outcome"],
            registry=r,
        )
        self.notifications = Counter(
            "amid_notifications_total",
            "Per event and handler, after in-process retries: delivered, failed or silenced.",
            ["handler", "outcome"],
            registry=r,
        )
        self.notification_failures = Counter(
            "amid_notification_failures_total",
            "Failed notifications by bounded reason (http_500, timeout, exit_1, ...).",
            ["handler", "reason"],
            registry=r,
        )
        self.handler_attempts = Counter(
            "amid_handler_attempts_total",
            "Every single try of a handler.",
            ["handler", "outcome"],
            registry=r,
        )
        self.handler_duration = Histogram(
            "amid_handler_duration_seconds",
            "Duration of one try of a handler.",
            ["handler"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.template_failures = Counter(
            "amid_template_failures_total",
            "Templates that failed at run time; the default message was sent instead.",
            ["handler"],
            registry=r,
        )
        self.event_lag = Histogram(
            "amid_event_lag_seconds",
            "From the event's time to all its handlers done.",
            buckets=_LAG_BUCKETS,
            registry=r,
        )
        self.inflight = Gauge("amid_inflight_messages", "Messages being handled now.", registry=r)
        self.sqs_requests = Counter(
            "amid_sqs_requests_total", "SQS API calls.", ["operation", "outcome"], registry=r
        )
        self.queue_messages = Gauge(
            "amid_queue_messages", "Approximate queue depth.", ["queue", "kind"], registry=r
        )
        self.ready = Gauge(
            "amid_ready",
            "1 while /readyz answers 200: receiving, ledger answering, not draining.",
            registry=r,
        )
        self.config_reloads = Counter(
            "amid_config_reloads_total", "SIGHUP reloads.", ["outcome"], registry=r
        )
        self.config_last_reload_successful = Gauge(
            "amid_config_last_reload_successful", "1 if the last reload succeeded.", registry=r
        )
        self.config_last_reload_successful.set(1)
        self.ledger_errors = Counter(
            "amid_ledger_errors_total",
            "Dedupe store operations that failed.",
            ["operation"],
            registry=r,
        )
        # --- image-aware routing (SPEC 3a) ---
        self.image_lookups = Counter(
            "amid_image_lookups_total",
            "Image lookups by what they found: described, remembered, not_found, or no answer"
            " (unavailable, denied: routes on image wait for redelivery).",
            ["outcome"],
            registry=r,
        )
        self.event_retries = Counter(
            "amid_event_retries_total",
            "Events left for redelivery, by why: handler_failed, ledger_unavailable,"
            " enrich_unavailable.",
            ["reason"],
            registry=r,
        )
        for outcome in LOOKUP_OUTCOMES:
            self.image_lookups.labels(outcome)
        for reason in RETRY_REASONS:
            self.event_retries.labels(reason)
        # --- digests ---
        self.digests = Counter(
            "amid_digests_total",
            "Groups sent by digest handlers (a group of one as the single-event message).",
            ["handler", "outcome"],
            registry=r,
        )
        self.digest_events = Histogram(
            "amid_digest_events",
            "Events per group a digest handler sent.",
            ["handler"],
            buckets=_DIGEST_BUCKETS,
            registry=r,
        )
        self.digest_pending = Gauge(
            "amid_digest_pending_events",
            "Events waiting in a digest handler's groups.",
            ["handler"],
            registry=r,
        )
        # --- expectations (SPEC 3c) ---
        self.expectation_last_seen = Gauge(
            "amid_expectation_last_seen_timestamp_seconds",
            "When the last event matching the expectation occurred (epoch seconds).",
            ["expectation"],
            registry=r,
        )
        self.expectation_overdue = Gauge(
            "amid_expectation_overdue",
            "1 while the expectation is overdue (an episode is open), else 0.",
            ["expectation"],
            registry=r,
        )
        self.expectation_notifications = Counter(
            "amid_expectation_notifications_total",
            "Expectation notices delivered, per handler and status (overdue, recovered).",
            ["expectation", "handler", "status"],
            registry=r,
        )
        self._expectation_handlers: dict[str, set[str]] = {}
        # --- incidents (SPEC 3e) ---
        self.incidents = Counter(
            "amid_incidents_total",
            "PagerDuty events accepted (HTTP 202), per handler and action: trigger, acknowledge,"
            " resolve. A state mapped to none sends nothing and is not counted here.",
            ["handler", "action"],
            registry=r,
        )
        # --- silences (SPEC 3g) ---
        self.silences_active = Gauge(
            "amid_silences_active",
            "Silences active now: config windows and run-time silences.",
            registry=r,
        )
        self.slack_conversations = Counter(
            "amid_slack_conversations_total",
            "Slack app-mode conversations: parents started, thread replies, parent updates, "
            "and parents posted again after the old one was deleted (restarted).",
            ["handler", "action"],
            registry=r,
        )
        self._prime()

    def prime_digest_handler(self, name: str) -> None:
        for outcome in ("delivered", "failed"):
            self.digests.labels(name, outcome)
        self.digest_events.labels(name)
        self.digest_pending.labels(name)

    def _prime(self) -> None:
        """Create the bounded label sets at zero so dashboards and alerts see them from start."""
        for reason in INVALID_REASONS:
            self.messages_invalid.labels(reason)
        for state in STATES:
            for outcome in EVENT_OUTCOMES:
                self.events.labels(state, outcome)
        for outcome in ("success", "failure"):
            self.config_reloads.labels(outcome)
        for operation in SQS_OPERATIONS:
            for outcome in ("success", "error"):
                self.sqs_requests.labels(operation, outcome)

    def prime_handler(self, name: str) -> None:
        for outcome in ("delivered", "failed", "silenced"):
            self.notifications.labels(name, outcome)
        for outcome in ("success", "error", "timeout"):
            self.handler_attempts.labels(name, outcome)
        self.handler_duration.labels(name)

    def prime_incidents(self, name: str) -> None:
        for action in INCIDENT_ACTIONS:
            self.incidents.labels(name, action)

    def prime_conversations(self, name: str) -> None:
        for action in CONVERSATION_ACTIONS:
            self.slack_conversations.labels(name, action)

    def prime_expectation(self, name: str, handlers: Iterable[str]) -> None:
        self.expectation_overdue.labels(name)
        known = self._expectation_handlers.setdefault(name, set())
        for handler in handlers:
            known.add(handler)
            for status in ("overdue", "recovered"):
                self.expectation_notifications.labels(name, handler, status)

    def forget_expectation(self, name: str) -> None:
        """Drop a removed expectation's series, so alerts stop firing for it."""
        with contextlib.suppress(KeyError):
            self.expectation_overdue.remove(name)
        with contextlib.suppress(KeyError):
            self.expectation_last_seen.remove(name)
        for handler in self._expectation_handlers.pop(name, set()):
            for status in ("overdue", "recovered"):
                with contextlib.suppress(KeyError):
                    self.expectation_notifications.remove(name, handler, status)
