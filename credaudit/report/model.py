"""AuditReport: the credibility report as data, versioned.

``to_dict()`` is the content of ``report.json``; every renderer reads an AuditReport.
Bump ``SCHEMA_VERSION`` on any breaking change to that structure.

Versions:

- 1: the first release.
- 2: gate checks may have status ``warn`` and carry ``warn_threshold`` and ``message``; a
  ``max_regression`` check; a top-level ``baseline`` section (null without ``--baseline``);
  ``detection.error_score_histogram``. Version-1 reports remain readable as baselines.
- 3: ``verdict`` and check ``status`` may be ``inconclusive`` (a gate read an untrustworthy noise
  estimate); ``noise.trustworthy`` and ``noise.trust`` (the trust checks); ``detection.fallback``
  (why the neighbour vote replaced the estimate, or null); ``detection.cleaning`` (what the cleaned
  file dropped, relabelled and held back, and why).
- 4: a top-level ``hygiene`` section (``outliers``, ``near_duplicates``, ``leakage`` or null
  without ``--reference``); checks ``max_outliers``, ``max_duplicates``, ``max_leakage``.
  Version-3 reports remain readable as baselines.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SCHEMA_VERSION = 4

T_ORIENTATION = (
    "rows = true class, columns = observed label: "
    "values[i][j] = P(observed label = labels[j] | true class = labels[i]); each row sums to 1"
)


@dataclass(frozen=True)
class AuditReport:
    """The report's sections, each JSON-ready (see SPEC §3 for their fields)."""

    tool_version: str
    created_at: str
    run: dict[str, Any]
    classes: list[dict[str, Any]]
    noise: dict[str, Any]
    detection: dict[str, Any]
    findings: list[dict[str, Any]]
    checks: list[dict[str, Any]]
    verdict: str
    baseline: dict[str, Any] | None = None
    hygiene: dict[str, Any] | None = None
    ratings: dict[str, Any] | None = None
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "tool_version": self.tool_version,
            "created_at": self.created_at,
            "run": self.run,
            "classes": self.classes,
            "noise": self.noise,
            "detection": self.detection,
            "hygiene": self.hygiene,
            **({"ratings": self.ratings} if self.ratings is not None else {}),
            "findings": self.findings,
            "checks": self.checks,
            "baseline": self.baseline,
            "verdict": self.verdict,
        }
