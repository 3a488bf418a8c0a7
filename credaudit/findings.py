"""Findings: facts about the data that a reader of the report should know, beyond the flags.

- identical texts carrying different labels;
- classes too small for their transition-matrix row to be trusted;
- rows of T that are not diagonally dominant (the estimate cannot be trusted for that class);
- k-NN label agreement close to chance (the features hardly separate the classes);
- empty texts.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from credaudit.noise import NoiseEstimate
from credaudit.trust import TrustAssessment


@dataclass(frozen=True)
class Finding:
    """One finding.

    Attributes
    ----------
    kind : str
        ``conflicting_duplicates``, ``tiny_class``, ``not_diagonally_dominant``, ``weak_features``
        or ``empty_texts``.
    severity : str
        ``warning`` (the estimate or the data needs attention) or ``info``.
    message : str
        One sentence for people.
    details : dict
        Machine-readable specifics.
    """

    kind: str
    severity: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "severity": self.severity, "message": self.message, "details": self.details}


def find_conflicting_duplicates(
    texts: pl.Series | list[str] | None,
    labels: np.ndarray,
    row_ids: Sequence[Any] | pl.Series,
    class_names: list[str],
    *,
    max_examples: int = 10,
) -> Finding | None:
    """Groups of identical non-empty texts whose rows carry more than one label.

    Parameters
    ----------
    texts : polars.Series or list of str, or None
        Per-row texts (None: no text column, nothing to compare).
    labels : ndarray of shape (N,), dtype int64
        Label codes.
    row_ids : sequence
        Per-row identifiers shown in the examples.
    class_names : list of str
        Display name of each code.
    """
    if texts is None:
        return None
    # Grouped by polars, not a Python dict over every row: each non-empty text's rows (ascending)
    # and how many labels they carry.
    frame = pl.DataFrame({"text": pl.Series(texts, dtype=pl.String), "label": labels}).with_row_index("row")
    groups = (
        frame.filter(pl.col("text").str.strip_chars() != "")
        .group_by("text")
        .agg(pl.col("row"), pl.col("label").n_unique().alias("n_labels"))
        .filter((pl.col("n_labels") > 1) & (pl.col("row").list.len() > 1))
    )
    if not groups.height:
        return None
    conflicts = [(text, rows) for text, rows in zip(groups["text"].to_list(), groups["row"].to_list(), strict=True)]
    conflicts.sort(key=lambda item: (-len(item[1]), item[1][0]))
    n_rows = sum(len(rows) for _, rows in conflicts)
    examples = []
    for text, rows in conflicts[:max_examples]:
        counts: dict[str, int] = defaultdict(int)
        for r in rows:
            counts[class_names[labels[r]]] += 1
        examples.append({"text": text[:200], "labels": dict(counts), "row_ids": [row_ids[int(r)] for r in rows[:20]]})
    return Finding(
        kind="conflicting_duplicates",
        severity="warning",
        message=f"{len(conflicts)} text(s) appear several times with different labels ({n_rows} rows); "
        "at most one label can be right",
        details={"groups": len(conflicts), "rows": n_rows, "examples": examples},
    )


def find_estimate_warnings(
    estimate: NoiseEstimate,
    class_counts: np.ndarray,
    class_names: list[str],
    trust: TrustAssessment,
    *,
    min_class_rows: int,
) -> list[Finding]:
    """Warnings where the noise estimate cannot be trusted (trust.py runs the checks)."""
    findings = []
    tiny = [(class_names[j], int(n)) for j, n in enumerate(class_counts) if n < min_class_rows]
    if tiny:
        names = ", ".join(f"{name} ({n} rows)" for name, n in tiny[:10])
        findings.append(
            Finding(
                kind="tiny_class",
                severity="warning",
                message=f"{len(tiny)} class(es) have fewer than {min_class_rows} rows, "
                f"too few to estimate their noise reliably: {names}",
                details={"classes": [{"label": name, "rows": n} for name, n in tiny], "min_class_rows": min_class_rows},
            )
        )
    if trust.untrusted_classes:
        t = estimate.transition_matrix
        rows = []
        for i in trust.untrusted_classes:
            off = t[i].copy()
            off[i] = -1
            j = int(off.argmax())
            rows.append(
                {
                    "true": class_names[i],
                    "kept": round(float(t[i, i]), 4),
                    "to": class_names[j],
                    "share": round(float(t[i, j]), 4),
                }
            )
        text = "; ".join(f"true {r['true']}: {r['kept']:.0%} kept, {r['share']:.0%} to {r['to']}" for r in rows[:5])
        findings.append(
            Finding(
                kind="not_diagonally_dominant",
                severity="warning",
                message=f"{len(rows)} row(s) of the transition matrix are not diagonally dominant, so the noise "
                f"estimate is untrustworthy and flags come from the neighbour vote: {text}",
                details={"rows": rows},
            )
        )
    if trust.kappa < trust.min_kappa:
        findings.append(
            Finding(
                kind="weak_features",
                severity="warning",
                message=f"only {trust.knn_agreement:.0%} of neighbours share a row's label, against "
                f"{trust.chance_agreement:.0%} expected by chance from the class frequencies: the embeddings barely "
                "separate the classes, so the noise estimate is untrustworthy and the flags are unreliable "
                "(try another encoder)",
                details={
                    "knn_label_agreement": trust.knn_agreement,
                    "chance_agreement": trust.chance_agreement,
                    "kappa": trust.kappa,
                    "min_kappa": trust.min_kappa,
                },
            )
        )
    return findings


def find_empty_texts(n_empty: int, n_rows: int) -> Finding | None:
    if not n_empty:
        return None
    return Finding(
        kind="empty_texts",
        severity="warning" if n_empty / n_rows > 0.01 else "info",
        message=f"{n_empty} row(s) have an empty or null text; they were embedded as the empty string",
        details={"rows": n_empty},
    )
