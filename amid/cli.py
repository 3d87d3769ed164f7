"""The command line: the only place that touches signals, sys.exit and exit codes."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from amid import __version__
from amid.config import (
    Config,
    ConfigError,
    PagerDutyHandlerConfig,
    SlackHandlerConfig,
    default_config_path,
    load_config,
)
from amid.logs import configure_logging

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
STATES = ("available", "failed", "deregistered", "disabled")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="amid", description="The AMI event daemon: EC2 AMI state changes from SQS to handlers."
    )
    parser.add_argument("--version", action="version", version=f"amid {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_config(sub: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sub.add_argument(
            "-c",
            "--config",
            type=Path,
            default=None,
            help="config file (default: $AMID_CONFIG, then /etc/amid/amid.yaml)",
        )
        return sub

    with_config(commands.add_parser("run", help="run the daemon"))
    check = with_config(commands.add_parser("check-config", help="validate the config file"))
    check.add_argument(
        "--explain",
        type=Path,
        metavar="EVENT.json",
        help="show which handlers this event would reach, and why the others would not",
    )
    check.add_argument(
        "--image",
        type=Path,
        metavar="IMAGE.json",
        help="with --explain: the image object patterns on `image` are held against",
    )
    test = with_config(commands.add_parser("test-event", help="send one synthetic event"))
    test.add_argument("--state", default="available", help="AMI state (default: available)")
    test.add_argument("--image-id", default="ami-0123456789abcdef0")
    test.add_argument("--handler", help="only this handler, whatever its match")
    test.add_argument("--dry-run", action="store_true", help="print payloads, send nothing")
    replay = with_config(commands.add_parser("replay", help="handle events from files"))
    replay.add_argument("--no-dedupe", action="store_true", help="ignore the delivery ledger")
    replay.add_argument("files", nargs="+", help="JSON, JSON array or JSON lines; - for stdin")
    doctor = with_config(
        commands.add_parser(
            "doctor", help="check the queue, its policy, the EventBridge rule, topics and table"
        )
    )
    doctor.add_argument(
        "--member-account",
        action="append",
        default=[],
        type=_account_id,
        metavar="ACCOUNT",
        help="also check this member account's forwarding rule and role (repeatable)",
    )
    doctor.add_argument(
        "--member-role",
        default="OrganizationAccountAccessRole",
        metavar="NAME",
        help="the role doctor assumes in each member account (default: %(default)s)",
    )
    doctor.add_argument(
        "--member-region",
        action="append",
        default=[],
        metavar="REGION",
        help="a region to check in the member accounts (repeatable; default: the bus's region)",
    )
    doctor.add_argument(
        "--account",
        action="append",
        default=[],
        metavar="A",
        help="with enrich.role_arn: check the role can be assumed in this account (repeatable)",
    )
    demo = commands.add_parser("demo", help="the whole pipeline locally, no AWS account needed")
    demo.add_argument("--forever", action="store_true", help="keep the demo running")
    with_config(
        commands.add_parser(
            "expectations", help="each expectation's last match, next due time and status"
        )
    )
    _silence_parser(commands, with_config)
    history = with_config(
        commands.add_parser("history", help="what amid did with each event, newest first")
    )
    history.add_argument("--image-id", metavar="ID", help="only this image's events")
    history.add_argument("--event-id", metavar="ID", help="only this event")
    history.add_argument("--handler", metavar="NAME", help="only events that matched this handler")
    history.add_argument("--since", metavar="D", help="received within this duration (2h, 7d)")
    history.add_argument("--limit", metavar="N", help="at most N events (default 50)")
    history.add_argument("--json", action="store_true", help="one JSON object per line")
    dedupe = commands.add_parser("dedupe", help="dedupe store helpers")
    dedupe_commands = dedupe.add_subparsers(dest="dedupe_command", required=True)
    with_config(dedupe_commands.add_parser("create-table", help="create the DynamoDB table"))
    images = commands.add_parser("images", help="image memory helpers")
    images_commands = images.add_subparsers(dest="images_command", required=True)
    sync = with_config(
        images_commands.add_parser("sync", help="remember the images that exist now")
    )
    sync.add_argument(
        "--region",
        action="append",
        default=[],
        metavar="R",
        help="a region to sync (repeatable; default: the queue's)",
    )
    sync.add_argument(
        "--account",
        action="append",
        default=[],
        metavar="A",
        help="sync this account's images through enrich.role_arn (repeatable; default: amid's own)",
    )
    return parser


def _silence_parser(commands: Any, with_config: Any) -> None:
    silence = commands.add_parser("silence", help="silences at run time: add, list, expire")
    actions = silence.add_subparsers(dest="silence_command", required=True)
    add = with_config(actions.add_parser("add", help="hold matching events; prints the id"))
    what = add.add_mutually_exclusive_group(required=True)
    what.add_argument("--match", metavar="PATTERN_JSON", help="an EventBridge event pattern")
    what.add_argument("--image-id", metavar="ID", help="this image's events")
    what.add_argument("--account", type=_account_id, metavar="ID", help="this account's events")
    add.add_argument(
        "--handler", action="append", default=[], metavar="NAME", help="(repeatable; default: all)"
    )
    until = add.add_mutually_exclusive_group(required=True)
    until.add_argument("--for", dest="duration", metavar="DURATION", help="e.g. 2h, 7d (<= 90d)")
    until.add_argument("--until", metavar="RFC3339", help="e.g. 2026-12-06T05:00:00Z")
    add.add_argument("--comment", required=True, help="why; shown by list")
    add.add_argument("--author", default=None, help="default: the login name")
    listing = with_config(actions.add_parser("list", help="the silences active or to come"))
    listing.add_argument("--all", action="store_true", help="also those ended (kept 7 days)")
    expire = with_config(actions.add_parser("expire", help="end a silence now"))
    expire.add_argument("id", metavar="ID")


def _account_id(value: str) -> str:
    if len(value) != 12 or not value.isdigit():
        raise argparse.ArgumentTypeError(f"{value!r} is not a 12-digit AWS account id")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "demo":
            from amid.tools.demo import run_demo

            return asyncio.run(run_demo(forever=args.forever))
        config_path: Path = args.config or default_config_path()
        config = load_config(config_path)
    except ConfigError as error:
        for problem in error.problems:
            print(problem, file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    configure_logging(config.logging.level, config.logging.format)
    if args.command == "run":
        return _run(config, config_path)
    if args.command == "check-config":
        return _check_config(config, config_path, args.explain, args.image)
    if args.command == "test-event":
        return asyncio.run(_test_event(config, args))
    if args.command == "replay":
        bodies = _read_bodies(args.files)
        return (
            EXIT_USAGE if bodies is None else asyncio.run(_replay(config, bodies, args.no_dedupe))
        )
    if args.command == "doctor":
        return asyncio.run(_doctor(config, args))
    if args.command == "expectations":
        return _expectations(config)
    if args.command == "silence":
        return _silence(config, args)
    if args.command == "history":
        return asyncio.run(_history(config, args))
    if args.command == "dedupe":
        return asyncio.run(_create_table(config))
    if args.command == "images":
        return asyncio.run(_sync_images(config, args.region, args.account))
    raise AssertionError(args.command)  # pragma: no cover - argparse rejects the rest


def _run(config: Config, config_path: Path) -> int:
    from amid.daemon import Daemon, StartupError
    from amid.eventloop import EventLoopError, loop_factory, run

    try:
        factory = loop_factory()
    except EventLoopError as error:
        print(str(error), file=sys.stderr)
        return EXIT_USAGE

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        stop, reload = asyncio.Event(), asyncio.Event()

        def on_stop(signum: int) -> None:
            if stop.is_set():
                os._exit(128 + signum)  # a second signal forces the exit
            stop.set()

        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, on_stop, signum)
        loop.add_signal_handler(signal.SIGHUP, reload.set)
        await Daemon(config, stop=stop, reload=reload, config_path=config_path).run()

    try:
        run(serve(), factory)
    except StartupError as error:
        print(str(error), file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK


def _check_config(config: Config, path: Path, explain: Path | None, image: Path | None) -> int:
    if explain is not None:
        from amid.patterns import names_field
        from amid.tools.explain import (
            describe_plan,
            explain_routes,
            explain_silences,
            format_explanation,
        )

        try:
            event = json.loads(explain.read_text(encoding="utf-8"))
            facts = json.loads(image.read_text(encoding="utf-8")) if image is not None else None
        except (OSError, ValueError) as error:
            print(f"{explain}: cannot read the event or image: {error}", file=sys.stderr)
            return EXIT_USAGE
        if facts is not None and not isinstance(facts, dict):
            print(f"{image}: the image must be a JSON object", file=sys.stderr)
            return EXIT_USAGE
        if any(h.match is not None and names_field(h.match, "image") for h in config.handlers):
            print(describe_plan(config, event, facts))
        routes = explain_routes(config, event, facts)
        print(format_explanation(routes))
        reached = [route.handler for route in routes if route.matched]
        for line in explain_silences(config, event, facts, reached, time.time()):
            print(line)
        return EXIT_OK
    print(f"{path}: valid")
    print(
        f"  queue: {config.queue.url} ({config.queue.pollers} pollers, "
        f"{config.queue.max_in_flight} in flight, on_invalid={config.queue.on_invalid})"
    )
    dedupe = config.dedupe
    where = {"sqlite": str(dedupe.path), "dynamodb": dedupe.table, "memory": "in process"}
    print(f"  dedupe: {dedupe.backend} ({where[dedupe.backend]}), ttl {dedupe.ttl:g}s")
    print(f"  metrics: {config.metrics.listen}")
    print(f"  handlers ({len(config.handlers)}):")
    for handler in config.handlers:
        match = json.dumps(handler.match) if handler.match else "every AMI event"
        retry = config.retry_for(handler)
        print(
            f"    - {handler.name} ({handler.type}): {match}; timeout "
            f"{config.timeout_for(handler):g}s, {retry.attempts} attempts"
        )
        if isinstance(handler, PagerDutyHandlerConfig):
            print(f"      {handler.summary()}")
        if handler.digest is not None:
            digest = handler.digest
            print(
                f"      digest: groups by {', '.join(digest.group_by) or 'nothing (one group)'}; "
                f"sent {digest.wait:g}s after a group's first event, or at {digest.max_events} "
                "events"
            )
        if isinstance(handler, SlackHandlerConfig) and handler.app:
            from amid.wording import human_duration

            keep = config.enrich.remember or 30 * 86400.0
            print(
                f"      slack app: channel {handler.channel}, one conversation per "
                f"{handler.thread_by!r}, kept {human_duration(keep)} after last use "
                f"({handler.api_url})"
            )
    _summarise_expectations(config)
    _summarise_silences(config)
    return EXIT_OK


def _summarise_expectations(config: Config) -> None:
    from amid.expectations import Expectation
    from amid.wording import human_duration

    if config.expectations:
        print(f"  expectations ({len(config.expectations)}):")
    for item in config.expectations:
        match = json.dumps(item.match) if item.match else "every AMI event"
        recovery = "recovered too" if item.recovery else "no recovered notice"
        print(
            f"    - {item.name}: {Expectation.from_config(item).expected}, "
            f"grace {human_duration(item.grace)}; {match}; "
            f"notify {', '.join(item.notify)}, {recovery}"
        )


def _summarise_silences(config: Config) -> None:
    from amid.silences.window import Window
    from amid.tools.explain import when_active

    if config.silences:
        print(f"  silences ({len(config.silences)}):")
    for item in config.silences:
        holds = (
            json.dumps(item.match)
            if item.match
            else f"overdue notices of {', '.join(item.expectations or ())}"
        )
        window = Window(item.schedule, item.duration, item.zone)
        handlers = ", ".join(item.handlers or ["every handler"])
        print(
            f"    - {item.name}: holds {holds} for {handlers}; "
            f"{window.describe()}; {when_active(window, time.time())}"
        )


def _expectations(config: Config) -> int:
    if config.dedupe.backend == "memory":
        print(
            "dedupe.backend is memory: expectation state lives only inside the running amid, "
            "so there is nothing to read (use sqlite or dynamodb)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if not config.expectations:
        print("no expectations in the config")
        return EXIT_OK
    return asyncio.run(_print_expectations(config))


async def _print_expectations(config: Config) -> int:
    import time

    from amid.aws import AwsClients
    from amid.store import LedgerUnavailable, open_store
    from amid.tools.expectations import rows, table

    try:
        async with AwsClients() as aws:
            store = await open_store(config.dedupe, aws, config.queue.resolved_region)
            try:
                found = await rows(config, store, time.time())
            finally:
                await store.aclose()
    except LedgerUnavailable as error:
        print(f"dedupe: cannot read the {config.dedupe.backend} store: {error}", file=sys.stderr)
        return EXIT_FAILED
    print(table(found))
    return EXIT_OK


def _silence(config: Config, args: argparse.Namespace) -> int:
    import getpass

    from amid.tools.silences import SilenceRefused, new_silence

    if config.dedupe.backend == "memory":
        print(
            "dedupe.backend is memory: a silence kept there would live only inside this "
            "command, and no amid would see it (use sqlite or dynamodb)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    now = time.time()
    record = None
    if args.silence_command == "add":
        try:
            record = new_silence(
                config,
                match=args.match,
                image_id=args.image_id,
                account=args.account,
                handlers=args.handler,
                duration=args.duration,
                until=args.until,
                comment=args.comment,
                author=args.author if args.author is not None else _login(getpass.getuser),
                now=now,
            )
        except SilenceRefused as error:
            print(f"silence add: {error}", file=sys.stderr)
            return EXIT_USAGE
    return asyncio.run(_silence_in_store(config, args, record, now))


def _login(getuser: Any) -> str:
    try:
        return str(getuser())
    except (OSError, KeyError):  # no user name in this container
        return "unknown"


async def _silence_in_store(
    config: Config, args: argparse.Namespace, record: Any, now: float
) -> int:
    from amid.aws import AwsClients
    from amid.store import LedgerUnavailable, open_store
    from amid.tools.silences import table

    try:
        async with AwsClients() as aws:
            store = await open_store(config.dedupe, aws, config.queue.resolved_region)
            try:
                if record is not None:
                    await store.add_silence(record)
                    print(record.id)
                elif args.silence_command == "list":
                    print(table(await store.silences(), now, everything=args.all))
                elif await store.expire_silence(args.id, now) is None:
                    print(f"silence expire: no silence with id {args.id!r}", file=sys.stderr)
                    return EXIT_USAGE
                else:
                    print(f"silence {args.id} ended; every amid lets its events through within 15s")
            finally:
                await store.aclose()
    except LedgerUnavailable as error:
        print(f"dedupe: cannot use the {config.dedupe.backend} store: {error}", file=sys.stderr)
        return EXIT_FAILED
    except ValueError as error:  # the new id was taken (a 1 in 2^48 chance): run it again
        print(f"silence add: {error}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


async def _history(config: Config, args: argparse.Namespace) -> int:
    import time

    from amid.aws import AwsClients
    from amid.history import QueryError, find, query_of
    from amid.store import LedgerUnavailable, open_store
    from amid.tools.history import json_lines, lines

    if config.dedupe.backend == "memory":
        print(
            "dedupe.backend is memory: the record lives only inside the running amid "
            "(see its status page, metrics.ui), so there is nothing to read here",
            file=sys.stderr,
        )
        return EXIT_USAGE
    try:
        query = query_of(
            now=time.time(),
            image_id=args.image_id,
            event_id=args.event_id,
            handler=args.handler,
            since=args.since,
            limit=args.limit,
        )
    except QueryError as error:
        print(f"amid history: {error}", file=sys.stderr)
        return EXIT_USAGE
    try:
        async with AwsClients() as aws:
            store = await open_store(config.dedupe, aws, config.queue.resolved_region)
            try:
                found = await find(store, query)
            finally:
                await store.aclose()
    except LedgerUnavailable as error:
        print(f"dedupe: cannot read the {config.dedupe.backend} store: {error}", file=sys.stderr)
        return EXIT_FAILED
    for line in json_lines(found) if args.json else lines(found):
        print(line)
    return EXIT_OK


async def _test_event(config: Config, args: argparse.Namespace) -> int:
    from amid.tools.offline import offline_runtime, synthetic_event, test_event

    if args.handler and args.handler not in {h.name for h in config.handlers}:
        print(f"--handler: no handler named {args.handler!r}", file=sys.stderr)
        return EXIT_USAGE
    event = synthetic_event(
        state=args.state, image_id=args.image_id, region=config.queue.resolved_region or "us-east-1"
    )
    print(f"event {event['id']}: {args.image_id} {args.state}")
    async with offline_runtime(config) as run:
        results = list(await test_event(run, event, args.handler, args.dry_run))
    if not results:
        print("no handler matches this event")
        return EXIT_FAILED
    ok = True
    for name, result in results:
        if args.dry_run:
            rendered = result if isinstance(result, str) else json.dumps(result, indent=2)
            print(f"--- {name} (dry run)\n{rendered}")
        elif result.delivered:
            print(f"✓ {name}: delivered after {result.attempts} attempt(s)")
        else:
            ok = False
            print(f"✗ {name}: failed after {result.attempts} attempt(s): {result.reason}")
    return EXIT_OK if ok else EXIT_FAILED


def _read_bodies(files: Sequence[str]) -> list[str] | None:
    from amid.tools.offline import bodies_from_text

    bodies: list[str] = []
    for name in files:
        try:
            text = sys.stdin.read() if name == "-" else Path(name).read_text(encoding="utf-8")
        except OSError as error:
            print(f"{name}: {error.strerror}", file=sys.stderr)
            return None
        bodies.extend(bodies_from_text(text))
    return bodies


async def _replay(config: Config, bodies: list[str], no_dedupe: bool) -> int:
    from amid.tools.offline import offline_runtime, replay

    async with offline_runtime(config, with_store=not no_dedupe) as run:
        outcomes = await replay(run, bodies, use_dedupe=not no_dedupe)
    ok = True
    for outcome in outcomes:
        what = _describe_outcome(outcome)
        ok = ok and outcome.label in ("handled", "duplicate", "ignored")
        print(what)
    print(
        f"{len(outcomes)} message(s): "
        + ", ".join(
            f"{label} {sum(o.label == label for o in outcomes)}"
            for label in ("handled", "duplicate", "ignored", "retry", "deferred", "invalid")
            if any(o.label == label for o in outcomes)
        )
    )
    return EXIT_OK if ok else EXIT_FAILED


def _describe_outcome(outcome: Any) -> str:
    if outcome.event is None:
        return f"{outcome.label}: {outcome.reason or ''}".rstrip(": ")
    event = outcome.event
    line = f"{outcome.label}: {event.id} {event.image_id} {event.state}"
    failed = [r.handler for r in outcome.results if not r.delivered]
    delivered = [r.handler for r in outcome.results if r.delivered and r.silence is None]
    silenced = [f"{r.handler} ({r.silence})" for r in outcome.results if r.silence is not None]
    if delivered:
        line += f" -> {', '.join(delivered)}"
    if silenced:
        line += f"; silenced: {', '.join(silenced)}"
    if failed:
        line += f"; failed: {', '.join(failed)}"
    return line


async def _doctor(config: Config, args: argparse.Namespace) -> int:
    from amid.aws import AwsClients
    from amid.tools.doctor import MemberTarget, diagnose, report, role_checks

    members = [
        MemberTarget(account, args.member_role, tuple(args.member_region))
        for account in args.member_account
    ]
    async with AwsClients() as aws:
        checks = await diagnose(config, aws, members)
        checks.extend(await role_checks(config, aws, args.account))
        text, healthy = report(checks)
    print(text)
    return EXIT_OK if healthy else EXIT_FAILED


async def _create_table(config: Config) -> int:
    from amid.aws import AwsClients
    from amid.store.dynamodb import create_table

    async with AwsClients() as aws:
        client = await aws.client("dynamodb", config.queue.resolved_region)
        await create_table(client, config.dedupe.table)
    print(f"table {config.dedupe.table} is ready")
    return EXIT_OK


async def _sync_images(config: Config, regions: Sequence[str], accounts: Sequence[str]) -> int:
    from amid.aws import AwsClients
    from amid.store import LedgerUnavailable, open_store
    from amid.tools.images import SyncRefused, check_syncable, sync_images

    if accounts and config.enrich.role_arn is None:
        print("--account: needs enrich.role_arn, the role to assume there", file=sys.stderr)
        return EXIT_USAGE
    try:
        check_syncable(config)
    except SyncRefused as error:
        print(f"images sync: {error}", file=sys.stderr)
        return EXIT_USAGE
    async with AwsClients() as aws:
        try:
            store = await open_store(config.dedupe, aws, config.queue.resolved_region)
        except LedgerUnavailable as error:
            print(
                f"dedupe: cannot open the {config.dedupe.backend} store: {error}", file=sys.stderr
            )
            return EXIT_USAGE
        try:
            summary = await sync_images(
                config,
                aws,
                store,
                regions=regions,
                accounts=accounts,
                progress=lambda line: print(line, flush=True),
            )
        except Exception as error:  # noqa: BLE001 - one line, not a traceback, for the operator
            print(f"images sync failed: {type(error).__name__}: {error}", file=sys.stderr)
            return EXIT_FAILED
        finally:
            await store.aclose()
    print(summary.line())
    return EXIT_OK
