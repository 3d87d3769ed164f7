"""Hostile event fields and hostile templates: data stays data, templates stay in the sandbox.

Event fields come from whoever can name an AMI or make CreateImage fail, so an
ImageId or ErrorMessage may hold shell metacharacters, newlines, `$(...)`,
backticks or a template expression. They must reach a hook's argv, environment
and stdin (and every other handler) literally and run nothing. Templates come
from the config; in the sandbox they can read neither files, nor environment
variables they were not given, nor Python internals: the sandbox refuses, the
default message is sent and the failure is counted (SPEC 3).

tests/test_shell_handler.py calls one ShellHandler directly; here the events
travel through moto's SQS and the whole daemon, and every templated field of
every handler type meets the hostile templates.
"""

from __future__ import annotations

import io
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from amid.aws import AwsClients
from amid.config import parse_config
from amid.events import AmiStateChange
from amid.handlers import HandlerResources, Notification, build_handler
from amid.handlers.console import ConsoleHandler, default_line
from amid.handlers.slack import default_text
from amid.handlers.sns import default_message, default_subject
from amid.metrics import Metrics
from amid.pipeline.decode import decode
from amid.tools.offline import synthetic_event
from tests.handlers.conftest import Receiver
from tests.helpers import make_config, make_queue, queue_count, running_daemon, wait_for

CANARY_NAME = "AMID_TEST_CANARY"
CANARY_VALUE = "canary-ENV-7f3a9c"
PY = sys.executable


def hostile_values(canary: Path) -> list[str]:
    """Strings an attacker might get into an AMI name, id or error message."""
    return [
        f"$(touch {canary})",
        f"`touch {canary}`",
        f"ami-1; touch {canary}",
        f"ami-1 | touch {canary} &",
        f"ami-1 && touch {canary} || true",
        f"ami-1\ntouch {canary}\n",
        "{{ 7*7 }}",
        "{% include '/etc/passwd' %}{{ cycler.__init__.__globals__.os.environ }}",
        "${HOME} $HOME %PATH% $" + CANARY_NAME,
        "--help",
        "-rf *",
        "'\"\\ \t<>&;()[]{}!#~",
        "\u202eevil\u202c ∑ 😀",
    ]


# The hook records what it got: argv, its AMID_* environment and the event on stdin.
RECORDER = (
    "import json, os, sys\n"
    "out = os.path.join(sys.argv[1], os.environ['AMID_EVENT_ID'] + '.json')\n"
    "env = {k: v for k, v in os.environ.items() if k.startswith('AMID_') or k == '"
    + CANARY_NAME
    + "'}\n"
    "json.dump({'argv': sys.argv[2:], 'env': env, 'stdin': json.load(sys.stdin)}, open(out, 'w'))\n"
)


def _event(index: int, image_id: str, error_message: str) -> dict[str, Any]:
    event = synthetic_event("failed", f"ami-{index:017x}")
    event["detail"]["ImageId"] = image_id
    event["detail"]["ErrorMessage"] = error_message
    return event


