"""The evaluation sets in ../shared/data (never copied into the project; see its README).

Each loader returns a BenchSet: row-aligned L2-normalised embeddings (the provided
all-MiniLM-L6-v2 float16 files), the observed labels as codes, and the truth where known.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]


def data_dir() -> Path:
    """``$CREDAUDIT_BENCH_DATA`` or ``../shared/data`` beside the project."""
    return Path(os.environ.get("CREDAUDIT_BENCH_DATA", ROOT.parent / "shared" / "data"))


@dataclass
class BenchSet:
    """One dataset, ready to audit.

    Attributes
    ----------
    name : str
    embeddings : (N, d) float32, unit rows
    labels : (N,) int64 observed label codes
    true_labels : (N,) int64 or None, the truth (clean sets: equal to labels)
    class_names : list of str
    is_error : (N,) bool or None, for real-noise sets whose truth is a list of verified errors
    notes : str
    extra : dict
    """

    name: str
    embeddings: np.ndarray
    labels: np.ndarray
    true_labels: np.ndarray | None
    class_names: list[str]
    is_error: np.ndarray | None = None
    notes: str = ""
    extra: dict = field(default_factory=dict)


def _vectors(path: Path) -> np.ndarray:
    x = np.load(path).astype(np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _codes(values) -> tuple[np.ndarray, list[str]]:
    names, codes = np.unique(np.asarray(values), return_inverse=True)
    return codes.astype(np.int64), [str(n) for n in names]


# name -> (table, vectors, label column). sms_spam has two classes, where pair-flip is symmetric noise.
BINARY = {"sms_spam"}
# A long-tailed copy of ag_news: class sizes 1 : 1/2 : 1/4 : 1/8 (seeded subsample), for imbalance.
LONG_TAIL = {"ag_news_lt": "ag_news"}
CLEAN = {
    "banking77": ("banking77/banking77.parquet", "banking77/banking77.minilm_l6_v2.f16.npy", "label_name"),
    "ag_news": ("ag_news/ag_news_test.parquet", "ag_news/ag_news_test.minilm_l6_v2.f16.npy", "label_name"),
    "sms_spam": ("sms_spam/sms_spam.parquet", "sms_spam/sms_spam.minilm_l6_v2.f16.npy", "label_name"),
    "20news": ("20news_train/20news_train.parquet", "20news_train/20news_train.minilm_l6_v2.f16.npy", "label_name"),
}


def load_clean(name: str) -> BenchSet:
    """A clean set (its labels are taken as the truth before noise is injected)."""
    if name in LONG_TAIL:
        return _long_tail(load_clean(LONG_TAIL[name]), name)
    table, vectors, label_col = CLEAN[name]
    frame = pl.read_parquet(data_dir() / table)
    labels, names = _codes(frame[label_col].to_list())
    return BenchSet(name, _vectors(data_dir() / vectors), labels, labels.copy(), names)


def _long_tail(bench: BenchSet, name: str, seed: int = 0) -> BenchSet:
    """Keep all of the largest class and 1/2, 1/4, 1/8, ... of the next ones (seeded)."""
    rng = np.random.default_rng(seed)
    order = np.argsort(-np.bincount(bench.labels), kind="stable")
    keep = []
    for rank, cls in enumerate(order):
        rows = np.flatnonzero(bench.labels == cls)
        keep.append(np.sort(rng.choice(rows, size=max(1, len(rows) >> rank), replace=False)))
    rows = np.sort(np.concatenate(keep))
    return BenchSet(name, bench.embeddings[rows], bench.labels[rows], bench.labels[rows].copy(), bench.class_names)


def load_hausa() -> BenchSet:
    """Hausa headlines, train split: keyword-rule (distant) labels vs gold; 50 % wrong."""
    frame = pl.read_parquet(data_dir() / "hausa/hausa_newsclass.parquet")
    x = _vectors(data_dir() / "hausa/hausa_newsclass.minilm_l6_v2.f16.npy")
    train = (frame["split"] == "train").to_numpy()
    names = sorted(set(frame["true_label"].to_list()))
    index = {n: i for i, n in enumerate(names)}
    labels = np.array([index[v] for v in frame["label"].to_list()])[train]
    truth = np.array([index[v] for v in frame["true_label"].to_list()])[train]
    return BenchSet(
        "hausa",
        x[train],
        labels,
        truth,
        names,
        notes="train split; distant-supervision labels, gold truth; non-English (the encoder is weak here)",
    )


def load_imdb(union: bool = False) -> BenchSet:
    """IMDB test reviews with human-verified label errors (cleanlab's MTurk study, or its union with
    Chong et al. 2022). Only items some detector had flagged were shown to people: an unverified
    error counts as clean, so precision is a lower bound and recall is recall of the verified set."""
    frame = pl.read_parquet(data_dir() / "imdb/imdb_test.parquet")
    x = _vectors(data_dir() / "imdb/imdb_test.minilm_l6_v2.f16.npy")
    labels = frame["label"].to_numpy().astype(np.int64)
    is_error = frame["is_label_error_union" if union else "is_label_error"].to_numpy()
    checked = (
        (frame["mturk_checked"] | frame["chong_checked"]).to_numpy() if union else frame["mturk_checked"].to_numpy()
    )
    return BenchSet(
        "imdb" + ("_union" if union else ""),
        x,
        labels,
        None,
        ["negative", "positive"],
        is_error=is_error,
        notes="verified errors only among previously flagged items",
        extra={"checked": checked},
    )


def _one_label_vs_truth(name: str, stem: str, class_names: list[str], notes: str) -> BenchSet:
    """A set whose ``label`` column is one annotator's label and ``true_label`` the reference."""
    frame = pl.read_parquet(data_dir() / f"{stem}.parquet")
    x = _vectors(data_dir() / f"{stem}.minilm_l6_v2.f16.npy")
    labels = frame["label"].to_numpy().astype(np.int64)
    truth = frame["true_label"].to_numpy().astype(np.int64)
    return BenchSet(name, x, labels, truth, class_names, notes=notes)


