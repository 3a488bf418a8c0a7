"""Renderings of the multi-annotator report: terminal, quiet, Markdown and a self-contained HTML page."""

from __future__ import annotations

import html as _html
import io
from typing import TYPE_CHECKING, Any

from credaudit.report.format import (
    STATUS_MARK,
    check_line,
    markdown_gates_and_findings,
    markdown_table,
    terminal_gates_and_findings,
)

if TYPE_CHECKING:
    from credaudit.crowd_run import CrowdReport

_MARK = {"pass": "✅ PASS", "warn": "⚠️ WARN", "fail": "❌ FAIL", "inconclusive": "❔ INCONCLUSIVE"}
_TERMINAL_ANNOTATORS = 15


def _pct(x: float | None, digits: int = 1) -> str:
    return "—" if x is None else f"{x:.{digits}%}"


def _num(x: float | None, digits: int = 2) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def summary_line(report: CrowdReport) -> str:
    inp, noise, items = report.run["input"], report.noise, report.items
    rate = noise["noise_rate"]
    return (
        f"{inp['items']:,} items, {inp['answers']:,} answers from {inp['annotators']:,} annotators "
        f"({inp['shape']}); wrong answers {_pct(rate['estimate'])} [{_pct(rate['low'])}, {_pct(rate['high'])}]; "
        f"{items['n_uncertain']:,} uncertain items; {report.annotators['n_suspect']} suspect annotators"
    )


def annotator_rows(report: CrowdReport, limit: int | None = None, *, compact: bool = False) -> list[list[str]]:
    """Header + one row per annotator, suspects first, then by accuracy (lowest first).

    ``compact`` (the terminal): whole percentages and short headers, so the table fits 100 columns.
    """
    rows = sorted(
        report.annotators["rows"],
        key=lambda r: (r["suspect"] is None, r["accuracy"], -r["n_answers"]),
    )
    if limit is not None:
        rows = rows[:limit]
    head = ["annotator", "answers", "accuracy [95%]", "agrees with consensus", "worst confusion", "copy score"]
    head.append("suspect")
    if compact:
        head[3], head[5] = "agrees", "copy"
    table = [head]
    digits = 0 if compact else 1
    for r in rows:
        table.append(
            [
                str(r["annotator"]),
                f"{r['n_answers']:,}",
                f"{_pct(r['accuracy'], digits)} "
                f"[{_pct(r['accuracy_low'], digits)}, {_pct(r['accuracy_high'], digits)}]",
                _pct(r["agreement_with_consensus"], digits),
                r["worst_confusion"] or "—",
                _num(r["copy_score"]),
                r["suspect"] or "",
            ]
        )
    return table


def item_rows(report: CrowdReport) -> list[list[str]]:
    table = [["item", "consensus", "confidence", "answers", "agreement", "majority"]]
    for r in report.items["least_certain"]:
        table.append(
            [
                str(r["item_id"]),
                str(r["consensus_label"]),
                _pct(r["consensus_confidence"]),
                str(r["n_annotations"]),
                _pct(r["agreement"]),
                "—" if r["majority_label"] is None else str(r["majority_label"]),
            ]
        )
    return table


def render_crowd_quiet(report: CrowdReport) -> str:
    return f"{report.verdict.upper()} {report.run['input']['path']}: {summary_line(report)}\n"


def render_crowd_markdown(report: CrowdReport) -> str:
    run, noise = report.run, report.noise
    lines = [
        f"# credaudit (several labels per item): {_MARK[report.verdict]}",
        "",
        f"**{run['input']['path']}**: {summary_line(report)}.",
        "",
    ]
    lines += markdown_gates_and_findings(report.checks, report.findings)
    lines += ["## Annotators", ""] + markdown_table(annotator_rows(report))
    if report.annotators["suspect_reasons"]:
        lines += [f"- **{k}**: {v}" for k, v in report.annotators["suspect_reasons"].items()] + [""]
    lines += ["## Least certain items", ""] + markdown_table(item_rows(report))
    names = noise["transition_matrix"]["labels"]
    values = noise["transition_matrix"]["values"]
    lines += ["## Transition matrix (pooled over answers)", "", f"{noise['orientation']}.", ""]
    lines += markdown_table(
        [["true \\ answered", *names]] + [[n, *(f"{v:.3f}" for v in row)] for n, row in zip(names, values, strict=True)]
    )
    lines += [f"Method: {noise['method']}.", ""]
    lines += [
        f"<sub>credaudit {report.tool_version} · input sha256 {run['input']['sha256'][:12]} · seed {run['seed']}</sub>",
        "",
    ]
    return "\n".join(lines)


