"""Leakage: rows of the audited data that have an exact or near-duplicate in a reference file.

A test split that shares items with the training data makes evaluation scores lie. Each input row
is compared with each reference file by content, never by position: identical texts are found by
hashing, near-duplicates among the row's few nearest reference rows (an exact inner-product search
over the reference's unit vectors) with the link rule of the near-duplicate check
(:func:`credaudit.hygiene.linked`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from credaudit.engine import LOCAL, Engine, Rows, map_stored, read_rows
from credaudit.hygiene import linked, text_hashes
from credaudit.io import Reference
from credaudit.neighbors import search_neighbors

# Nearest reference rows examined per input row.
N_CANDIDATES = 5


@dataclass(frozen=True)
class Leakage:
    """Per input row, its best match in the reference files.

    Attributes
    ----------
    references : list of str
        The reference files' names, in the order given.
    source : ndarray of shape (N,), int64
        Index into ``references`` of the matching file; -1 for a row with no match.
    row : ndarray of shape (N,), int64
        Row number of the match in that file; -1 for none.
    row_id : list
        The match's row id in that file (its id column, or its row number); None for none.
    similarity : ndarray of shape (N,), float64
        Cosine similarity to the match (1.0 for an identical text); NaN for none.
    exact : ndarray of shape (N,), bool
        Whether the match is the identical text.
    """

    references: list[str]
    source: np.ndarray
    row: np.ndarray
    row_id: list[Any]
    similarity: np.ndarray
    exact: np.ndarray

    @property
    def is_leaked(self) -> np.ndarray:
        return self.source >= 0


def find_leakage(
    vectors: np.ndarray | Rows,
    texts: Sequence[str] | pl.Series | None,
    references: list[Reference],
    *,
    threshold: float,
    min_overlap: float,
    vector_threshold: float,
    engine: Engine = LOCAL,
) -> Leakage:
    """Match every input row against every reference.

    Parameters
    ----------
    vectors : ndarray of shape (N, d), float32, or Rows
        The input's unit vectors (searched block by block on ``engine``, each block of input rows
        against the whole reference; the reference's vectors are held here).
    texts : list of str, or None
        The input's texts.
    references : list of io.Reference
        One per reference file, ``embeddings`` holding its unit vectors (M, d), embedded like the input.
    threshold, min_overlap, vector_threshold : float
        The near-duplicate link rule (hygiene.linked).

    Returns
    -------
    Leakage
        An exact text match wins over a near one; among near ones, the most similar.
    """
    rows = engine.place(vectors)
    n = rows.n_rows
    source = np.full(n, -1, dtype=np.int64)
    row = np.full(n, -1, dtype=np.int64)
    similarity = np.full(n, np.nan)
    exact = np.zeros(n, dtype=bool)
    if texts is not None:
        hashed, non_empty = text_hashes(texts)
    for r, ref in enumerate(references):
        ref_vectors, ref_texts = ref.embeddings, ref.texts
        if ref_texts is not None and texts is not None:
            ref_hashed, ref_non_empty = text_hashes(ref_texts)
            order = np.argsort(ref_hashed, kind="stable")
            sorted_hashes = ref_hashed[order]
            position = np.clip(np.searchsorted(sorted_hashes, hashed), 0, len(order) - 1)
            hit = non_empty & (sorted_hashes[position] == hashed) & ref_non_empty[order[position]] & ~exact
            source[hit], row[hit], similarity[hit], exact[hit] = r, order[position[hit]], 1.0, True
        k = min(N_CANDIDATES, len(ref_vectors))
        sims = np.empty((n, k), dtype=np.float32)
        idx = np.empty((n, k), dtype=np.int64)
        shared = engine.share(ref_vectors)
        for numbers, (block_sims, block_idx) in map_stored(engine, _reference_block, rows, shared, k):
            sims[numbers], idx[numbers] = block_sims, block_idx
        pair_rows = np.repeat(np.arange(n), k)
        keep = linked(
            pair_rows,
            idx.ravel(),
            sims.ravel().astype(np.float64),
            texts,
            ref_texts,
            threshold=threshold,
            min_overlap=min_overlap,
            vector_threshold=vector_threshold,
        ).reshape(n, k) & (idx >= 0)
        # Candidates come nearest first: the first linked one is the best near match of this file.
        has = keep.any(axis=1)
        best = np.argmax(keep, axis=1)
        best_sim = sims[np.arange(n), best]
        better = has & ~exact & (np.isnan(similarity) | (best_sim > similarity))
        source[better], row[better], similarity[better] = r, idx[better, best[better]], best_sim[better]
    row_id = [references[s].row_ids[i] if s >= 0 else None for s, i in zip(source.tolist(), row.tolist(), strict=True)]
    return Leakage([ref.path.name for ref in references], source, row, row_id, similarity, exact)


def _reference_block(
    item: tuple[int, int], ref_vectors: np.ndarray, k: int, layout, *parts: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Stored input rows [start, stop)'s ``k`` nearest reference rows (an engine block of
    :func:`find_leakage`)."""
    start, stop = item
    return search_neighbors(ref_vectors, read_rows(layout, *parts).stored(start, stop), k)


def leakage_summary(
    leakage: Leakage,
    row_ids: Sequence[Any] | pl.Series,
    texts: Sequence[str] | pl.Series | None,
    *,
    top: int,
    excerpt_chars: int,
) -> dict[str, Any]:
    """The report's ``hygiene.leakage`` section: per reference, the leaked rows and examples."""
    from credaudit.report.format import excerpt

    leaked = np.flatnonzero(leakage.is_leaked)
    per_reference = []
    for r, name in enumerate(leakage.references):
        mine = leaked[leakage.source[leaked] == r]
        per_reference.append(
            {"reference": name, "rows": int(mine.size), "exact": int(leakage.exact[mine].sum()) if mine.size else 0}
        )
    order = leaked[np.lexsort((leaked, -leakage.similarity[leaked]))]
    return {
        "references": per_reference,
        "rows": int(leaked.size),
        "rate": float(leaked.size / len(leakage.source)) if len(leakage.source) else 0.0,
        "examples": [
            {
                "row_id": row_ids[int(i)],
                "reference": leakage.references[leakage.source[i]],
                "reference_row_id": leakage.row_id[i],
                "similarity": round(float(leakage.similarity[i]), 4),
                "exact": bool(leakage.exact[i]),
                "excerpt": excerpt(texts[int(i)], excerpt_chars) if texts is not None else None,
            }
            for i in order[:top]
        ],
    }
