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
    texts: list[str] | None,
    labels: np.ndarray,
    row_ids: Sequence[Any],
    class_names: list[str],
    *,
    max_examples: int = 10,
) -> Finding | None:
    """Groups of identical non-empty texts whose rows carry more than one label.

    Parameters
    ----------
    texts : list of str, or None
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
    groups: dict[str, list[int]] = defaultdict(list)
    for row, text in enumerate(texts):
        if text.strip():
            groups[text].append(row)
    conflicts = []
    for text, rows in groups.items():
        if len(rows) > 1 and len(set(labels[rows].tolist())) > 1:
            conflicts.append((text, rows))
    if not conflicts:
        return None
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