def render_crowd_terminal(report: CrowdReport, *, width: int = 100, outputs: list[str] | None = None) -> str:
    from rich.console import Console

    from credaudit.report.terminal import rows_table

    buffer = io.StringIO()
    console = Console(file=buffer, width=width, color_system=None, no_color=True, highlight=False, emoji=False)
    console.print(f" {report.verdict.upper()}   {report.run['input']['path']}")
    console.print(summary_line(report))
    for line in terminal_gates_and_findings(report.checks, report.findings):
        console.print(line)
    n = len(report.annotators["rows"])
    title = "Annotators" + (
        f" (the {_TERMINAL_ANNOTATORS} to look at first of {n})" if n > _TERMINAL_ANNOTATORS else ""
    )
    for caption, rows in (
        (title, annotator_rows(report, _TERMINAL_ANNOTATORS, compact=True)),
        ("Least certain items", item_rows(report)[:11]),
    ):
        console.print()
        console.print(rows_table(caption, rows))
    if outputs:
        console.print()
        console.print("Wrote " + ", ".join(outputs))
    return buffer.getvalue()


def _accuracy_svg(report: CrowdReport) -> str:
    """Estimated accuracy (with its interval) against answers given, suspects marked."""
    import numpy as np

    from credaudit.report.html import figure_svg, new_figure

    rows = report.annotators["rows"]
    fig, ax = new_figure(7.5, 3.6)
    n = np.array([r["n_answers"] for r in rows], dtype=float)
    acc = np.array([r["accuracy"] for r in rows])
    low = np.array([r["accuracy_low"] for r in rows])
    high = np.array([r["accuracy_high"] for r in rows])
    suspect = np.array([r["suspect"] is not None for r in rows])
    for mask, color, label in ((~suspect, "#0969da", "annotator"), (suspect, "#cf222e", "suspect")):
        if mask.any():
            ax.errorbar(
                n[mask],
                acc[mask],
                yerr=[acc[mask] - low[mask], high[mask] - acc[mask]],
                fmt="o",
                ms=4,
                color=color,
                ecolor=color,
                alpha=0.7,
                elinewidth=0.8,
                label=label,
            )
    ax.set_xscale("log")
    ax.set_xlabel("answers given (log scale)")
    ax.set_ylabel("estimated accuracy")
    ax.set_ylim(0, 1.02)
    ax.set_title("Annotator accuracy (95% interval) vs answers given", loc="left")
    ax.legend(frameon=False, loc="lower right")
    return figure_svg(fig)


def _cell(value: Any) -> str:
    return _html.escape(str(value))


