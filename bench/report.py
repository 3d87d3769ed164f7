"""docs/benchmarks.md and its plot, from one results file of `python -m bench`."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

from bench.common import DOCS

FIGURE = DOCS / "benchmarks" / "throughput-latency.png"
# On (nearly) every stack, so they say nothing about where the time goes.
_FRAMEWORK = {"asyncio.base_events", "asyncio.runners", "asyncio.events", "amid", "amid.cli"}
_FRAMEWORK |= {"threading", "amid.daemon", "<string>"}
_FRAME = re.compile(r"^(?P<function>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def profile_summary(raw: Path, top: int = 12) -> dict[str, Any]:
    """py-spy's collapsed stacks -> the top functions by own time and the top modules by
    inclusive time (a sample counts once for each module on its stack)."""
    own: Counter[str] = Counter()
    modules: Counter[str] = Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():  # py-spy can write stray bytes
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [_frame(frame) for frame in stack.split(";")]
        own[frames[-1][0]] += count
        for module in {module for _, module in frames}:
            modules[module] += count
    return {
        "samples": total,
        "own": [(name, count / total * 100) for name, count in own.most_common(top)],
        "inclusive": [
            (name, count / total * 100)
            for name, count in modules.most_common()
            if name not in _FRAMEWORK
        ][: top * 2],
    }


def _frame(frame: str) -> tuple[str, str]:
    """(function at module, module) for one py-spy frame."""
    match = _FRAME.match(frame.strip())
    if match is None:
        return frame, frame
    path = match["file"]
    for marker in ("site-packages/", "lib/python3.11/", "/work/main/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    module = path.removesuffix(".py").replace("/", ".").removesuffix(".__init__")
    return f"{match['function']} ({module})", module


def fmt(spread: dict[str, float], digits: int = 0) -> str:
    if not spread or spread.get("median") != spread.get("median"):
        return "n/a"
    return (
        f"**{spread['median']:,.{digits}f}** ({spread['min']:,.{digits}f}-"
        f"{spread['max']:,.{digits}f})"
    )


COLORS = {"limit": "#9e9e9e", "limit_post": "#616161", "amid": "#1f77b4", "peer": "#ff7f0e"}
BAR_LABELS = {
    "limit": "limit\n(receive+delete)",
    "limit_post": "limit+POST\n(+ POST each)",
    "amid": "amid\n(sqlite + webhook)",
    "peer": "peer\n(sqs-consumer)",
}
COLUMNS = ("limit", "limit_post", "amid", "peer")
HEADINGS = {"limit": "limit", "limit_post": "limit+POST", "amid": "amid", "peer": "peer"}


def _bar(axes: Any, x: float, spread: dict[str, float], width: float, **style: Any) -> None:
    axes.bar(x, spread["median"], width, **style)
    axes.errorbar(
        x,
        spread["median"],
        yerr=[[spread["median"] - spread["min"]], [spread["max"] - spread["median"]]],
        color="black",
        capsize=4,
    )


def plot(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = [k for k in COLUMNS if f"{k}_events_per_s" in summary]
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for index, kind in enumerate(kinds):
        spread = summary[f"{kind}_events_per_s"]
        _bar(left, index, spread, 0.8, color=COLORS[kind])
        left.text(index, spread["median"], f"{spread['median']:,.0f}", ha="center", va="bottom")
    left.set_xticks(range(len(kinds)), [BAR_LABELS[k] for k in kinds], fontsize=8)
    left.set_ylabel("events/s (median, min-max)")
    left.set_title("Burst throughput")
    latency_kinds = [k for k in ("limit_post", "amid", "peer") if summary.get(f"{k}_p50_ms")]
    width = 0.8 / len(latency_kinds)
    for index, kind in enumerate(latency_kinds):
        offset = (index - (len(latency_kinds) - 1) / 2) * width
        for position, figure_name in enumerate(("p50_ms", "p99_ms")):
            spread = summary[f"{kind}_{figure_name}"]
            label = {"limit_post": "limit+POST"}.get(kind, kind) if position == 0 else None
            _bar(right, position + offset, spread, width, color=COLORS[kind], label=label)
            right.text(
                position + offset,
                spread["median"],
                f"{spread['median']:.1f}",
                ha="center",
                va="bottom",
                fontsize=8,
            )
    right.set_xticks(range(2), ["p50", "p99"])
    right.set_ylabel("ms, message sent → POST received")
    right.set_title("Notification latency (20 events/s)")
    right.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _row(title: str, s: dict[str, Any], figure: str, digits: int, kinds: tuple[str, ...]) -> str:
    cells = [
        fmt(s[f"{kind}_{figure}"], digits) if f"{kind}_{figure}" in s else "" for kind in kinds
    ]
    return f"| {title} | " + " | ".join(cells) + " |"


BEGIN, END = "<!-- bench:begin (generated by python -m bench) -->", "<!-- bench:end -->"


def tables(
    results: dict[str, Any], environment: dict[str, str], profile: dict[str, Any] | None
) -> str:
    s, plan = results["summary"], results["plan"]
    kinds = COLUMNS
    lines = [
        BEGIN,
        "",
        f"Run of {results['started']} ({plan['repeats']} repeats; each figure is the median,"
        " with min-max in brackets; a ratio is taken burst by burst, then its median).",
        "",
        "| figure | " + " | ".join(HEADINGS[k] for k in kinds) + " |",
        "| --- | " + " | ".join("---" for _ in kinds) + " |",
        _row(
            f"burst events/s ({plan['burst']:,} messages, {plan['duplicates']:.0%} duplicates)",
            s,
            "events_per_s",
            0,
            kinds,
        ),
        f"| limit+POST / limit | | {fmt(s['limit_post_over_limit'], 2)} | | |",
        f"| amid / (limit+POST): amid's own overhead | | | {fmt(s['amid_over_limit_post'], 2)} | |",
        f"| amid / limit | | | {fmt(s['amid_over_limit'], 2)} | |",
        f"| amid / peer | | | {fmt(s['amid_over_peer'], 2)} | |",
        _row("consumer CPU s per 1,000 events", s, "cpu_s_per_1k", 2, kinds),
        _row("server (emulator) CPU s during the burst", s, "server_cpu_s", 1, kinds),
        _row("producer CPU s during the burst", s, "producer_cpu_s", 1, kinds),
        _row("receiver CPU s during the burst", s, "receiver_cpu_s", 1, kinds),
        _row("burst wall seconds", s, "seconds", 1, kinds),
        _row("consumer RSS at start, MiB", s, "rss_start_mib", 1, kinds),
        "| latency p50 ms ({:g} events/s for {:g} s) | | {} | {} | {} |".format(
            plan["trickle_rate"],
            plan["trickle_seconds"],
            *(fmt(s.get(f"{kind}_p50_ms", {}), 1) for kind in ("limit_post", "amid", "peer")),
        ),
        "| latency p99 ms | | {} | {} | {} |".format(
            *(fmt(s.get(f"{kind}_p99_ms", {}), 1) for kind in ("limit_post", "amid", "peer")),
        ),
        "",
        "| amid alone | value |",
        "| --- | --- |",
        f"| idle CPU, % of one core ({plan['idle_seconds']:g} s, after a burst)"
        f" | {fmt(s['amid_idle_core_percent'], 2)} |",
        f"| RSS at start, MiB | {fmt(s['amid_rss_start_mib'], 1)} |",
        f"| RSS after 1k events, MiB | {fmt(s['amid_rss_after_1k_mib'], 1)} |",
        f"| RSS after the burst ({plan['burst']:,} messages), MiB"
        f" | {fmt(s['amid_rss_after_burst_mib'], 1)} |",
        f"| peak RSS (VmHWM), MiB | {fmt(s['amid_rss_peak_mib'], 1)} |",
        *_variant_rows(s),
        "| in-process decode + dedupe + route + render, memory ledger, µs/event (wall; CPU)"
        f" | {fmt(s['pipeline_memory_wall_us_per_event'])};"
        f" {fmt(s['pipeline_memory_cpu_us_per_event'])} |",
        "| the same, sqlite ledger, µs/event (wall; CPU)"
        f" | {fmt(s['pipeline_sqlite_wall_us_per_event'])};"
        f" {fmt(s['pipeline_sqlite_cpu_us_per_event'])} |",
        "| the same, sqlite ledger, 10 events at once (one receive's worth; group commit),"
        f" µs/event (wall; CPU) | {fmt(s.get('pipeline_sqlite_batched_wall_us_per_event', {}))};"
        f" {fmt(s.get('pipeline_sqlite_batched_cpu_us_per_event', {}))} |",
    ]
    history = s.get("pipeline_history") or {}
    if history:
        lines.append(
            "| the delivery record's cost (SPEC 3h): sqlite, 10 at once, events/s with it on /"
            " off, median of {} interleaved rounds (wall; CPU) | {:.2f}; {:.2f} |".format(
                history["rounds"], history["wall_on_over_off"], history["cpu_on_over_off"]
            )
        )
    growth = s.get("pipeline_growth_rss_mib") or {}
    if growth:
        marks = sorted(growth, key=int)
        first, last = growth[marks[0]], growth[marks[-1]]
        lines.append(
            "| in-process RSS over {} events, sqlite ledger, MiB | {} (growth {:+.1%}) |".format(
                f"{int(marks[-1]):,}",
                " → ".join(f"{int(m):,}: {growth[m]:.1f}" for m in marks),
                last / first - 1,
            )
        )
    for batch, label in (("batch_1", "one at a time"), ("batch_10", "10 at once")):
        dynamo = (s.get("dynamodb_requests") or {}).get(batch)
        if dynamo:
            by_operation = ", ".join(
                f"{name} {count / dynamo['events']:.2f}"
                for name, count in sorted(dynamo["requests"].items())
            )
            lines.append(
                f"| DynamoDB ledger requests per message ({dynamo['events']:,} messages, 20%"
                f" duplicates, {label}; moto) | **{dynamo['requests_per_message']:.2f}** sent"
                f" ({by_operation}); {dynamo['moto_logged_per_message']:.2f} answered in moto's"
                " log |"
            )
    lines += [
        "",
        "![Burst throughput and notification latency](benchmarks/throughput-latency.png)",
        "",
        "Machine: {nproc} cores ({cpu}), {memory_gib} GiB, Linux {kernel}; Python {python},"
        " Node {node}; amid {amid_version}; peer sqs-consumer {sqs_consumer} with"
        " @aws-sdk/client-sqs {client_sqs}; SQS server {server}.".format(
            **environment,
            amid_version=environment["amid"].removeprefix("amid "),
            server=(
                f"fauxqs {environment['fauxqs']} (Node)" if plan["server"] == "fauxqs" else "moto"
            ),
        ),
    ]
    if profile is not None:
        lines += [
            "",
            f"py-spy profile of amid under the burst ({profile['samples']:,} samples, all"
            " threads). Own time, top functions:",
            "",
            "| function | % of samples |",
            "| --- | --- |",
            *(f"| `{name}` | {share:.1f} |" for name, share in profile["own"]),
            "",
            "Inclusive time by module (a sample counts for every module on its stack):",
            "",
            "| module | % of samples |",
            "| --- | --- |",
            *(f"| `{name}` | {share:.1f} |" for name, share in profile["inclusive"]),
        ]
    lines += ["", END]
    return "\n".join(lines)


OFF = "amid-no-history"  # bench.run's variant with the delivery record off


def _record_row(s: dict[str, Any], extra: dict[str, float]) -> str:
    """The record's budget: amid (record on) over amid-no-history, over every pair of bursts
    the run had (the rotated repeats and the extra pairs, `Plan.record_pairs`)."""
    pairs = s.get("record_pairs")
    on, off = s.get("record_amid_cpu_s_per_1k"), s.get(f"record_{OFF}_cpu_s_per_1k")
    if on and off:  # medians over every burst of each
        cost = f"**{(on['median'] - off['median']) * 1000:,.0f}**"
    else:  # a run from before the extra pairs: the repeats' own figures
        saved = {k: -v * 1000 for k, v in extra.items()}
        saved["min"], saved["max"] = saved["max"], saved["min"]
        cost = fmt(saved, 0)
    return (
        f"| the delivery record's budget (target >= 0.9): burst with it off (`{OFF}`):"
        f" events/s; amid (record on) / record off{f', {pairs} pairs of bursts' if pairs else ''};"
        " the record's CPU ms per 1,000 events (median on - median off)"
        f" | {fmt(s[f'{OFF}_events_per_s'])}; {fmt(s.get(f'amid_over_{OFF}', {}), 3)}; {cost} |"
    )


def _variant_rows(s: dict[str, Any]) -> list[str]:
    """One row per amid variant the run had (bench.run.VARIANTS): its burst against amid's."""
    rows = []
    for variant in s.get("kinds", []):
        if f"{variant}_over_amid" not in s:
            continue
        extra = {
            key: s[f"{variant}_cpu_s_per_1k"][key] - s["amid_cpu_s_per_1k"]["median"]
            for key in ("median", "min", "max")
        }
        if variant == OFF:  # the record's budget: amid (record on) over this (record off)
            rows.append(_record_row(s, extra))
            continue
        rows.append(
            f"| burst as `{variant}`: events/s; / amid; CPU s per 1,000 events;"
            f" extra CPU ms per 1,000 events | {fmt(s[f'{variant}_events_per_s'])};"
            f" {fmt(s[f'{variant}_over_amid'], 2)}; {fmt(s[f'{variant}_cpu_s_per_1k'], 2)};"
            f" {fmt({k: v * 1000 for k, v in extra.items()}, 0)} |"
        )
    return rows


def write_markdown(
    results: dict[str, Any], environment: dict[str, str], profile: dict[str, Any] | None
) -> Path:
    """Replace the generated block of docs/benchmarks.md; the prose around it stays."""
    path = DOCS / "benchmarks.md"
    block = tables(results, environment, profile)
    text = path.read_text() if path.exists() else f"# Benchmarks\n\n{BEGIN}\n{END}\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        text = head + block + tail
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)
    plot(results["summary"], FIGURE)
    return path
