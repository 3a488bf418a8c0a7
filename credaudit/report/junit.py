"""The gate checks as JUnit XML: one <testsuite name="credaudit">, one <testcase> per check.

A failed check is a <failure> (with the metric, value, interval and threshold); so is an inconclusive
one, unless ``allow_inconclusive`` (then it is <skipped>: it could not be judged). A skipped check is
<skipped>; a warning passes, its message in <system-out>, unless ``strict`` makes it a failure.
One more testcase, ``findings``, carries the report's warning findings: with ``strict`` they fail
the run, so they fail there too, and the XML agrees with the exit code.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from credaudit.gates import failing_statuses
from credaudit.report.model import AuditReport


def render_junit(report: AuditReport, *, strict: bool = False, allow_inconclusive: bool = False) -> str:
    """JUnit XML text for ``report``'s checks and warning findings."""
    checks = report.checks
    failing = failing_statuses(strict=strict, allow_inconclusive=allow_inconclusive)
    failed = [c for c in checks if c["status"] in failing]
    skipped = [c for c in checks if c["status"] == "skipped" or c["status"] == "inconclusive" and allow_inconclusive]
    warnings = [f for f in report.findings if f["severity"] == "warning"]
    findings_fail = strict and bool(warnings)
    seconds = report.run.get("stage_seconds", {}).get("total", 0.0)
    suite = ET.Element(
        "testsuite",
        name="credaudit",
        tests=str(len(checks) + 1),
        failures=str(len(failed) + findings_fail),
        errors="0",
        skipped=str(len(skipped)),
        time=f"{seconds:.3f}",
        timestamp=report.created_at,
    )
    properties = ET.SubElement(suite, "properties")
    for name, value in (
        ("input", report.run["input"]["path"]),
        ("input_sha256", report.run["input"]["sha256"]),
        ("verdict", report.verdict),
        ("noise_rate", f"{report.noise['noise_rate']['estimate']:.6f}"),
        ("credibility", f"{report.noise['credibility']['estimate']:.6f}"),
    ):
        ET.SubElement(properties, "property", name=name, value=str(value))
    for check in checks:
        case = ET.SubElement(suite, "testcase", classname="credaudit.gates", name=check["id"], time="0")
        detail = _detail(check)
        if check in failed:
            failure = ET.SubElement(case, "failure", message=check.get("message") or check["id"], type=check["metric"])
            failure.text = detail
        elif check["status"] == "inconclusive":
            ET.SubElement(case, "skipped", message="inconclusive (allowed): " + (check.get("message") or check["id"]))
        elif check["status"] == "skipped":
            ET.SubElement(case, "skipped", message=check.get("message") or "no threshold set")
        elif check["status"] == "warn":
            ET.SubElement(case, "system-out").text = "WARNING: " + detail
        else:
            ET.SubElement(case, "system-out").text = detail
    case = ET.SubElement(suite, "testcase", classname="credaudit.findings", name="findings", time="0")
    text = "\n".join(f"{f['kind']}: {f['message']}" for f in warnings)
    if findings_fail:
        message = f"{len(warnings)} warning finding(s) (--strict)"
        failure = ET.SubElement(case, "failure", message=message, type="findings")
        failure.text = text
    elif warnings:
        ET.SubElement(case, "system-out").text = "WARNING: " + text
    ET.indent(suite)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suite, encoding="unicode") + "\n"


def _detail(check: dict) -> str:
    interval = check.get("interval")
    lines = [
        check.get("message") or check["id"],
        f"metric: {check['metric']} ({check['bound']})",
        f"value: {check['value']}",
    ]
    if interval:
        lines.append(f"95% interval: [{interval[0]:.6f}, {interval[1]:.6f}]")
    lines.append(f"fail threshold: {check['threshold']}")
    lines.append(f"warn threshold: {check.get('warn_threshold')}")
    return "\n".join(lines)
