"""Multi-annotator (crowd) benchmark sets: two real crowds and a seeded crowd simulator.

A :class:`Crowd` holds answers in long form (one row per answer) plus the truth per item. Real sets:
RTE (Snow et al. 2008, 10 MTurk votes per item, 164 workers) and CIFAR-10N (3 human labels per image).
Simulated sets put a known mix of worker kinds (good, poor, spammer, biased, copier) on a clean labelled
text dataset, with class-similarity confusions and item difficulty; see :func:`simulate_crowd`.
The data lives in ../shared/data (never copied into the project; see ``benchmarks.data.data_dir``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl

from benchmarks.data import _vectors, data_dir

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
WORKER_KINDS = ("good", "poor", "spammer", "biased", "copier")
# base name -> (folder, file stem); each has <stem>.parquet (text, label, label_name) and <stem>.minilm_l6_v2.f16.npy
SIM_BASES = {"ag_news": ("ag_news", "ag_news_test"), "banking77": ("banking77", "banking77")}


@dataclass
class Crowd:
    """Answers of M annotators on I items (A answers in all), with the truth.

    Attributes
    ----------
    item : (A,) int64, item code 0..I-1 of each answer
    annotator : (A,) int64, annotator code 0..M-1 of each answer
    label : (A,) int64, the answered class code 0..K-1
    gold : (I,) int64, true class per item
    n_classes : int, K
    class_names : list of str, length K
    texts : list of str (length I) or None
    embeddings : (I, d) float32 with unit rows, or None
    reference : (I,) int64, a cheap model's label per item, -1 where unknown
    worker_kind : (M,) str, "good", "poor", "spammer", "biased", "copier", or "unknown" (real data)
    true_accuracy : (M,) float64, each annotator's share of answers equal to gold (NaN: no evaluable answer)
    name : str
    info : dict, extras (simulation: base, seed, cheap-model accuracy, ...)
    """

    item: np.ndarray
    annotator: np.ndarray
    label: np.ndarray
    gold: np.ndarray
    n_classes: int
    class_names: list[str]
    texts: list[str] | None
    embeddings: np.ndarray | None
    reference: np.ndarray
    worker_kind: np.ndarray
    true_accuracy: np.ndarray
    name: str
    info: dict = field(default_factory=dict)

    @property
    def n_items(self) -> int:
        return len(self.gold)

    @property
    def n_workers(self) -> int:
        return len(self.worker_kind)


def worker_accuracy(
    item: np.ndarray, annotator: np.ndarray, label: np.ndarray, gold: np.ndarray, n_workers: int
) -> np.ndarray:
    """Each annotator's empirical share of correct answers.

    Parameters
    ----------
    item, annotator, label : (A,) int64
    gold : (I,) int64, -1 where unknown (such answers are not counted)
    n_workers : int, M

    Returns
    -------
    (M,) float64, NaN for an annotator without an answer on a gold item
    """
    truth = gold[item]
    known = truth >= 0
    n = np.bincount(annotator[known], minlength=n_workers)
    hits = np.bincount(annotator[known], weights=(label[known] == truth[known]), minlength=n_workers)
    with np.errstate(invalid="ignore", divide="ignore"):
        return hits / n


def _real_crowd(name, item, annotator, label, gold, class_names, texts=None, embeddings=None) -> Crowd:
    m = int(annotator.max()) + 1
    return Crowd(
        item=item.astype(np.int64),
        annotator=annotator.astype(np.int64),
        label=label.astype(np.int64),
        gold=gold.astype(np.int64),
        n_classes=len(class_names),
        class_names=class_names,
        texts=texts,
        embeddings=embeddings,
        reference=np.full(len(gold), -1, dtype=np.int64),
        worker_kind=np.full(m, "unknown"),
        true_accuracy=worker_accuracy(item, annotator, label, gold, m),
        name=name,
    )


def load_rte() -> Crowd:
    """RTE-1 with 10 MTurk votes per item (800 items, 8,000 answers, 164 workers, 2 classes).

    Items follow the rows of ``rte_snow2008.parquet`` (texts = premise [SEP] hypothesis, MiniLM embeddings);
    annotator codes are the file's re-coded worker ids compacted to 0..M-1. Class 1 = entailment.
    """
    folder = data_dir() / "rte_snow2008"
    table = pl.read_parquet(folder / "rte_snow2008.parquet")
    votes = pl.read_csv(folder / "rte_snow2008_annotations.csv.gz")
    rows = table.select("rte_id").with_row_index("item").with_columns(pl.col("item").cast(pl.Int64))
    votes = votes.join(rows, on="rte_id", how="left")
    if votes["item"].null_count():
        raise ValueError("RTE: votes on items missing from the parquet")
    item = votes["item"].to_numpy()
    gold = np.full(table.height, -1, dtype=np.int64)
    gold[item] = votes["gold"].to_numpy()
    if (gold != table["true_label"].to_numpy()).any():
        raise ValueError("RTE: annotation-file gold disagrees with parquet true_label")
    _, annotator = np.unique(votes["worker"].to_numpy(), return_inverse=True)
    return _real_crowd(
        "rte",
        item,
        annotator,
        votes["response"].to_numpy(),
        gold,
        ["not_entailment", "entailment"],
        texts=table["text"].to_list(),
        embeddings=_vectors(folder / "rte_snow2008.minilm_l6_v2.f16.npy"),
    )


def load_cifar10n() -> Crowd:
    """CIFAR-10N: three human labels per training image (50,000 items, 150,000 answers, 10 classes).

    The annotator is the answer slot (``random_label1..3`` -> 0, 1, 2): the release does not carry the
    worker ids, so each "annotator" pools many people. No texts or embeddings (images are not available).
    """
    table = pl.read_parquet(data_dir() / "cifar_n_labels" / "cifar10n_labels.parquet")
    answers = table.select("random_label1", "random_label2", "random_label3").to_numpy()  # (I, 3)
    n_items, n_slots = answers.shape
    return _real_crowd(
        "cifar10n",
        np.repeat(np.arange(n_items), n_slots),
        np.tile(np.arange(n_slots), n_items),
        answers.ravel(),
        table["clean_label"].to_numpy(),
        CIFAR10_CLASSES,
    )


def true_transition(crowd: Crowd) -> np.ndarray:
    """Empirical P(answer = j | gold = i) pooled over all answers on gold items.

    Returns
    -------
    (K, K) float64, rows sum to 1 (a class never the gold of an answered item gives a NaN row)
    """
    k = crowd.n_classes
    truth = crowd.gold[crowd.item]
    known = truth >= 0
    counts = np.bincount(truth[known] * k + crowd.label[known], minlength=k * k).reshape(k, k).astype(float)
    with np.errstate(invalid="ignore"):
        return counts / counts.sum(axis=1, keepdims=True)


def _assign_workers(rng, n_items: int, n_workers: int, per_item: int) -> np.ndarray:
    """Distinct workers per item with a long-tailed load.

    Most workers get a log-normal weight (loads spread ~50x) and are drawn without replacement per item
    (Gumbel top-k); ``max(2, M // 10)`` tail workers then take over one random slot on 1-5 items each.

    Returns
    -------
    (I, per_item) int64 worker codes, distinct within a row
    """
    n_tail = max(2, n_workers // 10)
    main = n_workers - n_tail
    if main < per_item:
        raise ValueError(f"need at least {per_item + n_tail} workers for {per_item} answers per item")
    keys = rng.normal(0.0, 1.0, main) + rng.gumbel(size=(n_items, main))  # log-weight + Gumbel
    assigned = np.argpartition(-keys, per_item - 1, axis=1)[:, :per_item]
    loads = rng.integers(1, 6, n_tail)
    items = rng.choice(n_items, loads.sum(), replace=False)
    assigned[items, rng.integers(0, per_item, len(items))] = np.repeat(np.arange(main, n_workers), loads)
    return assigned.astype(np.int64)


def _centroids(x: np.ndarray, y: np.ndarray, k: int) -> np.ndarray:
    """(k, d) unit class centroids of unit rows ``x`` (a class without rows gets a zero centroid)."""
    c = np.zeros((k, x.shape[1]), dtype=np.float64)
    np.add.at(c, y, x)
    return c / np.maximum(np.linalg.norm(c, axis=1, keepdims=True), 1e-12)


def simulate_crowd(
    base: str,
    *,
    n_workers: int,
    answers_per_item: int,
    mix: dict[str, int],
    seed: int,
    reference_share: float = 0.25,
    n_items: int | None = None,
    name: str | None = None,
) -> Crowd:
    """A simulated crowd on a clean labelled text set, with known worker kinds and gold.

    Parameters
    ----------
    base : "ag_news" or "banking77" (its items, gold labels and MiniLM embeddings)
    n_workers : int, M; must equal ``sum(mix.values())``
    answers_per_item : int, distinct workers per item
    mix : dict kind -> count, kinds from ``WORKER_KINDS``:
        good: nominal accuracy ~ U(0.75, 0.95); poor: ~ U(0.5, 0.7). Honest errors go to similar classes
        (softmax over class-centroid cosine / 0.1, jittered per worker) and are likelier on hard items:
        a worker's error rate is scaled per item by a difficulty factor (mean 1) that grows as the item's
        margin between its own class centroid and the nearest other one shrinks (capped at 0.95).
        spammer: uniform random class. biased: one fixed class 90 % of the time, otherwise a poor worker.
        copier: the cheap model's label on every item it answers.
    seed : int, everything is drawn from ``numpy.random.default_rng(seed)``
    reference_share : float, share of items whose cheap-model label is revealed in ``reference``
    n_items : int or None, random subsample of the base rows (kept in table order); None keeps all
    name : str or None, the crowd's name (default ``sim_<base>_<M>w_seed<seed>``)

    Returns
    -------
    Crowd with ``info`` = {base, seed, mix, cheap_accuracy, nominal_accuracy (M,), difficulty (I,)}.
    The cheap model is a nearest-class-centroid classifier fitted on a random 10 % of items with gold.
    """
    if sum(mix.values()) != n_workers or set(mix) - set(WORKER_KINDS):
        raise ValueError(f"mix must name kinds from {WORKER_KINDS} and sum to n_workers={n_workers}")
    folder, stem = SIM_BASES[base]
    table = pl.read_parquet(data_dir() / folder / f"{stem}.parquet")
    x = _vectors(data_dir() / folder / f"{stem}.minilm_l6_v2.f16.npy")
    names = table.select("label", "label_name").unique().sort("label")
    k = names.height
    if names["label"].to_list() != list(range(k)):
        raise ValueError(f"{base}: labels are not 0..K-1")
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(table.height, n_items, replace=False)) if n_items else np.arange(table.height)
    x, gold = x[rows], table["label"].to_numpy()[rows].astype(np.int64)
    n = len(rows)

    # Class similarity -> confusion rows; item margin -> difficulty.
    centroids = _centroids(x, gold, k)
    cos = x @ centroids.T  # (I, K)
    own = cos[np.arange(n), gold]
    cos[np.arange(n), gold] = -np.inf
    margin = own - cos.max(axis=1)
    z = (margin - margin.mean()) / margin.std()
    difficulty = np.exp(-0.75 * z)
    difficulty /= difficulty.mean()
    sim = centroids @ centroids.T
    np.fill_diagonal(sim, -np.inf)
    confusion = np.exp((sim - sim.max(axis=1, keepdims=True)) / 0.1)
    confusion /= confusion.sum(axis=1, keepdims=True)  # (K, K), zero diagonal
    worker_conf = rng.gamma(20.0 * confusion[None] + 1e-9, size=(n_workers, k, k))
    worker_conf[:, np.arange(k), np.arange(k)] = 0.0
    worker_conf /= worker_conf.sum(axis=2, keepdims=True)  # (M, K, K), per-worker jitter

    # Cheap model: nearest class centroid, fitted on 10 % of items.
    fit = rng.choice(n, max(k, n // 10), replace=False)
    cheap = (x @ _centroids(x[fit], gold[fit], k).T).argmax(axis=1).astype(np.int64)
    reference = np.full(n, -1, dtype=np.int64)
    shown = rng.choice(n, int(round(reference_share * n)), replace=False)
    reference[shown] = cheap[shown]

    # Workers.
    kind = rng.permutation(np.repeat(list(mix), list(mix.values())))
    nominal = np.where(kind == "good", rng.uniform(0.75, 0.95, n_workers), rng.uniform(0.5, 0.7, n_workers))
    nominal[(kind == "spammer") | (kind == "copier")] = np.nan
    bias_class = rng.integers(0, k, n_workers)

    # Answers (item-major: the answers of item i are rows i*r .. i*r+r-1).
    assigned = _assign_workers(rng, n, n_workers, answers_per_item)
    item = np.repeat(np.arange(n), answers_per_item)
    worker = assigned.ravel()
    truth = gold[item]
    u = rng.random((4, len(item)))
    err = np.minimum((1.0 - nominal[worker]) * difficulty[item], 0.95)
    wrong_cdf = np.cumsum(worker_conf[worker, truth], axis=1)
    wrong = np.minimum((u[1][:, None] > wrong_cdf).sum(axis=1), k - 1)
    honest = np.where(u[0] < err, wrong, truth)
    answer_kind = kind[worker]
    label = np.select(
        [answer_kind == "spammer", answer_kind == "copier", (answer_kind == "biased") & (u[2] < 0.9)],
        [np.floor(u[3] * k).astype(np.int64), cheap[item], bias_class[worker]],
        default=honest,
    ).astype(np.int64)

    return Crowd(
        item=item,
        annotator=worker,
        label=label,
        gold=gold,
        n_classes=k,
        class_names=names["label_name"].to_list(),
        texts=table["text"].gather(rows).to_list(),
        embeddings=x,
        reference=reference,
        worker_kind=kind,
        true_accuracy=worker_accuracy(item, worker, label, gold, n_workers),
        name=name or f"sim_{base}_{n_workers}w_seed{seed}",
        info={
            "base": base,
            "seed": seed,
            "mix": dict(mix),
            "cheap_accuracy": float((cheap == gold).mean()),
            "nominal_accuracy": nominal,
            "difficulty": difficulty,
        },
    )


def simulated_settings() -> list[tuple[str, dict]]:
    """The default simulated crowds: (name, keyword arguments of :func:`simulate_crowd`)."""
    return [
        (
            "sim_agnews_30w",
            dict(
                name="sim_agnews_30w",
                base="ag_news",
                n_items=3000,
                n_workers=30,
                answers_per_item=3,
                mix={"good": 18, "poor": 5, "spammer": 3, "biased": 2, "copier": 2},
                seed=0,
            ),
        ),
        (
            "sim_banking_40w",
            dict(
                name="sim_banking_40w",
                base="banking77",
                n_items=3000,
                n_workers=40,
                answers_per_item=3,
                mix={"good": 24, "poor": 7, "spammer": 3, "biased": 3, "copier": 3},
                seed=1,
            ),
        ),
    ]