async def test_hostile_event_fields_reach_every_handler_literally_through_the_daemon(
    sqs: Any,
    moto_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(CANARY_NAME, CANARY_VALUE)
    canary = tmp_path / "pwned"
    values = hostile_values(canary)
    events = [_event(i, value, values[(i + 1) % len(values)]) for i, value in enumerate(values)]
    queue, _ = await make_queue(sqs)
    for event in events:
        await sqs.send_message(QueueUrl=queue, MessageBody=json.dumps(event))

    hooks = tmp_path / "hooks"
    hooks.mkdir()
    command = [
        PY,
        "-c",
        RECORDER,
        str(hooks),
        "{{ image_id }}",
        "{{ error_message }}",
        "{{ detail.ImageId }}",
        "{{ event.detail.ErrorMessage }}",
        "state={{ state }}",
    ]
    receiver = Receiver()
    await receiver.start()
    try:
        handlers = (
            f"  - {{name: hook, type: shell, command: {json.dumps(command)}}}\n"
            f"  - {{name: web, type: webhook, url: '{receiver.url}/hook', content_type: text/plain,"
            " body: '{{ image_id }}|{{ error_message }}'}\n"
            "  - {name: out, type: console, template: '<{{ image_id }}|{{ error_message }}>'}\n"
        )
        async with running_daemon(make_config(queue, moto_url, handlers)) as daemon:
            await wait_for(lambda: len(list(hooks.glob("*.json"))) == len(events), timeout=60)
            await wait_for(lambda: len(receiver.requests) == len(events))

            async def drained() -> bool:
                return await queue_count(sqs, queue) == 0

            await wait_for(drained)
            failures = daemon.metrics.registry.get_sample_value(
                "amid_template_failures_total", {"handler": "hook"}
            )
    finally:
        await receiver.stop()

    console = capsys.readouterr().out
    bodies = {
        request.headers["X-Amid-Event-Id"]: request.body.decode() for request in receiver.requests
    }
    for event in events:
        image, error = event["detail"]["ImageId"], event["detail"]["ErrorMessage"]
        seen = json.loads((hooks / f"{event['id']}.json").read_text())
        assert seen["argv"] == [image, error, image, error, "state=failed"], (
            "one argument each, verbatim"
        )
        assert seen["env"]["AMID_IMAGE_ID"] == image
        assert seen["env"]["AMID_ERROR_MESSAGE"] == error
        assert CANARY_NAME not in seen["env"], "amid's own environment is not passed on"
        assert seen["stdin"] == event
        assert bodies[event["id"]] == f"{image}|{error}", "{{ 7*7 }} in data is not evaluated"
        assert f"[out] <{image}|{error}>" in console
    assert not canary.exists(), "no hostile value ran a command"
    assert not failures, "hostile data is not a template failure"


# --------------------------------------------------------------------------- the sandbox

# Each tries to read the environment, a file or Python internals.
HOSTILE_TEMPLATES = {
    "environ": "{{ environ }}",
    "template-reference-context": "{{ self._TemplateReference__context }}",
    "lipsum-globals": "{{ lipsum.__globals__ }}",
    "lipsum-globals-as-list": "{{ lipsum.__globals__|list }}",
    "lipsum-globals-by-item": "{{ lipsum['__globals__'] }}",
    "lipsum-os-environ": "{{ lipsum.__globals__.os.environ }}",
    "cycler-os-environ": "{{ cycler.__init__.__globals__.os.environ }}",
    "cycler-attr-filter": "{{ cycler|attr('__init__')|attr('__globals__') }}",
    "mro-subclasses": "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "event-class-subclasses": "{{ event.__class__.__base__.__subclasses__() }}",
    "format-globals": "{{ '{0.__init__.__globals__}'.format(cycler) }}",
    "include-passwd": "{% include '/etc/passwd' %}",
    "import-passwd": "{% import '/etc/passwd' as passwd %}{{ passwd }}",
    "extends-passwd": "{% extends '/etc/passwd' %}",
    "mutate-the-event": "{{ event.update({'id': 'forged'}) }}",
}

# An undefined name is no refusal: Jinja renders it empty, as for any missing field.
NOT_A_REFUSAL = {"environ"}

# Unsafe attributes that the sandbox turns into an empty Undefined instead of an error.
SILENT = {
    "template-reference-context",
    "lipsum-globals",
    "lipsum-globals-as-list",
    "lipsum-globals-by-item",
    "cycler-attr-filter",
}

LEAK_MARKERS = (
    CANARY_VALUE,
    "root:x:0",
    "<module",
    "<built-in",
    "<function",
    "<class",
    "<Context",
    "environ(",
    "forged",
    "__builtins__",
)


@dataclass
class Rendered:
    output: str  # what the destination got (or the hook's last argument)
    default: str  # what the destination gets without a template
    failures: float  # how much this send added to amid_template_failures_total


Field = Callable[[str], Awaitable[Rendered]]


def _notification() -> Notification:
    event = decode(json.dumps(_event(7, "ami-0123456789abcdef0", "boom")))
    assert isinstance(event, AmiStateChange)
    return Notification(event, {})


def _config(item: dict[str, Any]) -> Any:
    text = yaml.safe_dump(
        {"queue": {"url": "http://127.0.0.1:1/123456789012/q"}, "handlers": [item]}
    )
    return parse_config(text, env={})


def _failures(metrics: Metrics, name: str) -> float:
    return (
        metrics.registry.get_sample_value("amid_template_failures_total", {"handler": name}) or 0.0
    )


@pytest.fixture
async def fields(
    moto_url: str, sqs: Any, sns: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[dict[str, Field]]:
    """Every templated field of every handler type, as `template -> what was delivered`."""
    monkeypatch.setenv(CANARY_NAME, CANARY_VALUE)
    receiver = Receiver()
    await receiver.start()
    topic = (await sns.create_topic(Name="audit"))["TopicArn"]
    queue = (await sqs.create_queue(QueueName="audit-copy"))["QueueUrl"]
    queue_arn = (await sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"]))[
        "Attributes"
    ]["QueueArn"]
    await sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
    note = _notification()
    async with aiohttp.ClientSession() as http, AwsClients() as aws:

        def build(item: dict[str, Any], metrics: Metrics) -> Any:
            config = _config(item)
            resources = HandlerResources(http=http, aws=aws, metrics=metrics)
            return build_handler(config.handlers[0], config, resources)

        async def console(template: str) -> Rendered:
            metrics = Metrics()
            stream = io.StringIO()
            handler = ConsoleHandler(
                _config({"name": "c", "type": "console", "template": template}).handlers[0],
                metrics,
                stream,
            )
            await handler.send(note)
            return Rendered(
                stream.getvalue(), f"[c] {default_line(note)}\n", _failures(metrics, "c")
            )

        async def shell_argument(template: str) -> Rendered:
            metrics = Metrics()
            out = tmp_path / "argv.json"
            script = "import json, sys; json.dump(sys.argv[2:], open(sys.argv[1], 'w'))"
            handler = build(
                {"name": "h", "type": "shell", "command": [PY, "-c", script, str(out), template]},
                metrics,
            )
            await handler.send(note)
            # A shell argument has no default message: it is passed unrendered.
            return Rendered(json.loads(out.read_text())[-1], template, _failures(metrics, "h"))

        async def slack(key: str, template: str) -> Rendered:
            metrics = Metrics()
            name = f"slack-{key}".replace("_", "-")
            handler = build(
                {
                    "name": name,
                    "type": "slack",
                    "webhook_url": f"{receiver.url}/slack",
                    key: template,
                },
                metrics,
            )
            await handler.send(note)
            text = receiver.requests[-1].json().get("text", "")
            return Rendered(text, default_text(note), _failures(metrics, name))

        async def sns_field(key: str, template: str) -> Rendered:
            metrics = Metrics()
            name = f"sns-{key}"
            handler = build(
                {
                    "name": name,
                    "type": "sns",
                    "topic_arn": topic,
                    "endpoint_url": moto_url,
                    key: template,
                },
                metrics,
            )
            await handler.send(note)
            received = await sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=5)
            [message] = received["Messages"]
            await sqs.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])
            envelope = json.loads(message["Body"])
            if key == "subject":
                return Rendered(
                    envelope.get("Subject", ""), default_subject(note), _failures(metrics, name)
                )
            return Rendered(envelope["Message"], default_message(note), _failures(metrics, name))

        async def webhook(template: str) -> Rendered:
            metrics = Metrics()
            handler = build(
                {"name": "w", "type": "webhook", "url": f"{receiver.url}/hook", "body": template},
                metrics,
            )
            await handler.send(note)
            default = json.dumps(note.event.raw, ensure_ascii=False, separators=(",", ":"))
            return Rendered(receiver.requests[-1].body.decode(), default, _failures(metrics, "w"))

        async def slack_template(template: str) -> Rendered:
            return await slack("template", template)

        async def slack_payload(template: str) -> Rendered:
            return await slack("payload_template", template)

        async def sns_template(template: str) -> Rendered:
            return await sns_field("template", template)

        async def sns_subject(template: str) -> Rendered:
            return await sns_field("subject", template)

        try:
            yield {
                "console.template": console,
                "shell.command": shell_argument,
                "slack.template": slack_template,
                "slack.payload_template": slack_payload,
                "sns.template": sns_template,
                "sns.subject": sns_subject,
                "webhook.body": webhook,
            }
        finally:
            await receiver.stop()