def load_md_agreement() -> BenchSet:
    """MD-Agreement tweets (offensive or not): one annotator's vote against the 5-annotator majority.

    Imbalanced binary (33 % offensive), 17 % of the single votes disagree with the majority. The
    "truth" is the majority of the same annotators (no expert gold)."""
    return _one_label_vs_truth(
        "md_agreement",
        "md_agreement/md-agreement",
        ["not_offensive", "offensive"],
        "one annotator vs the majority of five; imbalanced binary",
    )


def load_rte() -> BenchSet:
    """RTE-1 sentence pairs: one MTurk worker's vote against expert gold (29 % wrong).

    The sentence embedding of premise + hypothesis carries almost no entailment signal: a
    feature-based detector is near chance here, and the right behaviour is to say so."""
    return _one_label_vs_truth(
        "rte",
        "rte_snow2008/rte_snow2008",
        ["not_entailed", "entailed"],
        "one crowd vote vs expert gold; features near chance",
    )


def load_imdb_imbalanced(ratio: int = 9, seed: int = 0) -> BenchSet:
    """IMDB with positives subsampled to one per ``ratio`` negatives (seeded), verified errors kept.

    As for ``imdb``, only verified errors count, so precision is a lower bound."""
    bench = load_imdb()
    rng = np.random.default_rng(seed)
    negatives = np.flatnonzero(bench.labels == 0)
    positives = np.flatnonzero(bench.labels == 1)
    kept = rng.choice(positives, size=len(negatives) // ratio, replace=False)
    rows = np.sort(np.concatenate([negatives, kept]))
    return BenchSet(
        f"imdb_{ratio}to1",
        bench.embeddings[rows],
        bench.labels[rows],
        None,
        bench.class_names,
        is_error=bench.is_error[rows],
        notes=f"positives subsampled to 1:{ratio}; verified errors only among previously flagged items",
        extra={"checked": bench.extra["checked"][rows]},
    )


REAL_LOADERS = {
    "hausa": load_hausa,
    "imdb": load_imdb,
    "imdb_union": lambda: load_imdb(union=True),
    "imdb_9to1": load_imdb_imbalanced,
    "md_agreement": load_md_agreement,
    "rte": load_rte,
}
