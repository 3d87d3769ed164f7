"""`shell`: run a command as an argument list, never through a shell.

Exit 0 is success, 75 (EX_TEMPFAIL) a retryable failure, anything else
permanent. The command runs in its own process group: on timeout, shutdown or
once the command itself has exited, the whole group is killed and reaped, so
no child and no zombie outlives a delivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from typing import Any

from amid.config import Config, ShellHandlerConfig
from amid.handlers.base import (
    Digest,
    ExpectationNotice,
    HandlerError,
    Notification,
    Sendable,
    single_event,
)
from amid.handlers.notice import notice_context, notice_document
from amid.logs import get_logger
from amid.metrics import Metrics
from amid.templates import TemplateError, digest_context, render, template_context

EX_TEMPFAIL = 75
OUTPUT_LIMIT = 4096
_INHERITED = ("PATH", "HOME", "LANG", "TZ")
# After the command exits, how long to keep reading what its children still write.
_DRAIN_GRACE = 0.5


class ShellHandler:
    def __init__(self, config: ShellHandlerConfig, metrics: Metrics) -> None:
        self.name = config.name
        self._config = config
        self._metrics = metrics
        self._log = get_logger(handler=config.name)

    @classmethod
    def from_config(
        cls, handler: ShellHandlerConfig, config: Config, resources: Any
    ) -> ShellHandler:
        return cls(handler, resources.metrics)

    def _argv(self, context: dict[str, Any]) -> list[str]:
        argv = []
        for argument in self._config.command:
            try:
                argv.append(render(argument, context) if "{" in argument else argument)
            except TemplateError as error:
                self._metrics.template_failures.labels(self.name).inc()
                self._log.warning(
                    "argument template failed; passing it unrendered", error=str(error)
                )
                argv.append(argument)
        return argv

    def _base_environment(self) -> dict[str, str]:
        env = {key: os.environ[key] for key in _INHERITED if key in os.environ}
        env.update(self._config.env)
        return env

    def _environment(self, notification: Notification) -> dict[str, str]:
        event = notification.event
        env = self._base_environment()
        env.update(
            {
                "AMID_EVENT_ID": event.id,
                "AMID_IMAGE_ID": event.image_id,
                "AMID_STATE": event.state,
                "AMID_ERROR_MESSAGE": event.error_message,
                "AMID_REGION": event.region,
                "AMID_ACCOUNT": event.account,
                "AMID_TIME": event.time,
                "AMID_HANDLER": self.name,
            }
        )
        return env

    def _invocation(self, message: Sendable) -> tuple[list[str], dict[str, str], Any]:
        """argv (templates rendered), environment and the JSON for stdin, of any message."""
        if isinstance(message, Digest):
            env = self._base_environment()
            env.update({"AMID_DIGEST_COUNT": str(message.count), "AMID_HANDLER": self.name})
            return self._argv(digest_context(message)), env, message.document()
        if isinstance(message, ExpectationNotice):
            env = self._base_environment()
            env.update(notice_environment(message, self.name))
            return self._argv(notice_context(message)), env, notice_document(message)
        notification = single_event(self.name, message)
        context = template_context(notification.event, dict(notification.image))
        return self._argv(context), self._environment(notification), notification.event.raw

    def render(self, message: Sendable) -> dict[str, Any]:
        argv, env, stdin = self._invocation(message)
        return {
            "argv": argv,
            "env": {k: v for k, v in env.items() if k.startswith("AMID_")},
            "stdin": stdin,
        }

    async def pace(self) -> None:
        return None

    async def send(self, message: Sendable) -> None:
        argv, env, stdin = self._invocation(message)
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
                cwd=self._config.cwd,
                start_new_session=True,  # its own process group, killed as a whole
            )
        except OSError as error:
            raise HandlerError(
                f"cannot start {argv[0]}: {error.strerror}",
                retryable=False,
                reason="not_executable",
            ) from None
        output = bytearray()
        reader = asyncio.create_task(_read_capped(process, output))
        try:
            await _feed_stdin(process, json.dumps(stdin).encode())
            returncode = await process.wait()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_DRAIN_GRACE):
                    await asyncio.shield(reader)
        finally:
            # Runs on success, timeout and shutdown alike: nothing of the hook outlives it.
            _kill_group(process.pid)
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            if process.returncode is None:
                await asyncio.shield(process.wait())
        text = output[:OUTPUT_LIMIT].decode("utf-8", "replace")
        if len(output) > OUTPUT_LIMIT:
            text += "…[cut]"
        self._log.info("hook finished", exit_code=returncode, output=text)
        if returncode == 0:
            return
        if returncode == EX_TEMPFAIL:
            raise HandlerError(
                "hook asked to retry later (exit 75)", retryable=True, reason="exit_75"
            )
        if returncode < 0:
            reason = f"signal_{-returncode}" if -returncode in (9, 15, 6, 11) else "signal"
            raise HandlerError(
                f"hook killed by signal {-returncode}", retryable=False, reason=reason
            )
        reason = f"exit_{returncode}" if returncode in (1, 2, 126, 127) else "exit_other"
        raise HandlerError(f"hook exited {returncode}", retryable=False, reason=reason)

    async def aclose(self) -> None:
        return None


async def _feed_stdin(process: asyncio.subprocess.Process, data: bytes) -> None:
    assert process.stdin is not None  # noqa: S101 - created with stdin=PIPE
    try:
        process.stdin.write(data)
        await process.stdin.drain()
    except (BrokenPipeError, ConnectionResetError):
        pass  # a hook that does not read its stdin is fine
    finally:
        process.stdin.close()


async def _read_capped(process: asyncio.subprocess.Process, output: bytearray) -> None:
    """Keep the first OUTPUT_LIMIT bytes, drain and drop the rest so the hook never blocks."""
    assert process.stdout is not None  # noqa: S101 - created with stdout=PIPE
    while chunk := await process.stdout.read(65536):
        if len(output) <= OUTPUT_LIMIT:
            output.extend(chunk[: OUTPUT_LIMIT + 1 - len(output)])


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def notice_environment(notice: ExpectationNotice, handler: str) -> dict[str, str]:
    """What a hook learns of a notice from its environment (the rest is on stdin)."""
    document = notice_document(notice)
    return {
        "AMID_EXPECTATION": notice.expectation,
        "AMID_EXPECTATION_STATUS": notice.status,
        "AMID_EXPECTATION_DUE": document["due"] or "",
        "AMID_EXPECTATION_LAST_SEEN": document["last_seen"] or "",
        "AMID_HANDLER": handler,
    }
