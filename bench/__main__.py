"""`python -m bench` (or `make bench`): every benchmark of amid, on this machine, with no AWS.

    .venv/bin/python -m bench            # the full run, ~25 min; updates docs/benchmarks.md
    .venv/bin/python -m bench --quick    # a ~4 min smoke run; results in bench/results/ only
    .venv/bin/python -m bench --report bench/results/results-....json   # docs from a past run

It installs what it needs first: matplotlib and py-spy into the venv (pinned, only if
missing) and the Node side (`npm ci` in bench/peer: the peer and the fauxqs emulator).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import importlib.util
import json
import subprocess
import time
from pathlib import Path

from bench.common import PEER, PYTHON, RESULTS, ROOT
from bench.report import profile_summary, write_markdown
from bench.run import DEFAULT_VARIANTS, PY_SPY, VARIANTS, Plan, environment, log, run

PINNED = {"matplotlib": "matplotlib==3.10.3", "py-spy": "py-spy==0.4.1"}


def ensure_tools() -> None:
    missing = []
    if importlib.util.find_spec("matplotlib") is None:
        missing.append(PINNED["matplotlib"])
    if not PY_SPY.exists():
        missing.append(PINNED["py-spy"])
    if missing:
        log(f"installing {', '.join(missing)} into the venv")
        subprocess.run([PYTHON, "-m", "pip", "install", "-q", *missing], check=True)
    if not (PEER / "node_modules").exists():
        log("npm ci in bench/peer")
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=PEER, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a ~4 minute smoke run")
    parser.add_argument(
        "--server", choices=["fauxqs", "moto"], default="fauxqs", help="the SQS emulator"
    )
    parser.add_argument("--docs", action="store_true", help="update the docs after --quick too")
    parser.add_argument("--report", type=Path, help="only write the docs from this results file")
    parser.add_argument(
        "--variants",
        default=",".join(DEFAULT_VARIANTS),
        help=f"the amid configs the burst runs, comma-separated, of: {', '.join(VARIANTS)}",
    )
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.report is not None:
        results = json.loads(args.report.read_text())
    else:
        ensure_tools()
        variants = tuple(v for v in args.variants.split(",") if v)
        unknown = sorted(set(variants) - set(VARIANTS))
        if unknown or "amid" not in variants:
            parser.error(f"--variants must include amid and name only {', '.join(VARIANTS)}")
        plan = Plan.quick(args.server) if args.quick else Plan.full(args.server)
        plan = dataclasses.replace(plan, variants=variants)
        started = time.strftime("%Y%m%dT%H%M%S")
        began = time.monotonic()
        results = asyncio.run(run(plan, started))
        results["started"] = started
        results["minutes"] = (time.monotonic() - began) / 60
        results["environment"] = environment()
        path = RESULTS / f"results-{started}.json"
        path.write_text(json.dumps(results, indent=2))
        log(f"results: {path.relative_to(ROOT)} ({results['minutes']:.1f} min)")
        if args.quick and not args.docs:
            print(json.dumps(results["summary"], indent=2))
            return
    raw = RESULTS / f"amid-{results['started']}.pyspy.txt"
    profile = profile_summary(raw) if raw.exists() and raw.stat().st_size else None
    doc = write_markdown(results, results["environment"], profile)
    log(f"wrote {doc.relative_to(ROOT)} and its plot")


if __name__ == "__main__":
    main()
