"""Comparing two credibility reports: a scan against a baseline, or ``credaudit diff A B``.

Works on report dictionaries (``report.json``). Reports of every schema version this credaudit
knows are read; a newer one is refused with a message saying so.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from credaudit.errors import DataReadError, UsageError
from credaudit.report.model import SCHEMA_VERSION

READABLE_SCHEMAS = range(1, SCHEMA_VERSION + 1)


def load_report(path: str | Path, *, flag: str = "--baseline") -> dict[str, Any]:
    """Read a report.json, checking that it is one and that its schema is readable.

    Raises
    ------
    DataReadError
        Missing, unreadable or not a credaudit report.
    UsageError
        A schema version newer than this credaudit.
    """
    path = Path(path)
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataReadError(f"{flag} {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataReadError(f"{flag} {path} cannot be read: {exc}") from None
    except json.JSONDecodeError as exc:
        raise DataReadError(f"{flag} {path} is not valid JSON (line {exc.lineno}: {exc.msg})") from None
    version = report.get("schema_version") if isinstance(report, dict) else None
    command = _other_command(report) if isinstance(version, int) and "noise" not in report else None
    if command is not None:
        # Another command's report: say which, rather than "not a report".
        raise DataReadError(
            f"{flag} {path} is a report of `credaudit {command}`; diff and --baseline compare the reports of "
            "`credaudit scan` (their noise estimates and flags)"
        )
    if not isinstance(version, int) or "noise" not in report:
        raise DataReadError(f"{flag} {path} is not a credaudit report.json (no schema_version / noise section)")
    if version not in READABLE_SCHEMAS:
        raise UsageError(
            f"{flag} {path} has report schema_version {version}; this credaudit reads versions "
            f"{READABLE_SCHEMAS.start}-{READABLE_SCHEMAS.stop - 1} (upgrade credaudit to compare it)"
        )
    return report


def _overlap(a: dict[str, float], b: dict[str, float]) -> bool:
    return not (a["high"] < b["low"] or b["high"] < a["low"])


def _change(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    return {
        "before": before,
        "after": after,
        "delta": after["estimate"] - before["estimate"],
        "intervals_overlap": _overlap(before, after),
    }


def compare_reports(before: dict[str, Any], after: dict[str, Any], *, before_path: str = "") -> dict[str, Any]:
    """The change from ``before`` to ``after``: noise rate, credibility, per-class error shares.

    Each entry holds both intervals, the change of the estimate, and whether the intervals overlap
    (changes within overlapping intervals may be sampling noise). Classes are matched by name;
    classes present in only one report are listed as added or removed. ``comparable`` is False
    when the reports share no class: they audit different datasets, and the regression gate
    refuses to judge.
    """
    b_noise, a_noise = before["noise"], after["noise"]
    b_classes = {c["label"]: c for c in b_noise.get("per_class", [])}
    a_classes = {c["label"]: c for c in a_noise.get("per_class", [])}
    per_class = [
        {
            "label": name,
            **_change(b_classes[name]["observed_label_error_rate"], a_classes[name]["observed_label_error_rate"]),
        }
        for name in a_classes
        if name in b_classes
    ]
    shared = [name for name in a_classes if name in b_classes]
    return {
        # Reports of unrelated datasets (no class in common) have no meaningful change to gate on.
        "comparable": bool(shared),
        "baseline": {
            "path": before_path,
            "created_at": before.get("created_at"),
            "schema_version": before.get("schema_version"),
            "input_sha256": before.get("run", {}).get("input", {}).get("sha256"),
            "rows": before.get("run", {}).get("input", {}).get("rows"),
        },
        "noise_rate": _change(b_noise["noise_rate"], a_noise["noise_rate"]),
        "credibility": _change(b_noise["credibility"], a_noise["credibility"]),
        "flagged": {
            "before": before.get("detection", {}).get("flagged"),
            "after": after.get("detection", {}).get("flagged"),
        },
        "per_class": per_class,
        "classes_added": [n for n in a_classes if n not in b_classes],
        "classes_removed": [n for n in b_classes if n not in a_classes],
    }


def _other_command(report: dict) -> str | None:
    """``fairness`` or ``select`` for those commands' report.json, else None."""
    if report.get("kind") == "fairness":
        return "fairness"
    run = report.get("run")
    return "select" if isinstance(run, dict) and run.get("command") == "select" else None
