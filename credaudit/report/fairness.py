"""Renderings of the ``credaudit fairness`` report: terminal, quiet, Markdown and a self-contained HTML page."""

from __future__ import annotations

import html as _html
import io
from typing import TYPE_CHECKING, Any

from credaudit.fairness import METRIC_NAMES
from credaudit.report.format import STATUS_MARK, check_line, markdown_gates_and_findings, terminal_gates_and_findings

if TYPE_CHECKING:
    from credaudit.fairness_run import FairnessReport

_MARK = {"pass": "✅ PASS", "warn": "⚠️ WARN", "fail": "❌ FAIL", "inconclusive": "❔ INCONCLUSIVE"}


def _num(x: float | None) -> str:
    return "—" if x is None else f"{x:.3f}"


def _pair(entry: dict[str, Any]) -> str:
    if entry["groups"] == "all":
        return f"largest ({entry['pair'][0]} vs {entry['pair'][1]})"
    return f"{entry['groups'][0]} vs {entry['groups'][1]}"


def metric_rows(report: FairnessReport) -> list[list[str]]:
    """(metric, groups, naive, calibrated [low, high], reference) as text, the overall rows first."""
    entries = report.fairness["metrics"]
    pairs = [e for e in entries if e["groups"] != "all"]
    # With two groups the one pair is the overall gap: show it once.
    ordered = [e for e in entries if e["groups"] == "all"] + (pairs if len(report.fairness["groups"]) > 2 else [])
    level = f"{report.fairness['confidence_level']:.0%}"
    rows = []
    for e in ordered:
        cal = e["calibrated"]
        rows.append(
            [
                METRIC_NAMES[e["metric"]],
                _pair(e),
                _num(e["naive"]),
                f"{_num(cal['estimate'])} [{_num(cal['low'])}, {_num(cal['high'])}]",
                _num(e["reference"]),
            ]
        )
    known = report.run["input"].get("rows_with_group")
    reference = "reference (true group)" if not known else f"reference (true group, {known:,} rows)"
    return [["gap", "groups", "naive (proxy vote)", f"calibrated [{level} interval]", reference], *rows]


def proxy_rows(report: FairnessReport) -> list[list[str]]:
    diag = report.fairness["diagnostics"]
    rows = [["proxy", "estimated accuracy", "accuracy on rows with the true group"]]
    for p in diag["proxies"]:
        observed = p.get("observed_accuracy")
        rows.append([p["column"], f"{p['accuracy']:.1%}", "—" if observed is None else f"{observed:.1%}"])
    return rows


def render_fairness_quiet(report: FairnessReport) -> str:
    overall = {e["metric"]: e for e in report.fairness["metrics"] if e["groups"] == "all"}
    short = {"dp_gap": "DP", "eop_gap": "EOp", "eo_gap": "EO"}
    parts = [f"{short[m]} gap {_num(e['calibrated']['estimate'])}" for m, e in overall.items()]
    return f"{report.verdict.upper()} {report.run['input']['path']}: calibrated " + ", ".join(parts) + "\n"


def render_fairness_markdown(report: FairnessReport) -> str:
    run, fair = report.run, report.fairness
    lines = [
        f"# credaudit fairness: {_MARK[report.verdict]}",
        "",
        f"**{run['input']['path']}**: {run['input']['rows']:,} rows, groups {', '.join(fair['groups'])}; "
        f"{len(fair['diagnostics']['proxies'])} proxies; naive = {fair['naive_rule']}.",
        "",
    ]
    lines += markdown_gates_and_findings(report.checks, report.findings)
    table = metric_rows(report)
    lines += ["## Gaps", "", "| " + " | ".join(table[0]) + " |", "|---|---|---:|---|---:|"]
    lines += ["| " + " | ".join(row) + " |" for row in table[1:]] + [""]
    proxies = proxy_rows(report)
    lines += ["## Proxies", "", "| " + " | ".join(proxies[0]) + " |", "|---|---:|---:|"]
    lines += ["| " + " | ".join(row) + " |" for row in proxies[1:]] + [""]
    lines += [
        f"<sub>credaudit {report.tool_version} · input sha256 {run['input']['sha256'][:12]} · seed {run['seed']}</sub>",
        "",
    ]
    return "\n".join(lines)


def render_fairness_terminal(report: FairnessReport, *, width: int = 100) -> str:
    from rich.console import Console

    from credaudit.report.terminal import rows_table

    buffer = io.StringIO()
    console = Console(file=buffer, width=width, color_system=None, no_color=True, highlight=False, emoji=False)
    fair = report.fairness
    console.print(
        f" {report.verdict.upper()}   {report.run['input']['path']}: {report.run['input']['rows']:,} rows, "
        f"groups {', '.join(fair['groups'])}"
    )
    for line in terminal_gates_and_findings(report.checks, report.findings):
        console.print(line)
    for title, rows in (("Fairness gaps", metric_rows(report)), ("Proxies", proxy_rows(report))):
        console.print()
        console.print(rows_table(title, rows))
    return buffer.getvalue()


