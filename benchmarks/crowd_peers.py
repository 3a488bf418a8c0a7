"""Crowd-kit (1.4.2) answer aggregators as peers on a :class:`benchmarks.crowd_data.Crowd`.

Install with the ``bench`` extra (``crowd-kit==1.4.2``). Each method gives a consensus class per item and,
where the model has one, an estimate of each worker's accuracy.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from benchmarks.crowd_data import Crowd

METHODS = ("MajorityVote", "DawidSkene", "OneCoinDawidSkene", "GLAD", "MACE")


def to_frame(crowd: Crowd) -> pd.DataFrame:
    """Crowd-kit's long format: (A, 3) DataFrame with int64 columns task, worker, label (= item, annotator, label)."""
    return pd.DataFrame({"task": crowd.item, "worker": crowd.annotator, "label": crowd.label})


def _per_code(values: pd.Series, n: int, fill, dtype) -> np.ndarray:
    """(n,) array from a Series indexed by int codes 0..n-1; codes absent from the index get ``fill``."""
    out = np.full(n, fill, dtype=dtype)
    out[values.index.to_numpy(dtype=np.int64)] = values.to_numpy()
    return out


def _majority_vote(df, seed, **kw):
    from crowdkit.aggregation import MajorityVote

    mv = MajorityVote(**kw).fit(df)
    return mv.labels_, mv.skills_


def _dawid_skene(df, seed, **kw):
    from crowdkit.aggregation import DawidSkene

    ds = DawidSkene(**{"n_iter": 100, **kw}).fit(df)
    errors = ds.errors_  # rows (worker, observed label), columns true label: P(observed | true, worker)
    diag_col = errors.columns.get_indexer(errors.index.get_level_values("label"))
    prior = ds.priors_.reindex(errors.columns).to_numpy()
    hit = np.where(diag_col >= 0, errors.to_numpy()[np.arange(len(errors)), diag_col] * prior[diag_col], 0.0)
    return ds.labels_, pd.Series(hit, index=errors.index.get_level_values("worker")).groupby(level=0).sum()


def _one_coin(df, seed, **kw):
    from crowdkit.aggregation import OneCoinDawidSkene

    ocds = OneCoinDawidSkene(**{"n_iter": 100, **kw}).fit(df)
    return ocds.labels_, ocds.skills_


def _glad(df, seed, **kw):
    from crowdkit.aggregation import GLAD

    glad = GLAD(**kw).fit(df)
    # P(correct) of each answer = sigmoid(alpha_worker * exp(beta_task)) (crowd-kit's parametrisation)
    a = glad.alphas_.reindex(df["worker"]).to_numpy() * np.exp(glad.betas_.reindex(df["task"]).to_numpy())
    return glad.labels_, pd.Series(1.0 / (1.0 + np.exp(-a))).groupby(df["worker"].to_numpy()).mean()


def _mace(df, seed, **kw):
    from crowdkit.aggregation import MACE

    # crowd-kit 1.4.2's MACE indexes its (worker, label) strategy table, built in sorted order, by
    # first-appearance codes; re-coding workers and labels by first appearance makes the two agree.
    workers, worker_ids = pd.factorize(df["worker"])
    labels, label_ids = pd.factorize(df["label"])
    mace = MACE(**{"random_state": seed, **kw}).fit(df.assign(worker=workers, label=labels))
    prior = mace.probas_.reindex(columns=range(len(label_ids)), fill_value=0.0).mean().to_numpy()
    # P(correct) = P(knows) + P(spams) * sum_k prior_k * strategy_k
    skill = mace.spamming_[:, 1] + mace.spamming_[:, 0] * (mace.thetas_ @ prior)
    consensus = pd.Series(label_ids.to_numpy()[mace.labels_.to_numpy()], index=mace.labels_.index)
    return consensus, pd.Series(skill, index=worker_ids)


_RUNNERS = {
    "MajorityVote": _majority_vote,
    "DawidSkene": _dawid_skene,
    "OneCoinDawidSkene": _one_coin,
    "GLAD": _glad,
    "MACE": _mace,
}


def run_crowdkit(
    crowd: Crowd, methods=METHODS, seed: int = 0, params: dict[str, dict] | None = None
) -> dict[str, dict]:
    """Run crowd-kit aggregators on a crowd.

    Parameters
    ----------
    crowd : Crowd
    methods : iterable of names from ``METHODS``
    seed : int, passed where the method takes one (MACE's ``random_state``; the others are deterministic)
    params : dict name -> constructor keyword arguments overriding the defaults, e.g.
        ``{"MACE": {"n_restarts": 1}}`` (MACE and GLAD get slow with many classes: their E-steps scale with K)

    Returns
    -------
    dict name -> {"consensus": (I,) int64 class codes, -1 for an item without answers;
                  "worker_accuracy": (M,) float64 (NaN for a worker without answers) or None;
                  "seconds": float, wall time of the fit and the worker-accuracy read-out}

    Worker accuracy per method:

    - MajorityVote: share of the worker's answers equal to the MV label. Ties go to the label first in
      crowd-kit's column order (first seen in its count-sorted ``value_counts``; in practice the label with
      the biggest vote counts: all 65 RTE ties go to class 1).
    - DawidSkene (n_iter=100): sum_k prior_k * P(answer k | true k) from ``errors_`` and ``priors_``. With
      many classes and few answers per worker this is dragged down by classes the worker never saw.
    - OneCoinDawidSkene (n_iter=100): its ``skills_`` (mean posterior probability of the worker's answers).
    - GLAD (defaults): mean over the worker's answers of sigmoid(alpha_worker * exp(beta_task)).
    - MACE (defaults, ``random_state=seed``): P(knows) + P(spams) * sum_k prior_k * strategy_k, with
      prior = mean posterior.
    """
    df = to_frame(crowd)
    out = {}
    for name in methods:
        start = time.perf_counter()
        labels, skills = _RUNNERS[name](df, seed, **(params or {}).get(name, {}))
        seconds = time.perf_counter() - start
        out[name] = {
            "consensus": _per_code(labels, crowd.n_items, -1, np.int64),
            "worker_accuracy": None if skills is None else _per_code(skills, crowd.n_workers, np.nan, np.float64),
            "seconds": seconds,
        }
    return out


def accuracy(consensus: np.ndarray, gold: np.ndarray) -> float:
    """Share of items with known gold (>= 0) whose consensus equals it; (I,) int64 each, -1 consensus counts wrong."""
    known = gold >= 0
    return float((consensus[known] == gold[known]).mean())
