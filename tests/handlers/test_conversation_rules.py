"""The conversation rules (SPEC 3d) as a pure function over Slack's answers: no I/O."""

from __future__ import annotations

import pytest

from amid.handlers.base import HandlerError
from amid.handlers.conversation import PARENT_GONE, PERMANENT, Answer, after, failure, opening
from amid.store.base import Conversation

OK = Answer(ok=True, channel="C1", ts="1.000100")
NOW = 1_750_000_000.0
STARTED = Conversation(
    channel="C1", ts="1.000100", history=((1.0, "available"),), replies=(("e1", "1"),)
)


class TestOpening:
    def test_a_key_without_a_conversation_is_claimed(self) -> None:
        assert opening(None, "e1", "me", NOW) == "claim"

    def test_a_key_another_copy_is_posting_waits_for_its_ts(self) -> None:
        claimed = Conversation(owner="other", claimed_until=NOW + 10)
        assert opening(claimed, "e2", "me", NOW) == "wait"

    def test_a_claim_that_ran_out_is_taken_over(self) -> None:
        claimed = Conversation(owner="other", claimed_until=NOW - 1)
        assert opening(claimed, "e2", "me", NOW) == "claim"

    def test_a_released_key_is_claimed_again(self) -> None:
        assert opening(Conversation(), "e2", "me", NOW) == "claim"

    def test_a_later_event_replies(self) -> None:
        assert opening(STARTED, "e2", "me", NOW) == "reply"

    def test_an_event_already_replied_only_updates(self) -> None:
        replied = Conversation(channel="C1", ts="1.0", replies=(("e2", "2.0"),))
        assert opening(replied, "e2", "me", NOW) == "update"


class TestAfter:
    def test_a_started_parent_is_the_delivery(self) -> None:
        assert after("start", OK) is None

    def test_a_reply_is_followed_by_the_update(self) -> None:
        assert after("reply", OK) == "update"
        assert after("update", OK) is None
        assert after("restart", OK) is None

    @pytest.mark.parametrize("code", sorted(PARENT_GONE))
    @pytest.mark.parametrize("call", ["reply", "update"])
    def test_a_deleted_parent_restarts_the_conversation(self, call: str, code: str) -> None:
        assert after(call, Answer(ok=False, error=code)) == "restart"  # type: ignore[arg-type]

    def test_a_deleted_parent_answer_to_a_new_post_is_a_failure(self) -> None:
        with pytest.raises(HandlerError) as raised:
            after("start", Answer(ok=False, error="message_not_found"))
        assert raised.value.retryable

    @pytest.mark.parametrize("code", sorted(PERMANENT))
    @pytest.mark.parametrize("call", ["start", "reply", "update"])
    def test_auth_and_channel_errors_are_permanent(self, call: str, code: str) -> None:
        with pytest.raises(HandlerError) as raised:
            after(call, Answer(ok=False, error=code))  # type: ignore[arg-type]
        assert not raised.value.retryable
        assert raised.value.reason == f"slack_{code}"
        assert code in str(raised.value)


class TestFailure:
    def test_ratelimited_honours_retry_after(self) -> None:
        error = failure("reply", Answer(ok=False, error="ratelimited", status=429, retry_after=7))
        assert (error.retryable, error.reason, error.retry_after) == (True, "slack_ratelimited", 7)

    def test_an_ok_false_without_429_is_retried(self) -> None:
        error = failure("update", Answer(ok=False, error="internal_error"))
        assert error.retryable and error.reason == "slack_error"
        assert "internal_error" in str(error)

    def test_5xx_is_retried(self) -> None:
        error = failure("start", Answer(ok=False, status=503, retry_after=2))
        assert error.retryable and error.reason == "http_503" and error.retry_after == 2

    def test_another_4xx_is_permanent(self) -> None:
        error = failure("start", Answer(ok=False, status=404))
        assert not error.retryable and error.reason == "http_404"

    def test_a_strange_error_code_is_cut_to_printable_characters(self) -> None:
        error = failure("start", Answer(ok=False, error="x<!channel>\n" + "y" * 200))
        assert "<" not in str(error) and "\n" not in str(error)
        assert len(str(error)) < 120
