"""Data hygiene from the neighbour graph: outliers and near-duplicate groups.

Both checks reuse what the audit already has (the unit-normalised embeddings and the k-NN graph),
so they cost a few matrix products, not another search.

**Outliers.** Two distances, both "higher = further from the data":

- ``knn_distance``: 1 − the mean cosine similarity to the row's k nearest neighbours (a row alone
  in the space);
- ``centroid_distance``: 1 − the largest cosine similarity to any class centroid (the mean vector
  of the rows labelled with that class). A block of out-of-task rows that cluster among
  themselves (another language, a scraped template) has close neighbours, so the first distance
  misses it; it is still far from every class of the task.

Each distance is put on the dataset's own scale, r = (d − Q3) / IQR (Tukey's fences; cleanlab uses
the fence r = 1.7 on the first distance alone), and a row's outlier score is
``r⁺ / (r⁺ + OUTLIER_FENCE)`` with r the larger of the two: 0 up to the third quartile, 0.5 at
``OUTLIER_FENCE`` interquartile ranges beyond it, towards 1 further out. The default threshold
0.5 therefore flags rows beyond Q3 + 3·IQR on either distance, chosen on the planted-outlier
benchmark (benchmarks/hygiene.py).

**Near-duplicates.** Rows are linked when their texts are identical (found by hashing, whatever
the vectors), or when their vectors are close *and* their words overlap (without texts: when their
vectors are nearly identical) (see :func:`near_duplicate_groups`; thresholds chosen on the edited-copy benchmark).
Candidates come from the graph, which holds each row's nearest neighbours (a near-duplicate is
always among them); the groups are the connected components of the links.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
from scipy.sparse import coo_matrix, csr_matrix
from scipy.sparse.csgraph import connected_components

from credaudit.engine import LOCAL, Engine, Rows, map_stored, read_rows
from credaudit.neighbors import NeighborGraph
from credaudit.report.format import excerpt

# Outlier score 0.5 sits this many interquartile ranges beyond the third quartile.
OUTLIER_FENCE = 3.0
_WORD = re.compile(r"\w+")
# Candidate pairs per block of the word-overlap test, and texts per tokenising chunk (both bound
# the temporaries).
_PAIR_BLOCK = 250_000
_TOKENISE_ROWS = 100_000


@dataclass(frozen=True)
class Outliers:
    """Per-row outlier results.

    Attributes
    ----------
    score : ndarray of shape (N,), float64
        In [0, 1]; higher = further from the rest of the data (see the module docstring).
    is_outlier : ndarray of shape (N,), bool
    knn_distance : ndarray of shape (N,), float64
        1 − mean cosine similarity to the k nearest neighbours.
    centroid_distance : ndarray of shape (N,), float64
        1 − the largest cosine similarity to a class centroid.
    rule : str
        How ``is_outlier`` was decided, for reports ("score >= 0.5" or "top 1.0% by score").
    """

    score: np.ndarray
    is_outlier: np.ndarray
    knn_distance: np.ndarray
    centroid_distance: np.ndarray
    rule: str


def _fence_ratio(distance: np.ndarray) -> np.ndarray:
    """(d − Q3) / IQR of the data's own distribution (IQR floored so a constant column is not inf)."""
    q1, q3 = np.percentile(distance, [25, 75])
    return (distance - q3) / max(q3 - q1, 1e-6)


def _class_sums(item: tuple[int, int], labels: np.ndarray, n_classes: int, layout, *parts: np.ndarray) -> np.ndarray:
    """Stored rows [start, stop)'s vector sums per class, (K, d) float64 (an engine block of
    :func:`score_outliers`): sparse (K x rows) by dense products (np.add.at is an order slower),
    summed in float64: which rows share a block (the layout) then moves the sums by float64
    rounding only, far below the float32 centroids' own."""
    start, stop = item
    reader = read_rows(layout, *parts)
    sums = np.zeros((n_classes, reader.dim))
    for first in range(start, stop, 16_384):
        last = min(first + 16_384, stop)
        block = labels[reader.numbers(first, last)]
        membership = coo_matrix(
            (np.ones(len(block)), (block, np.arange(len(block)))), shape=(n_classes, len(block))
        ).tocsr()
        sums += membership @ reader.stored(first, last).astype(np.float64)
    return sums


def _nearest_centroid(item: tuple[int, int], centroids: np.ndarray, layout, *parts: np.ndarray) -> np.ndarray:
    """Stored rows [start, stop)'s similarity to their most similar class centroid (an engine block)."""
    start, stop = item
    return (read_rows(layout, *parts).stored(start, stop) @ centroids.T).max(axis=1)


