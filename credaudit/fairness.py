"""Fairness gaps when the sensitive attribute is missing, from weak proxies.

Notation: Ŷ the model's binary prediction, Y the binary outcome, A the hidden group (G values),
Ã₁..Ã_m (m >= 3) proxies of A, each with its own transition matrix
``T_k[i, j] = P(Ã_k = j | A = i)`` (rows: true group; each row sums to 1).

Gaps, for each pair of groups (a, b) and overall (the largest pair):

- ``dp_gap``  = |P(Ŷ=1 | A=a) − P(Ŷ=1 | A=b)|                    (demographic parity)
- ``eop_gap`` = |P(Ŷ=1 | Y=1, A=a) − P(Ŷ=1 | Y=1, A=b)|          (equal opportunity: TPR)
- ``eo_gap``  = max over y of |P(Ŷ=1 | Y=y, A=a) − P(Ŷ=1 | Y=y, A=b)|   (equalized odds)

**Naive**: the proxies' majority vote taken as the group (ties: the first proxy).

**Calibrated** (Zhu, Yao, Sun et al., ICML 2023): the proxies' errors are not random, but with
three or more proxies whose errors are conditionally independent the high-order consensus model
identifies the matrices T_k and, *for each slice s* (s = the value of Ŷ for DP; the (Ŷ, Y) cell
for EO and EOp), the group shares π_s[a] = P(A = a | s) (noise.fit_latent_classes; the matrices
are shared by the slices unless ``per_slice``, see :func:`fit_slices`). Then, by Bayes over the
slices,

    P(Ŷ=1 | A=a)       = π_{1}[a] P(Ŷ=1) / Σ_ŷ π_{ŷ}[a] P(Ŷ=ŷ)
    P(Ŷ=1 | Y=y, A=a)  = π_{1,y}[a] P(Ŷ=1, Y=y) / Σ_ŷ π_{ŷ,y}[a] P(Ŷ=ŷ, Y=y)

Intervals: a row bootstrap (rows resampled
with replacement; every slice refitted, warm-started) with percentile bounds.

**Reference**: where a column with the true attribute exists for some rows, the same gaps on
those rows.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import numpy as np

from credaudit.noise import LatentClassFit, fit_latent_classes
from credaudit.progress import NullProgress, Progress

# Each gap and its name for people, in report order.
METRIC_NAMES = {"dp_gap": "demographic parity", "eop_gap": "equal opportunity", "eo_gap": "equalized odds"}
METRICS = tuple(METRIC_NAMES)


@dataclass(frozen=True)
class FairnessData:
    """The validated input, as codes.

    Attributes
    ----------
    pred : ndarray of shape (N,), int64
        The prediction Ŷ in {0, 1}.
    label : ndarray of shape (N,), int64, or None
        The outcome Y in {0, 1}.
    proxies : ndarray of shape (N, m), int64
        Proxy group codes 0..G-1, one column per proxy.
    group : ndarray of shape (N,), int64, or None
        The true group where known, -1 elsewhere.
    groups : list of str
        The group names; code g is groups[g].
    """

    pred: np.ndarray
    label: np.ndarray | None
    proxies: np.ndarray
    group: np.ndarray | None
    groups: list[str]


def _rates_from_shares(
    shares: dict[Any, np.ndarray], weights: dict[Any, float], positive: list, all_: list
) -> np.ndarray:
    """P(positive slices | group) for each group, from per-slice group shares and slice weights."""
    numerator = sum(shares[s] * weights[s] for s in positive)
    denominator = sum(shares[s] * weights[s] for s in all_)
    return np.divide(numerator, denominator, out=np.full_like(numerator, np.nan), where=denominator > 0)


def group_rates(shares: dict[Any, np.ndarray], weights: dict[Any, float], *, with_label: bool) -> dict[str, np.ndarray]:
    """Per-group positive rates from the group shares of each slice.

    Parameters
    ----------
    shares : dict
        Slice -> ndarray (G,) of P(A = a | slice). Slices are ŷ (0/1), or (ŷ, y) pairs.
    weights : dict
        Slice -> P(slice).
    with_label : bool
        Whether the slices are (ŷ, y) pairs (then TPR and FPR are returned too).

    Returns
    -------
    dict
        ``positive_rate`` P(Ŷ=1 | A), and with labels ``tpr`` P(Ŷ=1 | Y=1, A), ``fpr`` P(Ŷ=1 | Y=0, A).
    """
    if not with_label:
        return {"positive_rate": _rates_from_shares(shares, weights, [1], [0, 1])}
    cells = [(0, 0), (0, 1), (1, 0), (1, 1)]
    return {
        "positive_rate": _rates_from_shares(shares, weights, [(1, 0), (1, 1)], cells),
        "tpr": _rates_from_shares(shares, weights, [(1, 1)], [(0, 1), (1, 1)]),
        "fpr": _rates_from_shares(shares, weights, [(1, 0)], [(0, 0), (1, 0)]),
    }


def gaps(rates: dict[str, np.ndarray], pairs: list[tuple[int, int]]) -> dict[str, np.ndarray]:
    """Per group pair, each metric's absolute gap (NaN where a group has no data)."""
    out = {}
    pos = rates["positive_rate"]
    out["dp_gap"] = np.array([abs(pos[a] - pos[b]) for a, b in pairs])
    if "tpr" in rates:
        tpr, fpr = rates["tpr"], rates["fpr"]
        out["eop_gap"] = np.array([abs(tpr[a] - tpr[b]) for a, b in pairs])
        # Undefined (NaN) when either rate is: a max that skipped a NaN would understate the gap.
        out["eo_gap"] = np.array([np.maximum(abs(tpr[a] - tpr[b]), abs(fpr[a] - fpr[b])) for a, b in pairs])
    return out


