"""Small text helpers shared by the renderers."""

from __future__ import annotations

from typing import Any


def pct(x: float | None, digits: int = 1) -> str:
    return "–" if x is None else f"{100 * x:.{digits}f}%"


def interval(d: dict[str, float], digits: int = 1) -> str:
    """``12.3% (95% CI 10.1–14.0%)``"""
    return f"{pct(d['estimate'], digits)} (95% CI {pct(d['low'], digits)}–{pct(d['high'], digits)})"


def number(x: Any) -> str:
    if isinstance(x, float):
        return f"{x:.4g}"
    return str(x)


def largest_confusions(noise: dict[str, Any], limit: int = 10) -> list[tuple[str, str, float]]:
    """The largest off-diagonal cells of T: (true, observed, probability), largest first."""
    labels = noise["transition_matrix"]["labels"]
    values = noise["transition_matrix"]["values"]
    cells = [(labels[i], labels[j], v) for i, row in enumerate(values) for j, v in enumerate(row) if i != j]
    cells.sort(key=lambda c: -c[2])
    return [c for c in cells[:limit] if c[2] >= 0.005]


def check_line(check: dict[str, Any]) -> str:
    if check["status"] == "skipped":
        return f"{check['id']}: skipped (no threshold set)"
    op = ">=" if check["id"] == "min_credibility" else "<="
    value = check["value"]
    shown = pct(value) if check["metric"] in ("noise_rate", "credibility", "flagged_rate") else f"{value:.0f}"
    limit = check["threshold"]
    shown_limit = pct(limit) if check["metric"] in ("noise_rate", "credibility", "flagged_rate") else f"{limit:.0f}"
    where = "" if check["bound"] == "estimate" else f" ({check['bound']})"
    return f"{check['id']}: {check['metric']}{where} {shown} {op} {shown_limit} → {check['status']}"
