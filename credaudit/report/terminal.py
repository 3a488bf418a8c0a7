"""The terminal rendering (rich): verdict first, then the numbers a person acts on.

A pure function from AuditReport to text; colour and width are the caller's decision (plain text
when CI is set, the stream is not a terminal, or NO_COLOR is set).
"""

from __future__ import annotations

import io

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from credaudit.report.format import (
    check_line,
    cleaning_line,
    comparison_rows,
    encoder_line,
    hygiene_lines,
    hygiene_tables,
    interval,
    largest_confusions,
    pct,
    score_interval,
    size_line,
    untrusted_line,
)
from credaudit.report.model import AuditReport

_MAX_FULL_MATRIX = 10
_MAX_CLASS_ROWS = 25
_MAX_EXAMPLES = 5


def _console(buffer: io.StringIO, *, color: bool, width: int) -> Console:
    """A rich console writing into ``buffer``: ANSI colour only if ``color``, no markup guessing."""
    return Console(
        file=buffer,
        width=width,
        color_system="standard" if color else None,
        force_terminal=color,
        no_color=not color,
        highlight=False,
        emoji=False,
    )


def render_terminal(
    report: AuditReport, *, color: bool = False, width: int = 100, outputs: list[str] | None = None
) -> str:
    """The report for a terminal, as text (ANSI colour codes only if ``color``)."""
    buffer = io.StringIO()
    console = _console(buffer, color=color, width=width)
    console.print(_body(report, outputs or []))
    return buffer.getvalue()


def _body(report: AuditReport, outputs: list[str]) -> Group:
    noise, det, run = report.noise, report.detection, report.run
    parts: list = []
    styles = {
        "pass": "bold white on green",
        "warn": "bold black on yellow",
        "fail": "bold white on red",
        "inconclusive": "bold black on yellow",
    }
    headline = Text()
    headline.append(f" {report.verdict.upper()} ", style=styles[report.verdict])
    headline.append(f"  {run['input']['path']}: {size_line(report)}")
    parts.append(headline)
    untrusted = untrusted_line(noise)
    if untrusted:
        parts.append(Text(untrusted, style="bold yellow"))
    parts.append(Text())

    summary = Table.grid(padding=(0, 2))
    summary.add_row(
        "Estimated noise rate", interval(noise["noise_rate"]) + ("" if noise["trustworthy"] else "  UNTRUSTWORTHY")
    )
    summary.add_row("Credibility", score_interval(noise["credibility"]))
    summary.add_row("Flagged label errors", f"{det['flagged']:,} ({pct(det['flagged_rate'])})")
    summary.add_row("k-NN label agreement", pct(noise["knn_label_agreement"]))
    summary.add_row("Encoder", encoder_line(run["encoder"]))
    parts.append(summary)

    active = [c for c in report.checks if c["status"] != "skipped"]
    if active:
        parts.append(Text())
        marks = {
            "pass": ("✓ ", "green"),
            "warn": ("! ", "yellow"),
            "fail": ("✗ ", "bold red"),
            "inconclusive": ("? ", "bold yellow"),
        }
        for check in active:
            mark, style = marks[check["status"]]
            parts.append(Text(mark + check_line(check), style=style))
    if report.baseline:
        parts.append(Text())
        parts.append(comparison_table(report.baseline))

    held = cleaning_line(det)
    if held:
        parts.append(Text("! " + held, style="yellow"))
    for finding in report.findings:
        style = "yellow" if finding["severity"] == "warning" else "dim"
        parts.append(Text(("! " if finding["severity"] == "warning" else "· ") + finding["message"], style=style))

    for line in hygiene_lines(report.hygiene):
        parts.append(Text("· " + line, style="dim"))

    parts.append(Text())
    parts.append(_class_table(report))
    parts.append(Text())
    parts.append(_matrix(noise))
    if det["top_flagged"]:
        parts.append(Text())
        parts.append(_rows_table(det))
    for title, header, rows in hygiene_tables(report.hygiene):
        parts.append(Text())
        parts.append(
            _example_table(f"{title} (top {min(len(rows), _MAX_EXAMPLES)}; all in issues.parquet)", header, rows)
        )
    if outputs:
        parts.append(Text())
        parts.append(Text("Wrote " + ", ".join(outputs), style="dim"))
    return Group(*parts)


def _class_table(report: AuditReport) -> Table:
    noise, det = report.noise, report.detection
    flagged = {d["label"]: d["flagged"] for d in det["flagged_per_class"]}
    rows = list(zip(report.classes, noise["per_class"], strict=True))
    title = "Per class"
    if len(rows) > _MAX_CLASS_ROWS:
        rows.sort(key=lambda r: -r[1]["observed_label_error_rate"]["estimate"])
        title = f"Per class ({_MAX_CLASS_ROWS} of {len(rows)} with the most wrong labels; all in report.json)"
        rows = rows[:_MAX_CLASS_ROWS]
    table = Table(title=title, title_justify="left", show_edge=False)
    table.add_column("class")
    table.add_column("rows", justify="right")
    table.add_column("flagged", justify="right")
    table.add_column("wrong labels (observed)", justify="right")
    table.add_column("noise rate (true class)", justify="right")
    for cls, per in rows:
        table.add_row(
            cls["name"],
            f"{cls['count']:,}",
            f"{flagged.get(cls['name'], 0):,}",
            interval(per["observed_label_error_rate"]),
            interval(per["noise_rate"]),
        )
    return table