def _slices(data: FairnessData) -> np.ndarray:
    """Each row's slice code: ŷ, or 2·ŷ + y with labels."""
    return data.pred if data.label is None else 2 * data.pred + data.label


def _slice_key(code: int, with_label: bool):
    return (code // 2, code % 2) if with_label else code


def observed_rates(groups_of_rows: np.ndarray, data: FairnessData, n_groups: int, rows: np.ndarray | None = None):
    """Per-group rates when ``groups_of_rows`` is taken as the group (naive and reference)."""
    keep = np.ones(len(data.pred), dtype=bool) if rows is None else rows
    keep = keep & (groups_of_rows >= 0)
    with_label = data.label is not None
    slice_codes = _slices(data)[keep]
    g = groups_of_rows[keep]
    n = max(int(keep.sum()), 1)
    shares, weights = {}, {}
    for code in range(4 if with_label else 2):
        in_slice = slice_codes == code
        key = _slice_key(code, with_label)
        weights[key] = in_slice.sum() / n
        counts = np.bincount(g[in_slice], minlength=n_groups).astype(float)
        shares[key] = counts / counts.sum() if counts.sum() else np.zeros(n_groups)
    return group_rates(shares, weights, with_label=with_label)


def majority_vote(proxies: np.ndarray, n_groups: int) -> np.ndarray:
    """Per row, the proxies' most common answer; ties go to the earliest proxy's answer."""
    n, m = proxies.shape
    votes = np.zeros((n, n_groups), dtype=np.int64)
    for k in range(m):
        votes[np.arange(n), proxies[:, k]] += 1
    top = votes.max(axis=1)
    choice = proxies[:, 0].copy()
    for k in range(m - 1, -1, -1):  # the earliest proxy whose answer has the top count wins
        answer = proxies[:, k]
        choice = np.where(votes[np.arange(n), answer] == top, answer, choice)
    return choice


def _patterns(proxies: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct rows of ``proxies`` and their total weight."""
    unique, inverse = np.unique(proxies, axis=0, return_inverse=True)
    return unique, np.bincount(inverse.ravel(), weights=weights, minlength=len(unique))


@dataclass(frozen=True)
class SliceFits:
    """The proxies' consensus fit: the group shares of each slice, the proxies' matrices.

    Attributes
    ----------
    shares : dict
        Slice -> ndarray (G,), P(A = a | slice).
    weights : dict
        Slice -> P(slice).
    transition_matrices : ndarray of shape (m, G, G)
        The proxies' matrices (shared by the slices; with ``per_slice``, the fit on all rows).
    prior : ndarray of shape (G,)
        P(A = a) over all rows.
    fits : dict
        The underlying fits, for warm starts.
    """

    shares: dict[Any, np.ndarray]
    weights: dict[Any, float]
    transition_matrices: np.ndarray
    prior: np.ndarray
    fits: dict[Any, LatentClassFit]


def fit_slices(
    data: FairnessData,
    *,
    per_slice: bool = False,
    row_weights: np.ndarray | None = None,
    init: SliceFits | None = None,
    seed: int = 0,
) -> SliceFits:
    """Fit the proxies' consensus model with a group share per slice (Ŷ, or the (Ŷ, Y) cell).

    By default the proxies' matrices are shared by the slices and only the group shares differ:
    on COMPAS with 0.7-accurate proxies this had 11-24 % of the naive error, while a separate fit
    per slice (``per_slice``, right when a proxy's errors depend on the prediction or the outcome)
    was noisier than the naive estimate itself at 6,150 rows (benchmarks/fairness.py).
    ``row_weights`` (a bootstrap's multiplicities) weight the rows; ``init`` warm-starts the fits.
    """
    g = len(data.groups)
    with_label = data.label is not None
    codes = _slices(data)
    n_slices = 4 if with_label else 2
    w = np.ones(len(codes)) if row_weights is None else row_weights
    total = w.sum()
    keys = [_slice_key(code, with_label) for code in range(n_slices)]
    weights = {key: float(w[codes == code].sum() / total) for code, key in enumerate(keys)}
    used = w > 0
    warm = init.fits if init is not None else {}
    fits: dict[Any, LatentClassFit] = {}
    shares: dict[Any, np.ndarray] = {}
    if per_slice:
        for code, key in enumerate(keys):
            in_slice = (codes == code) & used
            if not in_slice.any():
                shares[key] = np.zeros(g)
                continue
            patterns, counts = _patterns(data.proxies[in_slice], w[in_slice])
            fits[key] = fit_latent_classes(patterns, counts, n_groups=g, seed=seed, init=warm.get(key))
            shares[key] = fits[key].prior
        patterns, counts = _patterns(data.proxies[used], w[used])
        fits["all"] = fit_latent_classes(patterns, counts, n_groups=g, seed=seed, init=warm.get("all"))
        return SliceFits(shares, weights, fits["all"].transition_matrices, fits["all"].prior, fits)
    keyed = np.c_[codes[used], data.proxies[used]]
    patterns, counts = _patterns(keyed, w[used])
    stratified = fit_latent_classes(
        patterns[:, 1:], counts, n_groups=g, seed=seed, init=warm.get("shared"), strata=patterns[:, 0]
    )
    prior = stratified.prior  # (S, G); a slice absent from the data keeps no share
    present = np.bincount(patterns[:, 0], minlength=n_slices) > 0
    for code, key in enumerate(keys):
        shares[key] = prior[code] if code < len(prior) and present[code] else np.zeros(g)
    overall = sum(shares[key] * weights[key] for key in keys)
    fits["shared"] = stratified
    return SliceFits(shares, weights, stratified.transition_matrices, overall / max(overall.sum(), 1e-300), fits)


def calibrated_rates(slices: SliceFits, data: FairnessData) -> dict[str, np.ndarray]:
    """Per-group rates from each slice's fitted group shares (module docstring)."""
    return group_rates(slices.shares, slices.weights, with_label=data.label is not None)


@dataclass(frozen=True)
class FairnessResult:
    """Every gap three ways, and the proxy diagnostics."""

    pairs: list[tuple[int, int]]
    naive: dict[str, np.ndarray]
    calibrated: dict[str, np.ndarray]
    low: dict[str, np.ndarray]
    high: dict[str, np.ndarray]
    reference: dict[str, np.ndarray] | None
    overall_interval: dict[str, tuple[float, float]]
    slices: SliceFits
    n_bootstrap: int
    confidence_level: float


def audit_fairness(
    data: FairnessData,
    *,
    n_bootstrap: int = 200,
    confidence_level: float = 0.95,
    per_slice: bool = False,
    seed: int = 0,
    progress: Progress | None = None,
) -> FairnessResult:
    """Naive, calibrated (with bootstrap intervals) and reference gaps for every group pair."""
    progress = progress or NullProgress()
    g = len(data.groups)
    pairs = list(combinations(range(g), 2))
    naive = gaps(observed_rates(majority_vote(data.proxies, g), data, g), pairs)
    slices = fit_slices(data, per_slice=per_slice, seed=seed)
    calibrated = gaps(calibrated_rates(slices, data), pairs)
    reference = None
    if data.group is not None and (data.group >= 0).any():
        reference = gaps(observed_rates(data.group, data, g), pairs)
    rng = np.random.default_rng(seed)
    samples: dict[str, list[np.ndarray]] = {m: [] for m in calibrated}
    progress.start("fairness intervals", total=n_bootstrap)
    n = len(data.pred)
    for _ in range(n_bootstrap):
        multiplicity = np.bincount(rng.integers(0, n, n), minlength=n).astype(np.float64)
        boot = fit_slices(data, per_slice=per_slice, row_weights=multiplicity, init=slices, seed=seed)
        for metric, values in gaps(calibrated_rates(boot, data), pairs).items():
            samples[metric].append(values)
        progress.advance()
    progress.finish()
    alpha = (1.0 - confidence_level) / 2.0
    low, high, overall = {}, {}, {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: an undefined gap stays NaN
        for metric, estimate in calibrated.items():
            largest = float(np.nanmax(estimate)) if np.isfinite(estimate).any() else np.nan
            if samples[metric]:
                stack = np.array(samples[metric])
                lo, hi = np.nanquantile(stack, [alpha, 1.0 - alpha], axis=0)
                # Percentile bounds can miss an estimate near 0 (a gap is an absolute value): keep it inside.
                low[metric], high[metric] = np.fmin(lo, estimate), np.fmax(hi, estimate)
                # The largest gap over pairs gets the quantiles of each resample's largest gap.
                lo_max, hi_max = np.nanquantile(np.nanmax(stack, axis=1), [alpha, 1.0 - alpha])
                overall[metric] = (float(np.fmin(lo_max, largest)), float(np.fmax(hi_max, largest)))
            else:
                low[metric], high[metric] = estimate.copy(), estimate.copy()
                overall[metric] = (largest, largest)
    return FairnessResult(
        pairs, naive, calibrated, low, high, reference, overall, slices, n_bootstrap, confidence_level
    )


def proxy_diagnostics(data: FairnessData, slices: SliceFits, *, max_dependence: float = 0.03) -> dict[str, Any]:
    """Each proxy's estimated accuracy and transition matrix; dependence and weakness checks.

    Dependence: the share of rows on which two proxies agree, observed against what the fitted
    (conditionally independent) model implies; a difference above ``max_dependence`` says the
    proxies share errors, which the calibration assumes they do not. Weakness: a proxy whose
    matrix is not diagonally dominant cannot name the groups it confuses.
    """
    t, p = slices.transition_matrices, slices.prior
    m = t.shape[0]
    proxies = []
    for k in range(m):
        proxies.append(
            {
                "accuracy": float(np.dot(p, np.diag(t[k]))),
                "observed_accuracy": None,
                "transition_matrix": np.round(t[k], 4).tolist(),
                "diagonally_dominant": bool(all(t[k][i, i] > np.delete(t[k][i], i).max() for i in range(len(p)))),
            }
        )
    if data.group is not None and (data.group >= 0).any():
        known = data.group >= 0
        for k in range(m):
            proxies[k]["observed_accuracy"] = float((data.proxies[known, k] == data.group[known]).mean())
    dependence = []
    for a, b in combinations(range(m), 2):
        observed = float((data.proxies[:, a] == data.proxies[:, b]).mean())
        implied = float(np.sum(p[:, None] * t[a] * t[b]))
        dependence.append(
            {
                "proxies": [a, b],
                "observed_agreement": observed,
                "model_agreement": implied,
                "dependent": abs(observed - implied) > max_dependence,
            }
        )
    return {"prior": np.round(p, 4).tolist(), "proxies": proxies, "pairs": dependence}
