"""GitHub Actions output: the step summary and ::error / ::warning annotations.

Annotations are workflow commands on the job's output; see
https://docs.github.com/actions/reference/workflow-commands-for-github-actions.
"""

from __future__ import annotations

from credaudit.gates import failing_statuses
from credaudit.report.model import AuditReport


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def annotations(report: AuditReport, *, strict: bool = False, allow_inconclusive: bool = False) -> list[str]:
    """One workflow-command line per failed, inconclusive or warned check and per warning finding.

    Errors are exactly what fails the run: failed checks, inconclusive ones unless
    ``allow_inconclusive``, and with ``strict`` warnings too.
    """
    failing = failing_statuses(strict=strict, allow_inconclusive=allow_inconclusive)
    lines = []
    for check in report.checks:
        status = check["status"]
        if status in failing:
            level = "error"
        elif status in ("warn", "inconclusive"):
            level = "warning"
        else:
            continue
        title = _escape_property(f"credaudit {check['id']}")
        lines.append(f"::{level} title={title}::{_escape_data(check.get('message') or check['id'])}")
    for finding in report.findings:
        if finding["severity"] == "warning":
            title = _escape_property(f"credaudit {finding['kind']}")
            level = "error" if strict else "warning"
            lines.append(f"::{level} title={title}::{_escape_data(finding['message'])}")
    return lines
