"""Quality gates: thresholds on the audit's results, rolled up into a pass/fail verdict.

Each gate has a fail threshold and a warn threshold (dbt's ``error_if`` / ``warn_if``). A check
fails when its value crosses the fail threshold, else warns when it crosses the warn threshold,
else passes; with neither threshold set it is skipped. Warnings never fail the run unless
``strict``. A failed gate is a verdict, not an exception: ``errors.exit_code_for`` maps it to 1.

The verdict is ``pass``, ``warn`` (something warned, nothing failed: exit 0 unless ``strict``),
``inconclusive`` or ``fail``.

A gate that reads the noise estimate (noise rate, credibility, regression) is ``inconclusive``
when the estimate is untrustworthy (trust.py): a wrong estimate must never pass a build silently.
The verdict is then ``inconclusive`` (unless another gate failed), which exits 1 unless
``allow_inconclusive``. The flagged-rows gate reads detection, which falls back to the neighbour
vote with an untrusted estimate, so it keeps judging.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any

from credaudit.config import GatesConfig
from credaudit.noise import NoiseEstimate


class Status(str, Enum):
    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class CheckResult:
    """One gate's outcome.

    Attributes
    ----------
    id : str
        ``max_noise_rate``, ``min_credibility``, ``max_flagged``, ``max_outliers``,
        ``max_duplicates``, ``max_leakage`` or ``max_regression``.
    metric : str
        What was compared: ``noise_rate``, ``credibility``, ``flagged_rows``, ``flagged_rate`` or
        ``noise_rate_increase``.
    value : float or None
        The compared value (None when skipped).
    bound : str
        ``estimate`` (point estimate) or ``upper95``/``lower95`` (the interval's pessimistic end).
    threshold : float or None
        The fail threshold.
    warn_threshold : float or None
        The warn threshold.
    status : Status
        ``pass``, ``warn``, ``fail``, ``inconclusive`` (reads an untrustworthy estimate) or ``skipped``.
    interval : (low, high) or None
        The metric's interval, for context.
    message : str
        One line for people and CI annotations.
    """

    id: str
    metric: str
    value: float | None
    bound: str
    threshold: float | None
    warn_threshold: float | None
    status: Status
    interval: tuple[float, float] | None = None
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "metric": self.metric,
            "value": self.value,
            "bound": self.bound,
            "threshold": self.threshold,
            "warn_threshold": self.warn_threshold,
            "status": self.status.value,
            "interval": list(self.interval) if self.interval else None,
            "message": self.message,
        }


def judge(value: float, fail: float | None, warn: float | None, *, upper: bool) -> Status:
    """``upper``: the value must stay at or below the thresholds (else at or above)."""

    def crosses(limit: float | None) -> bool:
        return limit is not None and (value > limit if upper else value < limit)

    if crosses(fail):
        return Status.FAIL
    if crosses(warn):
        return Status.WARN
    return Status.PASS


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _limits(fail: float | None, warn: float | None, shown, *, upper: bool) -> str:
    side = "above" if upper else "below"
    parts = [f"{word} {side} {shown(x)}" for word, x in (("fails", fail), ("warns", warn)) if x is not None]
    return "; ".join(parts)


def evaluate_gates(
    gates: GatesConfig,
    estimate: NoiseEstimate,
    n_flagged: int,
    n_rows: int,
    comparison: dict[str, Any] | None = None,
    *,
    trusted: bool = True,
    hygiene: dict[str, int | None] | None = None,
) -> list[CheckResult]:
    """One CheckResult per gate, in a fixed order; gates with no threshold are ``skipped``.

    Parameters
    ----------
    gates : GatesConfig
    estimate : NoiseEstimate
    n_flagged, n_rows : int
        Rows flagged as label errors, rows audited.
    comparison : dict, optional
        From :func:`credaudit.baseline.compare_reports`; enables the regression gate.
    trusted : bool
        Whether the noise estimate passed the trust checks; if not, the gates that read it are
        ``inconclusive`` whatever their value.
    hygiene : dict, optional
        Row counts for the hygiene gates: ``outliers``, ``duplicates`` (redundant rows: all but
        one per near-duplicate group) and ``leakage`` (None: no reference was given).

    Notes
    -----
    With ``gate_on="bound"`` the noise rate is compared at its interval's upper end and
    credibility at its lower end (the pessimistic reading). The flagged count has no interval and
    is always compared as counted. The regression gate fails only when the rise exceeds its
    threshold *and* the two intervals do not overlap, so sampling noise alone never fails a build.
    """
    pessimistic = gates.gate_on == "bound"
    noise, cred = estimate.noise_rate, estimate.credibility
    checks = []

    checks.append(
        interval_check(
            "max_noise_rate",
            "noise_rate",
            "noise rate",
            (noise.estimate, noise.low, noise.high),
            gates.max_noise_rate,
            gates.warn_max_noise_rate,
            upper=True,
            pessimistic=pessimistic,
            shown=_pct,
        )
    )
    checks.append(
        interval_check(
            "min_credibility",
            "credibility",
            "credibility",
            (cred.estimate, cred.low, cred.high),
            gates.min_credibility,
            gates.warn_min_credibility,
            upper=False,
            pessimistic=pessimistic,
            shown=lambda x: f"{x:.3f}",
        )
    )
    checks.append(count_check("max_flagged", "flagged", n_flagged, n_rows, gates.max_flagged, gates.warn_max_flagged))
    for check_id, noun, key in (
        ("max_outliers", "outliers", "outliers"),
        ("max_duplicates", "redundant near-duplicates", "duplicates"),
        ("max_leakage", "rows leaked from a reference", "leakage"),
    ):
        fail, warn = getattr(gates, check_id), getattr(gates, f"warn_{check_id}")
        checks.append(count_check(check_id, noun, (hygiene or {}).get(key), n_rows, fail, warn))
    checks.append(regression_check(comparison, gates.max_regression, gates.warn_max_regression))
    if not trusted:
        checks = [_inconclusive(c) if c.id in _READS_ESTIMATE and c.status is not Status.SKIPPED else c for c in checks]
    return checks


_READS_ESTIMATE = ("max_noise_rate", "min_credibility", "max_regression")


def interval_check(
    check_id: str,
    metric: str,
    noun: str,
    interval: tuple[float, float, float],
    fail: float | None,
    warn: float | None,
    *,
    upper: bool,
    pessimistic: bool = False,
    shown: Callable[[float], str] = _pct,
) -> CheckResult:
    """A gate on an estimate with a 95 % interval (estimate, low, high); ``skipped`` without limits.

    ``upper``: the value must stay at or below the limits (else at or above). ``pessimistic``
    (``--gate-on bound``) compares the interval's unfavourable end instead of the estimate.
    """
    if fail is None and warn is None:
        return CheckResult(check_id, metric, None, "estimate", None, None, Status.SKIPPED, message="no threshold set")
    estimate, low, high = interval
    bound = "estimate"
    value = estimate
    if pessimistic:
        bound, value = ("upper95", high) if upper else ("lower95", low)
    qualifier = "" if bound == "estimate" else f" ({'upper' if upper else 'lower'} 95% bound)"
    return CheckResult(
        check_id,
        metric,
        value,
        bound,
        fail,
        warn,
        judge(value, fail, warn, upper=upper),
        (low, high),
        f"{noun}{qualifier} {shown(value)} ({_limits(fail, warn, shown, upper=upper)})",
    )


def count_check(
    check_id: str, noun: str, count: int | None, n_rows: int, fail: int | float | None, warn: int | float | None
) -> CheckResult:
    """A gate on a row count, with limits as counts (int) or shares (float < 1).

    The value is compared as a share when either limit is one; the other limit is converted.
    """
    metric = check_id.removeprefix("max_")
    if fail is None and warn is None:
        return CheckResult(
            check_id, f"{metric}_rows", None, "estimate", None, None, Status.SKIPPED, message="no threshold set"
        )
    if count is None:
        return CheckResult(
            check_id, f"{metric}_rows", None, "estimate", None, None, Status.SKIPPED, message=f"{noun}: not measured"
        )
    as_rate = any(isinstance(x, float) and x < 1 for x in (fail, warn) if x is not None)
    value = count / n_rows if as_rate else float(count)

    def scale(limit):
        if limit is None:
            return None
        is_rate = isinstance(limit, float) and limit < 1
        return limit if is_rate == as_rate else (limit / n_rows if as_rate else limit * n_rows)

    fail_limit, warn_limit = scale(fail), scale(warn)
    shown = _pct if as_rate else (lambda x: f"{x:.0f} rows")
    return CheckResult(
        check_id,
        f"{metric}_rate" if as_rate else f"{metric}_rows",
        value,
        "estimate",
        None if fail_limit is None else float(fail_limit),
        None if warn_limit is None else float(warn_limit),
        judge(value, fail_limit, warn_limit, upper=True),
        None,
        f"{noun} {shown(value)} ({_limits(fail_limit, warn_limit, shown, upper=True)})",
    )


def _inconclusive(check: CheckResult) -> CheckResult:
    return replace(
        check,
        status=Status.INCONCLUSIVE,
        message=f"{check.message}; the noise estimate is untrustworthy",
    )


def regression_check(comparison: dict[str, Any] | None, fail: float | None, warn: float | None) -> CheckResult:
    """The baseline regression gate: the noise rate's rise against ``fail``/``warn`` thresholds.

    A rise counts only when the two 95% intervals do not overlap: sampling noise alone never fails
    a build.
    """
    if comparison is None or (fail is None and warn is None):
        reason = "no baseline" if comparison is None else "no threshold set"
        return CheckResult(
            "max_regression", "noise_rate_increase", None, "estimate", fail, warn, Status.SKIPPED, message=reason
        )
    if not comparison.get("comparable", True):
        return CheckResult(
            "max_regression",
            "noise_rate_increase",
            None,
            "estimate",
            fail,
            warn,
            Status.WARN,
            message="not compared: the two reports share no class, so they audit different datasets",
        )
    rate = comparison["noise_rate"]
    delta = rate["delta"]
    separated = not rate["intervals_overlap"]
    status = judge(delta, fail, warn, upper=True) if separated else Status.PASS
    points = lambda x: f"+{100 * x:.1f} points"  # noqa: E731
    return CheckResult(
        "max_regression",
        "noise_rate_increase",
        delta,
        "estimate",
        fail,
        warn,
        status,
        (rate["after"]["low"] - rate["before"]["high"], rate["after"]["high"] - rate["before"]["low"]),
        f"noise rate {_pct(rate['before']['estimate'])} -> {_pct(rate['after']['estimate'])} "
        f"({'+' if delta >= 0 else ''}{100 * delta:.1f} points, 95% intervals {'apart' if separated else 'overlap'}; "
        f"{_limits(fail, warn, points, upper=True)} when apart)",
    )


def failing_statuses(*, strict: bool = False, allow_inconclusive: bool = False) -> frozenset[str]:
    """The check statuses that fail the run (exit 1): what JUnit and CI annotations call errors."""
    return frozenset({"fail"} | ({"warn"} if strict else set()) | (set() if allow_inconclusive else {"inconclusive"}))


def verdict(checks: list[CheckResult], *, strict: bool = False, warnings: bool = False) -> str:
    """The run's verdict, most severe first.

    ``fail`` if any check failed (or, with ``strict``, anything warned); else ``inconclusive`` if a
    check read an untrustworthy estimate; else ``warn`` if a check warned or ``warnings`` (the
    report has warning findings, e.g. an untrustworthy estimate or a tiny class); else ``pass``.
    A PASS banner never sits above a warning.
    """
    warned = warnings or any(c.status is Status.WARN for c in checks)
    if any(c.status is Status.FAIL for c in checks) or (strict and warned):
        return "fail"
    if any(c.status is Status.INCONCLUSIVE for c in checks):
        return "inconclusive"
    return "warn" if warned else "pass"
