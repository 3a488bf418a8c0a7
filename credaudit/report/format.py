"""Small text helpers shared by the renderers."""

from __future__ import annotations

from typing import Any


def excerpt(text: str | None, limit: int) -> str | None:
    """``text`` on one line, cut to ``limit`` characters with an ellipsis."""
    if text is None:
        return None
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def pct(x: float | None, digits: int = 1) -> str:
    return "–" if x is None else f"{100 * x:.{digits}f}%"


def interval(d: dict[str, float], digits: int = 1) -> str:
    """``12.3% (95% CI 10.1–14.0%)``"""
    return f"{pct(d['estimate'], digits)} (95% CI {pct(d['low'], digits)}–{pct(d['high'], digits)})"


def score_interval(d: dict[str, float], digits: int = 3) -> str:
    """``0.859 (95% CI 0.844–0.870)``: for scores in [0, 1] that are not shares (credibility)."""
    return f"{d['estimate']:.{digits}f} (95% CI {d['low']:.{digits}f}–{d['high']:.{digits}f})"


def encoder_line(encoder: dict[str, Any]) -> str:
    """``minilm (384-d, cpu)``, plus the candidates when ``--encoder auto`` chose it."""
    precision = encoder.get("precision")
    where = f"{encoder['device']}, {precision}" if precision and precision != "n/a" else encoder["device"]
    line = f"{encoder['name']} ({encoder['dimension']}-d, {where})"
    candidates = encoder.get("auto_candidates")
    if candidates:
        scores = ", ".join(
            f"{c['name']} {pct(c['knn_label_agreement'])}"
            if c["knn_label_agreement"] is not None
            else f"{c['name']} unavailable"
            for c in candidates
        )
        line += f", chosen by auto on k-NN label agreement: {scores}"
    return line


def size_line(report: Any) -> str:
    """What was audited, for the headers: ``13,083 rows, 77 classes``; for preference pairs
    ``5,000 pairs`` (their two "classes" are the engine's directions, not the user's labels)."""
    rows = report.run["input"]["rows"]
    if report.run.get("kind") == "preference_pairs":
        return f"{rows:,} pairs"
    return f"{rows:,} rows, {len(report.classes)} classes"


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


STATUS_MARK = {"pass": "✅", "warn": "⚠️", "fail": "❌", "inconclusive": "❔", "skipped": "·"}


def cleaning_line(detection: dict[str, Any]) -> str | None:
    """What the cleaned file held back and why (None when the guards held nothing back)."""
    cleaning = detection.get("cleaning")
    if not cleaning or not cleaning["held_back"]:
        return None
    return (
        f"Cleaning held back {cleaning['held_back']:,} flagged row(s) (dropped {cleaning['dropped']:,}, "
        f"relabelled {cleaning['relabelled']:,}): " + "; ".join(cleaning["reasons"])
    )


def untrusted_line(noise: dict[str, Any]) -> str | None:
    """The verdict-area sentence for an untrustworthy noise estimate (None when it is trusted)."""
    if noise.get("trustworthy", True):
        return None
    reasons = "; ".join(noise.get("trust", {}).get("reasons", []))
    return (
        f"Noise estimate UNTRUSTWORTHY: {reasons}. Its interval is widened, gates that read it are inconclusive, "
        "and the flags come from the neighbour vote."
    )


def check_line(check: dict[str, Any]) -> str:
    """``max_noise_rate: noise rate 12.0% (fails above 10.0%) → fail``."""
    if check["status"] == "skipped":
        return f"{check['id']}: skipped ({check.get('message') or 'no threshold set'})"
    return f"{check['id']}: {check.get('message') or check['metric']} → {check['status']}"


def comparison_rows(comparison: dict[str, Any], *, max_classes: int = 10) -> list[tuple[str, str, str, str, str]]:
    """(what, before, after, change, verdict) rows of a baseline comparison.

    Per-class rows: the classes whose intervals separated first, then the largest changes.
    """

    def row(name: str, change: dict[str, Any], digits: int = 1) -> tuple[str, str, str, str, str]:
        delta = change["delta"]
        moved = "changed" if not change["intervals_overlap"] else "within noise"
        return (
            name,
            interval(change["before"], digits),
            interval(change["after"], digits),
            f"{'+' if delta >= 0 else ''}{100 * delta:.{digits}f} pts",
            moved,
        )

    cred = comparison["credibility"]
    cred_delta = cred["delta"]
    rows = [
        row("noise rate", comparison["noise_rate"]),
        (
            "credibility",
            score_interval(cred["before"]),
            score_interval(cred["after"]),
            f"{'+' if cred_delta >= 0 else ''}{cred_delta:.3f}",
            "changed" if not cred["intervals_overlap"] else "within noise",
        ),
    ]
    classes = sorted(comparison["per_class"], key=lambda c: (c["intervals_overlap"], -abs(c["delta"])))
    rows += [row(f"wrong labels in '{c['label']}'", c) for c in classes[:max_classes]]
    return rows


