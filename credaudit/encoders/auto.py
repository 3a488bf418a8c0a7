"""``--encoder auto``: pick, for this dataset, the encoder whose neighbourhoods best respect the labels.

Each available candidate embeds a stratified sample of the rows; its k-NN label agreement on that
sample (how often a row's neighbours carry its label) is measured, and the best one embeds the whole
dataset. Label noise lowers every candidate's agreement alike, so the comparison stays fair; what
differs is how well each encoder's geometry follows the label scheme (topic vs sentiment, say).
Every candidate's figure goes into report.json.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from credaudit.encoders.base import Encoder
from credaudit.errors import CredauditError

# minilm-int8 is not a candidate: it approximates minilm (cosine >= 0.995), so measuring it would
# cost a second transformer pass over the sample and tell nothing new. Pick it by name for speed.
CANDIDATES = ("minilm", "static", "tfidf")


@dataclass(frozen=True)
class Candidate:
    name: str
    knn_label_agreement: float | None
    seconds: float
    note: str = ""

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "knn_label_agreement": self.knn_label_agreement,
            "seconds": round(self.seconds, 3),
            "note": self.note,
        }


def stratified_sample(labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Row numbers of a sample of about ``size`` rows with every class in proportion (at least 2 each)."""
    n = len(labels)
    if n <= size:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    chosen = []
    for cls in np.unique(labels):
        rows = np.flatnonzero(labels == cls)
        take = min(len(rows), max(2, int(round(size * len(rows) / n))))
        chosen.append(rng.choice(rows, size=take, replace=False))
    return np.sort(np.concatenate(chosen))


def knn_label_agreement(vectors: np.ndarray, labels: np.ndarray, k: int = 10) -> float:
    """Mean share of each row's k nearest neighbours (cosine, self excluded) that carry its label."""
    from credaudit.neighbors import build_knn_graph

    graph = build_knn_graph(vectors, k=min(k, len(labels) - 1), index="exact")
    return float((labels[graph.indices] == labels[:, None]).mean())


def choose_encoder(
    texts: Sequence[str],
    labels: np.ndarray,
    make: Callable[[str], Encoder],
    embed: Callable[[Encoder, Sequence[str]], np.ndarray],
    *,
    sample_size: int,
    seed: int,
    candidates: Sequence[str] = CANDIDATES,
) -> tuple[Encoder, list[Candidate]]:
    """Measure every available candidate on a sample and return the best one.

    Parameters
    ----------
    texts : sequence of str, length N
    labels : ndarray of shape (N,), dtype int64
    make : callable
        Builds an encoder by name (raises CredauditError when it is not available).
    embed : callable
        ``embed(encoder, texts) -> (n, d) float32`` (through the cache for cacheable encoders).
    sample_size : int
        Rows in the stratified sample.
    seed : int
    candidates : sequence of str
        Names to try, in order of preference on ties.

    Raises
    ------
    CredauditError
        No candidate could be built.
    """
    sample = stratified_sample(labels, sample_size, seed)
    sample_texts = [texts[int(i)] for i in sample]
    results: list[Candidate] = []
    built: dict[str, Encoder] = {}
    for name in candidates:
        start = time.perf_counter()
        try:
            encoder = make(name)
            if getattr(encoder, "whole_corpus", False):
                vectors = embed(encoder, texts)[sample]  # fitted on the whole corpus, judged on the sample
            else:
                vectors = embed(encoder, sample_texts)
        except CredauditError as exc:
            results.append(Candidate(name, None, time.perf_counter() - start, f"unavailable: {exc}"))
            continue
        built[name] = encoder
        results.append(Candidate(name, knn_label_agreement(vectors, labels[sample]), time.perf_counter() - start))
    measured = [c for c in results if c.knn_label_agreement is not None]
    if not measured:
        raise CredauditError(
            "--encoder auto: no candidate encoder is available (" + "; ".join(c.note for c in results) + ")"
        )
    best = max(measured, key=lambda c: c.knn_label_agreement)  # max keeps the first of equals
    return built[best.name], results
