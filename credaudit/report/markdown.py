"""report.md: the verdict for people and for CI summaries (GitHub-flavoured Markdown)."""

from __future__ import annotations

from credaudit.report.format import (
    STATUS_MARK,
    check_line,
    cleaning_line,
    comparison_rows,
    encoder_line,
    hygiene_lines,
    hygiene_tables,
    interval,
    largest_confusions,
    markdown_table,
    pct,
    ratings_table,
    score_interval,
    size_line,
    untrusted_line,
)
from credaudit.report.model import AuditReport

_MAX_FULL_MATRIX = 12


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(report: AuditReport) -> str:
    """The report as Markdown."""
    noise = report.noise
    det = report.detection
    run = report.run
    mark = {"pass": "✅ PASS", "warn": "⚠️ WARN", "fail": "❌ FAIL", "inconclusive": "❔ INCONCLUSIVE"}[report.verdict]
    untrusted = untrusted_line(noise)
    lines = [
        f"# credaudit: {mark}",
        "",
        *([f"> ⚠️ **{untrusted}**", ""] if untrusted else []),
        f"**{run['input']['path']}** — {size_line(report)}, encoder `{run['encoder']['name']}`",
        "",
        "| | |",
        "|---|---|",
        f"| Estimated noise rate | {interval(noise['noise_rate'])} |",
        f"| Credibility | {score_interval(noise['credibility'])} |",
        f"| Flagged label errors | {det['flagged']:,} ({pct(det['flagged_rate'])}) |",
        f"| k-NN label agreement | {pct(noise['knn_label_agreement'])} |",
        f"| Encoder | {_cell(encoder_line(run['encoder']))} |",
        "",
    ]
    active = [c for c in report.checks if c["status"] != "skipped"]
    if active:
        lines += ["## Gates", ""] + [f"- {STATUS_MARK[c['status']]} {check_line(c)}" for c in active] + [""]
    else:
        lines += ["No gate was set: the verdict is pass, or warn when the report has warnings.", ""]

    if report.baseline:
        lines += render_comparison_markdown(report.baseline).splitlines() + [""]

    warnings = [f for f in report.findings if f["severity"] == "warning"]
    infos = [f for f in report.findings if f["severity"] != "warning"]
    held = cleaning_line(det)
    if warnings or infos or held:
        lines += ["## Findings", ""]
        lines += [f"- ⚠️ {_cell(held)}"] if held else []
        lines += [f"- ⚠️ {_cell(f['message'])}" for f in warnings] + [f"- {_cell(f['message'])}" for f in infos] + [""]

    lines += [
        "## Classes",
        "",
        "| class | rows | flagged | wrong labels (observed class) | noise rate (true class) |",
        "|---|---:|---:|---|---|",
    ]
    flagged = {d["label"]: d["flagged"] for d in det["flagged_per_class"]}
    for cls, per in zip(report.classes, noise["per_class"], strict=True):
        lines.append(
            f"| {_cell(cls['name'])} | {cls['count']:,} | {flagged.get(cls['name'], 0):,} | "
            f"{interval(per['observed_label_error_rate'])} | {interval(per['noise_rate'])} |"
        )
    lines.append("")

    tm = noise["transition_matrix"]
    labels = [_cell(x) for x in tm["labels"]]
    if len(labels) <= _MAX_FULL_MATRIX:
        lines += [
            "## Transition matrix",
            "",
            f"_{tm['orientation']}_",
            "",
            "| true \\ observed | " + " | ".join(labels) + " |",
            "|---|" + "---:|" * len(labels),
        ]
        for name, row in zip(labels, tm["values"], strict=True):
            lines.append(f"| **{name}** | " + " | ".join(f"{v:.3f}" for v in row) + " |")
    else:
        lines += [
            "## Largest confusions",
            "",
            "| true class | observed label | P(observed \\| true) |",
            "|---|---|---:|",
        ]
        for true, observed, v in largest_confusions(noise):
            lines.append(f"| {_cell(true)} | {_cell(observed)} | {v:.3f} |")
    lines.append("")

    if det["top_flagged"]:
        lines += [
            f"## Most suspicious rows (top {len(det['top_flagged'])})",
            "",
            "| row | given | suggested | confidence | text |",
            "|---|---|---|---:|---|",
        ]
        for row in det["top_flagged"]:
            lines.append(
                f"| {_cell(row['row_id'])} | {_cell(row['given_label'])} | {_cell(row['suggested_label'])} | "
                f"{row['suggestion_confidence']:.2f} | {_cell(row.get('excerpt') or '')} |"
            )
        lines.append("")
    rated = ratings_table(report.ratings)
    if rated:
        title, header, rows = rated
        lines += ["## Ratings", "", title, ""] + markdown_table([header, *rows])
    hygiene = hygiene_lines(report.hygiene)
    if hygiene:
        lines += ["## Data hygiene", ""] + [f"- {_cell(line)}" for line in hygiene] + [""]
        for title, header, rows in hygiene_tables(report.hygiene):
            lines += [f"**{title}**", ""] + markdown_table([header, *rows])
    lines += [
        f"<sub>credaudit {report.tool_version} · input sha256 {run['input']['sha256'][:12]} · seed {run['seed']} · "
        f"method {det['method']}, k={det['k']}, {det['rounds']} rounds</sub>",
        "",
    ]
    return "\n".join(lines)


def render_comparison_markdown(comparison: dict) -> str:
    """A baseline comparison as a Markdown section."""
    base = comparison["baseline"]
    lines = [
        "## Compared with the baseline",
        "",
        f"Baseline: `{base.get('path') or 'report'}` ({base.get('rows') or '?'} rows, "
        f"{base.get('created_at') or '?'}). "
        "A change counts only when the two 95% intervals do not overlap.",
        "",
        "| | baseline | now | change | |",
        "|---|---|---|---|---|",
    ]
    for what, before, after, change, moved in comparison_rows(comparison):
        lines.append(f"| {_cell(what)} | {before} | {after} | {change} | {moved} |")
    if comparison["classes_added"] or comparison["classes_removed"]:
        lines += [
            "",
            f"Classes added: {', '.join(comparison['classes_added']) or 'none'}; "
            f"removed: {', '.join(comparison['classes_removed']) or 'none'}.",
        ]
    return "\n".join(lines) + "\n"
