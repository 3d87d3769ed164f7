"""The rules of a Slack conversation (SPEC 3d), pure: no I/O, unit-tested on their own.

A key's first event posts the parent (`start`); each later event replies in its thread
(`reply`) and then updates the parent (`update`), so the channel shows the current state
and the history line. The reply is the delivery and is sent once: an event whose reply is
already in the thread only updates. A deleted parent (`message_not_found`,
`thread_not_found`, `cant_update_message`) starts the key's conversation again
(`restart`: a new parent). Every other answer Slack gives is classified as a HandlerError
that says whether a retry can help.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from amid.handlers.base import HandlerError
from amid.store.base import Conversation

Call = Literal["start", "reply", "update", "restart"]
Opening = Literal["claim", "wait", "reply", "update"]

PARENT_GONE = frozenset({"message_not_found", "thread_not_found", "cant_update_message"})
PERMANENT = frozenset(
    {
        "invalid_auth",
        "not_authed",
        "token_revoked",
        "account_inactive",
        "channel_not_found",
        "not_in_channel",
        "missing_scope",
        "is_archived",
    }
)
RATE_LIMITED = "ratelimited"


@dataclass(frozen=True, slots=True)
class Answer:
    """What Slack answered one Web API call: HTTP 200 with `ok: false` is a failure."""

    ok: bool
    error: str = ""  # Slack's error code when not ok
    status: int = 200
    retry_after: float | None = None  # Retry-After, in seconds
    channel: str = ""  # a posted message's channel id and ts
    ts: str = ""


def opening(conversation: Conversation | None, event_id: str, owner: str, now: float) -> Opening:
    """What an event of the key does first.

    `claim` the key when no parent exists and nobody else is posting one (their claim ran
    out: they crashed); `wait` for the other poster's ts; `reply` in the thread; `update`
    alone when this event's reply is in the thread already (the update failed after it).
    """
    if conversation is None or not conversation.started:
        if (
            conversation is None
            or conversation.owner in (None, owner)
            or conversation.claimed_until <= now
        ):
            return "claim"
        return "wait"
    if conversation.reply_to(event_id) is not None:
        return "update"
    return "reply"


def after(call: Call, answer: Answer) -> Call | None:
    """The next call once `call` got `answer`; None when the event is delivered.

    Raises the classified HandlerError when the answer is a failure that is not a
    deleted parent.
    """
    if answer.ok:
        return "update" if call == "reply" else None
    if call in ("reply", "update") and answer.error in PARENT_GONE:
        return "restart"
    raise failure(call, answer)


_METHODS = {
    "start": "chat.postMessage",
    "restart": "chat.postMessage",
    "reply": "chat.postMessage",
    "update": "chat.update",
}


def failure(call: Call, answer: Answer) -> HandlerError:
    """A failed answer as a HandlerError: permanent for auth and channel errors, retryable
    (honouring Retry-After) for rate limits, 5xx and everything else. Names Slack's error
    code, never the token."""
    what = f"slack {_METHODS[call]}"
    if answer.status == 429 or answer.error == RATE_LIMITED:
        return HandlerError(
            f"{what} was rate limited",
            retryable=True,
            reason="slack_ratelimited",
            retry_after=answer.retry_after,
        )
    if answer.error in PERMANENT:
        return HandlerError(
            f"{what} answered {answer.error}", retryable=False, reason=f"slack_{answer.error}"
        )
    if answer.status != 200:
        return HandlerError(
            f"{what} answered HTTP {answer.status}",
            retryable=answer.status >= 500 or answer.status in (408,),
            reason=f"http_{answer.status}" if 100 <= answer.status < 600 else "http_other",
            retry_after=answer.retry_after,
        )
    code = answer.error or "no error code"
    return HandlerError(f"{what} answered {_printable(code)}", retryable=True, reason="slack_error")


def _printable(code: str) -> str:
    return "".join(c for c in code if c.isalnum() or c in "_-.")[:64] or "an unreadable error"