def _matrix(noise: dict) -> Table:
    tm = noise["transition_matrix"]
    labels = tm["labels"]
    if len(labels) <= _MAX_FULL_MATRIX:
        table = Table(
            title="Transition matrix T[true, observed] (rows: true class; each row sums to 1)",
            title_justify="left",
            show_edge=False,
        )
        table.add_column("true \\ observed")
        for name in labels:
            table.add_column(str(name)[:12], justify="right")
        for i, (name, row) in enumerate(zip(labels, tm["values"], strict=True)):
            table.add_row(
                str(name),
                *[
                    Text(f"{v:.3f}", style="bold" if i == j else ("yellow" if v >= 0.05 else ""))
                    for j, v in enumerate(row)
                ],
            )
        return table
    table = Table(title="Largest confusions P(observed | true)", title_justify="left", show_edge=False)
    table.add_column("true class")
    table.add_column("observed label")
    table.add_column("probability", justify="right")
    for true, observed, v in largest_confusions(noise):
        table.add_row(str(true), str(observed), f"{v:.3f}")
    return table


def _rows_table(det: dict) -> Table:
    table = Table(
        title=f"Most suspicious rows (top {len(det['top_flagged'])}; all in issues.parquet)",
        title_justify="left",
        show_edge=False,
    )
    # Row ids are never cut: a reviewer copies them to find the row. The text column gives way.
    id_width = max((len(str(row["row_id"])) for row in det["top_flagged"]), default=3)
    table.add_column("row", no_wrap=True, min_width=id_width)
    table.add_column("given")
    table.add_column("suggested")
    table.add_column("conf.", justify="right")
    table.add_column("text", overflow="ellipsis", no_wrap=True, max_width=60)
    for row in det["top_flagged"]:
        table.add_row(
            str(row["row_id"]),
            str(row["given_label"]),
            str(row["suggested_label"]),
            f"{row['suggestion_confidence']:.2f}",
            row.get("excerpt") or "",
        )
    return table


def rows_table(title: str, rows: list[list[str]]) -> Table:
    """A plain rich table: ``rows[0]`` is the header, the rest are rows."""
    table = Table(title=title, title_justify="left", show_edge=False)
    for name in rows[0]:
        table.add_column(name)
    for row in rows[1:]:
        table.add_row(*row)
    return table


def _example_table(title: str, header: list[str], rows: list[list[str]]) -> Table:
    """A few example rows; ids are never cut, the text column (last) gives way."""
    table = Table(title=title, title_justify="left", show_edge=False)
    for name in header[:-1]:
        table.add_column(name, no_wrap=name in ("row", "group", "reference row"))
    table.add_column(header[-1], overflow="ellipsis", no_wrap=True, max_width=60)
    for row in rows[:_MAX_EXAMPLES]:
        table.add_row(*row)
    return table


def comparison_table(comparison: dict) -> Table:
    """A baseline comparison as a rich table."""
    base = comparison["baseline"]
    table = Table(
        title=f"Compared with {base.get('path') or 'the baseline'} (changes count when the 95% intervals "
        "do not overlap)",
        title_justify="left",
        show_edge=False,
    )
    for name in ("", "baseline", "now", "change", ""):
        table.add_column(name)
    for what, before, after, change, moved in comparison_rows(comparison):
        style = "" if moved == "within noise" else "bold"
        table.add_row(what, before, after, Text(change, style=style), moved)
    return table


def render_comparison(comparison: dict, checks: list[dict], *, color: bool = False, width: int = 100) -> str:
    """``credaudit diff`` for a terminal."""
    buffer = io.StringIO()
    console = _console(buffer, color=color, width=width)
    console.print(comparison_table(comparison))
    for check in checks:
        if check["status"] != "skipped":
            console.print(Text(check_line(check), style="bold red" if check["status"] == "fail" else ""))
    return buffer.getvalue()


def render_quiet(report: AuditReport) -> str:
    """One verdict line."""
    noise = report.noise
    failed = [c["id"] for c in report.checks if c["status"] == "fail"]
    warned = [c["id"] for c in report.checks if c["status"] == "warn"]
    unsure = [c["id"] for c in report.checks if c["status"] == "inconclusive"]
    tail = (f"; failed: {', '.join(failed)}" if failed else "") + (f"; warned: {', '.join(warned)}" if warned else "")
    tail += f"; inconclusive: {', '.join(unsure)}" if unsure else ""
    tail += "" if noise["trustworthy"] else "; noise estimate UNTRUSTWORTHY"
    return (
        f"{report.verdict.upper()} {report.run['input']['path']}: noise {pct(noise['noise_rate']['estimate'])} "
        f"[{pct(noise['noise_rate']['low'])}, {pct(noise['noise_rate']['high'])}], credibility "
        f"{noise['credibility']['estimate']:.3f}, {report.detection['flagged']} flagged{tail}\n"
    )
