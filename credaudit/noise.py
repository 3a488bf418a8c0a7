"""Label-noise transition matrix by high-order consensus (HOC).

Notation: N rows, K classes, observed (noisy) label ỹ, true label y.
``T[i, j] = P(ỹ = j | y = i)``: rows are true classes, columns observed labels; each row sums to 1.
(cleanlab's ``noise_matrix`` is ``T.T``.) ``p[i] = P(y = i)`` is the clean prior and
``p̃[j] = P(ỹ = j)`` the observed prior.

Clusterability: a row and its two nearest neighbours usually share one true label, so their
observed labels are three independent draws from row y of T. The consensus tensors

- c₁[a]       = Σ_i p_i T_ia
- c₂[a, b]    = Σ_i p_i T_ia T_ib
- c₃[a, b, c] = Σ_i p_i T_ia T_ib T_ic

are estimated as frequencies over the rows' (own, 1st neighbour, 2nd neighbour) label triples, and
T and p are fitted (softmax-parameterised, so T stays row-stochastic and p on the simplex) to bring
the analytic tensors close to the empirical ones. The distance is the cross-entropy of each
empirical tensor under the analytic one, summed over the three orders: up to a constant, the
KL divergence, and for the third order the likelihood of the triples under the model. (It was
measured clearly more accurate than the classic squared Frobenius distance on non-uniform T, with
mean row total variation 0.0067 vs 0.091 at K = 100.) Fitting uses L-BFGS with the exact gradient
from several initialisations and returns the lowest-loss point seen.
Intervals come from a row bootstrap: resample rows, recount, refit warm-started.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from credaudit.engine import LOCAL, Engine, Rows, range_parts, read_many, read_rows, usable_cores
from credaudit.neighbors import NeighborGraph, neighbour_blocks
from credaudit.progress import NullProgress, Progress


@dataclass(frozen=True)
class ConsensusCounts:
    """The label triples of a dataset, as counts of each distinct triple.

    Attributes
    ----------
    triples : ndarray of shape (U, 3), dtype int64
        Distinct (own label, 1st-neighbour label, 2nd-neighbour label) code triples.
    counts : ndarray of shape (U,), dtype int64
        Number of rows with each triple; sums to the number of rows counted.
    n_classes : int
        K.
    """

    triples: np.ndarray
    counts: np.ndarray
    n_classes: int

    @property
    def n_rows(self) -> int:
        return int(self.counts.sum())

    def with_counts(self, counts: np.ndarray) -> ConsensusCounts:
        """The same triples with other counts (a bootstrap resample)."""
        return ConsensusCounts(self.triples, counts, self.n_classes)

    @classmethod
    def merge(cls, parts: Iterable[ConsensusCounts], n_classes: int) -> ConsensusCounts:
        """The counts of several blocks of rows as one (the reduce of :func:`consensus_counts`).

        The same as counting all the rows at once: distinct triples in code order, counts summed.
        """
        parts = list(parts)
        if not parts:
            return ConsensusCounts(np.zeros((0, 3), dtype=np.int64), np.zeros(0, dtype=np.int64), n_classes)
        triples = np.concatenate([part.triples for part in parts])
        codes = (triples[:, 0] * n_classes + triples[:, 1]) * n_classes + triples[:, 2]
        unique, first, inverse = np.unique(codes, return_index=True, return_inverse=True)
        counts = np.bincount(inverse, weights=np.concatenate([part.counts for part in parts]), minlength=len(unique))
        return ConsensusCounts(triples[first], np.rint(counts).astype(np.int64), n_classes)

    def tensors(self) -> tuple[np.ndarray, np.ndarray]:
        """Empirical consensus frequencies ĉ₁ (K,) and ĉ₂ (K, K), symmetrised; the third order
        is :meth:`folded_third_order`.

        The model's tensors are symmetric in their indices (the three draws are exchangeable),
        so the empirical ones are averaged over index permutations: the same data, less variance.
        Each sums to 1.
        """
        n = self.n_classes
        total = max(self.n_rows, 1)
        columns = self.triples.T
        c1 = sum(np.bincount(col, weights=self.counts, minlength=n) for col in columns) / (3.0 * total)
        c2 = np.zeros((n, n))
        for x, y in ((0, 1), (0, 2), (1, 2)):
            pair = np.bincount(columns[x] * n + columns[y], weights=self.counts, minlength=n * n).reshape(n, n)
            c2 += pair + pair.T
        c2 /= 6.0 * total
        return c1, c2

    def folded_third_order(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """ĉ₃ over the pairs b ≤ c its occupied cells use, folded: (first (P,), second (P,), F (K, P)).

        ``F[a, q] = m·ĉ₃[a, first[q], second[q]]`` with m = 2 when first[q] < second[q] (the cells
        (a, b, c) and (a, c, b) together) and 1 on the diagonal, so that Σ_abc ĉ₃[a,b,c]·g[a,b,c]
        = Σ_aq F[a, q]·g[a, first[q], second[q]] for any g symmetric in (b, c). Pairs with no
        occupied cell are left out. Made from the distinct triples with O(K³/2) memory, never the
        (K, K, K) tensor: each triple (x, y, z) puts 1/3 of its count on (x, {y, z}), (y, {x, z})
        and (z, {x, y}).
        """
        n = self.n_classes
        n_pairs = n * (n + 1) // 2
        weights = self.counts.astype(np.float64)
        folded = np.zeros(n * n_pairs)
        for a, b, c in ((0, 1, 2), (1, 0, 2), (2, 0, 1)):
            low = np.minimum(self.triples[:, b], self.triples[:, c])
            high = np.maximum(self.triples[:, b], self.triples[:, c])
            pair = low * n - low * (low - 1) // 2 + (high - low)  # (low, high)'s place in np.triu_indices
            folded += np.bincount(self.triples[:, a] * n_pairs + pair, weights=weights, minlength=n * n_pairs)
        folded = folded.reshape(n, n_pairs) / (3.0 * max(self.n_rows, 1))
        used = np.flatnonzero(folded.any(axis=0))
        first, second = np.triu_indices(n)
        return first[used], second[used], folded[:, used]


def count_consensus(labels: np.ndarray, neighbor_indices: np.ndarray, *, n_classes: int) -> ConsensusCounts:
    """Count each row's (own, 1st-neighbour, 2nd-neighbour) label triple.

    Parameters
    ----------
    labels : ndarray of shape (N,), dtype int64
        Observed label codes 0..K-1.
    neighbor_indices : ndarray of shape (N, k), k >= 2
        Row i holds its neighbours' row numbers, nearest first, never i itself. Rows whose first
        two entries are not both valid (-1, outside a subsample) are skipped.
    n_classes : int
        K.

    Returns
    -------
    ConsensusCounts
    """
    valid = (neighbor_indices[:, 0] >= 0) & (neighbor_indices[:, 1] >= 0)
    return _count_triples(
        labels[valid], labels[neighbor_indices[valid, 0]], labels[neighbor_indices[valid, 1]], n_classes
    )


def _count_triples(own: np.ndarray, first: np.ndarray, second: np.ndarray, n_classes: int) -> ConsensusCounts:
    codes = (own * n_classes + first) * n_classes + second
    unique, counts = np.unique(codes, return_counts=True)
    triples = np.stack(
        [unique // (n_classes * n_classes), (unique // n_classes) % n_classes, unique % n_classes], axis=1
    )
    return ConsensusCounts(triples=triples.astype(np.int64), counts=counts.astype(np.int64), n_classes=n_classes)


def consensus_counts(
    labels: np.ndarray,
    graph: NeighborGraph,
    *,
    n_classes: int,
    triple_share: float = 1.0,
    embeddings: np.ndarray | Rows | None = None,
    engine: Engine = LOCAL,
    block_rows: int | None = None,
) -> ConsensusCounts:
    """The label triples that fit T, counted block by block on ``engine`` and summed.

    A map then a reduce: each block of rows counts its own triples (:func:`count_consensus`) and
    the counts are added (:meth:`ConsensusCounts.merge`), so the result is the same for any block
    size and engine. With ``triple_share < 1`` only the tightest triples count: each block first
    computes its rows' tightness (:func:`triple_tightness`), and the cutoff is the
    (1 - ``triple_share``) quantile of all of them.

    Parameters
    ----------
    labels : ndarray of shape (N,), dtype int64
        Observed label codes 0..K-1.
    graph : NeighborGraph
        k >= 2 neighbours per row, nearest first, never the row itself; its first two make a
        row's triple. Read in blocks where ``engine`` keeps it.
    n_classes : int
        K.
    triple_share : float
        Share of rows, tightest triples first, whose triples count (see :func:`estimate_noise`).
    embeddings : ndarray of shape (N, d), or Rows, optional
        L2-normalised rows; required when ``triple_share < 1``.
    engine : Engine
        Where the blocks run.
    block_rows : int, optional
        Rows per block of the graph (default: ``credaudit.engine.BLOCK_ROWS``).

    Returns
    -------
    ConsensusCounts
    """
    spans = range_parts(graph.edges)
    shared_labels = engine.share(labels)
    tight = None
    if triple_share < 1.0:
        rows = engine.place(embeddings)
        # Per block of the graph, each task sent the blocks of vectors holding its rows' two
        # neighbours: by k-means list on a cluster (engine.arrange), so mostly a few nearby ones.
        near = neighbour_blocks(engine, graph, rows, k=2, block_rows=block_rows)
        reads = lambda item: (spans(item), near[item])  # noqa: E731
        tightness = np.empty(len(labels), dtype=np.float32)
        for numbers, block in graph.map_blocks(
            engine, _tightness_block, block_rows=block_rows, also=(rows,), reads=reads
        ):
            tightness[numbers] = block
        tight = _tightest(tightness, triple_share)
        del tightness
    parts = (
        counted
        for _, counted in graph.map_blocks(
            engine, _count_block, shared_labels, engine.share(tight), n_classes, block_rows=block_rows
        )
    )
    return ConsensusCounts.merge(parts, n_classes)


def _tightest(tightness: np.ndarray, share: float) -> np.ndarray:
    """The rows whose triples count: the ``share`` of rows with the tightest triples (ties kept)."""
    return tightness >= np.quantile(tightness, 1.0 - share)


def _tightness_block(item: tuple[int, int], *arrays: Any) -> np.ndarray:
    """Stored rows [start, stop) of the graph: their triple tightness (an engine block of
    :func:`consensus_counts`; ``arrays``: the graph's blocks, then the vectors')."""
    graph, vectors = read_many(*arrays)
    block = graph.stored(*item)[:, :2]
    return triple_tightness(vectors, block["index"], block["similarity"])


def _count_block(
    item: tuple[int, int], labels: np.ndarray, tight: np.ndarray | None, n_classes: int, layout, *parts: np.ndarray
) -> ConsensusCounts:
    """Stored rows [start, stop) of the graph: their label triples, of the tight rows only when a
    mask is given (an engine block of :func:`consensus_counts`)."""
    reader = read_rows(layout, *parts)
    rows = reader.numbers(*item)
    block = reader.stored(*item)["index"][:, :2]
    if tight is not None:
        block = np.where(tight[rows, None], block, -1)
    # Only the block's own rows are counted; their neighbours' labels are read from all rows.
    valid = (block[:, 0] >= 0) & (block[:, 1] >= 0)
    return _count_triples(labels[rows][valid], labels[block[valid, 0]], labels[block[valid, 1]], n_classes)


@dataclass(frozen=True)
class TransitionFit:
    """One fit of T and p to consensus counts.

    Attributes
    ----------
    transition_matrix : ndarray of shape (K, K), dtype float64
        ``T[i, j] = P(observed = j | true = i)``; each row sums to 1.
    clean_prior : ndarray of shape (K,), dtype float64
        ``p[i] = P(true = i)``; sums to 1.
    loss : float
        The objective at the returned point, the lowest of all points evaluated.
    restart_losses : tuple of float
        The lowest loss each initialisation reached in its exploratory run.
    loss_trace : ndarray of shape (n_evaluations,)
        Every loss evaluated along the winning initialisation, in order (its minimum is ``loss``).
    """

    transition_matrix: np.ndarray
    clean_prior: np.ndarray
    loss: float
    restart_losses: tuple[float, ...]
    loss_trace: np.ndarray
    logits: tuple[np.ndarray, np.ndarray]


def fit_transition_matrix(
    counts: ConsensusCounts,
    *,
    n_restarts: int = 4,
    max_iter: int = 300,
    seed: int = 0,
    init: tuple[np.ndarray, np.ndarray] | None = None,
    explore_iter: int = 50,
    jump_cost: np.ndarray | None = None,
    n_workers: int = 1,
) -> TransitionFit:
    """Fit T and p so the analytic consensus tensors match the empirical ones.

    Parameters
    ----------
    counts : ConsensusCounts
        The data's label triples.
    n_restarts : int
        Initialisations tried. The first is strongly diagonal (logits 5·I - 1, prior uniform); the
        others add Gaussian noise (scale 1) to those logits. Ignored when ``init`` is given.
    max_iter : int
        L-BFGS iterations per initialisation.
    seed : int
        Seeds the perturbed initialisations.
    init : (logits_T, logits_p), optional
        Warm start (one initialisation only), used by the bootstrap.
    explore_iter : int
        With several initialisations, each first runs this many iterations; only the best is
        then run on to ``max_iter``. (The restarts nearly always agree: this spends the
        iterations where they matter, and keeps K = 100 within seconds.)
    jump_cost : ndarray of shape (K, K), optional
        A prior on T: the loss gains ``Σ_ij jump_cost[i, j]·T[i, j]``, so mass on a costly cell
        must be paid for by the data (ratings: far jumps on the scale, :func:`credaudit.ratings.jump_cost`).
    n_workers : int
        Threads that explore the initialisations side by side (each run is the same whatever the
        number: the result does not depend on it). Worth it only with one BLAS thread per fit.

    Returns
    -------
    TransitionFit
        The lowest-loss point over every evaluation of every initialisation.

    Notes
    -----
    The objective and its exact gradient are computed in closed form (:class:`_ConsensusLoss`) and
    minimised by scipy's L-BFGS-B, with the logits bounded (±25, or ±8 in float32 for K > 48):
    on clean data the optimum lies on the boundary T = I, and unbounded logits would drift for
    ever. Every point the optimiser evaluates is a candidate and the lowest-loss one is returned:
    an optimiser that ends on a worse point than one it visited never hands that point back (the
    reference implementation returned the last iterate of an oscillating Adam run).
    """
    n = counts.n_classes
    # float64 where it is cheap; float32 halves the O(K⁴) products for large K, with the logits
    # bounded to ±8 so that p·T·T·T stays a normal float32 (~1e-28 at worst): denormal products
    # inside BLAS were measured 4-6x slower. T entries still reach 1 - 1e-5.
    dtype, bound = (np.float64, 25.0) if n <= 48 else (np.float32, 8.0)
    objective_of = _ConsensusLoss(counts, dtype, jump_cost)
    if init is not None:
        starts = [init]
    else:
        rng = np.random.default_rng(seed)
        base = 5.0 * np.eye(n) - 1.0
        starts = [(base, np.zeros(n))] + [
            (base + rng.normal(size=(n, n)), rng.normal(scale=0.5, size=n)) for _ in range(n_restarts - 1)
        ]

    explore = max_iter if len(starts) == 1 else min(max_iter, explore_iter)
    if n_workers > 1 and len(starts) > 1:
        with ThreadPoolExecutor(max_workers=min(n_workers, len(starts))) as pool:
            runs = list(pool.map(lambda start: _run_lbfgs(objective_of.fork(), start, explore, bound), starts))
    else:
        runs = [_run_lbfgs(objective_of, start, explore, bound) for start in starts]
    restart_losses = tuple(run["loss"] for run in runs)
    best = min(runs, key=lambda run: run["loss"])
    if explore < max_iter:
        polished = _run_lbfgs(objective_of, best["theta"], max_iter - explore, bound)
        polished["trace"] = best["trace"] + polished["trace"]
        if polished["loss"] <= best["loss"]:
            best = polished
        else:
            best["trace"] = polished["trace"]
    theta = best["theta"]
    logits_t_best, logits_p_best = _align_latent_classes(theta[: n * n].reshape(n, n), theta[n * n :])
    return TransitionFit(
        transition_matrix=_softmax(logits_t_best, axis=1),
        clean_prior=_softmax(logits_p_best, axis=0),
        loss=best["loss"],
        restart_losses=restart_losses,
        loss_trace=np.array(best["trace"]),
        logits=(logits_t_best, logits_p_best),
    )


def _run_lbfgs(objective_of, start, max_iter: int, bound: float) -> dict:
    """Minimise from ``start`` ((logits_T, logits_p) or a flat vector); keep the best point evaluated."""
    from scipy.optimize import minimize

    theta0 = start if isinstance(start, np.ndarray) else np.concatenate([np.ravel(start[0]), np.ravel(start[1])])
    theta0 = np.clip(theta0.astype(np.float64), -bound, bound)
    point: dict = {"loss": math.inf, "theta": theta0, "trace": []}

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        value, grad = objective_of(theta)
        point["trace"].append(value)
        # Every evaluated point is a candidate: an optimiser that ends on a worse point than one it
        # visited must not hand that point back.
        if value < point["loss"]:
            point["loss"], point["theta"] = value, theta.copy()
        return value, grad

    minimize(
        objective,
        theta0,
        jac=True,
        method="L-BFGS-B",
        bounds=[(-bound, bound)] * len(theta0),
        options={"maxiter": max_iter, "ftol": 1e-12, "gtol": 1e-9, "maxcor": 10},
    )
    return point


# Cells of the third-order tensor per block of the loss's products (256 KB of float32).
_BLOCK_CELLS = 1 << 16


class _ConsensusLoss:
    """The consensus objective and its exact gradient with respect to the logits.

    With T = softmax(logits_T, by row) and p = softmax(logits_p), the analytic consensus is

    - m₁ = pᵀT                       (einsum "i,ia->a")
    - m₂ = Tᵀ diag(p) T              (einsum "i,ia,ib->ab")
    - m₃[a, (b,c)] = (pT)ᵀ W,  W[i, (b,c)] = T_ib T_ic   (einsum "i,ia,ib,ic->abc" as one product)

    and the loss is the cross-entropy of the (symmetrised) empirical tensors under it, summed
    over the orders: L = -Σ_o Σ ĉ_o log m_o. With e_o = ∂L/∂m_o = -ĉ_o / m_o (symmetric, as the
    tensors are):

    - ∂L/∂T_ia = p_i (e₁[a] + 2 Σ_b T_ib e₂[a,b] + 3 Σ_bc T_ib T_ic e₃[a,b,c])
    - ∂L/∂p_i  = Σ_a T_ia e₁[a] + Σ_ab T_ia T_ib e₂[a,b] + Σ_abc T_ia T_ib T_ic e₃[a,b,c]

    followed by the softmax Jacobians. An optional linear prior ``Σ jump_cost·T`` adds
    ``jump_cost`` to ∂L/∂T.

    m₃ and ĉ₃ are symmetric in (b, c), so both third-order products run over the pairs b ≤ c
    only, with ĉ₃ weighted by the pair's multiplicity (2 for b < c): Σ_bc ĉ₃ log m₃ and
    Σ_bc T_ib T_ic e₃[a,b,c] are the same sums with half the terms. Pairs (b, c) that no occupied
    cell uses drop out too (e₃ is zero there and their m₃ is never read). The two (K, P) × (P, K)
    products (P ≤ K(K+1)/2 pairs; O(K⁴/2) flops at most) are left to BLAS, faster than a sparse pass
    over the distinct triples; the logarithms and ratios only touch the cells where ĉ₃ > 0. They
    run over blocks of pairs of about ``_BLOCK_CELLS`` cells, so that W, m₃ and e₃ of a block stay
    in the cache between the two products (at K = 200 the whole (K, P) arrays are 16 MB each, and
    an evaluation took 55 ms instead of 42 on one core).
    """

    def __init__(self, counts: ConsensusCounts, dtype: type, jump_cost: np.ndarray | None = None) -> None:
        self.n = counts.n_classes
        self.jump_cost = None if jump_cost is None else np.asarray(jump_cost, dtype=dtype)
        self.dtype = dtype
        c1, c2 = counts.tensors()
        self.c1, self.c2 = c1.astype(dtype), c2.astype(dtype)
        self.first, self.second, folded = counts.folded_third_order()
        flat = folded.T.ravel()  # pair by pair: cell (a, q) at q·K + a
        self.nonzero = np.flatnonzero(flat)  # the cells with ĉ₃ > 0
        self.c3 = flat[self.nonzero].astype(dtype)
        n_pairs, per_block = len(self.first), max(1, _BLOCK_CELLS // self.n)
        self.blocks = [(q, min(q + per_block, n_pairs)) for q in range(0, n_pairs, per_block)]
        # The occupied cells of each block of pairs: nonzero[cuts[j]:cuts[j + 1]].
        self.cuts = np.searchsorted(self.nonzero, [q * self.n for q, _ in self.blocks] + [n_pairs * self.n])
        self.e3 = np.zeros(per_block * self.n, dtype=dtype)  # scratch: e₃ at every cell of a block

    def fork(self) -> _ConsensusLoss:
        """The same loss with its own scratch array, for another thread."""
        other = copy.copy(self)
        other.e3 = np.zeros_like(self.e3)
        return other

    def __call__(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        n = self.n
        theta = theta.astype(self.dtype)
        t = _softmax(theta[: n * n].reshape(n, n), axis=1)
        p = _softmax(theta[n * n :], axis=0)
        pt = p[:, None] * t
        tiny = np.finfo(self.dtype).tiny
        m1 = np.maximum(p @ t, tiny)
        m2 = np.maximum(t.T @ pt, tiny)
        m3 = np.empty_like(self.c3)  # m₃ at the occupied cells
        g3 = np.zeros((n, n), dtype=self.dtype)  # g3[i, a] = Σ_bc T_ib T_ic e₃[a, b, c]
        for (q0, q1), lo, hi in zip(self.blocks, self.cuts[:-1], self.cuts[1:], strict=True):
            cells = self.nonzero[lo:hi] - q0 * n
            w = t[:, self.first[q0:q1]] * t[:, self.second[q0:q1]]  # w[i, q] = T_ib T_ic, pair q = (b, c)
            m3[lo:hi] = np.maximum((w.T @ pt).ravel()[cells], tiny)
            e3 = self.e3[: (q1 - q0) * n]
            e3.fill(0.0)
            e3[cells] = -self.c3[lo:hi] / m3[lo:hi]
            g3 += w @ e3.reshape(q1 - q0, n)
        value = -(np.dot(self.c1, np.log(m1)) + np.sum(self.c2 * np.log(m2)) + np.dot(self.c3, np.log(m3)))
        e1, e2 = -self.c1 / m1, -self.c2 / m2
        g2 = t @ e2  # g2[i, a] = Σ_b T_ib e₂[b, a]
        grad_t = p[:, None] * (e1[None, :] + 2.0 * g2 + 3.0 * g3)
        grad_p = t @ e1 + np.sum(t * g2, axis=1) + np.sum(t * g3, axis=1)
        if self.jump_cost is not None:
            value += float(np.sum(self.jump_cost * t))
            grad_t = grad_t + self.jump_cost
        grad_logits_t = t * (grad_t - np.sum(grad_t * t, axis=1, keepdims=True))
        grad_logits_p = p * (grad_p - np.dot(grad_p, p))
        return float(value), np.concatenate([grad_logits_t.ravel(), grad_logits_p]).astype(np.float64)


def _align_latent_classes(logits_t: np.ndarray, logits_p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Name each latent (true) class after the observed label it most often produces.

    The consensus tensors, hence the loss, are unchanged when the latent classes are permuted
    (rows of T and entries of p together), so a fit can land on a relabelled copy of the right
    answer with exactly the same loss (seen: a cyclic shift of a 4-class T). Under the standing
    assumption that labels are right more often than not, latent class i is the one whose row puts
    its largest mass on label i: the permutation maximising the trace of T.
    """
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(_softmax(logits_t, axis=1), maximize=True)
    perm = rows[np.argsort(cols)]
    return logits_t[perm], logits_p[perm]


