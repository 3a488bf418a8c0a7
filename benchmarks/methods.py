"""The detectors compared, each run on the same embeddings and labels.

- ``credaudit``: the public API, ``audit(frame, ScanConfig(), embeddings=X)``: everything a
  user gets after embedding (neighbour graph, transition matrix with bootstrap intervals,
  detection rounds, suggestions).
- ``datalab``: cleanlab 2.9 ``Datalab(...).find_issues(features=X, issue_types={"label": {}})``,
  its training-free k-NN label check.
- ``vote``: the plain similarity-weighted k-NN majority vote (k = 10, the row itself excluded by
  index, exact cosine search with faiss): flag a row when another label has more weight than its
  own; score = 1 - the weight share of its own label. The baseline every detector must beat.
- ``cl_lr``: cleanlab ``find_label_issues`` on 5-fold out-of-fold probabilities of a
  logistic regression on the embeddings (scikit-learn, C = 10, chosen over the default C = 1 as
  the stronger peer on banking77 and ag_news).

Each returns flags, error scores (higher = more likely wrong), and where the method estimates
them, the noise rate and T (rows = true class).
"""

from __future__ import annotations

import time

import numpy as np


def run_credaudit(x: np.ndarray, labels: np.ndarray, seed: int, **overrides) -> dict:
    import polars as pl

    from credaudit import ScanConfig, audit
    from credaudit.config import merge

    config = merge({"seed": seed, **overrides}) if overrides else ScanConfig(seed=seed)
    start = time.perf_counter()
    result = audit(pl.DataFrame({"label": labels}), config, embeddings=x)
    seconds = time.perf_counter() - start
    d = result.detection
    return {
        "flags": d.is_label_error,
        "scores": d.error_score,
        "suggested": d.suggested_label,  # codes: the codec of int labels 0..K-1 is the identity
        "confidence": d.suggestion_confidence,
        "noise_rate": result.noise.noise_rate.estimate,
        "noise_interval": [result.noise.noise_rate.low, result.noise.noise_rate.high],
        "t": result.noise.transition_matrix,
        "seconds": seconds,
        "stage_seconds": result.report.run["stage_seconds"],
        "warnings": [f.kind for f in result.findings if f.severity == "warning"],
        "trustworthy": bool(result.report.noise["trustworthy"]),
    }


def _cleanlab_noise(info_py, noise_matrix) -> tuple[float, np.ndarray]:
    # cleanlab's noise_matrix[i][j] = P(given = i | true = j): ours is its transpose.
    t = np.asarray(noise_matrix).T
    py = np.asarray(info_py)
    return float(1.0 - np.sum(py * np.diag(t))), t


def run_datalab(x: np.ndarray, labels: np.ndarray, seed: int) -> dict:
    from cleanlab import Datalab

    start = time.perf_counter()
    lab = Datalab(data={"label": labels}, label_name="label", verbosity=0)
    lab.find_issues(features=x, issue_types={"label": {}})
    issues = lab.get_issues("label")
    seconds = time.perf_counter() - start
    info = lab.get_info("label")
    rate, t = _cleanlab_noise(info["py"], info["noise_matrix"])
    return {
        "flags": issues["is_label_issue"].to_numpy(),
        "scores": 1.0 - issues["label_score"].to_numpy(),
        "noise_rate": rate,
        "t": t,
        "seconds": seconds,
    }


def run_cl_lr(x: np.ndarray, labels: np.ndarray, seed: int) -> dict:
    from cleanlab.count import estimate_py_and_noise_matrices_from_probabilities
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    start = time.perf_counter()
    probs = cross_val_predict(
        LogisticRegression(C=10.0, max_iter=1000),
        x,
        labels,
        cv=StratifiedKFold(5, shuffle=True, random_state=seed),
        method="predict_proba",
    )
    flags = find_label_issues(labels, probs)
    scores = 1.0 - get_label_quality_scores(labels, probs)
    seconds = time.perf_counter() - start
    py, noise_matrix, _, _ = estimate_py_and_noise_matrices_from_probabilities(labels, probs)
    rate, t = _cleanlab_noise(py, noise_matrix)
    return {"flags": flags, "scores": scores, "noise_rate": rate, "t": t, "seconds": seconds}


def run_vote(x: np.ndarray, labels: np.ndarray, seed: int, k: int = 10) -> dict:
    import faiss

    start = time.perf_counter()
    n = len(labels)
    n_classes = int(labels.max()) + 1
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(np.ascontiguousarray(x, dtype=np.float32))
    sims, idx = index.search(np.ascontiguousarray(x, dtype=np.float32), k + 1)
    # Drop the row itself by index (exact duplicates can come first), keep k others.
    not_self = idx != np.arange(n)[:, None]
    order = np.argsort(~not_self, axis=1, kind="stable")[:, :k]
    idx = np.take_along_axis(idx, order, axis=1)
    sims = np.clip(np.take_along_axis(sims, order, axis=1), 0.0, None)
    vote = np.zeros((n, n_classes))
    np.add.at(vote, (np.repeat(np.arange(n), k), labels[idx].ravel()), sims.ravel())
    total = np.maximum(vote.sum(axis=1), 1e-12)
    own = vote[np.arange(n), labels]
    flags = vote.max(axis=1) > own
    seconds = time.perf_counter() - start
    return {"flags": flags, "scores": 1.0 - own / total, "seconds": seconds}


METHODS = {"credaudit": run_credaudit, "vote": run_vote, "datalab": run_datalab, "cl_lr": run_cl_lr}