FIELDS = [
    "console.template",
    "shell.command",
    "slack.template",
    "slack.payload_template",
    "sns.template",
    "sns.subject",
    "webhook.body",
]


@pytest.mark.parametrize("field", FIELDS)
async def test_no_hostile_template_reads_the_environment_files_or_python_internals(
    field: str, fields: dict[str, Field]
) -> None:
    for name, template in HOSTILE_TEMPLATES.items():
        rendered = await fields[field](template)
        visible = rendered.output.replace(template, "")  # a shell argument may come back verbatim
        leaked = [marker for marker in LEAK_MARKERS if marker in visible]
        assert not leaked, f"{field} with {name} leaked {leaked}: {rendered.output[:300]!r}"


REFUSED = [name for name in HOSTILE_TEMPLATES if name not in NOT_A_REFUSAL | SILENT]


@pytest.mark.parametrize("field", FIELDS)
async def test_the_sandbox_refuses_and_the_default_is_sent_and_counted(
    field: str, fields: dict[str, Field]
) -> None:
    # A payload must render a JSON object, so there even a silent unsafe access falls back.
    names = REFUSED + (sorted(SILENT) if field == "slack.payload_template" else [])
    for name in names:
        rendered = await fields[field](HOSTILE_TEMPLATES[name])
        assert rendered.output == rendered.default, (
            f"{field} with {name}: {rendered.output[:300]!r}"
        )
        assert rendered.failures == 1, f"{field} with {name} counted {rendered.failures}"


@pytest.mark.parametrize("field", [field for field in FIELDS if field != "slack.payload_template"])
async def test_an_unsafe_attribute_on_its_own_is_refused_too(
    field: str, fields: dict[str, Field]
) -> None:
    for name in sorted(SILENT):
        rendered = await fields[field](HOSTILE_TEMPLATES[name])
        assert (rendered.output, rendered.failures) == (rendered.default, 1), name
