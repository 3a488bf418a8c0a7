"""The gate checks as JUnit XML: one <testsuite name="credaudit">, one <testcase> per check.

A failed or inconclusive check is a <failure> (with the metric, value, interval and threshold); a skipped check is
<skipped>; a warning passes, its message in <system-out>, unless ``strict`` makes it a failure.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from credaudit.report.model import AuditReport


def render_junit(report: AuditReport, *, strict: bool = False) -> str:
    """JUnit XML text for ``report``'s checks."""
    checks = report.checks
    failed = [c for c in checks if c["status"] in ("fail", "inconclusive") or (strict and c["status"] == "warn")]
    skipped = [c for c in checks if c["status"] == "skipped"]
    seconds = report.run.get("stage_seconds", {}).get("total", 0.0)
    suite = ET.Element(
        "testsuite",
        name="credaudit",
        tests=str(len(checks)),
        failures=str(len(failed)),
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
        elif check["status"] == "skipped":
            ET.SubElement(case, "skipped", message=check.get("message") or "no threshold set")
        elif check["status"] == "warn":
            ET.SubElement(case, "system-out").text = "WARNING: " + detail
        else:
            ET.SubElement(case, "system-out").text = detail
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