def _softmax(x: np.ndarray, axis: int) -> np.ndarray:
    z = np.exp(x - x.max(axis=axis, keepdims=True))
    return z / z.sum(axis=axis, keepdims=True)


@dataclass(frozen=True)
class Interval:
    """A point estimate with a two-sided bootstrap interval (percentile method)."""

    estimate: float
    low: float
    high: float

    def to_dict(self) -> dict[str, float]:
        return {"estimate": self.estimate, "low": self.low, "high": self.high}


@dataclass(frozen=True)
class NoiseEstimate:
    """Everything the run knows about the label noise of a dataset.

    Attributes
    ----------
    transition_matrix : ndarray of shape (K, K)
        ``T[i, j] = P(observed = j | true = i)``; each row sums to 1.
    clean_prior : ndarray of shape (K,)
        ``p[i] = P(true = i)``.
    observed_prior : ndarray of shape (K,)
        ``p̃[j] = P(observed = j)``, the label frequencies.
    noise_rate : Interval
        1 - Σ_i p_i T_ii: the share of rows whose label is wrong.
    class_noise_rate : list of Interval, length K
        1 - T_jj: the share of true-class-j rows that carry another label.
    observed_error_rate : list of Interval, length K
        r_j = 1 - T_jj p_j / p̃_j (clipped to [0, 1]): the share of rows labelled j that are wrong.
        Detection's ``rank`` method flags n_j · r_j rows of class j.
    credibility : Interval
        Ψ = 1 - ‖T - I‖_F / √(2K): 1 for a clean dataset, 0 when every label is wrong.
    is_diagonally_dominant : ndarray of shape (K,), dtype bool
        Whether T_ii exceeds every other entry of row i (otherwise the estimate is not trustworthy).
    fit : TransitionFit
        The point fit (loss, restarts, trace).
    triple_share : float
        Share of rows whose label triples fitted T.
    n_triples : int
        Number of triples that fitted T.
    n_bootstrap : int
        Bootstrap resamples behind the intervals (0: intervals collapse to the estimate).
    confidence_level : float
        Coverage of the intervals (0.95).
    """

    transition_matrix: np.ndarray
    clean_prior: np.ndarray
    observed_prior: np.ndarray
    noise_rate: Interval
    class_noise_rate: list[Interval]
    observed_error_rate: list[Interval]
    credibility: Interval
    is_diagonally_dominant: np.ndarray
    fit: TransitionFit
    triple_share: float
    n_triples: int
    n_bootstrap: int
    confidence_level: float


