"""What ``cleaned.<ext>`` may change: flagged rows, guarded.

Detection decides which rows are probably wrong; cleaning decides which of them the cleaned file
actually drops or relabels. Two guards hold rows back, because a wrong audit that deletes data
while reporting success is worse than no audit:

- **trust**: when the noise estimate is untrustworthy (trust.py), nothing is dropped or relabelled
  unless the user forces it (``force``); the flags remain in issues.parquet for review;
- **class share**: at most ``max_class_share`` of the rows of any observed class are dropped or
  relabelled, the highest error scores first. A class can never vanish from the cleaned file.

The plan is one boolean per row per action; ``AuditResult.cleaned`` applies it and the report's
``cleaning`` section says what was held back and why.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class CleaningPlan:
    """Per-row actions for the cleaned file.

    Attributes
    ----------
    mode : str
        ``drop``, ``relabel`` or ``flag``.
    drop : ndarray of shape (N,), dtype bool
        Rows left out of the cleaned file.
    relabel : ndarray of shape (N,), dtype bool
        Rows whose label is replaced by the suggestion.
    held_back : ndarray of shape (N,), dtype bool
        Flagged rows the guards kept unchanged.
    reasons : list of str
        One sentence per guard that held rows back.
    """

    mode: str
    drop: np.ndarray
    relabel: np.ndarray
    held_back: np.ndarray
    reasons: list[str] = field(default_factory=list)

    def to_dict(self, labels: np.ndarray, class_names: list[str]) -> dict[str, Any]:
        """The report's ``cleaning`` section (``labels``: observed codes, for the per-class counts)."""
        per_class = []
        for j, name in enumerate(class_names):
            in_class = labels == j
            row = {
                "label": name,
                "dropped": int((self.drop & in_class).sum()),
                "relabelled": int((self.relabel & in_class).sum()),
                "held_back": int((self.held_back & in_class).sum()),
            }
            if any(v for k, v in row.items() if k != "label"):
                per_class.append(row)
        return {
            "mode": self.mode,
            "dropped": int(self.drop.sum()),
            "relabelled": int(self.relabel.sum()),
            "held_back": int(self.held_back.sum()),
            "reasons": list(self.reasons),
            "per_class": per_class,
        }


def plan_cleaning(
    labels: np.ndarray,
    flagged: np.ndarray,
    error_score: np.ndarray,
    suggestion_confidence: np.ndarray,
    *,
    n_classes: int,
    mode: str,
    min_confidence: float,
    trusted: bool,
    max_class_share: float,
    force: bool = False,
) -> CleaningPlan:
    """Decide what the cleaned file drops and relabels.

    Parameters
    ----------
    labels : ndarray of shape (N,), dtype int64
        Observed label codes.
    flagged : ndarray of shape (N,), dtype bool
        Detection's flags.
    error_score : ndarray of shape (N,)
        Higher = more likely wrong; orders the rows within a class's share.
    suggestion_confidence : ndarray of shape (N,)
        Posterior probability of each row's suggested label.
    n_classes : int
        K.
    mode : {"drop", "relabel", "flag"}
        ``drop`` flagged rows; ``relabel`` flagged rows whose confidence is at least
        ``min_confidence`` and drop the other flagged rows; ``flag`` changes nothing (columns are
        added instead).
    min_confidence : float
    trusted : bool
        Whether the noise estimate passed the trust checks.
    max_class_share : float
        Most rows of any observed class that may be dropped or relabelled, as a share of it; at
        least one row of each class always stays.
    force : bool
        Clean even with an untrustworthy estimate (the class share still applies).

    Returns
    -------
    CleaningPlan
    """
    if mode not in ("drop", "relabel", "flag"):
        raise ValueError(f"mode must be drop, relabel or flag; got {mode!r}")
    n_rows = len(labels)
    none = np.zeros(n_rows, dtype=bool)
    if mode == "flag" or not flagged.any():
        return CleaningPlan(mode, none, none.copy(), none.copy())
    reasons = []
    if not trusted and not force:
        reasons.append(
            f"the noise estimate is untrustworthy, so none of the {int(flagged.sum())} flagged rows was dropped or "
            "relabelled; review them in issues.parquet, or pass --force-clean"
        )
        return CleaningPlan(mode, none, none.copy(), flagged.copy(), reasons)

    acted = flagged.copy()
    counts = np.bincount(labels, minlength=n_classes)
    # Even at a share of 1.0, one row of every class stays: a class never vanishes from the file.
    allowed = np.minimum(np.floor(counts * max_class_share), np.maximum(counts - 1, 0)).astype(np.int64)
    score = np.nan_to_num(error_score, nan=-1.0)
    capped = []
    for j in np.flatnonzero(np.bincount(labels[flagged], minlength=n_classes) > allowed):
        rows = np.flatnonzero(flagged & (labels == j))
        # Most suspicious first; row number breaks ties, so the plan is deterministic.
        order = rows[np.lexsort((rows, -score[rows]))]
        acted[order[allowed[j] :]] = False
        capped.append(int(j))
    held_back = flagged & ~acted
    if capped:
        reasons.append(
            f"{int(held_back.sum())} flagged row(s) of {len(capped)} class(es) were kept unchanged: at most "
            f"{max_class_share:.0%} of a class is dropped or relabelled (--max-clean-share), and never its last row"
        )
    if mode == "drop":
        return CleaningPlan(mode, acted, none.copy(), held_back, reasons)
    relabel = acted & (suggestion_confidence >= min_confidence)
    return CleaningPlan(mode, acted & ~relabel, relabel, held_back, reasons)
