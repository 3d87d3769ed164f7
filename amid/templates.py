"""Jinja2 templates in a sandbox, and the context every template sees."""

from __future__ import annotations

import json
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from amid.events import AmiStateChange

if TYPE_CHECKING:
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    from amid.handlers.base import Digest


@lru_cache(maxsize=1)
def _environment() -> ImmutableSandboxedEnvironment:
    """The sandbox, built at the first template: a config without templates never imports
    Jinja2 (a few MiB of the daemon's memory)."""
    from jinja2 import Undefined
    from jinja2.exceptions import SecurityError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class _StrictSandbox(ImmutableSandboxedEnvironment):
        """Refuses, rather than quietly rendering empty, any reach for an unsafe attribute."""

        def unsafe_undefined(self, obj: Any, attribute: str) -> Undefined:
            raise SecurityError(
                f"access to attribute {attribute!r} of {type(obj).__name__} is unsafe"
            )

    environment = _StrictSandbox(undefined=Undefined, autoescape=False, keep_trailing_newline=False)
    environment.filters["tojson"] = lambda value: json.dumps(value, default=str)
    return environment


class TemplateError(ValueError):
    """A template that does not compile (config time) or fails to render (run time)."""


@lru_cache(maxsize=512)
def compile_template(source: str) -> Any:
    """Compile once; a syntax error raises TemplateError (a config error at load)."""
    from jinja2 import TemplateSyntaxError

    try:
        return _environment().from_string(source)
    except TemplateSyntaxError as error:
        raise TemplateError(
            f"template does not compile: {error.message} (line {error.lineno})"
        ) from None


@lru_cache(maxsize=512)
def mentions(source: str, name: str) -> bool:
    """Whether the template reads the variable `name` (e.g. `expectation`, for a notice)."""
    from jinja2 import TemplateSyntaxError, meta

    try:
        return name in meta.find_undeclared_variables(_environment().parse(source))
    except TemplateSyntaxError:
        return False


def template_context(event: AmiStateChange, image: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "event": event.raw,
        "detail": event.detail,
        "image_id": event.image_id,
        "state": event.state,
        "error_message": event.error_message,
        "region": event.region,
        "account": event.account,
        "time": event.time,
        "console_url": event.console_url,
        "image": image or {},
        "digest": False,
    }


def digest_context(digest: Digest) -> dict[str, Any]:
    """What a template of a digest sees: `events` (each the single-event context), `count`,
    `group` (each `group_by` path -> its value) and `digest` = true."""
    return {
        "events": [template_context(n.event, dict(n.image)) for n in digest.notifications],
        "count": digest.count,
        "group": dict(digest.group),
        "digest": True,
    }


def render(source: str, context: dict[str, Any]) -> str:
    """Render a template; any failure (sandbox refusal included) raises TemplateError."""
    try:
        return str(compile_template(source).render(context))
    except TemplateError:
        raise
    except Exception as error:  # noqa: BLE001 - any template failure falls back to the default
        raise TemplateError(f"template failed: {type(error).__name__}: {error}") from None