def fit_clean_prior(transition_matrix: np.ndarray, label_counts: np.ndarray, *, n_iter: int = 500) -> np.ndarray:
    """Maximum-likelihood clean prior p given T and the observed label counts.

    Maximises Σ_j n_j log (Tᵀp)_j over the simplex by EM (each step keeps p on the simplex and never
    lowers the likelihood).

    Parameters
    ----------
    transition_matrix : ndarray of shape (K, K)
        ``T[i, j] = P(observed = j | true = i)``.
    label_counts : ndarray of shape (K,)
        n_j, rows observed with label j.

    Returns
    -------
    ndarray of shape (K,)
        p, summing to 1.

    Notes
    -----
    The consensus fit also yields a p, but from all three positions of the triples (neighbour
    positions over-count "hub" rows) and, when only some triples are used, from a class mix that
    is not the data's. The per-class error shares r_j compare p with the observed prior of all rows,
    so p must describe all rows.
    """
    observed = label_counts / label_counts.sum()
    prior = np.full(len(observed), 1.0 / len(observed))
    for _ in range(n_iter):
        predicted = prior @ transition_matrix
        ratio = np.divide(observed, predicted, out=np.zeros_like(observed), where=predicted > 0)
        updated = prior * (transition_matrix @ ratio)
        updated /= updated.sum()
        if np.abs(updated - prior).max() < 1e-10:
            return updated
        prior = updated
    return prior


