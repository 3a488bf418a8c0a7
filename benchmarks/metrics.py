"""Scores of a detector against a truth."""

from __future__ import annotations

import numpy as np


def detection_scores(flags: np.ndarray, scores: np.ndarray, is_error: np.ndarray) -> dict:
    """Precision, recall, F1 of the flagged set; AUROC and average precision of the scores."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    tp = int((flags & is_error).sum())
    n_flag, n_err = int(flags.sum()), int(is_error.sum())
    precision = tp / n_flag if n_flag else (1.0 if n_err == 0 else 0.0)
    recall = tp / n_err if n_err else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    out = {"flagged": n_flag, "errors": n_err, "precision": precision, "recall": recall, "f1": f1}
    if 0 < n_err < len(is_error):
        finite = np.nan_to_num(scores, nan=0.0)
        out["auroc"] = float(roc_auc_score(is_error, finite))
        out["ap"] = float(average_precision_score(is_error, finite))
    return out


def noise_scores(
    estimated_rate: float | None, estimated_t: np.ndarray | None, true_rate: float | None, true_t: np.ndarray | None
) -> dict:
    out = {"noise_rate_true": true_rate}
    if estimated_rate is not None:
        out["noise_rate_est"] = float(estimated_rate)
        if true_rate is not None:
            out["noise_rate_abs_err"] = abs(float(estimated_rate) - true_rate)
    if estimated_t is not None and true_t is not None:
        diff = np.abs(np.asarray(estimated_t) - true_t)
        out["t_mae"] = float(diff.mean())
        out["t_row_tv"] = float(0.5 * diff.sum(axis=1).mean())
    return out


def calibration(
    flags: np.ndarray, suggested: np.ndarray, confidence: np.ndarray, truth: np.ndarray, thresholds=(0.5, 0.7, 0.9)
) -> dict:
    """Among flagged rows whose suggestion confidence is >= q: how many, and the share right."""
    out = {}
    for q in thresholds:
        sel = flags & (confidence >= q)
        out[f"conf>={q}"] = {
            "n": int(sel.sum()),
            "right": float((suggested[sel] == truth[sel]).mean()) if sel.any() else None,
        }
    return out


def precision_at(scores: np.ndarray, is_error: np.ndarray, ks=(100, 500)) -> dict:
    order = np.argsort(-np.nan_to_num(scores, nan=-1.0), kind="stable")
    return {f"precision@{k}": float(is_error[order[:k]].mean()) for k in ks if k <= len(order)}
