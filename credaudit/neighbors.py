"""Cosine k-nearest-neighbour graph over L2-normalised embeddings.

Notation: N rows, d embedding dimensions, k neighbours per row. Every later stage (noise
estimation, detection, findings) reads this one graph; it is computed once per run.

Memory stays O(N·(d + k)): queries are searched in blocks, so no N×N similarity matrix is ever
materialised. Small inputs use an exact search (blocked torch matrix products, the candidates
re-scored in float64 so the result does not depend on the core count); large ones a
seeded cluster-block search (:func:`_ivf_graph`: k-means lists, each compared with its nearest
lists in one matrix product), deterministic for a given seed, whose recall is measured on every
run (:func:`estimate_recall`). On CUDA the exact search runs as blocked matrix products in torch
(faiss' GPU build is not on PyPI).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from credaudit.engine import (
    LOCAL,
    Engine,
    Rows,
    map_stored,
    range_parts,
    read_rows,
    row_blocks,
    take_rows,
)
from credaudit.progress import NullProgress, Progress

# Rows per k-means list of the approximate search: large enough for efficient matrix products,
# small enough that a few lists are a fine-grained candidate set.
_LIST_ROWS = 512
# Engine blocks of the approximate search: lists per block (about 16,000 rows) and rows per
# block of the nearest-centroid assignment.
_LISTS_PER_BLOCK = 32
# Above this many lists (about 130,000 rows) the k-means has two levels (see _ivf_graph). One
# level costs O(N·L) to assign and O(L²) to train: at 1,000,000 rows its k-means took 61 s of a
# 150 s graph, two levels 5 s, for recall@10 0.999 against 0.9975; at 300,000 rows the graph took
# 32.9 s against 25.9 s, recall 1.000 both (one run each, benchmarks/scale.py data).
_FLAT_LISTS = 256
_ASSIGN_ROWS = 65_536
# Rows per block when a detection round restricts the graph to its subsample (the sort's
# temporaries are a few times the block's part of the graph).
_RESTRICT_ROWS = 16_384
# Extra candidates of the exact search whose similarities are recomputed exactly (_exact_block).
_RESCORE_MARGIN = 8
# Proposed rows this close to the cut count as tied with it (float32 rounding of a unit-vector
# product is about 1e-7; a product's last bit depends on the core count).
_TIE_TOLERANCE = 1e-5


# One neighbour of a row: its row number and cosine similarity side by side, so that the graph
# is one array of rows, which an engine keeps in blocks like the vectors (12 bytes a neighbour).
GRAPH_DTYPE = np.dtype([("index", np.int64), ("similarity", np.float32)])


@dataclass(eq=False)
class NeighborGraph:
    """The k-NN graph of a dataset, held where the engine keeps rows.

    Attributes
    ----------
    edges : Rows of shape (N, k), dtype :data:`GRAPH_DTYPE`
        Row i: row i's k nearest neighbours, nearest first, never i itself. ``index`` their row
        numbers (-1 where a row has fewer), ``similarity`` their cosine similarity, non-increasing
        along a row. Locally one array in row order; on Ray blocks in the object store, in the
        search's order (by k-means list), never gathered on the driver: every stage reads them
        in engine block functions (``read_rows``), by row number as the vectors.
    method : str
        ``"exact"`` or ``"ivf"``: how the search was done.
    """

    edges: Rows
    method: str

    @classmethod
    def from_arrays(cls, indices: np.ndarray, similarities: np.ndarray, method: str) -> NeighborGraph:
        """A graph of (N, k) row numbers and similarities, as one in-process array (the local
        engine's graph)."""
        edges = np.empty(np.shape(indices), dtype=GRAPH_DTYPE)
        edges["index"] = indices
        edges["similarity"] = similarities
        return cls(Rows((edges,), np.array([0, len(edges)], dtype=np.int64), edges.shape[1]), method)

    @property
    def n_rows(self) -> int:
        return self.edges.n_rows

    @property
    def k(self) -> int:
        return self.edges.dim

    @property
    def indices(self) -> np.ndarray:
        """(N, k) neighbour row numbers, a view of the in-process graph (see :meth:`_whole`)."""
        return self._whole()["index"]

    @property
    def similarities(self) -> np.ndarray:
        """(N, k) similarities, a view of the in-process graph (see :meth:`_whole`)."""
        return self._whole()["similarity"]

    def _whole(self) -> np.ndarray:
        edges = self.edges
        whole = edges.parts[0] if len(edges.parts) == 1 and edges.order is None else None
        if not isinstance(whole, np.ndarray):
            raise LookupError(
                "the neighbour graph is held in blocks by the engine: read it in block functions "
                "(read_rows), or gather it with NeighborGraph.gathered"
            )
        return whole

    def ranges(self, block_rows: int | None = None) -> list[tuple[int, int]]:
        """The ranges of stored rows every map over the graph runs over: :func:`row_blocks` of at
        most ``block_rows`` rows, across the graph's blocks (the search makes blocks of a few
        k-means lists, about 16,000 rows, and one task per such block would multiply a stage's
        tasks). Send each range's task the blocks it spans: ``range_parts(graph.edges)``."""
        return row_blocks(self.n_rows, block_rows)

    def map_blocks(
        self,
        engine: Engine,
        fn: Callable[..., Any],
        *shared: Any,
        block_rows: int | None = None,
        also: tuple[Rows, ...] = (),
        reads: Any = None,
    ) -> Iterator[tuple[np.ndarray, Any]]:
        """:func:`~credaudit.engine.map_stored` of ``fn`` over the graph's :meth:`ranges`: yields
        (the range's row numbers, ``fn``'s result)."""
        return map_stored(engine, fn, self.edges, *shared, block_rows=block_rows, also=also, reads=reads, spanning=True)

    def gathered(self, engine: Engine) -> tuple[np.ndarray, np.ndarray]:
        """(indices, similarities), each (N, k), in row order in this process: for the algorithms
        that run here over the whole graph (``select``'s greedy choice, the crowd model's
        neighbour prior), never for the scan's stages."""
        whole = engine.gather(self.edges)
        return whole["index"], whole["similarity"]


def normalize_rows(embeddings: np.ndarray, *, in_place: bool = False) -> np.ndarray:
    """Return ``embeddings`` as float32, C-contiguous, unit L2 rows, never modifying the input.

    Parameters
    ----------
    embeddings : ndarray of shape (N, d)
        Any float dtype. All-zero rows (an empty text under some encoders) stay zero.
    in_place : bool
        Normalise a float32, C-contiguous, writeable input in place (for arrays the caller owns).

    Returns
    -------
    ndarray of shape (N, d), dtype float32
        The input itself when it already is float32, C-contiguous and unit-norm (to float32
        rounding): at 1,000,000 × 384 a copy is 1.5 GB. Otherwise a new array. Callers treat the
        result as read-only. Each row is decided on its own (a row already of unit length to
        1e-5 is left exactly as it is), so that normalising the rows in blocks gives the same
        vectors as normalising them at once.
    """
    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    # Per block of rows: np.linalg.norm squares its whole input first (a second N x d array), and
    # each row's norm is the same whatever the block.
    norms = np.empty((len(x), 1), dtype=np.float32)
    for start, stop in row_blocks(len(x)):
        norms[start:stop] = np.linalg.norm(x[start:stop], axis=1, keepdims=True)
    as_is = (np.abs(norms - 1.0) <= 1e-5) | (norms == 0)
    if as_is.all():
        return x
    # A converted input is already a new array; otherwise copy unless the caller gave it away (and
    # it can be written: a zero-copy view of a polars or Arrow column cannot).
    given_away = in_place and x.flags.writeable
    out = x if given_away or not np.shares_memory(x, embeddings) else np.empty_like(x)
    # Dividing by exactly 1 leaves a row (unit, or all zero) bit for bit as it is.
    np.divide(x, np.where(as_is, np.float32(1.0), norms), out=out)
    return out


def build_knn_graph(
    embeddings: np.ndarray | Rows,
    *,
    k: int,
    index: str = "auto",
    exact_max_rows: int = 50_000,
    ivf_probe_share: float = 0.08,
    ivf_max_probes: int | None = 16,
    block_rows: int = 8192,
    device: str = "cpu",
    seed: int = 0,
    progress: Progress | None = None,
    engine: Engine | None = None,
) -> NeighborGraph:
    """Find each row's k nearest neighbours by cosine similarity, excluding the row itself.

    Parameters
    ----------
    embeddings : ndarray of shape (N, d), dtype float32, or Rows
        L2-normalised rows (see :func:`normalize_rows`); inner product = cosine similarity. As
        :class:`~credaudit.engine.Rows`, the blocks where ``engine`` keeps them (read only by its
        block functions).
    k : int
        Neighbours per row; capped at N - 1.
    index : {"auto", "exact", "ivf"}
        ``auto`` is exact up to ``exact_max_rows`` rows and IVF beyond.
    exact_max_rows : int
        Row count above which ``auto`` switches to the IVF index (exact search costs O(N²·d)).
    ivf_probe_share : float
        Share of the k-means lists each list is compared with; recall rises with it, and so does time.
    ivf_max_probes : int, optional
        Cap on the lists each list is compared with. The number of lists grows as N, so a fixed share
        makes the search O(N²); the cap keeps large inputs linear, and the recall check says what
        it cost.
    block_rows : int
        Queries per search block; bounds the temporary (block_rows, N) work of the search.
    device : str
        ``cpu``: the exact or cluster-block search on this machine's cores (or the engine's);
        ``cuda``/``cuda:N``: an exact search as blocked torch matrix products on the GPU.
    seed : int
        Seeds the IVF k-means, so the same input gives the same graph.
    progress : Progress, optional
        Receives one ``advance`` per block.
    engine : Engine, optional
        Where the CPU search blocks run (credaudit/engine.py); default: this process. The same
        blocks give the same graph on any engine.

    Returns
    -------
    NeighborGraph

    Notes
    -----
    The row itself is removed by index, not by position: with exact duplicate texts a duplicate can
    outrank the row itself (same similarity), so "drop the first column" would be wrong. Each search
    asks for k + 1 results and keeps the first k that are not the row.
    """
    progress = progress or NullProgress()
    engine = engine or LOCAL
    rows = engine.place(embeddings)
    n_rows = rows.n_rows
    k = min(k, n_rows - 1)
    if k < 1:
        raise ValueError(f"need at least 2 rows to build a neighbour graph; got {n_rows}")
    use_ivf = index == "ivf" or (index == "auto" and n_rows > exact_max_rows)
    if device.startswith("cuda"):
        use_ivf = False  # an exact search on the GPU is faster than IVF on the CPU
        embeddings = engine.gather(rows)  # the GPU search holds them whole
        search = _torch_searcher(embeddings, device)
        edges = np.empty((n_rows, k), dtype=GRAPH_DTYPE)
        blocks = range(0, n_rows, block_rows)
        progress.start("neighbours", total=len(blocks))
        for start in blocks:
            stop = min(start + block_rows, n_rows)
            sims, idx = search(embeddings[start:stop], k + 1)
            edges[start:stop] = _without_self(idx, sims, np.arange(start, stop), k)
            progress.advance()
        progress.finish()
        del embeddings
        graph = engine.place(edges)
    elif use_ivf:
        graph = _ivf_graph(
            rows, k, probe_share=ivf_probe_share, max_probes=ivf_max_probes, seed=seed, progress=progress, engine=engine
        )
    else:
        blocks = [(start, min(start + block_rows, n_rows), k) for start in range(0, n_rows, block_rows)]
        progress.start("neighbours", total=len(blocks))
        graph, _ = engine.map_rows(_exact_graph_block, blocks, dim=k, rows=rows, done=progress.advance)
        progress.finish()

    result = NeighborGraph(graph, method="ivf" if use_ivf else "exact")
    # The approximate search may find fewer than k + 1 rows for rows whose probed lists are
    # small (-1 padding); those few rows get an exact search so every row has k real neighbours.
    missing = np.concatenate(
        [numbers[short] for numbers, short in result.map_blocks(engine, _short_rows, k)] or [np.zeros(0, np.int64)]
    )
    if missing.size:
        sims, idx = search_rows(rows, missing, None, k + 1, engine=engine)
        engine.replace_rows(graph, missing, _without_self(idx, sims, missing, k))
    return result


def _exact_graph_block(item: tuple[int, int, int], layout, *parts: np.ndarray) -> tuple[np.ndarray, None]:
    """Rows [start, stop)'s k nearest other rows (an engine block of the exact search: the top
    k + 1 of :func:`_exact_block`, the row itself dropped), as :data:`GRAPH_DTYPE` rows."""
    start, stop, k = item
    sims, idx = _exact_block((start, stop, k + 1), layout, *parts)
    return _without_self(idx, sims, np.arange(start, stop), k), None


def _short_rows(item: tuple[int, int], k: int, layout, *parts: np.ndarray) -> np.ndarray:
    """Which of stored rows [start, stop) of a graph have fewer than ``k`` neighbours (a bool per
    row; an engine block)."""
    block = read_rows(layout, *parts).stored(*item)
    return (block["index"][:, :k] < 0).any(axis=1)


def neighbour_blocks(
    engine: Engine, graph: NeighborGraph, target: Rows, *, k: int, block_rows: int | None = None
) -> dict[tuple[int, int], np.ndarray | None]:
    """For each range of ``graph.ranges(block_rows)``, the blocks of ``target`` (rows laid out
    anyhow, e.g. the vectors) holding its rows' first ``k`` neighbours: what a block function
    reading the graph and those rows' neighbours in ``target`` is sent. The driver does
    not hold the graph, so one map over it finds them (None for every range where ``target`` is
    one block: nothing to choose)."""
    blocks = graph.ranges(block_rows)
    if len(target.parts) == 1:
        return dict.fromkeys(blocks)
    found = engine.map(
        _neighbour_blocks, blocks, target.shared()[0], k, rows=graph.edges, reads=range_parts(graph.edges)
    )
    return dict(zip(blocks, found, strict=True))


def _neighbour_blocks(item: tuple[int, int], target_layout: Any, k: int, layout, *parts: np.ndarray) -> np.ndarray:
    """The blocks of the rows laid out by ``target_layout`` that hold stored graph rows
    [start, stop)'s first ``k`` neighbours (an engine block of :func:`neighbour_blocks`)."""
    target = read_rows(target_layout)
    near = read_rows(layout, *parts).stored(*item)["index"][:, :k].ravel()
    near = near[near >= 0]
    stored = near if target.position is None else target.position[near]
    part = np.searchsorted(target.offsets, stored, side="right") - 1
    return np.flatnonzero(np.bincount(part, minlength=len(target.offsets) - 1))


def _without_self(idx: np.ndarray, sims: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    """:func:`_drop_self` of a search's k + 1 hits per row, as :data:`GRAPH_DTYPE` rows (Q, k)."""
    out = np.empty((len(rows), k), dtype=GRAPH_DTYPE)
    _drop_self(idx, sims, rows, k, out["index"], out["similarity"])
    return out


def _exact_block(item: tuple[int, int, int], layout, *parts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact top ``n`` (itself included) of rows [start, stop) among all rows: one engine block.

    The float32 matrix product's last bit depends on how many threads computed it (the BLAS
    splits the product into tiles by thread), so a Ray worker with one core and this process with
    several could order near-tied rows differently. The product therefore only proposes the top
    ``n + _RESCORE_MARGIN`` rows (of each engine block of rows, :func:`~credaudit.engine.row_blocks`,
    then of them all); their similarities are recomputed one pair at a time in float64 and rounded
    to float32, and the top ``n`` are taken most similar first, ties by row number (rows tied at
    the cut beyond the margin are settled by :func:`_rescore_top`). The result then depends on
    neither the engine nor the core count.
    """
    import torch

    start, stop, n = item
    base = read_rows(layout, *parts)
    n_candidates = min(n + _RESCORE_MARGIN, len(base))
    blocks_t = [(first, _tensor(base[first:last])) for first, last in row_blocks(len(base))]
    out_sims = np.empty((stop - start, n), dtype=np.float32)
    out_idx = np.empty((stop - start, n), dtype=np.int64)
    # 1,024 queries at a time bound the (queries, N) product to 4 KB per row of the data. A
    # matrix product and torch's top-k: measured 3x faster than faiss' flat search on 2 cores.
    for first in range(start, stop, 1024):
        last = min(first + 1024, stop)
        queries = np.ascontiguousarray(base[first:last])
        queries_t = _tensor(queries)
        values, found = [], []
        for offset, block_t in blocks_t:
            top = torch.topk(queries_t @ block_t.T, min(n_candidates, len(block_t)), dim=1)
            values.append(top.values)
            found.append(top.indices + offset)
        pick = torch.topk(torch.cat(values, dim=1), n_candidates, dim=1).indices
        candidates = torch.gather(torch.cat(found, dim=1), 1, pick).numpy()
        sims, idx = _rescore_top(queries, base, None, candidates, n)
        out_sims[first - start : last - start] = sims
        out_idx[first - start : last - start] = idx
    return out_sims, out_idx


def _tensor(array: np.ndarray):
    """A torch view of ``array``. The object store hands Ray tasks read-only arrays, which torch
    warns about; nothing here writes to them."""
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(array)


def search_rows(
    rows: Rows,
    queries: np.ndarray,
    allowed: np.ndarray | None,
    n: int,
    *,
    engine: Engine = LOCAL,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top ``n`` of the rows ``queries`` (row numbers) among the rows where ``allowed`` is true.

    The queries' vectors are read once (:func:`~credaudit.engine.take_rows`); then one engine
    block per block of stored rows (:func:`~credaudit.engine.stored_blocks`), sent only its own
    block of vectors, searches its rows (:func:`_search_within`) for ``n`` + a margin candidates,
    whose similarities are recomputed in float64 (as in :func:`_exact_block`, so the result does
    not depend on the engine, the core count or the layout; ties go to the lower row number); the
    blocks' candidates are merged here. For the few rows that need an exact search after the graph:
    the recall sample, rows the approximate search left short, and a subsample's short rows.

    Parameters
    ----------
    rows : Rows
        The unit vectors, where the engine keeps them.
    queries : ndarray of shape (Q,), int64
        Row numbers of the queries.
    allowed : ndarray of shape (N,), bool, or None
        Rows that may be returned (None: all).
    n : int
        Results per query.

    Returns
    -------
    (similarities, indices) : ndarrays of shape (Q, n)
        Most similar first, ties by row number; -inf / -1 where fewer than ``n`` rows are allowed.
    """
    queries = np.asarray(queries, dtype=np.int64)
    shared = (engine.share(take_rows(engine, rows, queries)), engine.share(allowed) if allowed is not None else None)
    found = [found for _, found in map_stored(engine, _search_part, rows, *shared, n)]
    sims = np.concatenate([f[0] for f in found], axis=1)
    idx = np.concatenate([f[1] for f in found], axis=1)
    order = np.lexsort((idx, -sims), axis=1)[:, :n]
    sims, idx = np.take_along_axis(sims, order, axis=1), np.take_along_axis(idx, order, axis=1)
    if sims.shape[1] < n:  # fewer rows than n in all
        pad = n - sims.shape[1]
        sims = np.pad(sims, ((0, 0), (0, pad)), constant_values=-np.inf)
        idx = np.pad(idx, ((0, 0), (0, pad)), constant_values=-1)
    return sims, idx


def _search_part(
    item: tuple[int, int],
    queries: np.ndarray,
    allowed: np.ndarray | None,
    n: int,
    layout,
    *parts: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """The queries' (Q, d) top ``n`` among stored rows [start, stop) that are allowed, rescored in
    float64 (an engine block of :func:`search_rows`); row numbers, -inf / -1 where short."""
    reader = read_rows(layout, *parts)
    start, stop = item
    block = reader.stored(start, stop)
    numbers = reader.numbers(start, stop)
    mask = None if allowed is None else allowed[numbers]
    _, candidates = _search_within(block, queries, mask, min(n + _RESCORE_MARGIN, stop - start))
    sims, idx = _rescore_top(queries, block, mask, candidates, min(n, stop - start), numbers=numbers)
    return sims, np.where(idx >= 0, numbers[np.maximum(idx, 0)], -1)


def _rescore_top(
    queries: np.ndarray,
    base,
    allowed: np.ndarray | None,
    candidates: np.ndarray,
    n: int,
    *,
    numbers: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The top ``n`` of each query's proposed ``candidates`` (Q, C), by float64 similarity, then row.

    The proposals come from a float32 product whose last bit depends on the core count, so rows
    that tie at the proposals' cut (exact duplicates) may be proposed differently by two engines.
    Where the last proposal ties with the ``n``-th (within :data:`_TIE_TOLERANCE`), every row of
    ``base`` that ties with it is rescored too, so the lowest row numbers win the tie whatever was
    proposed. Those are the rows of data with more than ``_RESCORE_MARGIN`` copies of a vector; the
    others cost nothing extra.

    ``numbers`` (len(base),) are the row numbers of ``base``'s rows when they are not 0, 1, ... (a
    block of stored rows): ties go to the lower row number, whatever the layout.

    Returns float32 similarities and rows of ``base`` (Q, n), most similar first; -inf / -1 where
    a candidate is -1.
    """
    real = candidates >= 0
    picked = np.where(real, candidates, 0)
    sims = np.einsum("qd,qcd->qc", queries, base[picked], dtype=np.float64).astype(np.float32)
    sims = np.where(real, sims, -np.inf).astype(np.float32)
    tie_key = candidates if numbers is None else np.where(real, numbers[picked], -1)
    order = np.lexsort((tie_key, -sims), axis=1)
    sims, candidates = np.take_along_axis(sims, order, axis=1), np.take_along_axis(candidates, order, axis=1)
    n_allowed = len(base) if allowed is None else int(allowed.sum())
    if candidates.shape[1] > n and candidates.shape[1] < n_allowed:
        cut = sims[:, n - 1]
        tied = np.flatnonzero(np.isfinite(cut) & (sims[:, -1] >= cut - _TIE_TOLERANCE))
        for first in range(0, tied.size, 64):
            rows = tied[first : first + 64]
            sims[rows, :n], candidates[rows, :n] = _settle(queries[rows], base, allowed, cut[rows], n, numbers)
    return sims[:, :n], candidates[:, :n]


def _settle(
    queries: np.ndarray, base, allowed: np.ndarray | None, cut: np.ndarray, n: int, numbers: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top ``n`` of a few queries among every allowed row of ``base`` at or above ``cut``
    (less the tolerance), rescored in float64, ties by row number (see :func:`_rescore_top`)."""
    pair_query, pair_row = [], []
    for start, stop in row_blocks(len(base)):
        near = (queries @ np.asarray(base[start:stop]).T) >= (cut - _TIE_TOLERANCE)[:, None]
        if allowed is not None:
            near &= allowed[start:stop]
        q, r = np.nonzero(near)
        pair_query.append(q)
        pair_row.append(r + start)
    q, r = np.concatenate(pair_query), np.concatenate(pair_row)
    sims = np.einsum("pd,pd->p", queries[q], base[r], dtype=np.float64).astype(np.float32)
    order = np.lexsort((r if numbers is None else numbers[r], -sims, q))
    q, r, sims = q[order], r[order], sims[order]
    rank = np.arange(q.size) - np.searchsorted(q, q)
    keep = rank < n
    out_sims = np.full((len(queries), n), -np.inf, dtype=np.float32)
    out_idx = np.full((len(queries), n), -1, dtype=np.int64)
    out_sims[q[keep], rank[keep]] = sims[keep]
    out_idx[q[keep], rank[keep]] = r[keep]
    return out_sims, out_idx


def estimate_recall(
    graph: NeighborGraph,
    embeddings: np.ndarray | Rows,
    *,
    k: int,
    n_sample: int = 1000,
    seed: int = 0,
    engine: Engine = LOCAL,
) -> tuple[float, int]:
    """recall@k of an approximate graph, measured against an exact search for a random sample of rows.

    Parameters
    ----------
    graph : NeighborGraph
        The graph to check (its first ``k`` neighbours per row).
    embeddings : ndarray of shape (N, d), float32, or Rows
        The unit vectors the graph was built on.
    k : int
        Neighbours compared per row.
    n_sample : int
        Rows sampled (fewer if the data has fewer).
    seed : int
        Seeds the sample.
    engine : Engine
        Where the exact search of the sample runs (:func:`search_rows`).

    Returns
    -------
    (recall, rows sampled)
        The mean share of each sampled row's k exact nearest neighbours that the graph holds. A
        graph neighbour counts when its similarity reaches the k-th exact similarity, so ties (exact
        duplicates) are not counted as misses.
    """
    n_rows = embeddings.shape[0]
    k = min(k, graph.k, n_rows - 1)
    rows = np.sort(np.random.default_rng(seed).choice(n_rows, size=min(n_sample, n_rows), replace=False))
    # Blocked products over the embeddings in place: a faiss flat index would copy them (1.5 GB
    # at 1,000,000 × 384).
    sims, idx = search_rows(engine.place(embeddings), rows, None, k + 1, engine=engine)
    exact_idx = np.empty((rows.size, k), dtype=np.int64)
    exact_sim = np.empty((rows.size, k), dtype=np.float32)
    _drop_self(idx, sims, rows, k, exact_idx, exact_sim)
    kth = exact_sim[:, k - 1 : k]
    held = take_rows(engine, graph.edges, rows, dtype=GRAPH_DTYPE)[:, :k]
    found = (held["similarity"] >= kth - 1e-6) & (held["index"] >= 0)
    return float(found.mean()), int(rows.size)


def restrict_graph(
    graph: NeighborGraph, embeddings: np.ndarray | Rows, keep: np.ndarray, *, k: int, engine: Engine = LOCAL
) -> NeighborGraph:
    """The k-NN graph of the subsample ``keep``, derived from the full graph.

    Parameters
    ----------
    graph : NeighborGraph
        The full graph, built with more neighbours than ``k`` (so that enough of them survive).
    embeddings : ndarray of shape (N, d), dtype float32, or Rows
        Used only for the rare rows whose stored neighbours fall short inside the subsample
        (searched on ``engine``, :func:`search_rows`).
    keep : ndarray of shape (N,), dtype bool
        The subsample.
    k : int
        Neighbours per kept row in the result; capped at (number kept) - 1.

    Returns
    -------
    NeighborGraph
        (N, k) neighbours by full-data row numbers; rows outside ``keep`` hold -1 and similarity
        0. For kept rows the result equals a fresh search over the subsample. Made block by block
        of the full graph where ``engine`` keeps it, in its layout.
    """
    n_keep = int(keep.sum())
    k = min(k, n_keep - 1)
    edges = graph.edges
    shared_keep = engine.share(keep)
    restricted, short = engine.map_rows(
        _restrict_block,
        graph.ranges(),
        shared_keep,
        k,
        dim=k,
        rows=edges,
        reads=range_parts(edges),
        order=edges.order,
    )
    short = np.concatenate(short) if short else np.zeros(0, dtype=np.int64)
    if short.size:
        sims, idx = search_rows(engine.place(embeddings), short, keep, k + 1, engine=engine)
        engine.replace_rows(restricted, short, _without_self(idx, sims, short, k))
    return NeighborGraph(restricted, method=graph.method)


def _restrict_block(
    item: tuple[int, int], keep: np.ndarray, k: int, layout, *parts: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Stored rows [start, stop) of the full graph restricted to the subsample ``keep`` (an engine
    block of :func:`restrict_graph`): (their (B, k) rows, the kept rows among them left with
    fewer than k neighbours inside, by row number)."""
    start, stop = item
    reader = read_rows(layout, *parts)
    numbers = reader.numbers(start, stop)
    out = np.empty((stop - start, k), dtype=GRAPH_DTYPE)
    short = []
    # By chunks of rows: the sort's (B, graph.k) temporaries are several times the chunk's result.
    for a, b in row_blocks(stop - start, _RESTRICT_ROWS):
        block = reader.stored(start + a, start + b)
        inside = keep[block["index"]]
        # A stable argsort on "not inside" lists the kept neighbours first, nearest first.
        order = np.argsort(~inside, axis=1, kind="stable")[:, :k]
        out[a:b] = np.take_along_axis(block, order, axis=1)
        kept = keep[numbers[a:b]]
        short.append(numbers[a:b][kept & (inside.sum(axis=1) < k)])
        out[a:b][~kept] = (-1, 0.0)
    return out, np.concatenate(short) if short else np.zeros(0, dtype=np.int64)


def _merge_top(
    best_sims: np.ndarray, best_idx: np.ndarray, sims: np.ndarray, columns: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """Running top ``n``: merge (Q, n) best with a (Q, C) block of similarities to rows ``columns``.

    Returns the new (Q, n) similarities and row numbers, unordered.
    """
    if sims.shape[1] > n:  # the block's own best n first, so the merge selects among 2n, not n + C
        top = np.argpartition(-sims, n - 1, axis=1)[:, :n]
        sims, cand = np.take_along_axis(sims, top, axis=1), columns[top]
    else:
        cand = np.broadcast_to(columns, sims.shape)
    merged_sims = np.concatenate([best_sims, sims], axis=1)
    merged_idx = np.concatenate([best_idx, cand], axis=1)
    keep = np.argpartition(-merged_sims, n - 1, axis=1)[:, :n]
    return np.take_along_axis(merged_sims, keep, axis=1), np.take_along_axis(merged_idx, keep, axis=1)


def _search_within(
    base: np.ndarray,
    queries: np.ndarray,
    allowed: np.ndarray | None,
    n: int,
    *,
    block_rows: int = 16_384,
    query_rows: int = 1_024,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top ``n`` of ``queries`` among the rows of ``base`` where ``allowed`` is true (None: all).

    Blocked matrix products over contiguous slices of ``base``, the disallowed rows masked out, so
    no copy of the allowed rows is made (a flat index over a 90 % subsample copied 1.4 GB per
    detection round at 1,000,000 rows). Work memory is one (query_rows, block_rows) block.
    Returns (similarities, indices), shape (Q, n), most similar first; -inf / -1 where fewer than
    ``n`` rows are allowed.
    """
    out_sims = np.full((queries.shape[0], n), -np.inf, dtype=np.float32)
    out_idx = np.full((queries.shape[0], n), -1, dtype=np.int64)
    for q0 in range(0, queries.shape[0], query_rows):
        q1 = min(q0 + query_rows, queries.shape[0])
        best_sims, best_idx = out_sims[q0:q1], out_idx[q0:q1]
        for start in range(0, base.shape[0], block_rows):
            stop = min(start + block_rows, base.shape[0])
            sims = queries[q0:q1] @ base[start:stop].T
            if allowed is not None:
                sims[:, ~allowed[start:stop]] = -np.inf
            best_sims, best_idx = _merge_top(best_sims, best_idx, sims, np.arange(start, stop), n)
        best_idx = np.where(np.isfinite(best_sims), best_idx, -1)
        order = np.lexsort((best_idx, -best_sims), axis=1)
        out_sims[q0:q1] = np.take_along_axis(best_sims, order, axis=1)
        out_idx[q0:q1] = np.take_along_axis(best_idx, order, axis=1)
    return out_sims, out_idx


def _drop_self(
    idx: np.ndarray,
    sims: np.ndarray,
    rows: np.ndarray,
    k: int,
    out_idx: np.ndarray,
    out_sims: np.ndarray,
) -> None:
    """Copy the first k hits of each row that are not the row itself into the out arrays.

    ``idx``/``sims`` have k + 1 columns. Where the row is among them it is removed; where it is not
    (pushed out by exact duplicates that tie with it), the last hit is dropped instead.
    """
    is_self = idx == rows[:, None]
    # Mark the last column as "self" for rows without a self hit, then drop one marked entry per row.
    no_self = ~is_self.any(axis=1)
    is_self[no_self, -1] = True
    first_self = is_self.argmax(axis=1)
    keep = np.ones_like(is_self)
    keep[np.arange(len(rows)), first_self] = False
    out_idx[:] = idx[keep].reshape(len(rows), k)
    out_sims[:] = sims[keep].reshape(len(rows), k)


def search_neighbors(base: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` rows of ``base`` most similar to each query (exact inner product).

    Parameters
    ----------
    base : ndarray of shape (M, d), float32
        Unit vectors searched.
    queries : ndarray of shape (N, d), float32
        Unit vectors; need not be rows of ``base``.
    k : int
        At most M.

    Returns
    -------
    similarities : ndarray of shape (N, k), float32
        Cosine similarities, most similar first.
    indices : ndarray of shape (N, k), int64
        Row numbers in ``base``.
    """
    return _flat_searcher(np.ascontiguousarray(base, dtype=np.float32))(
        np.ascontiguousarray(queries, dtype=np.float32), k
    )


def _flat_searcher(base: np.ndarray):
    import faiss

    index = faiss.IndexFlatIP(base.shape[1])
    index.add(base)

    def search(queries: np.ndarray, n: int):
        return index.search(queries, n)

    return search


def _ivf_graph(
    base: Rows,
    k: int,
    *,
    probe_share: float,
    max_probes: int | None,
    seed: int,
    progress: Progress,
    engine: Engine = LOCAL,
) -> Rows:
    """Every row's ``k`` most similar other rows among the rows of its list's probed lists: the
    graph's edges (N, k) of :data:`GRAPH_DTYPE`, where ``engine`` keeps rows.

    Cluster blocks: the rows are split into k-means lists of about ``_LIST_ROWS`` rows; each list
    is compared, as one matrix product, with the rows of the ``n_probe`` lists whose centroids are
    nearest its own centroid (its own list first), and keeps each row's top ``n`` (torch ``topk``).
    The probes are chosen per list, not per row, so every product is a dense (list × candidates)
    block at BLAS speed, with no per-query scan and no merging. The lists are searched in blocks
    of ``_LISTS_PER_BLOCK`` (:func:`_search_lists`), on the given engine.

    Measured on 2 cores (benchmarks/scale.py, clustered 384-d data): at 1,000,000 rows the former
    per-row-probe IVF (list by list, with merges) took 342 s for the graph and this search 136 s,
    both at recall@10 1.000 there. On diffuse real data (MiniLM vectors of IMDB, SST-5) per-list
    probes need more candidates than per-row ones for the same recall; the recall is measured on
    every run. Time is O(N · n_probe · _LIST_ROWS · d).

    Each block of lists is made finished (ordered, the row itself dropped) as a block of the graph,
    so the search holds no (N, k + 1) arrays besides it: at 1,000,000 rows those and their
    reordering were about 0.6 GB on top of the graph. Locally the blocks are written into one
    array in row order; on Ray they stay where their tasks made them, in the search's order (the
    rows' list order), so the driver never holds the graph.

    Rows with fewer than ``k`` other candidates get similarity -inf and index -1 in the missing
    places, most similar first; equal similarities in index order, so the graph does not depend
    on list order.
    """
    home, probes = ivf_lists(base, probe_share=probe_share, max_probes=max_probes, seed=seed, engine=engine)
    home, probes = _near_lists_adjacent(home, probes)
    n_lists = len(probes)
    by_list = np.argsort(home, kind="stable")
    list_start = np.r_[0, np.cumsum(np.bincount(home, minlength=n_lists))]

    # Stored by list from here on (on a cluster; locally nothing moves): a block of lists then
    # reads the few blocks holding its lists and their probed lists, and the later stages find a
    # row's neighbours in nearby blocks.
    engine.arrange(base, by_list)

    def reads(block: tuple[int, int, int, int, int]) -> np.ndarray:
        first, last = block[2], block[3]
        lists = np.unique(np.concatenate([np.arange(first, last), probes[first:last].ravel()]))
        lists = lists[lists >= 0]
        return base.parts_of(np.concatenate([by_list[list_start[j] : list_start[j + 1]] for j in lists]))

    bounds = [(first, min(first + _LISTS_PER_BLOCK, n_lists)) for first in range(0, n_lists, _LISTS_PER_BLOCK)]
    # Each block: its rows' positions in the list order, its lists, and k.
    blocks = [(int(list_start[first]), int(list_start[last]), first, last, k) for first, last in bounds]
    plan = engine.share((by_list, list_start, probes))
    progress.start("neighbours", total=len(blocks))
    graph, _ = engine.map_rows(
        _search_lists, blocks, plan, dim=k, rows=base, reads=reads, order=by_list, done=progress.advance
    )
    progress.finish()
    return graph


def _near_lists_adjacent(home: np.ndarray, probes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The lists renumbered so that a list's probed lists have nearby numbers (``home`` (N,) and
    ``probes`` (L, P) as from :func:`ivf_lists`, renumbered).

    k-means numbers its lists in no useful order, and the rows are stored by list number for the
    search (engine.arrange): with the lists in reverse Cuthill-McKee order of the probe graph
    (scipy; it keeps the graph's edges near its diagonal), a block of lists and its probes fall
    in a few consecutive blocks of rows. Every list keeps its rows and its probes, so the graph
    does not change.
    """
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import reverse_cuthill_mckee

    n_lists = len(probes)
    source = np.repeat(np.arange(n_lists), probes.shape[1])
    target = probes.ravel()
    real = target >= 0
    edges = csr_matrix((np.ones(int(real.sum()), dtype=np.int8), (source[real], target[real])), shape=(n_lists,) * 2)
    sequence = reverse_cuthill_mckee((edges + edges.T).tocsr(), symmetric_mode=True)
    number = np.empty(n_lists, dtype=np.int64)
    number[sequence] = np.arange(n_lists)
    renumbered = np.where(probes >= 0, number[np.maximum(probes, 0)], -1)[sequence]
    return number[home], renumbered


def ivf_lists(
    base: np.ndarray | Rows,
    *,
    probe_share: float,
    max_probes: int | None,
    seed: int,
    engine: Engine = LOCAL,
    probe_by: str = "lists",
) -> tuple[np.ndarray, np.ndarray]:
    """The k-means lists of the cluster-block search (:func:`_ivf_graph`) and each list's probes.

    Parameters
    ----------
    base : ndarray of shape (N, d), float32, or Rows
        The unit vectors (placed on ``engine``: read by its blocks).
    probe_by : {"lists", "rows"}
        ``lists`` (what the search uses): each list probes its ``n_probe`` nearest lists.
        ``rows``: each list probes its nearest lists until they hold ``n_probe`` mean-sized lists'
        rows, which makes the work per row equal whatever the list sizes. Kept for
        ``benchmarks/list_balance.py``: on the scale benchmark it lost recall (1M rows: 0.881
        against 0.998 for lists, at 8,465 candidates per row against 10,357).

    Returns
    -------
    home : ndarray of shape (N,), int64
        Each row's list.
    probes : ndarray of shape (L, P), int64
        Each list's probed lists, nearest centroid first (its own list among them); -1 pads a
        list's probes with ``probe_by="rows"``.
    """
    import faiss

    base = engine.place(base)
    n_rows, dim = base.shape
    n_lists = max(1, round(n_rows / _LIST_ROWS))
    rng = np.random.default_rng(seed)
    # 40 training rows per list and 10 k-means iterations: measured the same recall as faiss'
    # defaults (256 rows, 25 iterations) at a third of the build time.
    train = take_rows(engine, base, np.sort(rng.choice(n_rows, size=min(n_rows, 40 * n_lists), replace=False)))
    if n_lists <= _FLAT_LISTS:
        centroids = _kmeans(train, n_lists, seed)
        assign = (centroids, None, None)
    else:
        # Two levels, so that training and assignment stay near-linear in N: √L coarse cells,
        # then each cell's share of the L lists trained on its own training rows; a row goes to
        # its nearest cell, then to that cell's nearest list.
        n_cells = math.ceil(math.sqrt(n_lists))
        coarse = _kmeans(train, n_cells, seed)
        cell_of_train = _nearest(coarse, train)
        share = np.bincount(cell_of_train, minlength=n_cells) / len(train)
        per_cell = np.maximum(1, np.round(share * n_lists).astype(np.int64))
        per_cell = np.minimum(per_cell, np.maximum(np.bincount(cell_of_train, minlength=n_cells), 1))
        parts = []
        for c in range(n_cells):
            rows = train[cell_of_train == c]
            # A cell no training row fell in keeps its own centroid as its one list.
            parts.append(_kmeans(rows, int(per_cell[c]), seed + 1 + c) if len(rows) else coarse[c : c + 1])
        centroids = np.vstack(parts).astype(np.float32)
        first_list = np.r_[0, np.cumsum([len(part) for part in parts])]
        n_lists = len(centroids)
        assign = (centroids, coarse, first_list)
    del train
    home = nearest_centroids(base, *assign, engine=engine)
    n_probe = max(1, math.ceil(probe_share * n_lists))
    if max_probes is not None:
        n_probe = min(n_probe, max_probes)
    n_probe = min(n_probe, n_lists)
    quantizer = faiss.IndexFlatIP(dim)
    quantizer.add(centroids)
    if probe_by == "lists":
        _, probes = quantizer.search(centroids, n_probe)  # each list's probed lists, nearest first
        return home, probes
    # By rows: each list takes its nearest lists until they hold n_probe mean-sized lists' rows.
    sizes = np.bincount(home, minlength=n_lists)
    budget = n_probe * n_rows / n_lists
    _, near = quantizer.search(centroids, min(n_lists, 4 * n_probe))
    before = np.cumsum(sizes[near], axis=1) - sizes[near]
    probes = np.where(before < budget, near, -1)
    return home, probes[:, : int((probes >= 0).sum(axis=1).max())]


def nearest_centroids(
    rows: Rows,
    centroids: np.ndarray,
    coarse: np.ndarray | None = None,
    first_list: np.ndarray | None = None,
    *,
    engine: Engine = LOCAL,
) -> np.ndarray:
    """Each row's most similar centroid (inner product), shape (N,) int64, found block by block
    where ``engine`` keeps ``rows`` (each task sent its own block; only the numbers come back).

    With ``coarse`` and ``first_list`` (two-level k-means, :func:`ivf_lists`), the nearest
    centroid within the nearest coarse cell; ``first_list[c]`` is cell c's first centroid.
    """
    home = np.empty(rows.n_rows, dtype=np.int64)
    for numbers, found in map_stored(
        engine, _nearest_list, rows, centroids, coarse, first_list, block_rows=_ASSIGN_ROWS
    ):
        home[numbers] = found
    return home


def _kmeans(rows: np.ndarray, n_clusters: int, seed: int) -> np.ndarray:
    """Spherical k-means centroids (faiss, 10 iterations, seeded), shape (n_clusters, d)."""
    import faiss

    n_clusters = max(1, min(n_clusters, len(rows)))
    kmeans = faiss.Kmeans(rows.shape[1], n_clusters, niter=10, seed=seed, min_points_per_centroid=1, spherical=True)
    kmeans.train(np.ascontiguousarray(rows, dtype=np.float32))
    return kmeans.centroids


def _nearest(centroids: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Each row's most similar centroid."""
    import faiss

    index = faiss.IndexFlatIP(centroids.shape[1])
    index.add(np.ascontiguousarray(centroids, dtype=np.float32))
    return index.search(np.ascontiguousarray(rows, dtype=np.float32), 1)[1][:, 0]


def _nearest_list(
    item: tuple[int, int],
    centroids: np.ndarray,
    coarse: np.ndarray | None,
    first_list: np.ndarray | None,
    layout,
    *parts: np.ndarray,
) -> np.ndarray:
    """Stored rows [start, stop)'s list (an engine block of the approximate search): one level
    (``coarse`` None), the nearest of ``centroids``; two levels, the nearest list within the
    nearest cell (``first_list``: each cell's first list)."""
    start, stop = item
    rows = read_rows(layout, *parts).stored(start, stop)
    if coarse is None:
        return _nearest(centroids, rows)
    cell = _nearest(coarse, rows)
    home = np.empty(len(rows), dtype=np.int64)
    for c in np.unique(cell):
        mine = np.flatnonzero(cell == c)
        home[mine] = first_list[c] + _nearest(centroids[first_list[c] : first_list[c + 1]], rows[mine])
    return home


def _search_lists(
    item: tuple[int, int, int, int, int],
    plan: tuple[np.ndarray, np.ndarray, np.ndarray],
    layout,
    *parts: np.ndarray,
) -> tuple[np.ndarray, None]:
    """The rows of lists [first, last), positions [start, stop) of the list order, against
    their lists' probed lists: the graph's rows (R, k) of :data:`GRAPH_DTYPE` in that order, each
    row's ``k`` nearest other rows, most similar first, equal similarities in row order; -inf / -1
    where a row had fewer candidates.

    One engine block of :func:`_ivf_graph` (``map_rows``). ``plan`` = (rows sorted by list, list
    starts, each list's probed lists nearest first).
    """
    import torch

    _, _, first, last, k = item
    n = k + 1  # the row itself is among its own list's candidates
    by_list, list_start, probes = plan
    base = read_rows(layout, *parts)
    rows, out_sims, out_idx = [], [], []
    for c in range(first, last):
        members = by_list[list_start[c] : list_start[c + 1]]
        if members.size == 0:
            continue
        # Its own list first, so that it is always searched even if a centroid ties.
        lists = [c] + [int(j) for j in probes[c] if j != c][: probes.shape[1] - 1]
        candidates = np.concatenate([by_list[list_start[j] : list_start[j + 1]] for j in lists])
        m = min(n, candidates.size)
        sims = torch.from_numpy(base[members]) @ torch.from_numpy(base[candidates]).T
        top_sims, top = torch.topk(sims, m, dim=1)
        block_sims = np.full((members.size, n), -np.inf, dtype=np.float32)
        block_idx = np.full((members.size, n), -1, dtype=np.int64)
        block_sims[:, :m] = top_sims.numpy()
        block_idx[:, :m] = candidates[top.numpy()]
        rows.append(members)
        out_sims.append(block_sims)
        out_idx.append(block_idx)
    if not rows:
        return np.zeros((0, k), dtype=GRAPH_DTYPE), None
    members, sims, idx = np.concatenate(rows), np.concatenate(out_sims), np.concatenate(out_idx)
    order = np.lexsort((idx, -sims), axis=1)
    sims, idx = np.take_along_axis(sims, order, axis=1), np.take_along_axis(idx, order, axis=1)
    return _without_self(idx, sims, members, k), None


def _torch_searcher(base: np.ndarray, device: str):
    import torch

    # float32 on purpose: half precision reorders near-tied neighbours, and the search is cheap
    # next to the encoder on any GPU.
    base_t = torch.from_numpy(base).to(device=device, dtype=torch.float32)

    def search(queries: np.ndarray, n: int):
        q = torch.from_numpy(np.ascontiguousarray(queries)).to(device=device, dtype=base_t.dtype)
        sims, idx = torch.topk((q @ base_t.T).float(), n, dim=1)
        return sims.cpu().numpy(), idx.cpu().numpy().astype(np.int64)

    return search
