"""The shell handler against real processes: argv, environment, stdin, exit codes, timeouts."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest

from amid.config import ShellHandlerConfig, parse_config
from amid.events import AmiStateChange
from amid.handlers.base import HandlerError, Notification
from amid.handlers.shell import OUTPUT_LIMIT, ShellHandler
from amid.metrics import Metrics
from amid.pipeline.decode import decode
from amid.tools.offline import synthetic_event


def handler_for(command: list[str], env: dict[str, str] | None = None) -> ShellHandler:
    text = json.dumps(
        {
            "queue": {"url": "https://sqs.us-east-1.amazonaws.com/1/q"},
            "handlers": [{"name": "hook", "type": "shell", "command": command, "env": env or {}}],
        }
    )
    handler = parse_config(text, env={}).handlers[0]
    assert isinstance(handler, ShellHandlerConfig)
    return ShellHandler(handler, Metrics())


def notification(**fields: str) -> Notification:
    document = synthetic_event("failed", "ami-00000000000000001")
    document["detail"].update(fields)
    event = decode(json.dumps(document))
    assert isinstance(event, AmiStateChange)
    return Notification(event, {})


PY = sys.executable


async def test_the_hook_gets_argv_environment_and_the_event_on_stdin(tmp_path: Path):
    out = tmp_path / "out.json"
    script = (
        "import json, os, sys; json.dump({'argv': sys.argv[1:], 'stdin': json.load(sys.stdin),"
        " 'env': dict(os.environ)}, open(sys.argv[1], 'w'))"
    )
    handler = handler_for(
        [PY, "-c", script, str(out), "{{ image_id }}", "{{ state }}"], {"EXTRA": "1"}
    )
    note = notification()
    await handler.send(note)
    seen = json.loads(out.read_text())
    assert seen["argv"] == [str(out), "ami-00000000000000001", "failed"]
    assert seen["stdin"] == note.event.raw
    env = seen["env"]
    assert env["AMID_EVENT_ID"] == note.event.id
    assert env["AMID_STATE"] == "failed"
    assert env["AMID_HANDLER"] == "hook"
    assert env["EXTRA"] == "1"
    assert "AWS_SECRET_ACCESS_KEY" not in env, "amid's own environment is not passed on"


async def test_hostile_event_fields_reach_the_hook_literally_and_run_nothing(tmp_path: Path):
    out = tmp_path / "out.json"
    canary = tmp_path / "pwned"
    hostile = f"$(touch {canary}); `touch {canary}` && touch {canary}\n{{{{ 7*7 }}}}"
    script = "import json, os, sys; json.dump([sys.argv[2], os.environ['AMID_ERROR_MESSAGE']], open(sys.argv[1], 'w'))"
    handler = handler_for([PY, "-c", script, str(out), "{{ error_message }}"])
    await handler.send(notification(ErrorMessage=hostile))
    assert json.loads(out.read_text()) == [hostile, hostile]
    assert not canary.exists()


@pytest.mark.parametrize(
    ("code", "retryable", "reason"),
    [(75, True, "exit_75"), (1, False, "exit_1"), (3, False, "exit_other")],
)
async def test_exit_codes_are_classified(code: int, retryable: bool, reason: str):
    handler = handler_for([PY, "-c", f"import sys; sys.exit({code})"])
    with pytest.raises(HandlerError) as caught:
        await handler.send(notification())
    assert (caught.value.retryable, caught.value.reason) == (retryable, reason)


async def test_a_missing_command_is_a_permanent_failure():
    handler = handler_for(["/nonexistent/hook"])
    with pytest.raises(HandlerError) as caught:
        await handler.send(notification())
    assert not caught.value.retryable


async def test_a_timeout_kills_the_whole_process_group_and_leaves_no_zombie(tmp_path: Path):
    pids = tmp_path / "pids"
    script = (
        "import os, sys, time\n"
        "child = os.fork()\n"
        "if child == 0:\n    time.sleep(60); os._exit(0)\n"
        f"open({str(pids)!r}, 'w').write(f'{{os.getpid()}} {{child}}')\n"
        "time.sleep(60)\n"
    )
    handler = handler_for([PY, "-c", script])
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(2):
            await handler.send(notification())
    parent, child = (int(p) for p in pids.read_text().split())
    for pid in (parent, child):
        assert not _alive(pid), f"process {pid} outlived the timeout"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/stat")
    return status.exists() and status.read_text().split()[2] != "Z"


async def test_megabytes_of_output_are_drained_and_capped(tmp_path: Path):
    from structlog.testing import capture_logs

    handler = handler_for([PY, "-c", "import sys; sys.stdout.write('x' * 5_000_000)"])
    with capture_logs() as logs:
        await handler.send(notification())
    output = next(entry["output"] for entry in logs if entry["event"] == "hook finished")
    assert output.startswith("x" * OUTPUT_LIMIT)
    assert len(output) < OUTPUT_LIMIT + 20
