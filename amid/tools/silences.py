"""`amid silence add | list | expire`: run-time silences, kept in the dedupe store (SPEC 3g).

Pure helpers: the CLI (amid/cli.py) opens the store, calls these and maps
`SilenceRefused` to exit 2. A silence added here reaches every replica at its
next refresh (amid/silences/refresh.py), within 15 s.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from amid.config import SILENCE_LONGEST, Config, parse_duration
from amid.patterns import PatternError, compile_pattern, names_field
from amid.store.base import SilenceRecord
from amid.wording import human_duration, rfc3339


class SilenceRefused(Exception):
    """The command's arguments cannot make a silence (exit 2)."""


def new_silence(
    config: Config,
    *,
    match: str | None,
    image_id: str | None,
    account: str | None,
    handlers: Sequence[str],
    duration: str | None,
    until: str | None,
    comment: str,
    author: str,
    now: float,
) -> SilenceRecord:
    """The silence `amid silence add` keeps, starting `now`; raises SilenceRefused."""
    pattern = _pattern(config, match, image_id, account)
    known = {handler.name for handler in config.handlers}
    unknown = [name for name in handlers if name not in known]
    if unknown:
        raise SilenceRefused("--handler: no handler named " + ", ".join(map(repr, unknown)))
    ends = _end(duration, until, now)
    if not comment.strip():
        raise SilenceRefused("--comment: say why (it is shown with the silence)")
    return SilenceRecord(
        id=secrets.token_hex(6),
        match=pattern,
        handlers=tuple(dict.fromkeys(handlers)),
        starts=now,
        ends=ends,
        author=author.strip() or "unknown",
        comment=comment.strip(),
    )


def _pattern(
    config: Config, match: str | None, image_id: str | None, account: str | None
) -> dict[str, Any]:
    if image_id is not None:
        if not re.fullmatch(r"ami-[0-9a-f]{8,17}", image_id):
            raise SilenceRefused(f"--image-id: {image_id!r} is not an AMI id (ami-...)")
        return {"detail": {"ImageId": [image_id]}}
    if account is not None:
        return {"account": [account]}
    try:
        pattern = json.loads(match or "")
    except ValueError as error:
        raise SilenceRefused(f"--match: not JSON: {error}") from None
    if not isinstance(pattern, dict):
        raise SilenceRefused("--match: must be a JSON object (an EventBridge event pattern)")
    try:
        compile_pattern(pattern)
    except PatternError as error:
        raise SilenceRefused(f"--match: {error}") from None
    if names_field(pattern, "image") and not config.enrich.describe_images:
        raise SilenceRefused("--match: matching on the image needs enrich.describe_images: true")
    return pattern


def _end(duration: str | None, until: str | None, now: float) -> float:
    if duration is not None:
        try:
            seconds = parse_duration(duration)
        except ValueError as error:
            raise SilenceRefused(f"--for: {error}") from None
        ends, option = now + seconds, "--for"
    else:
        try:
            moment = datetime.fromisoformat((until or "").replace("Z", "+00:00"))
        except ValueError:
            raise SilenceRefused(
                f"--until: {until!r} is not an RFC 3339 time (2026-12-06T05:00:00Z)"
            ) from None
        if moment.tzinfo is None:
            raise SilenceRefused("--until: give the offset too (Z or +01:00)")
        ends, option = moment.timestamp(), "--until"
    if ends <= now:
        raise SilenceRefused(f"{option}: the silence would end before it begins")
    if ends - now > SILENCE_LONGEST:
        raise SilenceRefused(
            f"{option}: a silence lasts at most {human_duration(SILENCE_LONGEST)}; "
            "add another when it ends"
        )
    return ends


def describe_match(match: Mapping[str, Any]) -> str:
    return json.dumps(match, separators=(",", ":"), sort_keys=True)


def _when(epoch: float) -> str:
    return rfc3339(datetime.fromtimestamp(epoch, UTC)) or "-"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def table(records: Iterable[SilenceRecord], now: float, *, everything: bool = False) -> str:
    """`amid silence list`: the silences not ended (with `everything`, the ended ones kept)."""
    lines = [("ID", "MATCH", "HANDLERS", "UNTIL", "AUTHOR", "COMMENT")]
    for record in records:
        if record.ends <= now and not everything:
            continue
        until = _when(record.ends) + (" (ended)" if record.ends <= now else "")
        lines.append(
            (
                record.id,
                describe_match(record.match),
                ",".join(record.handlers) or "all",
                until,
                _one_line(record.author),
                _one_line(record.comment),
            )
        )
    if len(lines) == 1:
        return "no silences" + ("" if everything else " active (--all shows those ended)")
    widths = [max(len(line[i]) for line in lines) for i in range(5)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line[:5], widths, strict=True))
        + "  "
        + line[5]
        for line in lines
    )
