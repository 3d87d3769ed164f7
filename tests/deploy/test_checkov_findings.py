"""The judgement scripts/check-deploy passes on checkov's report, and the skips in the files.

checkov itself runs in scripts/check-deploy (its own venv, offline); these tests feed the
judge reports shaped like checkov's `-o json` output, and read the skips the scanned
files carry: each names a check and gives its reason on one line.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from tests.deploy.checkov_findings import NO_REASON, judge, main
from tests.deploy.test_deploy_checks import _CfnLoader

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = sorted((ROOT / "deploy" / "cloudformation").glob("*.yaml"))
# What scripts/check-deploy scans besides the templates.
OTHER_FILES = [
    path for path in (ROOT / "deploy").rglob("*") if path.is_file() and path not in TEMPLATES
] + [ROOT / "Dockerfile", ROOT / "config" / "amid.example.yaml"]
# checkov's inline suppression, `checkov:skip=ID[,ID]:REASON` in a comment.
INLINE_SKIP = re.compile(r"checkov:skip=\s*([A-Za-z_\d-]+(?:,[A-Za-z_\d-]+)*)?(:[^\n]*)?")


def _check(check_id: str, result: str, comment: str | None = None) -> dict[str, Any]:
    outcome: dict[str, Any] = {"result": result}
    if comment is not None:
        outcome["suppress_comment"] = comment
    return {
        "check_id": check_id,
        "check_name": f"the check {check_id}",
        "check_result": outcome,
        "file_path": "/deploy/cloudformation/amid.yaml",
        "file_line_range": [77, 82],
        "resource": "AWS::SQS::Queue.Queue",
    }


def _report(kind: str, **results: list[dict[str, Any]]) -> dict[str, Any]:
    passed = results.get("passed_checks", [])
    return {
        "check_type": kind,
        "results": {
            "passed_checks": passed,
            "failed_checks": results.get("failed_checks", []),
            "skipped_checks": results.get("skipped_checks", []),
            "parsing_errors": results.get("parsing_errors", []),
        },
        "summary": {"passed": len(passed), "failed": len(results.get("failed_checks", []))},
    }


CLEAN = [
    _report(
        "cloudformation",
        passed_checks=[_check("CKV_AWS_26", "PASSED")],
        skipped_checks=[_check("CKV_AWS_27", "SKIPPED", "SSE-SQS, which the check ignores")],
    ),
    _report("dockerfile", passed_checks=[_check("CKV_DOCKER_2", "PASSED")]),
]


class TestJudge:
    def test_fixed_or_skipped_with_a_reason_passes_and_says_what_ran(self) -> None:
        verdict = judge(CLEAN)
        assert verdict.ok
        assert verdict.summary == [
            "cloudformation: 1 passed, 1 skipped with a reason",
            "dockerfile: 1 passed, 0 skipped with a reason",
        ]

    def test_a_finding_fails_with_its_check_resource_and_place(self) -> None:
        report = [*CLEAN, _report("secrets", failed_checks=[_check("CKV_SECRET_14", "FAILED")])]
        verdict = judge(report)
        assert not verdict.ok
        assert verdict.problems == [
            "failed CKV_SECRET_14 the check CKV_SECRET_14: AWS::SQS::Queue.Queue "
            "(deploy/cloudformation/amid.yaml:77-82)"
        ]

    def test_a_skip_without_a_reason_fails(self) -> None:
        for comment in (None, NO_REASON, "", "  "):
            skipped = _check("CKV_AWS_28", "SKIPPED", comment)
            verdict = judge([_report("cloudformation", skipped_checks=[skipped]), CLEAN[1]])
            assert [p.split(" CKV_")[0] for p in verdict.problems] == [
                "skipped without a reason"
            ], comment

    def test_a_scanner_that_did_not_run_fails(self) -> None:
        verdict = judge(CLEAN[0])  # checkov writes one report alone as an object
        assert verdict.problems == ["the dockerfile scanner did not run"]

    def test_a_file_checkov_could_not_parse_fails(self) -> None:
        broken = _report("cloudformation", parsing_errors=["/deploy/cloudformation/x.yaml"])
        verdict = judge([broken, CLEAN[1]])
        assert verdict.problems == [
            "unparsed cloudformation file (not scanned): deploy/cloudformation/x.yaml"
        ]


class TestMain:
    def test_exit_0_with_the_summary_on_a_clean_report(self, tmp_path: Path, capsys: Any) -> None:
        (tmp_path / "r.json").write_text(json.dumps(CLEAN))
        assert main([str(tmp_path / "r.json")]) == 0
        assert capsys.readouterr().out.startswith("cloudformation: 1 passed, 1 skipped")

    def test_exit_1_naming_each_finding_and_how_to_settle_it(
        self, tmp_path: Path, capsys: Any
    ) -> None:
        failed = _report("cloudformation", failed_checks=[_check("CKV_AWS_26", "FAILED")])
        (tmp_path / "r.json").write_text(json.dumps([failed, CLEAN[1]]))
        assert main([str(tmp_path / "r.json")]) == 1
        lines = capsys.readouterr().out.splitlines()
        assert lines[0].startswith("failed CKV_AWS_26")
        assert "skip it in the file with a one-line reason" in lines[1]

    def test_exit_1_when_checkov_wrote_no_json(self, tmp_path: Path, capsys: Any) -> None:
        (tmp_path / "r.json").write_text("Traceback (most recent call last):\n")
        assert main([str(tmp_path / "r.json")]) == 1
        assert "checkov wrote no JSON report" in capsys.readouterr().out


def _template_skips(path: Path) -> list[tuple[str, str, Any]]:
    resources = yaml.load(path.read_text(), Loader=_CfnLoader)["Resources"]  # noqa: S506
    return [
        (name, skip.get("id"), skip.get("comment"))
        for name, resource in resources.items()
        for skip in resource.get("Metadata", {}).get("checkov", {}).get("skip", [])
    ]


class TestSkipsInTheFiles:
    def test_every_template_skip_names_a_check_and_gives_a_one_line_reason(self) -> None:
        skips = [skip for path in TEMPLATES for skip in _template_skips(path)]
        assert skips, "the templates skip checks"
        for name, check_id, comment in skips:
            assert re.fullmatch(r"CKV2?_[A-Z]+_\d+", str(check_id)), (name, check_id)
            assert isinstance(comment, str) and comment.strip(), (name, check_id)
            assert "\n" not in comment.strip(), (name, check_id)

    def test_the_queues_skip_only_the_kms_check_and_are_encrypted_with_sse_sqs(self) -> None:
        for path in TEMPLATES:
            resources = yaml.load(path.read_text(), Loader=_CfnLoader)["Resources"]  # noqa: S506
            queues = [n for n, r in resources.items() if r["Type"] == "AWS::SQS::Queue"]
            for name, check_id, _ in _template_skips(path):
                if name in queues:
                    assert check_id == "CKV_AWS_27", (path.name, name)
                    assert resources[name]["Properties"]["SqsManagedSseEnabled"] is True

    def test_every_inline_skip_in_the_other_files_gives_a_reason(self) -> None:
        for path in OTHER_FILES:
            for match in INLINE_SKIP.finditer(path.read_text()):
                reason = (match.group(2) or ":")[1:].strip()
                assert match.group(1) and reason, (path, match.group(0))