def _chart_svg(report: FairnessReport) -> str:
    """Each gap: naive (grey), calibrated with its interval (blue), reference (black cross)."""
    import numpy as np

    from credaudit.report.html import figure_svg, new_figure

    entries = [e for e in report.fairness["metrics"] if e["groups"] == "all"]
    if len(report.fairness["groups"]) > 2:
        entries += [e for e in report.fairness["metrics"] if e["groups"] != "all"][:12]
    labels = [f"{METRIC_NAMES[e['metric']]}: {_pair(e)}" for e in entries]
    y = np.arange(len(entries))
    fig, ax = new_figure(7.5, 0.42 * len(entries) + 1.3)
    cal = np.array([e["calibrated"]["estimate"] or 0.0 for e in entries])
    low = np.array([e["calibrated"]["low"] or 0.0 for e in entries])
    high = np.array([e["calibrated"]["high"] or 0.0 for e in entries])
    ax.errorbar(
        cal,
        y,
        xerr=np.vstack([cal - low, high - cal]),
        fmt="o",
        color="#3182bd",
        capsize=3,
        label="calibrated (95% interval)",
    )
    ax.scatter([e["naive"] or 0.0 for e in entries], y + 0.18, color="#969696", label="naive (proxy vote)", zorder=3)
    refs = [(e["reference"], i) for i, e in enumerate(entries) if e["reference"] is not None]
    if refs:
        ax.scatter(
            [r for r, _ in refs],
            [i for _, i in refs],
            marker="x",
            color="black",
            label="reference (true group)",
            zorder=4,
        )
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    ax.set_xlim(left=0)
    # The axis meaning lives in the title: below the axes it collided with the legend.
    ax.set_title("Fairness gaps (absolute difference between groups): naive vs calibrated", loc="left")
    ax.legend(frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=3)
    return figure_svg(fig)


def render_fairness_html(report: FairnessReport) -> str:
    """One self-contained page (inline SVG chart, no scripts or external files)."""
    esc = _html.escape

    def table(rows: list[list[str]], table_id: str) -> str:
        head = "".join(f"<th>{esc(h)}</th>" for h in rows[0])
        body = "".join("<tr>" + "".join(f"<td>{esc(v)}</td>" for v in row) + "</tr>" for row in rows[1:])
        return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'

    checks = "".join(
        f"<li>{esc(STATUS_MARK[c['status']])} {esc(check_line(c))}</li>"
        for c in report.checks
        if c["status"] != "skipped"
    )
    findings = "".join(f"<li>{esc(f['message'])}</li>" for f in report.findings)
    run, fair = report.run, report.fairness
    color = {"pass": "#1a7f37", "warn": "#9a6700", "fail": "#cf222e", "inconclusive": "#9a6700"}[report.verdict]
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>credaudit fairness: {esc(report.verdict.upper())}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 24px auto; max-width: 1100px; color: #1f2328; }}
#verdict {{ background: {color}; color: white; padding: 14px 18px; border-radius: 8px; font-size: 20px; }}
table {{ border-collapse: collapse; width: 100%; font-size: 14px; margin: 8px 0 18px; }}
th, td {{ text-align: left; padding: 5px 8px; border-bottom: 1px solid #d0d7de; }}
th {{ background: #f6f8fa; }}
figure {{ margin: 0; }} figure svg {{ max-width: 100%; height: auto; }}
.muted {{ color: #656d76; font-size: 13px; }}
</style></head><body>
<div id="verdict"><b>{esc(report.verdict.upper())}</b> {esc(run["input"]["path"])}: {run["input"]["rows"]:,} rows,
groups {esc(", ".join(fair["groups"]))}</div>
{f'<h2>Gates</h2><ul id="checks">{checks}</ul>' if checks else ""}
{f'<h2>Findings</h2><ul id="findings">{findings}</ul>' if findings else ""}
<h2>Gaps</h2>
<figure id="gaps-chart">{_chart_svg(report)}</figure>
{table(metric_rows(report), "gaps")}
<p class="muted">Naive: {esc(fair["naive_rule"])}. Calibrated: corrected with the proxies' estimated transition
matrices; {fair["n_bootstrap"]} bootstrap resamples for the intervals.</p>
<h2>Proxies</h2>
{table(proxy_rows(report), "proxies")}
<p class="muted">credaudit {esc(report.tool_version)}, fairness report schema {report.schema_version},
{esc(report.created_at)}; input sha256 {esc(run["input"]["sha256"])}; seed {run["seed"]}.</p>
</body></html>
"""