def render_crowd_html(report: CrowdReport) -> str:
    """One self-contained page: verdict, gates, accuracy plot, sortable annotator table, T heatmap."""
    from credaudit.report.html import heatmap_svg

    esc = _html.escape
    run = report.run
    checks = "".join(
        f"<li>{esc(STATUS_MARK[c['status']])} {esc(check_line(c))}</li>"
        for c in report.checks
        if c["status"] != "skipped"
    )
    findings = "".join(f"<li>{esc(f['message'])}</li>" for f in report.findings)
    numeric = {1, 2, 3, 5}
    ann = annotator_rows(report)
    raw = sorted(report.annotators["rows"], key=lambda r: (r["suspect"] is None, r["accuracy"], -r["n_answers"]))
    head = "".join(f'<th data-type="{"num" if i in numeric else "text"}">{esc(h)}</th>' for i, h in enumerate(ann[0]))
    body = []
    for r, row in zip(raw, ann[1:], strict=True):
        sort_keys = {
            1: r["n_answers"],
            2: r["accuracy"],
            3: r["agreement_with_consensus"],
            5: -1 if r["copy_score"] is None else r["copy_score"],
        }
        cells = "".join(
            f'<td data-value="{sort_keys[i]}">{_cell(v)}</td>' if i in sort_keys else f"<td>{_cell(v)}</td>"
            for i, v in enumerate(row)
        )
        body.append(f'<tr class="{"suspect" if r["suspect"] else ""}">{cells}</tr>')
    items = item_rows(report)
    items_html = "".join("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>" for row in items[1:])
    items_head = "".join(f"<th>{esc(h)}</th>" for h in items[0])
    reasons = "".join(f"<li><b>{esc(k)}</b>: {esc(v)}</li>" for k, v in report.annotators["suspect_reasons"].items())
    color = {"pass": "#1a7f37", "warn": "#9a6700", "fail": "#cf222e", "inconclusive": "#9a6700"}[report.verdict]
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>credaudit: {esc(report.verdict.upper())}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 24px auto; max-width: 1100px; color: #1f2328; }}
#verdict {{ background: {color}; color: white; padding: 14px 18px; border-radius: 8px; font-size: 18px; }}
table {{ border-collapse: collapse; width: 100%; font-size: 13px; margin: 8px 0 18px; }}
th, td {{ text-align: left; padding: 5px 8px; border-bottom: 1px solid #d0d7de; }}
th {{ background: #f6f8fa; position: sticky; top: 0; }}
#annotators th {{ cursor: pointer; user-select: none; white-space: nowrap; }}
#annotators th[aria-sort="ascending"]::after {{ content: " ▲"; }}
#annotators th[aria-sort="descending"]::after {{ content: " ▼"; }}
tr.suspect td {{ background: #fff1f0; }}
.tablewrap {{ max-height: 560px; overflow: auto; border: 1px solid #d0d7de; border-radius: 6px; }}
figure {{ margin: 0; overflow-x: auto; }} figure svg {{ max-width: 100%; height: auto; }}
.muted {{ color: #656d76; font-size: 13px; }}
</style></head><body>
<div id="verdict"><b>{esc(report.verdict.upper())}</b> {esc(run["input"]["path"])}: {esc(summary_line(report))}</div>
{f'<h2>Gates</h2><ul id="checks">{checks}</ul>' if checks else ""}
{f'<h2>Findings</h2><ul id="findings">{findings}</ul>' if findings else ""}
<h2>Annotators</h2>
<figure id="accuracy-chart">{_accuracy_svg(report)}</figure>
<p class="muted">Click a column to sort. Accuracy: the expected share of the annotator's answers that are right
(shrunk toward the crowd's mean for annotators with few answers); 95 % interval from {report.noise["n_bootstrap"]}
item resamples and the uncertainty of each answer's rightness. Copy score: on the items where the reference labeller
disagrees with the other annotators, the share on which this annotator gave the reference's label.</p>
{f"<ul>{reasons}</ul>" if reasons else ""}
<div class="tablewrap"><table id="annotators"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>
<h2>Least certain items</h2>
<table id="items"><thead><tr>{items_head}</tr></thead><tbody>{items_html}</tbody></table>
<h2>Transition matrix</h2>
<figure id="heatmap">{heatmap_svg(report.noise)}</figure>
<p class="muted">{esc(report.noise["orientation"])}. Pooled over all answers. {esc(report.noise["method"])}.</p>
<p class="muted">credaudit {esc(report.tool_version)}, multi-annotator report schema {report.schema_version},
{esc(report.created_at)}; input sha256 {esc(run["input"]["sha256"])}; seed {run["seed"]}.</p>
<script>
(function () {{
  "use strict";
  var table = document.getElementById("annotators");
  var body = table.tBodies[0];
  var headers = table.tHead.rows[0].cells;
  function value(row, index, type) {{
    var cell = row.cells[index];
    if (type === "num") {{ return parseFloat(cell.getAttribute("data-value")); }}
    return cell.textContent.toLowerCase();
  }}
  Array.prototype.forEach.call(headers, function (th, index) {{
    th.addEventListener("click", function () {{
      var type = th.getAttribute("data-type");
      var descending = th.getAttribute("aria-sort") !== "descending";
      Array.prototype.forEach.call(headers, function (other) {{ other.removeAttribute("aria-sort"); }});
      th.setAttribute("aria-sort", descending ? "descending" : "ascending");
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {{
        var x = value(a, index, type), y = value(b, index, type);
        var order = x < y ? -1 : (x > y ? 1 : 0);
        return descending ? -order : order;
      }});
      rows.forEach(function (row) {{ body.appendChild(row); }});
    }});
  }});
}}());
</script>
</body></html>
"""
