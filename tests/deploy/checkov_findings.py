"""Judge a checkov JSON report: every finding is fixed, or skipped in its file with a reason.

scripts/check-deploy runs checkov over deploy/, the Dockerfile and the example config with
`-o json`, then `python -m tests.deploy.checkov_findings REPORT.json`: it prints one line
per scanner (what passed, what was skipped) and exits 0, or prints each finding that is
neither fixed nor skipped with a reason, one a line, and exits 1. A skip lives in the
file itself: `Metadata: checkov: skip: [{id: CKV_..., comment: REASON}]` on a
CloudFormation resource, `# checkov:skip=CKV_...: REASON` in a Dockerfile or any other
file. Used by tests/deploy/test_checkov_findings.py too.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# checkov's own words for a skip that gave no reason.
NO_REASON = "No comment provided"
# The scanners that must have run: each has something to scan in every tree. The secrets
# scanner reports nothing when it finds nothing, so it cannot be required.
REQUIRED = ("cloudformation", "dockerfile")


@dataclass(frozen=True, slots=True)
class Verdict:
    summary: list[str]  # one line per scanner
    problems: list[str]  # one line per finding that is neither fixed nor skipped with a reason

    @property
    def ok(self) -> bool:
        return not self.problems


def _where(check: dict[str, Any]) -> str:
    path = str(check.get("file_abs_path") or check.get("file_path") or "?")
    # checkov writes paths under the scanned root as "/deploy/...", the secrets scanner
    # absolute ones.
    path = os.path.relpath(path) if os.path.exists(path) else path.lstrip("/")
    lines = check.get("file_line_range") or []
    return f"{path}:{lines[0]}-{lines[1]}" if len(lines) == 2 else path


def _line(kind: str, check: dict[str, Any]) -> str:
    return (
        f"{kind} {check.get('check_id')} {check.get('check_name')}: "
        f"{check.get('resource')} ({_where(check)})"
    )


def judge(report: Any) -> Verdict:
    """The verdict on checkov's `-o json` output (one report, or a list of them)."""
    reports = report if isinstance(report, list) else [report]
    summary: list[str] = []
    problems: list[str] = []
    seen = set()
    for entry in reports:
        kind = str(entry.get("check_type", "?"))
        seen.add(kind)
        results = entry.get("results", {})
        counts = entry.get("summary", {})
        for check in results.get("failed_checks", []):
            problems.append(_line("failed", check))
        skipped = results.get("skipped_checks", [])
        for check in skipped:
            reason = str(check.get("check_result", {}).get("suppress_comment") or "").strip()
            if not reason or reason == NO_REASON:
                problems.append(_line("skipped without a reason", check))
        for path in results.get("parsing_errors", []):
            problems.append(f"unparsed {kind} file (not scanned): {str(path).lstrip('/')}")
        summary.append(
            f"{kind}: {counts.get('passed', 0)} passed, {len(skipped)} skipped with a reason"
        )
    problems.extend(f"the {kind} scanner did not run" for kind in REQUIRED if kind not in seen)
    return Verdict(summary, problems)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m tests.deploy.checkov_findings REPORT.json", file=sys.stderr)
        return 2
    text = Path(argv[0]).read_text()
    try:
        verdict = judge(json.loads(text))
    except (json.JSONDecodeError, AttributeError, TypeError) as error:
        print(f"checkov wrote no JSON report ({error}):\n{text[:2000]}")
        return 1
    for line in verdict.problems:
        print(line)
    if not verdict.ok:
        print(
            "fix each finding, or skip it in the file with a one-line reason "
            "(docs/operations.md, 'Security posture of the templates')"
        )
        return 1
    print("; ".join(verdict.summary))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
