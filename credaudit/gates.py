"""Quality gates: thresholds on the audit's results, rolled up into a pass/fail verdict.

A failed gate is a verdict, not an exception; ``errors.exit_code_for`` maps it to exit code 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

from credaudit.config import GatesConfig
from credaudit.noise import NoiseEstimate


class Status(str, Enum):
    PASS = "pass"
    FAIL = "fail"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class CheckResult:
    """One gate's outcome.

    Attributes
    ----------
    id : str
        The gate (``max_noise_rate``, ``min_credibility``, ``max_flagged``).
    metric : str
        What was compared (``noise_rate``, ``credibility``, ``flagged_rows`` or ``flagged_rate``).
    value : float or None
        The compared value (None when skipped).
    bound : str
        ``estimate`` (point estimate) or ``upper95``/``lower95`` (the interval's pessimistic end).
    threshold : float or None
    status : Status
    interval : (low, high) or None
        The metric's interval, for context.
    """

    id: str
    metric: str
    value: float | None
    bound: str
    threshold: float | None
    status: Status
    interval: tuple[float, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "metric": self.metric,
            "value": self.value,
            "bound": self.bound,
            "threshold": self.threshold,
            "status": self.status.value,
            "interval": list(self.interval) if self.interval else None,
        }


def evaluate_gates(gates: GatesConfig, estimate: NoiseEstimate, n_flagged: int, n_rows: int) -> list[CheckResult]:
    """One CheckResult per gate, in a fixed order; unset gates are ``skipped``.

    With ``gate_on="bound"`` the noise rate is compared at the interval's upper end and credibility
    at its lower end (the pessimistic reading). The flagged count has no interval and is always
    compared as counted.
    """
    pessimistic = gates.gate_on == "bound"
    noise = estimate.noise_rate
    cred = estimate.credibility
    checks = []

    if gates.max_noise_rate is None:
        checks.append(CheckResult("max_noise_rate", "noise_rate", None, "estimate", None, Status.SKIPPED))
    else:
        value = noise.high if pessimistic else noise.estimate
        checks.append(
            CheckResult(
                "max_noise_rate",
                "noise_rate",
                value,
                "upper95" if pessimistic else "estimate",
                gates.max_noise_rate,
                Status.PASS if value <= gates.max_noise_rate else Status.FAIL,
                (noise.low, noise.high),
            )
        )

    if gates.min_credibility is None:
        checks.append(CheckResult("min_credibility", "credibility", None, "estimate", None, Status.SKIPPED))
    else:
        value = cred.low if pessimistic else cred.estimate
        checks.append(
            CheckResult(
                "min_credibility",
                "credibility",
                value,
                "lower95" if pessimistic else "estimate",
                gates.min_credibility,
                Status.PASS if value >= gates.min_credibility else Status.FAIL,
                (cred.low, cred.high),
            )
        )

    limit = gates.max_flagged
    if limit is None:
        checks.append(CheckResult("max_flagged", "flagged_rows", None, "estimate", None, Status.SKIPPED))
    elif isinstance(limit, float) and limit < 1:
        rate = n_flagged / n_rows
        checks.append(
            CheckResult(
                "max_flagged", "flagged_rate", rate, "estimate", limit, Status.PASS if rate <= limit else Status.FAIL
            )
        )
    else:
        checks.append(
            CheckResult(
                "max_flagged",
                "flagged_rows",
                float(n_flagged),
                "estimate",
                float(limit),
                Status.PASS if n_flagged <= limit else Status.FAIL,
            )
        )
    return checks


def verdict(checks: list[CheckResult]) -> str:
    """``fail`` if any check failed, else ``pass``."""
    return "fail" if any(c.status is Status.FAIL for c in checks) else "pass"
