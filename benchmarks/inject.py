"""Seeded label-noise injection with a known truth.

- ``symmetric``: a flipped row gets a uniformly chosen other class.
- ``pairflip``: a flipped row of class i gets class pair(i), the class whose centroid is nearest
  to i's (a fixed confusable partner).
- ``to_majority`` / ``majority_only``: class-conditional noise only into, or only out of, the
  majority class (imbalanced sets).
- ``instance``: within each class, rows closer to another class are more likely to be flipped,
  and to that class: the realistic and hard case (the flip looks like the neighbourhood).

Every kind flips each row of class i independently at the given rate (instance: exactly
round(rate · n_i) rows per class), so the injected T is known.
"""

from __future__ import annotations

import numpy as np

KINDS = ("symmetric", "pairflip", "instance")
# Class-conditional noise aimed at imbalance (run on chosen sets only, see run.py):
# - ``to_majority``: a flipped row of any other class gets the majority class;
# - ``majority_only``: only majority-class rows flip, each to a uniformly chosen other class.
IMBALANCE_KINDS = ("to_majority", "majority_only")


def class_centroids(x: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    c = np.stack([x[labels == k].mean(axis=0) for k in range(n_classes)])
    return c / np.maximum(np.linalg.norm(c, axis=1, keepdims=True), 1e-12)


def inject(x: np.ndarray, labels: np.ndarray, kind: str, rate: float, seed: int) -> np.ndarray:
    """Observed labels after injecting ``kind`` noise at ``rate`` into clean ``labels``."""
    rng = np.random.default_rng(seed)
    n_classes = int(labels.max()) + 1
    n = len(labels)
    noisy = labels.copy()
    if rate <= 0:
        return noisy
    if kind in IMBALANCE_KINDS:
        majority = int(np.bincount(labels).argmax())
        flip = rng.random(n) < rate
        if kind == "to_majority":
            flip &= labels != majority
            noisy[flip] = majority
        else:
            flip &= labels == majority
            offset = rng.integers(1, n_classes, size=n)
            noisy[flip] = (labels[flip] + offset[flip]) % n_classes
        return noisy
    if kind == "symmetric":
        flip = rng.random(n) < rate
        offset = rng.integers(1, n_classes, size=n)
        noisy[flip] = (labels[flip] + offset[flip]) % n_classes
        return noisy
    centroids = class_centroids(x, labels, n_classes)
    if kind == "pairflip":
        similarity = centroids @ centroids.T
        np.fill_diagonal(similarity, -np.inf)
        partner = similarity.argmax(axis=1)
        flip = rng.random(n) < rate
        noisy[flip] = partner[labels[flip]]
        return noisy
    if kind == "instance":
        sims = x @ centroids.T
        own = sims[np.arange(n), labels].copy()
        sims[np.arange(n), labels] = -np.inf
        margin = sims.max(axis=1) - own  # > 0: closer to another class's centroid than to its own
        for k in range(n_classes):
            rows = np.flatnonzero(labels == k)
            count = int(round(rate * len(rows)))
            if count == 0:
                continue
            z = (margin[rows] - margin[rows].mean()) / (margin[rows].std() + 1e-12)
            weight = np.exp(2.0 * z)
            chosen = rng.choice(rows, size=count, replace=False, p=weight / weight.sum())
            logits = sims[chosen] / 0.05
            logits -= logits.max(axis=1, keepdims=True)
            prob = np.exp(logits)
            prob /= prob.sum(axis=1, keepdims=True)
            noisy[chosen] = [rng.choice(n_classes, p=p) for p in prob]
        return noisy
    raise ValueError(kind)


def transition_matrix(true: np.ndarray, observed: np.ndarray, n_classes: int) -> np.ndarray:
    """The realised T[i, j] = share of true-class-i rows observed as j (rows sum to 1)."""
    counts = np.zeros((n_classes, n_classes))
    np.add.at(counts, (true, observed), 1)
    return counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