def derived_rates(
    transition_matrix: np.ndarray, clean_prior: np.ndarray, observed_prior: np.ndarray
) -> dict[str, np.ndarray | float]:
    """Noise rate, per-class rates and credibility implied by T and p.

    Parameters
    ----------
    transition_matrix : ndarray of shape (K, K)
        ``T[i, j] = P(observed = j | true = i)``.
    clean_prior : ndarray of shape (K,)
        p.
    observed_prior : ndarray of shape (K,)
        p̃ (empirical label frequencies).

    Returns
    -------
    dict with ``noise_rate`` (float), ``class_noise_rate`` (K,), ``observed_error_rate`` (K,),
    ``credibility`` (float).
    """
    diag = np.diag(transition_matrix)
    n = len(diag)
    with np.errstate(divide="ignore", invalid="ignore"):
        kept = np.where(observed_prior > 0, diag * clean_prior / observed_prior, 1.0)
    return {
        "noise_rate": float(1.0 - np.sum(clean_prior * diag)),
        "class_noise_rate": 1.0 - diag,
        "observed_error_rate": np.clip(1.0 - kept, 0.0, 1.0),
        "credibility": float(1.0 - np.linalg.norm(transition_matrix - np.eye(n)) / math.sqrt(2 * n)),
    }


def triple_tightness(
    embeddings: np.ndarray, neighbor_indices: np.ndarray, neighbor_similarities: np.ndarray
) -> np.ndarray:
    """How tight each row's consensus triple is: the smallest of its three pairwise similarities.

    Parameters
    ----------
    embeddings : ndarray of shape (N, d)
        L2-normalised.
    neighbor_indices, neighbor_similarities : ndarray of shape (N, k), k >= 2
        Nearest first, never the row itself.

    Returns
    -------
    ndarray of shape (N,)
        min(sim(x, nn1), sim(x, nn2), sim(nn1, nn2)).
    """
    first, second = neighbor_indices[:, 0], neighbor_indices[:, 1]
    between = np.einsum("nd,nd->n", embeddings[first], embeddings[second])
    return np.minimum(np.minimum(neighbor_similarities[:, 0], neighbor_similarities[:, 1]), between)


