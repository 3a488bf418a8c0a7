"""The selection report (``credaudit select``) as Markdown and as terminal text."""

from __future__ import annotations

import io
from typing import Any

from credaudit.report.format import markdown_table


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def summary_lines(report: dict[str, Any]) -> list[str]:
    """What was chosen, from what, and how well it covers the data: one sentence per line."""
    run, sel, cov, audit = report["run"], report["selected"], report["coverage"], report["audit"]
    lines = [
        f"Selected {sel['items']:,} of {run['input']['items']:,} items ({run['kind'].replace('_', ' ')}), "
        f"diversity {report['settings']['diversity']}.",
        f"Mean quality {_num(sel['mean_quality'])} selected vs {_num(sel['mean_quality_all'])} over all items.",
        f"Covers {cov['covered']} of {cov['clusters']} k-means clusters of the embedding space "
        f"({_share(cov['coverage'])}; a random selection of the same size: {_share(cov['random_coverage'])}).",
    ]
    rate = audit["noise_rate"]
    trust = "trusted" if audit["trustworthy"] else "untrusted, so qualities lean on the neighbour vote"
    lines.append(
        f"Audit: estimated noise rate {rate['estimate']:.3f} [{rate['low']:.3f}, {rate['high']:.3f}], {trust}."
    )
    return lines


def group_rows(report: dict[str, Any]) -> list[list[str]]:
    """Per class / rating / pair action: items, selected, share, mean quality (all, selected)."""
    rows = [[report["group_title"], "items", "selected", "share", "mean quality", "mean quality selected"]]
    for g in report["groups"]:
        rows.append(
            [
                g["group"],
                f"{g['items']:,}",
                f"{g['selected']:,}",
                _share(g["share_selected"]),
                _num(g["mean_quality"]),
                _num(g["mean_quality_selected"]),
            ]
        )
    return rows


def tier_rows(report: dict[str, Any]) -> list[list[str]]:
    rows = [["tier (used up in order)", "items", "selected"]]
    for t in report["selected"]["tiers"]:
        rows.append([t["tier"], f"{t['items']:,}", f"{t['selected']:,}"])
    return rows


def render_selection_markdown(report: dict[str, Any]) -> str:
    run = report["run"]
    parts = [
        f"# credaudit selection: {run['input']['path']}",
        "",
        *(f"- {line}" for line in summary_lines(report)),
        "",
        f"## Per {report['group_title']}",
        "",
        *markdown_table(group_rows(report)),
        "## Tiers",
        "",
        *markdown_table(tier_rows(report)),
        "## Method",
        "",
        report["method"],
        "",
        f"<sub>credaudit {report['tool_version']} · selection report schema {report['schema_version']} · "
        f"input sha256 {run['input']['sha256'][:12]} · seed {run['seed']}</sub>",
        "",
    ]
    return "\n".join(parts)


def render_selection_terminal(report: dict[str, Any], *, width: int = 100) -> str:
    from rich.console import Console

    from credaudit.report.terminal import rows_table

    buffer = io.StringIO()
    console = Console(file=buffer, width=width, color_system=None, no_color=True, highlight=False, emoji=False)
    for line in summary_lines(report):
        console.print(" " + line)
    console.print()
    console.print(rows_table(f"Per {report['group_title']}", group_rows(report)))
    console.print()
    console.print(rows_table("Tiers", tier_rows(report)))
    return buffer.getvalue()