def hygiene_lines(hygiene: dict[str, Any] | None) -> list[str]:
    """One sentence per hygiene check (outliers, near-duplicates, leakage); none for old reports."""
    if not hygiene:
        return []
    out, dup, leak = hygiene["outliers"], hygiene["near_duplicates"], hygiene.get("leakage")
    lines = [
        f"Outliers: {out['count']:,} row(s) ({pct(out['rate'])}), flagged when {out['rule']}; "
        "they get no label verdict.",
        f"Near-duplicates: {dup['groups']:,} group(s) holding {dup['rows']:,} rows ({dup['redundant_rows']:,} "
        f"redundant); {dup['conflicting_groups']:,} group(s) carry conflicting labels.",
    ]
    if leak is not None:
        per = "; ".join(f"{r['reference']}: {r['rows']:,} ({r['exact']:,} identical)" for r in leak["references"])
        lines.append(f"Leakage: {leak['rows']:,} row(s) ({pct(leak['rate'])}) have a duplicate in a reference ({per}).")
    return lines


def hygiene_tables(hygiene: dict[str, Any] | None) -> list[tuple[str, list[str], list[list[str]]]]:
    """The hygiene examples as (title, header, rows) tables, for every renderer; empty tables left out."""
    if not hygiene:
        return []

    def labels(counts: dict[str, int]) -> str:
        return ", ".join(f"{name} ×{n}" for name, n in counts.items())

    def first(excerpts: list[str] | None) -> str:
        return (excerpts or [""])[0] or ""

    def group_row(g: dict[str, Any]) -> list[str]:
        row_ids = ", ".join(map(str, g["row_ids"][:5]))
        return [str(g["group"]), str(g["size"]), labels(g["labels"]), row_ids, first(g["excerpts"])]

    group_header = ["group", "rows", "labels", "row ids", "text"]
    out, dup, leak = hygiene["outliers"], hygiene["near_duplicates"], hygiene.get("leakage")
    tables = [
        (
            "Most outlying rows",
            ["row", "label", "outlier score", "text"],
            [
                [str(r["row_id"]), str(r["label"]), f"{r['outlier_score']:.3f}", r.get("excerpt") or ""]
                for r in out["top_rows"]
            ],
        ),
        ("Near-duplicate groups with conflicting labels", group_header, [group_row(g) for g in dup["conflicting"]]),
        ("Largest near-duplicate groups", group_header, [group_row(g) for g in dup["largest"]]),
    ]
    if leak is not None:
        tables.append(
            (
                "Rows with a duplicate in a reference file",
                ["row", "reference", "reference row", "similarity", "text"],
                [
                    [
                        str(r["row_id"]),
                        r["reference"],
                        str(r["reference_row_id"]),
                        "identical" if r["exact"] else f"{r['similarity']:.3f}",
                        r.get("excerpt") or "",
                    ]
                    for r in leak["examples"]
                ],
            )
        )
    return [t for t in tables if t[2]]


def markdown_gates_and_findings(checks: list[dict[str, Any]], findings: list[dict[str, Any]]) -> list[str]:
    """The "Gates" (checks that ran) and "Findings" sections of a Markdown report, as lines."""
    lines: list[str] = []
    active = [c for c in checks if c["status"] != "skipped"]
    if active:
        lines += ["## Gates", ""] + [f"- {STATUS_MARK[c['status']]} {check_line(c)}" for c in active] + [""]
    if findings:
        lines += ["## Findings", ""]
        lines += [f"- {'⚠️ ' if f['severity'] == 'warning' else ''}{f['message']}" for f in findings] + [""]
    return lines


def terminal_gates_and_findings(checks: list[dict[str, Any]], findings: list[dict[str, Any]]) -> list[str]:
    """One plain line per check that ran, then one per finding ("!" for warnings)."""
    lines = [f"{STATUS_MARK[c['status']]} {check_line(c)}" for c in checks if c["status"] != "skipped"]
    return lines + [("! " if f["severity"] == "warning" else "· ") + f["message"] for f in findings]


def ratings_table(ratings: dict | None) -> tuple[str, list[str], list[list[str]]] | None:
    """The ``ratings`` section as (title, header, rows): the rating distribution before and after curation."""
    if not ratings:
        return None
    rows = [
        [str(point["label"]), f"{point['value']:g}", f"{given:,}", f"{curated:,}"]
        for point, given, curated in zip(ratings["scale"], ratings["given"], ratings["curated"], strict=True)
    ]
    title = (
        f"Ratings: mean {ratings['mean_given']:.2f} given, {ratings['mean_curated']:.2f} curated; "
        f"curated scores move {ratings['mean_absolute_change']:.2f} scale units on average"
    )
    return title, ["rating", "value", "given", "curated (nearest point)"], rows


def markdown_table(rows: list[list[str]]) -> list[str]:
    """A Markdown table block (``rows[0]`` the header; in cells ``|`` escaped, newlines as spaces),
    ending with a blank line."""
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    cell = lambda v: str(v).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    return lines + ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows[1:]] + [""]