def default_workers() -> int:
    """The cores this process may use (its CPU affinity, not the machine's count), at most 4.

    More threads would not speed the bootstrap up on a shared box, and each holds a copy of the
    fit's arrays (O(distinct triples + K³/2)), which adds up at large K.
    """
    return max(1, min(usable_cores(), 4))


def estimate_noise(
    labels: np.ndarray,
    neighbor_indices: np.ndarray | None = None,
    *,
    n_classes: int,
    counts: ConsensusCounts | None = None,
    tightness: np.ndarray | None = None,
    triple_share: float = 1.0,
    n_restarts: int = 4,
    max_iter: int = 300,
    n_bootstrap: int = 40,
    bootstrap_max_iter: int = 20,
    confidence_level: float = 0.95,
    seed: int = 0,
    n_workers: int | None = None,
    jump_cost: np.ndarray | None = None,
    progress: Progress | None = None,
) -> NoiseEstimate:
    """Estimate T, p and the derived rates with bootstrap intervals.

    Parameters
    ----------
    labels : ndarray of shape (N,), dtype int64
        Observed label codes 0..K-1.
    neighbor_indices : ndarray of shape (N, k), k >= 2, optional
        The neighbour graph's indices: nearest first, never the row itself. Not needed with ``counts``.
    n_classes : int
        K.
    counts : ConsensusCounts, optional
        The triples already counted (:func:`consensus_counts`, which applies ``triple_share``
        itself); then ``neighbor_indices`` and ``tightness`` are not read.
    tightness : ndarray of shape (N,), optional
        Per-row triple tightness (:func:`triple_tightness`); required when ``triple_share < 1``
        and the triples are counted here.
    triple_share : float
        Share of rows, tightest triples first, whose triples fit T. Neighbours in a loose triple
        often have another *true* class (feature confusion), which a fit over all triples reads as
        label noise; class-conditional noise does not depend on geometry, so tight triples see
        the same noise with less confusion. The clean prior p is then refitted on all rows with T
        fixed (:func:`fit_clean_prior`), because tight triples over-represent tight classes.
    n_restarts, max_iter :
        See :func:`fit_transition_matrix`.
    n_bootstrap : int
        Row resamples for the intervals; 0 disables them.
    bootstrap_max_iter : int
        L-BFGS iterations per resample (warm-started at the point fit).
    confidence_level : float
        Interval coverage.
    seed : int
        Seeds initialisations and resampling.
    n_workers : int, optional
        Initialisations explored, then bootstrap resamples fitted, side by side (threads; BLAS
        single-threaded in each), each holding its own copy of the fit's arrays; default (None or
        0): :func:`default_workers`.
        The result does not depend on it.
    jump_cost : ndarray of shape (K, K), optional
        Prior cost of mass on each cell of T (:func:`fit_transition_matrix`); ratings use it.
    progress : Progress, optional
        One ``advance`` per bootstrap resample.

    Returns
    -------
    NoiseEstimate
    """
    if counts is None:
        if triple_share < 1.0:
            neighbor_indices = np.where(_tightest(tightness, triple_share)[:, None], neighbor_indices[:, :2], -1)
        counts = count_consensus(labels, neighbor_indices, n_classes=n_classes)
    progress = progress or NullProgress()
    rng = np.random.default_rng(seed)
    label_counts = np.bincount(labels, minlength=n_classes)
    observed_prior = label_counts / len(labels)
    # One BLAS thread per fit. The fit alternates small BLAS products with serial work (softmax,
    # L-BFGS-B's own step), and idle BLAS threads spin through the serial parts: on 2 cores a
    # 2-thread BLAS made the fit 2.3-2.6x slower (K = 77 and 100). The cores are used instead by
    # exploring the initialisations, then fitting bootstrap resamples, side by side.
    workers = max(1, n_workers or default_workers())
    with threadpool_limits(limits=1, user_api="blas"):
        fit = fit_transition_matrix(
            counts, n_restarts=n_restarts, max_iter=max_iter, seed=seed, jump_cost=jump_cost, n_workers=workers
        )
        clean_prior = fit_clean_prior(fit.transition_matrix, label_counts)
        point = derived_rates(fit.transition_matrix, clean_prior, observed_prior)

        # Every resample is drawn up front, in a fixed order, so the intervals do not depend on how
        # many workers fit them.
        draws = []
        for _ in range(n_bootstrap):
            # Resampling rows with replacement = a multinomial draw over the distinct triples.
            resampled = rng.multinomial(counts.n_rows, counts.counts / counts.n_rows)
            # The label counts are resampled with the rows, independently of the triples used for T.
            draws.append((resampled, rng.multinomial(len(labels), observed_prior)))

        def refit(draw: tuple[np.ndarray, np.ndarray]) -> dict[str, np.ndarray | float]:
            resampled, boot_labels = draw
            keep = resampled > 0
            boot_counts = ConsensusCounts(counts.triples[keep], resampled[keep], n_classes)
            boot = fit_transition_matrix(boot_counts, max_iter=bootstrap_max_iter, init=fit.logits, jump_cost=jump_cost)
            boot_prior = fit_clean_prior(boot.transition_matrix, boot_labels)
            return derived_rates(boot.transition_matrix, boot_prior, boot_labels / len(labels))

        progress.start("noise intervals", total=n_bootstrap)
        samples = []
        with ThreadPoolExecutor(max_workers=max(1, min(workers, n_bootstrap))) as pool:
            for sample in pool.map(refit, draws):
                samples.append(sample)
                progress.advance()
        progress.finish()

    alpha = (1.0 - confidence_level) / 2.0

    def interval(key: str, index: int | None = None) -> Interval:
        est = point[key] if index is None else point[key][index]
        if not samples:
            return Interval(float(est), float(est), float(est))
        values = np.array([s[key] if index is None else s[key][index] for s in samples])
        low, high = np.quantile(values, [alpha, 1.0 - alpha])
        # Percentile intervals can miss a point estimate sitting on a boundary (e.g. rate 0);
        # widen to include it so "estimate within its interval" always holds.
        return Interval(float(est), float(min(low, est)), float(max(high, est)))

    t = fit.transition_matrix
    off_diag_max = np.where(np.eye(n_classes, dtype=bool), -np.inf, t).max(axis=1)
    return NoiseEstimate(
        transition_matrix=t,
        clean_prior=clean_prior,
        observed_prior=observed_prior,
        noise_rate=interval("noise_rate"),
        class_noise_rate=[interval("class_noise_rate", j) for j in range(n_classes)],
        observed_error_rate=[interval("observed_error_rate", j) for j in range(n_classes)],
        credibility=interval("credibility"),
        is_diagonally_dominant=np.diag(t) > off_diag_max,
        fit=fit,
        triple_share=triple_share,
        n_triples=counts.n_rows,
        n_bootstrap=n_bootstrap,
        confidence_level=confidence_level,
    )


