"""report.html: one self-contained page (inline SVG, CSS and script; no network) that a person
understands in ten seconds: the verdict first, then the evidence.

Figures are drawn by matplotlib as SVG and inlined; the page is rendered by a Jinja2 template with
auto-escaping, so texts from the data can never inject markup.
"""

from __future__ import annotations

import io
import json
from importlib import resources
from typing import Any

import numpy as np

from credaudit.report.format import (
    check_line,
    comparison_rows,
    hygiene_lines,
    hygiene_tables,
    interval,
    largest_confusions,
    pct,
    ratings_table,
    score_interval,
    size_line,
    untrusted_line,
)
from credaudit.report.model import AuditReport

# Classes shown in the heatmap and the per-class charts before switching to "the most confused".
MAX_HEATMAP_CLASSES = 20
# Above this many classes the heatmap gets a row of its own in the page.
WIDE_HEATMAP_CLASSES = 10
MAX_BAR_CLASSES = 25


def render_html(report: AuditReport, rows: list[dict[str, Any]]) -> str:
    """The report as a standalone HTML page.

    Parameters
    ----------
    report : AuditReport
    rows : list of dict
        The most suspicious rows for the table (row_id, given_label, suggested_label,
        suggestion_confidence, error_score, excerpt), most suspicious first.
    """
    import jinja2

    template_text = resources.files("credaudit.report").joinpath("templates/report.html.j2").read_text("utf-8")
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    template = env.from_string(template_text)
    noise, det = report.noise, report.detection
    return template.render(
        report=report,
        size=size_line(report),
        noise_rate=interval(noise["noise_rate"]),
        credibility=score_interval(noise["credibility"]),
        flagged=f"{det['flagged']:,} ({pct(det['flagged_rate'])})",
        knn=pct(noise["knn_label_agreement"]),
        untrusted=untrusted_line(noise),
        checks=[dict(c, line=check_line(c)) for c in report.checks if c["status"] != "skipped"],
        comparison=comparison_rows(report.baseline) if report.baseline else None,
        heatmap_svg=heatmap_svg(noise),
        heatmap_wide=len(noise["transition_matrix"]["labels"]) > WIDE_HEATMAP_CLASSES,
        confusions=largest_confusions(noise),
        hygiene_lines=hygiene_lines(report.hygiene),
        hygiene_tables=hygiene_tables(report.hygiene),
        ratings=ratings_table(report.ratings),
        priors_svg=_priors_svg(report),
        error_share_svg=_error_share_svg(report),
        scores_svg=_scores_svg(det),
        rows=rows,
        config_json=json.dumps(report.run["config"], indent=2),
    )


def new_figure(width: float, height: float):
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcParams.update(
        {
            "svg.fonttype": "none",  # text stays text: smaller, selectable, and no embedded font files
            "svg.hashsalt": "credaudit",  # deterministic element ids
            "font.family": "sans-serif",
            "font.size": 9,
            "axes.spines.top": False,
            "axes.spines.right": False,
        }
    )
    return plt.subplots(figsize=(width, height))


def figure_svg(fig) -> str:
    import matplotlib.pyplot as plt

    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    text = buffer.getvalue()
    return text[text.index("<svg") :]  # drop the XML prolog and doctype: the SVG is inlined


def _short(name: str, limit: int = 24) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"


def heatmap_svg(noise: dict) -> str:
    labels = noise["transition_matrix"]["labels"]
    t = np.asarray(noise["transition_matrix"]["values"])
    k = len(labels)
    title = "Transition matrix T[true, observed]"
    if k > MAX_HEATMAP_CLASSES:
        # The most confused classes: largest off-diagonal mass, leaving or arriving.
        off = t - np.diag(np.diag(t))
        keep = np.sort(np.argsort(-(off.sum(axis=1) + off.sum(axis=0)))[:MAX_HEATMAP_CLASSES])
        t = t[np.ix_(keep, keep)]
        labels = [labels[i] for i in keep]
        title += f" — the {len(keep)} most confused of {k} classes"
    size = max(3.5, 0.38 * len(labels) + 1.8)
    fig, ax = new_figure(size + 1.0, size)
    # The diagonal (labels kept) would set the colour scale and hide every confusion: mask it and
    # scale the colours to the largest off-diagonal cell. The kept shares are in the bar charts.
    off = np.where(np.eye(len(labels), dtype=bool), np.nan, t)
    vmax = max(0.05, float(np.nanmax(off)) if off.size > 1 else 0.05)
    import matplotlib

    cmap = matplotlib.colormaps["Reds"].with_extremes(bad="#eeeeee")
    image = ax.imshow(off, cmap=cmap, vmin=0.0, vmax=vmax)
    title += " (diagonal masked)"
    ax.set_xticks(range(len(labels)), [_short(x) for x in labels], rotation=60, ha="right")
    ax.set_yticks(range(len(labels)), [_short(x) for x in labels])
    ax.set_xlabel("observed label")
    ax.set_ylabel("true class")
    ax.set_title(title, loc="left")
    if len(labels) <= 12:
        for i in range(len(labels)):
            for j in range(len(labels)):
                if t[i, j] >= 0.005:
                    ax.text(
                        j,
                        i,
                        f"{t[i, j]:.2f}",
                        ha="center",
                        va="center",
                        fontsize=8,
                        color="white" if i != j and t[i, j] > 0.6 * vmax else "black",
                    )
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="P(observed | true), off the diagonal")
    return figure_svg(fig)