def _knn_distance(item: tuple[int, int], k: int, layout, *parts: np.ndarray) -> np.ndarray:
    """Stored graph rows [start, stop)'s mean cosine distance to their ``k`` nearest neighbours (an
    engine block of :func:`score_outliers`)."""
    block = read_rows(layout, *parts).stored(*item)
    return 1.0 - block["similarity"][:, :k].astype(np.float64).mean(axis=1)


def score_outliers(
    embeddings: np.ndarray | Rows,
    labels: np.ndarray,
    graph: NeighborGraph,
    *,
    n_classes: int,
    k: int,
    threshold: float = 0.5,
    rate: float | None = None,
    engine: Engine = LOCAL,
) -> Outliers:
    """Outlier scores from the neighbour graph and the class centroids.

    Parameters
    ----------
    embeddings : ndarray of shape (N, d), float32, or Rows
        Unit-normalised rows.
    labels : ndarray of shape (N,), int64
        Observed label codes; they define the class centroids.
    graph : NeighborGraph
        indices/similarities of shape (N, >= k), nearest first.
    n_classes : int
        K.
    k : int
        Neighbours averaged for the k-NN distance.
    threshold : float
        Flag rows whose score is at least this.
    rate : float, optional
        Instead of the threshold, flag this share of rows with the highest scores.
    engine : Engine
        Where the blocks of rows run: each block sums its rows per class (map, then the sums are
        added), then each block finds its rows' most similar centroid.

    Returns
    -------
    Outliers
    """
    k = min(k, graph.k)
    # By blocks of the graph, where the engine keeps it: the float64 copy of every row's
    # similarities would be 0.8 GB at 10M rows.
    knn_distance = np.empty(graph.n_rows)
    for numbers, distance in graph.map_blocks(engine, _knn_distance, k):
        knn_distance[numbers] = distance
    rows = engine.place(embeddings)
    sums = sum((s for _, s in map_stored(engine, _class_sums, rows, engine.share(labels), n_classes)), np.zeros(1))
    centroids32 = np.asarray(sums, dtype=np.float32)
    centroids32 /= np.maximum(np.linalg.norm(centroids32, axis=1, keepdims=True), 1e-12)
    best = np.empty(rows.n_rows, dtype=np.float32)
    for numbers, found in map_stored(engine, _nearest_centroid, rows, centroids32):
        best[numbers] = found
    centroid_distance = 1.0 - best.astype(np.float64)
    ratio = np.maximum(_fence_ratio(knn_distance), _fence_ratio(centroid_distance))
    positive = np.maximum(ratio, 0.0)
    score = positive / (positive + OUTLIER_FENCE)
    if rate is not None:
        n_flag = int(round(rate * len(score)))
        is_outlier = np.zeros(len(score), dtype=bool)
        if n_flag:
            # Highest scores first; the row number breaks ties, so the choice is deterministic.
            order = np.lexsort((np.arange(len(score)), -score))
            is_outlier[order[:n_flag]] = True
        rule = f"top {rate:.1%} by score"
    else:
        is_outlier = score >= threshold
        rule = f"score >= {threshold:g}"
    return Outliers(score, is_outlier, knn_distance, centroid_distance, rule)


def linked(
    rows: np.ndarray,
    cols: np.ndarray,
    similarities: np.ndarray,
    texts_a: list[str] | None,
    texts_b: list[str] | None,
    *,
    threshold: float,
    min_overlap: float,
    vector_threshold: float,
) -> np.ndarray:
    """Which candidate pairs (rows[i] of A, cols[i] of B) are near-duplicates.

    With texts, a pair is linked when its cosine similarity is at least ``threshold`` and its word
    sets overlap: Jaccard of the sets of lower-cased words (``\\w+``) at least ``min_overlap``, or
    one set is the other plus one word (a dropped word in a short question leaves a Jaccard of
    only 3/4). Without texts, when the similarity is at least ``vector_threshold``. Returns a bool
    mask over the pairs.
    """
    if texts_a is None or texts_b is None:
        return similarities >= vector_threshold
    # With texts, the words always decide: in a dense region vectors alone chain whole clusters
    # together. Candidates can be every graph edge (a static encoder puts short texts of one
    # vocabulary above any threshold), so the word sets are compared as sparse products, in
    # blocks of pairs, not one pair at a time.
    keep = np.zeros(len(similarities), dtype=bool)
    maybe = np.flatnonzero(similarities >= threshold)
    if maybe.size == 0:
        return keep
    # One word matrix over the rows of A then of B that are in a pair (near-duplicates within one
    # file are found per block of rows by near_duplicate_groups, which tokenises each row once).
    used_a, at_a = np.unique(rows[maybe], return_inverse=True)
    used_b, at_b = np.unique(cols[maybe], return_inverse=True)
    side_a = pl.Series(texts_a, dtype=pl.String).gather(used_a)
    words = _word_sets(pl.concat([side_a, pl.Series(texts_b, dtype=pl.String).gather(used_b)]))
    words_a, words_b = words[: len(used_a)], words[len(used_a) :]
    keep[maybe] = _words_overlap(words_a, words_b, at_a, at_b, min_overlap)
    return keep