@dataclass(frozen=True)
class LatentClassFit:
    """Several observers of one latent class, each with its own transition matrix.

    Attributes
    ----------
    transition_matrices : ndarray of shape (m, G, G), float64
        ``T[k, i, j] = P(observer k says j | latent class i)``; each row sums to 1.
    prior : ndarray of shape (G,) or (S, G), float64
        ``p[i] = P(latent class i)``, per stratum when fitted with strata.
    log_likelihood : float
        Of the observed answer patterns under the fit.
    """

    transition_matrices: np.ndarray
    prior: np.ndarray
    log_likelihood: float


def fit_latent_classes(
    patterns: np.ndarray,
    counts: np.ndarray,
    *,
    n_groups: int,
    n_restarts: int = 4,
    max_iter: int = 500,
    tol: float = 1e-9,
    seed: int = 0,
    init: LatentClassFit | None = None,
    strata: np.ndarray | None = None,
) -> LatentClassFit:
    """Fit the high-order consensus model with one transition matrix per observer.

    The label audit's three observers (a row and its two nearest neighbours) are exchangeable, so
    :func:`fit_transition_matrix` fits one T for all three. Three or more *different* observers of
    a latent class (proxy models of a hidden attribute, annotators) each get their own. For three:

        P(a, b, c) = Σ_i p_i T₁[i, a] T₂[i, b] T₃[i, c]

    the third-order consensus tensor of the module docstring with a matrix per position (the lower
    orders are its marginals). It is identifiable when three of the matrices have full rank
    (Kruskal), and its maximum likelihood is found by expectation-maximisation over the distinct
    answer patterns: exact, monotone, and cheap for the few groups of a sensitive attribute.

    Parameters
    ----------
    patterns : ndarray of shape (U, m), int64
        Distinct answer patterns, one column per observer (m >= 3), codes 0..G-1.
    counts : ndarray of shape (U,)
        How many rows gave each pattern.
    n_groups : int
        G, the latent classes (and answer values).
    n_restarts : int
        Initialisations (the first diagonal, the others perturbed); the best likelihood wins.
    max_iter, tol : int, float
        EM iterations per initialisation, and the relative likelihood change that stops it.
    seed : int
        Seeds the perturbed initialisations.
    init : LatentClassFit, optional
        Warm start (one initialisation only), used by the bootstrap.
    strata : ndarray of shape (U,), int64, optional
        A stratum per pattern (0..S-1): the matrices are shared, each stratum has its own prior
        (``prior`` then has shape (S, G)). Strata must be disjoint sets of rows.

    Returns
    -------
    LatentClassFit
        Latent classes named after the answer they most produce (the trace of ΣₖTₖ is maximal):
        the observers must be right more often than not, on the whole.
    """
    patterns = np.asarray(patterns, dtype=np.int64)
    counts = np.asarray(counts, dtype=np.float64)
    n_obs, g = patterns.shape[1], n_groups
    stratum = np.zeros(len(counts), dtype=np.int64) if strata is None else np.asarray(strata, dtype=np.int64)
    n_strata = int(stratum.max()) + 1 if len(stratum) else 1
    if init is not None and strata is not None:
        # A resample may lack the last strata; the warm start still has a prior for each.
        n_strata = max(n_strata, init.prior.reshape(-1, g).shape[0])
    stratum_total = np.maximum(np.bincount(stratum, weights=counts, minlength=n_strata), 1e-300)
    if init is not None:
        starts = [(init.transition_matrices, init.prior.reshape(n_strata, g))]
    else:
        rng = np.random.default_rng(seed)
        off = 0.3 / max(g - 1, 1)
        base = np.full((n_obs, g, g), off) + np.eye(g)[None] * (0.7 - off)
        starts = [(base, np.full((n_strata, g), 1.0 / g))]
        for _ in range(n_restarts - 1):
            t = base + rng.uniform(0, 0.3, size=base.shape)
            starts.append((t / t.sum(axis=2, keepdims=True), rng.dirichlet(np.ones(g), size=n_strata)))
    best = None
    observers = np.arange(n_obs)
    for t0, p0 in starts:
        t, p = t0.copy(), p0.copy()
        previous = -math.inf
        for _ in range(max_iter):
            # log P(i, pattern u) = log p_i + Σ_k log T_k[i, pattern[u, k]]
            log_t = np.log(np.maximum(t, 1e-300))
            log_joint = np.log(np.maximum(p, 1e-300))[stratum] + log_t[observers, :, patterns].sum(axis=1)
            top = log_joint.max(axis=1, keepdims=True)
            log_marginal = top[:, 0] + np.log(np.exp(log_joint - top).sum(axis=1))
            log_likelihood = float(np.dot(counts, log_marginal))
            weights = np.exp(log_joint - log_marginal[:, None]) * counts[:, None]  # n_u · P(i | u)
            p = np.zeros((n_strata, g))
            np.add.at(p, stratum, weights)
            p /= stratum_total[:, None]
            # A tiny pseudo-count keeps a matrix row defined when a latent class loses all its mass.
            t = np.full((n_obs, g, g), 1e-9)
            for k in observers:
                np.add.at(t[k].T, patterns[:, k], weights)
            t /= t.sum(axis=2, keepdims=True)
            if abs(log_likelihood - previous) <= tol * max(abs(log_likelihood), 1.0):
                break
            previous = log_likelihood
        if best is None or log_likelihood > best[2]:
            best = (t, p, log_likelihood)
    t, p, log_likelihood = best
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(t.sum(axis=0), maximize=True)
    perm = rows[np.argsort(cols)]
    prior = p[:, perm]
    return LatentClassFit(t[:, perm], prior[0] if strata is None else prior, log_likelihood)