def _class_order(report: AuditReport) -> list[int]:
    """Class indices for the bar charts: all, or the ones with the most wrong labels."""
    per = report.noise["per_class"]
    order = list(range(len(per)))
    if len(order) > MAX_BAR_CLASSES:
        order = sorted(order, key=lambda j: -per[j]["observed_label_error_rate"]["estimate"])[:MAX_BAR_CLASSES]
    return order


def _of_classes(report: AuditReport, order: list[int]) -> str:
    """A title suffix when a chart shows only some classes."""
    k = len(report.classes)
    return "" if len(order) == k else f" — the {len(order)} of {k} classes with the most wrong labels"


def _priors_svg(report: AuditReport) -> str:
    order = _class_order(report)
    names = [_short(report.classes[j]["name"]) for j in order]
    observed = [report.classes[j]["observed_prior"] for j in order]
    clean = [report.noise["clean_prior"][j] for j in order]
    y = np.arange(len(order))
    fig, ax = new_figure(6.0, 0.28 * len(order) + 1.2)
    ax.barh(y - 0.2, observed, height=0.4, label="observed labels (p̃)", color="#9ecae1")
    ax.barh(y + 0.2, clean, height=0.4, label="estimated clean (p)", color="#3182bd")
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    # The x label lives in the title: under the axes it collided with the legend.
    ax.set_title("Class shares of rows: observed vs estimated clean" + _of_classes(report, order), loc="left")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=2, frameon=False)
    return figure_svg(fig)


def _error_share_svg(report: AuditReport) -> str:
    order = _class_order(report)
    per = report.noise["per_class"]
    names = [_short(report.classes[j]["name"]) for j in order]
    est = np.array([per[j]["observed_label_error_rate"]["estimate"] for j in order])
    low = np.array([per[j]["observed_label_error_rate"]["low"] for j in order])
    high = np.array([per[j]["observed_label_error_rate"]["high"] for j in order])
    y = np.arange(len(order))
    fig, ax = new_figure(6.0, 0.28 * len(order) + 1.2)
    ax.barh(y, est, color="#fc9272", xerr=np.vstack([est - low, high - est]), error_kw={"elinewidth": 1, "capsize": 2})
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.set_xlabel("share of the class's rows whose label is wrong (95% interval)")
    ax.set_title("Wrong labels per observed class" + _of_classes(report, order), loc="left")
    return figure_svg(fig)


def _scores_svg(det: dict) -> str:
    hist = det["error_score_histogram"]
    edges = np.asarray(hist["edges"])
    centers = (edges[:-1] + edges[1:]) / 2
    width = edges[1] - edges[0]
    fig, ax = new_figure(6.0, 2.6)
    ax.bar(centers, hist["unflagged"], width=width * 0.95, color="#bdbdbd", label="not flagged")
    ax.bar(centers, hist["flagged"], width=width * 0.95, bottom=hist["unflagged"], color="#de2d26", label="flagged")
    ax.set_yscale("symlog", linthresh=10)
    if hist.get("lowest_flagged_score") is not None:
        lowest = hist["lowest_flagged_score"]
        ax.axvline(lowest, color="black", linestyle="--", linewidth=1)
        # Placed in axes height (the y scale is logarithmic) and on the side with room, never clipped.
        right = lowest > 0.5
        ax.text(
            lowest,
            0.95,
            "lowest flagged score " if right else " lowest flagged score",
            transform=ax.get_xaxis_transform(),
            ha="right" if right else "left",
            va="top",
            fontsize=8,
        )
    ax.set_xlabel("error score (higher = more likely wrong)")
    ax.set_ylabel("rows")
    ax.set_title("Distribution of error scores", loc="left")
    ax.legend(frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return figure_svg(fig)