def _pairs_above(
    item: tuple[int, int], low: float, ends_only: bool, layout, *parts: np.ndarray
) -> np.ndarray | tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stored graph rows [start, stop)'s edges of similarity >= ``low`` (an engine block of
    :func:`near_duplicate_groups`): (rows, neighbours, similarities), or with ``ends_only`` the
    rows at either end of one (sorted, each once)."""
    reader = read_rows(layout, *parts)
    block = reader.stored(*item)
    idx, sims = block["index"], block["similarity"]
    candidate = (idx >= 0) & (sims >= low)
    pair_rows = np.repeat(reader.numbers(*item), candidate.sum(axis=1))
    if ends_only:
        return np.unique(np.concatenate([pair_rows, idx[candidate]]))
    return pair_rows, idx[candidate], sims[candidate]


def _words_overlap(
    words_a: csr_matrix, words_b: csr_matrix, at_a: np.ndarray, at_b: np.ndarray, min_overlap: float
) -> np.ndarray:
    """Whether the word sets of rows ``at_a`` of ``words_a`` and ``at_b`` of ``words_b`` overlap,
    pair by pair (the rule of :func:`linked`), as sparse products in blocks of pairs."""
    keep = np.zeros(len(at_a), dtype=bool)
    size_a = np.diff(words_a.indptr)
    size_b = np.diff(words_b.indptr)
    for start in range(0, len(at_a), _PAIR_BLOCK):
        a = at_a[start : start + _PAIR_BLOCK]
        b = at_b[start : start + _PAIR_BLOCK]
        shared = np.asarray(words_a[a].multiply(words_b[b]).sum(axis=1)).ravel()
        union = size_a[a] + size_b[b] - shared
        small = np.minimum(size_a[a], size_b[b])
        large = np.maximum(size_a[a], size_b[b])
        # The ratio itself, as the rule states it: min_overlap * union can round past a tie (0.28 * 25).
        near = (shared / np.maximum(union, 1) >= min_overlap) | ((shared == small) & (large - small <= 1))
        keep[start : start + _PAIR_BLOCK] = near & (union > 0)
    return keep


def _word_sets(texts: pl.Series) -> csr_matrix:
    """(len(texts), V) 0/1 matrix: row i marks the distinct lower-cased words (``\\w+``) of text i.

    Tokenised in chunks of texts, each word kept only as its 64-bit hash, so the temporaries stay
    small (at 1,000,000 texts the words as strings held 3.6 GB at once).
    """
    rows, hashes = [], []
    for start in range(0, len(texts), _TOKENISE_ROWS):
        chunk = texts.slice(start, _TOKENISE_ROWS)
        words = (
            pl.DataFrame(
                {
                    "row": np.arange(start, start + len(chunk), dtype=np.int32),
                    "word": chunk.str.to_lowercase().str.extract_all(_WORD.pattern),
                }
            )
            .explode("word")
            .drop_nulls()
            .select("row", pl.col("word").hash(seed=0))
            .unique()
        )
        rows.append(words.get_column("row").to_numpy())
        hashes.append(words.get_column("word").to_numpy())
    row = np.concatenate(rows)  # callers pass at least one text
    vocabulary, word_id = np.unique(np.concatenate(hashes), return_inverse=True)
    return csr_matrix((np.ones(len(row), dtype=np.int32), (row, word_id.ravel())), shape=(len(texts), len(vocabulary)))


def text_hashes(texts: list[str] | pl.Series) -> tuple[np.ndarray, np.ndarray]:
    """(64-bit hash, is non-empty) per text: exact duplicates found without comparing vectors."""
    series = texts if isinstance(texts, pl.Series) else pl.Series(texts, dtype=pl.String)
    return series.hash(seed=0).to_numpy(), series.str.strip_chars().str.len_chars().to_numpy() > 0


def _first_with_same_text(texts: pl.Series) -> np.ndarray:
    """Per row, the first earlier row with the identical non-empty text, else -1."""
    hashed, non_empty = text_hashes(texts)
    _, first, inverse = np.unique(hashed, return_index=True, return_inverse=True)
    anchor = first[inverse]
    return np.where(non_empty & (anchor != np.arange(len(texts))), anchor, -1)


def near_duplicate_groups(
    graph: NeighborGraph,
    texts: Sequence[str] | pl.Series | None = None,
    *,
    threshold: float = 0.93,
    min_overlap: float = 0.8,
    vector_threshold: float = 0.99,
    engine: Engine = LOCAL,
) -> np.ndarray:
    """Group rows that are near-duplicates of each other.

    Two rows are linked when their texts are identical (non-empty), or their cosine similarity is
    at least ``threshold`` and their words overlap (:func:`linked`). Embeddings alone also link
    paraphrases ("how to get card pin?" / "How do I get my card PIN?") and, in dense regions, chain
    whole clusters; the words keep the groups to copies with small edits. Without texts, a cosine
    similarity of at least ``vector_threshold`` links.

    Parameters
    ----------
    graph : NeighborGraph
        (N, k) neighbours, -1 for missing ones, with their cosine similarities; read in blocks
        where ``engine`` keeps it, each block's candidate pairs sent here.
    texts : list of str, optional
        Per-row texts.
    threshold, min_overlap, vector_threshold : float
        As above.
    engine : Engine
        Where the graph is read.

    Returns
    -------
    ndarray of shape (N,), int64
        Group id per row (0, 1, ... in order of each group's first row), -1 for a row in no group.
    """
    n = graph.n_rows
    low = min(threshold, vector_threshold)
    block_rows = max(1, _PAIR_BLOCK // max(graph.k, 1))
    words, position = None, None
    if texts is not None:
        texts = pl.Series(texts, dtype=pl.String)  # once, for the words and the exact copies
        # Tokenise once, only the rows on either side of a pair that reaches ``threshold``; then
        # the candidate pairs are made and tested per block of rows, so that at most one block's
        # pairs exist at a time here (every graph edge can be a candidate: 17M at 1,000,000 rows).
        used = np.zeros(n, dtype=bool)
        for _, ends in graph.map_blocks(engine, _pairs_above, threshold, True, block_rows=block_rows):
            used[ends] = True
        used_rows = np.flatnonzero(used)
        position = np.full(n, -1, dtype=np.int64)
        position[used_rows] = np.arange(used_rows.size)
        if used_rows.size:
            words = _word_sets(texts.gather(used_rows))
    rows, cols = [], []
    for _, (pair_rows, pair_cols, pair_sims) in graph.map_blocks(
        engine, _pairs_above, low, False, block_rows=block_rows
    ):
        if texts is None:
            keep = pair_sims >= vector_threshold
        else:
            # With texts, the words always decide (see :func:`linked`).
            keep = pair_sims >= threshold
            if keep.any():
                maybe = np.flatnonzero(keep)
                keep[maybe] = _words_overlap(
                    words, words, position[pair_rows[maybe]], position[pair_cols[maybe]], min_overlap
                )
        rows.append(pair_rows[keep])
        cols.append(pair_cols[keep])
    if texts is not None:
        anchor = _first_with_same_text(texts)
        same = anchor >= 0
        rows.append(np.flatnonzero(same))
        cols.append(anchor[same])
    r = np.concatenate(rows)
    c = np.concatenate(cols)
    adjacency = coo_matrix((np.ones(len(r), dtype=np.int8), (r, c)), shape=(n, n)).tocsr()
    _, component = connected_components(adjacency, directed=False)
    sizes = np.bincount(component)
    grouped = sizes[component] > 1
    groups = np.full(n, -1, dtype=np.int64)
    if grouped.any():
        # Dense ids in order of each group's first row, so ids read naturally and are deterministic.
        first_row = np.full(sizes.size, n, dtype=np.int64)
        np.minimum.at(first_row, component, np.arange(n))
        keep = np.flatnonzero(grouped)
        _, dense = np.unique(first_row[component[keep]], return_inverse=True)
        groups[keep] = dense
    return groups


def dedupe_mask(groups: np.ndarray, avoid: np.ndarray | None = None) -> np.ndarray:
    """Rows to drop so that one row per group remains.

    The row kept is the group's first row, or with ``avoid`` (e.g. rows flagged as label errors)
    its first row not avoided, when it has one: a group whose labels conflict keeps a row whose
    label the audit believes.
    """
    drop = groups >= 0
    if drop.any():
        in_group = np.flatnonzero(drop)
        penalty = np.zeros(in_group.size, dtype=np.int64) if avoid is None else avoid[in_group].astype(np.int64)
        order = np.lexsort((in_group, penalty, groups[in_group]))
        ranked = in_group[order]
        _, first = np.unique(groups[ranked], return_index=True)
        drop[ranked[first]] = False
    return drop


def outlier_summary(
    outliers: Outliers,
    labels: np.ndarray,
    class_names: list[str],
    row_ids: Sequence[Any] | pl.Series,
    texts: Sequence[str] | pl.Series | None,
    *,
    top: int,
    excerpt_chars: int,
) -> dict[str, Any]:
    """The report's ``hygiene.outliers`` section: counts, per class, and the most outlying rows."""
    flagged = outliers.is_outlier
    order = np.lexsort((np.arange(len(flagged)), -outliers.score))
    shown = [i for i in order[:top] if flagged[i]]
    per_class = np.bincount(labels[flagged], minlength=len(class_names))
    return {
        "count": int(flagged.sum()),
        "rate": float(flagged.mean()) if len(flagged) else 0.0,
        "rule": outliers.rule,
        "fence": OUTLIER_FENCE,
        "per_class": [
            {"label": class_names[j], "outliers": int(per_class[j])} for j in np.argsort(-per_class) if per_class[j]
        ][:top],
        "top_rows": [
            {
                "row_id": row_ids[int(i)],
                "label": class_names[labels[i]],
                "outlier_score": round(float(outliers.score[i]), 4),
                "knn_distance": round(float(outliers.knn_distance[i]), 4),
                "centroid_distance": round(float(outliers.centroid_distance[i]), 4),
                "excerpt": excerpt(texts[int(i)], excerpt_chars) if texts is not None else None,
            }
            for i in shown
        ],
    }


def duplicate_summary(
    groups: np.ndarray,
    labels: np.ndarray,
    class_names: list[str],
    row_ids: Sequence[Any] | pl.Series,
    texts: Sequence[str] | pl.Series | None,
    *,
    threshold: float,
    top: int,
    excerpt_chars: int,
) -> dict[str, Any]:
    """The report's ``hygiene.near_duplicates`` section: groups, rows, the largest and the conflicting ones."""
    in_group = np.flatnonzero(groups >= 0)
    n_groups = int(groups.max()) + 1 if in_group.size else 0
    sizes = np.bincount(groups[in_group], minlength=n_groups)
    # Distinct labels per group: sort members by (group, label) and count label changes.
    order = np.lexsort((labels[in_group], groups[in_group]))
    g, lab = groups[in_group][order], labels[in_group][order]
    new_label = np.r_[True, (g[1:] != g[:-1]) | (lab[1:] != lab[:-1])][: len(g)]
    n_labels = np.bincount(g[new_label], minlength=n_groups)
    conflicting = np.flatnonzero(n_labels > 1)
    wanted = np.union1d(np.argsort(-sizes, kind="stable")[:top], conflicting[:top])
    # Only the shown groups' rows are listed (in row order): no pass over every grouped row in Python.
    shown_rows = in_group[np.isin(groups[in_group], wanted)]
    members: dict[int, list[int]] = {}
    for row, group in zip(shown_rows.tolist(), groups[shown_rows].tolist(), strict=True):
        members.setdefault(group, []).append(row)

    def describe(group: int) -> dict[str, Any]:
        rows = members[group]
        counts: dict[str, int] = {}
        for r in rows:
            counts[class_names[labels[r]]] = counts.get(class_names[labels[r]], 0) + 1
        return {
            "group": group,
            "size": int(sizes[group]),
            "labels": counts,
            "row_ids": [row_ids[int(r)] for r in rows[:10]],
            "excerpts": [excerpt(texts[int(r)], excerpt_chars) for r in rows[:3]] if texts is not None else None,
        }

    largest = [describe(int(j)) for j in np.argsort(-sizes, kind="stable")[:top] if n_groups]
    return {
        "threshold": threshold,
        "groups": n_groups,
        "rows": int(in_group.size),
        "redundant_rows": int(in_group.size - n_groups),
        "conflicting_groups": int(conflicting.size),
        "conflicting_rows": int(sizes[conflicting].sum()) if conflicting.size else 0,
        "largest": largest,
        "conflicting": [describe(int(j)) for j in conflicting[:top]],
    }
