"""checkov (own virtualenv, offline): zero failed checks; every skip is inline with a reason."""

from __future__ import annotations

import json
import os
import re
import subprocess

import pytest

from .conftest import INFRA_DIR, REPO_ROOT, TF_DIR

CHECKOV_VENV = REPO_ROOT / ".venv-checkov"
SKIP_COMMENT = re.compile(r"#\s*checkov:skip=(CKV2?_[A-Z0-9_]+)(:?)(.*)$")


@pytest.fixture(scope="module")
def checkov_report() -> dict:
    subprocess.run(
        [str(INFRA_DIR / "scripts" / "ensure-checkov.sh")],
        check=True,
        capture_output=True,
        text=True,
        timeout=900,
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(BC_SKIP_MAPPING="TRUE", CHECKOV_RUN_SCA_PACKAGE_SCAN_V2="false", LOG_LEVEL="ERROR")
    proc = subprocess.run(
        [
            str(CHECKOV_VENV / "bin" / "checkov"),
            "--directory",
            str(TF_DIR),
            "--framework",
            "terraform",
            "--skip-download",
            "--download-external-modules",
            "false",
            "--compact",
            "--output",
            "json",
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode in (0, 1), proc.stderr
    data = json.loads(proc.stdout)
    reports = data if isinstance(data, list) else [data]
    (report,) = [r for r in reports if r.get("check_type") == "terraform"]
    return report


def test_checkov_zero_failed(checkov_report: dict) -> None:
    summary = checkov_report["summary"]
    failed = [
        f"{c['check_id']} {c['resource']} ({c['file_path']}:{c['file_line_range']}) "
        f"{c['check_name']}"
        for c in checkov_report["results"]["failed_checks"]
    ]
    print(
        f"checkov: passed={summary['passed']} failed={summary['failed']} "
        f"skipped={summary['skipped']}"
    )
    assert summary["passed"] > 0
    assert not failed, "checkov failed checks:\n" + "\n".join(failed)


def test_checkov_skips_are_inline_with_reason(checkov_report: dict) -> None:
    inline: dict[str, list[str]] = {}
    for path in TF_DIR.rglob("*.tf"):
        for line in path.read_text().splitlines():
            m = SKIP_COMMENT.search(line)
            if m:
                assert m.group(2) == ":" and len(m.group(3).strip()) >= 20, (
                    f"{path}: checkov skip without a written reason: {line.strip()}"
                )
                inline.setdefault(m.group(1), []).append(str(path))
    skipped_checks = checkov_report["results"]["skipped_checks"]
    assert skipped_checks, "expected the documented inline skips to be reported"
    for skipped in skipped_checks:
        assert skipped["check_id"] in inline, f"skip not declared inline: {skipped['check_id']}"
        reason = skipped.get("check_result", {}).get("suppress_comment", "")
        assert len(reason.strip()) >= 20, f"skip without reason: {skipped['check_id']}"
