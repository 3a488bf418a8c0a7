"""Several labels per item: the true class of each item and the quality of each annotator.

Notation: A answers, I items, M annotators, K classes. Answer a says label ``label[a]`` for item
``item[a]`` and comes from annotator ``annotator[a]``. The confusion matrix of annotator w is
``π_w[i, j] = P(w answers j | true class i)`` (rows sum to 1), the dataset-level transition
matrix T is the answer-weighted pool of them, with the meaning T has everywhere in credaudit.

Estimation, in three steps:

1. **T from the answers alone** (high-order consensus, SPEC §4.2): three answers drawn within one
   item are three noisy looks at the same true class, so the consensus tensors of ``noise.py``
   hold with them in place of (row, 1st neighbour, 2nd neighbour). :func:`count_item_triples`
   counts them (each item weighs 1, whatever its answer count) and ``noise.fit_transition_matrix``
   fits T and p — no features needed.
2. **Per-annotator matrices** by Dawid–Skene EM started from every annotator = T, with each
   row of π_w shrunk toward the pooled matrix by ``shrinkage`` pseudo-answers: an annotator with
   one answer keeps (nearly) the crowd's matrix instead of accuracy 1.0, and one with hundreds is
   judged on their own answers.
3. **The items' texts**, when given, add a prior over each item's class from its neighbours'
   current posteriors: prior_i = (1 − λ) p + λ m_i, m_i the similarity-weighted mean posterior of
   item i's k nearest items (never itself). λ is a mixture weight fitted by the same EM, so
   features that carry no signal about the class get λ ≈ 0 and leave the answers in charge.

Intervals come from an item bootstrap (resample items, refit warm-started with the neighbour prior
held at the point fit).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from credaudit.noise import ConsensusCounts, fit_transition_matrix
from credaudit.progress import NullProgress, Progress

# Items with more answers than this have this many random triples drawn instead of all of them.
_MAX_EXACT_ANSWERS = 8
_SAMPLED_TRIPLES = 56
ANNOTATOR_MODELS = ("full", "one_coin")


def count_item_triples(item: np.ndarray, label: np.ndarray, *, n_classes: int, seed: int = 0) -> ConsensusCounts:
    """Label triples drawn within items, each item weighing 1.

    Parameters
    ----------
    item : ndarray of shape (A,), int64
        Item code of each answer.
    label : ndarray of shape (A,), int64
        Label code of each answer, 0..K-1.
    n_classes : int
        K.
    seed : int
        Draws the triples of items with more than 8 answers (all triples are used below that).

    Returns
    -------
    ConsensusCounts
        Distinct (a, b, c) label triples with float weights: an item with n >= 3 answers spreads
        weight 1 over its triples. Items with fewer than three answers contribute nothing.
    """
    rng = np.random.default_rng(seed)
    order = np.lexsort((label, item))
    item_sorted, label_sorted = item[order], label[order]
    starts = np.flatnonzero(np.r_[True, item_sorted[1:] != item_sorted[:-1]])
    sizes = np.diff(np.r_[starts, len(item_sorted)])
    codes_parts, weight_parts = [], []
    for n in np.unique(sizes[sizes >= 3]):
        block = label_sorted[starts[sizes == n][:, None] + np.arange(n)[None, :]]  # (items, n)
        if n <= _MAX_EXACT_ANSWERS:
            picks = np.array(list(itertools.combinations(range(n), 3)))  # (C, 3)
            triples = block[:, picks]  # (items, C, 3)
        else:
            picks = rng.random((block.shape[0], _SAMPLED_TRIPLES, n)).argsort(axis=2)[:, :, :3]
            triples = np.take_along_axis(block[:, None, :], picks, axis=2)
        per_item = triples.shape[1]
        triples = triples.reshape(-1, 3)
        codes_parts.append((triples[:, 0] * n_classes + triples[:, 1]) * n_classes + triples[:, 2])
        weight_parts.append(np.full(len(triples), 1.0 / per_item))
    if not codes_parts:
        return ConsensusCounts(np.zeros((0, 3), dtype=np.int64), np.zeros(0), n_classes)
    unique, inverse = np.unique(np.concatenate(codes_parts), return_inverse=True)
    weights = np.bincount(inverse, weights=np.concatenate(weight_parts))
    triples = np.stack([unique // (n_classes * n_classes), (unique // n_classes) % n_classes, unique % n_classes], 1)
    return ConsensusCounts(triples.astype(np.int64), weights, n_classes)


@dataclass(frozen=True)
class Answers:
    """The answers of a crowd as the engine sees them (every code dense, 0-based).

    Attributes
    ----------
    item, annotator, label : ndarray of shape (A,), int64
        One entry per answer.
    n_items, n_annotators, n_classes : int
        I, M, K.
    """

    item: np.ndarray
    annotator: np.ndarray
    label: np.ndarray
    n_items: int
    n_annotators: int
    n_classes: int

    @property
    def n_answers(self) -> int:
        return len(self.label)

    def subset(self, keep: np.ndarray) -> Answers:
        """The answers where ``keep`` (A,) is true; codes unchanged."""
        return Answers(
            self.item[keep], self.annotator[keep], self.label[keep], self.n_items, self.n_annotators, self.n_classes
        )


@dataclass(frozen=True)
class CrowdFit:
    """A Dawid–Skene fit.

    Attributes
    ----------
    confusion : ndarray of shape (M, K, K)
        ``π_w[i, j] = P(annotator w answers j | true class i)``; rows sum to 1.
    pooled : ndarray of shape (K, K)
        The answer-weighted pool of the confusions: T[i, j] = P(an answer is j | true class i).
    prior : ndarray of shape (K,)
        p[i] = P(true class i), over items.
    posterior : ndarray of shape (I, K)
        P(item's true class = i | its answers and, with neighbours, the prior from them).
    neighbor_weight : float
        λ, the weight of the neighbours' prior (0 without neighbours).
    neighbor_prior : ndarray of shape (I, K) or None
        m_i, the neighbours' mean posterior that λ weighs.
    log_likelihood : float
        Of the answers under the fit (shrinkage terms excluded).
    n_iter : int
        EM iterations run.
    """

    confusion: np.ndarray
    pooled: np.ndarray
    prior: np.ndarray
    posterior: np.ndarray
    neighbor_weight: float
    neighbor_prior: np.ndarray | None
    log_likelihood: float
    n_iter: int


class _Incidence:
    """Sparse sums over answers, built once per answer set.

    ``by_item @ X`` sums an (A, ·) array per item; ``by_cell @ X`` sums it per (annotator, label).
    """

    def __init__(self, answers: Answers) -> None:
        a = answers.n_answers
        ones = np.ones(a)
        self.by_item = sp.csr_matrix((ones, (answers.item, np.arange(a))), shape=(answers.n_items, a))
        cells = answers.annotator * answers.n_classes + answers.label
        self.by_cell = sp.csr_matrix((ones, (cells, np.arange(a))), shape=(answers.n_annotators * answers.n_classes, a))


def _neighbor_mean(posterior: np.ndarray, indices: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """m_i = Σ_r w_ir q_{nbr(i, r)} / Σ_r w_ir, shape (I, K); uniform where an item has no weight."""
    mean = np.einsum("nk,nkc->nc", weights, posterior[indices])
    total = weights.sum(axis=1, keepdims=True)
    k = posterior.shape[1]
    return np.divide(mean, total, out=np.full_like(mean, 1.0 / k), where=total > 0)


def fit_dawid_skene(
    answers: Answers,
    *,
    init_confusion: np.ndarray,
    init_prior: np.ndarray,
    shrinkage: float = 2.0,
    neighbor_indices: np.ndarray | None = None,
    neighbor_weights: np.ndarray | None = None,
    fixed_neighbor_prior: np.ndarray | None = None,
    init_neighbor_weight: float = 0.3,
    fit_neighbor_weight: bool = True,
    item_weights: np.ndarray | None = None,
    incidence: _Incidence | None = None,
    model: str = "full",
    max_iter: int = 200,
    tol: float = 1e-7,
) -> CrowdFit:
    """Dawid–Skene EM with shrinkage toward the pooled matrix and an optional neighbour prior.

    Parameters
    ----------
    answers : Answers
    init_confusion : ndarray of shape (K, K) or (M, K, K)
        Starting confusion (every annotator the same when (K, K): the consensus T).
    init_prior : ndarray of shape (K,)
        Starting class prior.
    shrinkage : float
        Pseudo-answers per true-class row pulling π_w toward the pooled matrix (0: plain DS).
    neighbor_indices : ndarray of shape (I, k), optional
        Each item's nearest items (never itself); enables the neighbour prior.
    neighbor_weights : ndarray of shape (I, k), optional
        Their weights (cosine similarities clipped at 0).
    fixed_neighbor_prior : ndarray of shape (I, K), optional
        Use this m_i throughout instead of recomputing it from the neighbours (the bootstrap).
    init_neighbor_weight : float
        Starting λ.
    fit_neighbor_weight : bool
        Whether EM updates λ (False keeps ``init_neighbor_weight``).
    item_weights : ndarray of shape (I,), optional
        How many times each item counts (a bootstrap resample as multiplicities; default 1 each).
    incidence : _Incidence, optional
        The answers' sparse sums, when the caller reuses them across fits.
    model : {"full", "one_coin"}
        ``full``: a K×K matrix per annotator (shrunk as above); ``one_coin``: one accuracy per annotator,
        errors spread evenly over the other labels (π_w = s_w I + (1 − s_w)(1 − I)/(K − 1)).
    max_iter, tol :
        EM iterations, and the relative log-likelihood change that stops them.

    Returns
    -------
    CrowdFit
    """
    m, k = answers.n_annotators, answers.n_classes
    inc = incidence or _Incidence(answers)
    weight = np.ones(answers.n_items) if item_weights is None else np.asarray(item_weights, dtype=np.float64)
    confusion = np.array(init_confusion, dtype=np.float64)
    if confusion.ndim == 2:
        confusion = np.broadcast_to(confusion, (m, k, k)).copy()
    prior = np.asarray(init_prior, dtype=np.float64).copy()
    use_neighbors = fixed_neighbor_prior is not None or neighbor_indices is not None
    lam = float(init_neighbor_weight) if use_neighbors else 0.0
    neighbor_prior = fixed_neighbor_prior
    posterior = None
    previous = -math.inf
    n_iter = 0
    pooled = confusion.mean(axis=0)
    while n_iter < max_iter:
        n_iter += 1
        # E-step: log L_i[c] = Σ_{answers of i} log π_w[c, label]
        contrib = np.log(np.maximum(confusion, 1e-300))[answers.annotator, :, answers.label]  # (A, K)
        log_lik = np.asarray(inc.by_item @ contrib)  # (I, K)
        top = log_lik.max(axis=1, keepdims=True)
        lik = np.exp(log_lik - top)
        if use_neighbors:
            if fixed_neighbor_prior is None and posterior is not None:
                neighbor_prior = _neighbor_mean(posterior, neighbor_indices, neighbor_weights)
            if neighbor_prior is None:  # the first pass: no posteriors yet, only the answers
                item_prior = np.broadcast_to(prior, lik.shape)
                from_neighbors = None
            else:
                global_part = (1.0 - lam) * (lik @ prior)
                neighbor_part = lam * np.einsum("ic,ic->i", lik, neighbor_prior)
                item_prior = (1.0 - lam) * prior[None, :] + lam * neighbor_prior
                from_neighbors = neighbor_part / np.maximum(global_part + neighbor_part, 1e-300)
        else:
            item_prior = np.broadcast_to(prior, lik.shape)
            from_neighbors = None
        joint = item_prior * lik
        marginal = np.maximum(joint.sum(axis=1), 1e-300)
        posterior = joint / marginal[:, None]
        log_likelihood = float(np.dot(weight, np.log(marginal) + top[:, 0]))

        # M-step
        if from_neighbors is not None and fit_neighbor_weight:
            lam = float(np.clip(np.average(from_neighbors, weights=weight), 0.0, 0.95))
        prior = weight @ posterior / weight.sum()
        prior = np.maximum(prior, 1e-12)
        prior /= prior.sum()
        q_answers = (posterior * weight[:, None])[answers.item]  # (A, K): true-class weights of each answer
        counts = np.asarray(inc.by_cell @ q_answers).reshape(m, k, k).transpose(0, 2, 1)  # [w, true, answered]
        pooled = counts.sum(axis=0) + 1e-9
        pooled /= pooled.sum(axis=1, keepdims=True)
        if model == "one_coin":
            # One accuracy rests on all of an annotator's answers, not on one class's: two pseudo-answers.
            confusion = _one_coin(_skill(counts, min(shrinkage, 2.0)), k)
        else:
            confusion = counts + shrinkage * _shrinkage_target(counts, pooled, shrinkage) + 1e-9
            confusion /= confusion.sum(axis=2, keepdims=True)
        if abs(log_likelihood - previous) <= tol * max(abs(log_likelihood), 1.0):
            break
        previous = log_likelihood
    return CrowdFit(
        confusion=confusion,
        pooled=pooled,
        prior=prior,
        posterior=posterior,
        neighbor_weight=lam,
        neighbor_prior=neighbor_prior if use_neighbors else None,
        log_likelihood=log_likelihood,
        n_iter=n_iter,
    )


def _skill(counts: np.ndarray, shrinkage: float) -> np.ndarray:
    """Each annotator's share of answers on the posterior class, shrunk toward the crowd's: shape (M,)."""
    n = counts.sum(axis=(1, 2))
    hits = np.trace(counts, axis1=1, axis2=2)
    crowd = hits.sum() / max(n.sum(), 1e-12)
    return (hits + shrinkage * crowd) / (n + shrinkage)


def _one_coin(skill: np.ndarray, k: int) -> np.ndarray:
    """π_w = s_w on the diagonal, (1 − s_w)/(K − 1) elsewhere: shape (M, K, K)."""
    off = (1.0 - np.eye(k)) / max(k - 1, 1)
    return np.clip(skill, 1e-6, 1 - 1e-6)[:, None, None] * np.eye(k)[None] + (1.0 - skill)[:, None, None] * off[None]


def _shrinkage_target(counts: np.ndarray, pooled: np.ndarray, shrinkage: float) -> np.ndarray:
    """Each annotator's "one-coin" version of the pooled matrix, shape (M, K, K).

    Diagonal: the annotator's own overall share of answers agreeing with the posterior class (itself
    shrunk toward the crowd's); off the diagonal: the pooled matrix's error pattern, scaled to the rest.
    A row of π_w with few answers then inherits the annotator's skill, not the crowd's: with many
    classes most rows have few answers, and shrinking them toward the crowd made a spammer's answers
    count like a typical annotator's.
    """
    k = pooled.shape[0]
    skill = _skill(counts, shrinkage)
    off = pooled * (1.0 - np.eye(k))
    off /= np.maximum(off.sum(axis=1, keepdims=True), 1e-12)
    return skill[:, None, None] * np.eye(k)[None] + (1.0 - skill)[:, None, None] * off[None]


def annotator_accuracy(
    fit: CrowdFit, answers: Answers, *, shrinkage: float = 2.0, item_weights: np.ndarray | None = None
) -> np.ndarray:
    """Each annotator's estimated share of right answers, shape (M,).

    The expected number of right answers, Σ_a P(item's class = label_a | all answers), plus ``shrinkage``
    pseudo-answers at the crowd's mean, over n_w + ``shrinkage``: a one-answer annotator stays near the
    crowd instead of at 0 or 1. (Two alternatives were measured worse on the simulated crowds of
    ``benchmarks/crowd.py``: Σ_c p̂_w[c] π_w[c, c] from the confusion matrix, which at K = 77 put spammers at
    0.35 against a real 0.01, and each answer judged by the item's *other* answers only, which reads weak
    co-annotators as the annotator's own errors: MAE 0.115 vs 0.050 at K = 4.)
    """
    if answers.n_answers == 0:
        return np.full(answers.n_annotators, np.nan)
    right = fit.posterior[answers.item, answers.label]
    w = np.ones(answers.n_answers) if item_weights is None else item_weights[answers.item]
    n = np.bincount(answers.annotator, weights=w, minlength=answers.n_annotators)
    total = np.bincount(answers.annotator, weights=w * right, minlength=answers.n_annotators)
    return (total + shrinkage * np.average(right, weights=w)) / (n + shrinkage)


def answer_error_rate(fit: CrowdFit, answers: Answers, item_weights: np.ndarray | None = None) -> float:
    """The share of single answers that are wrong: 1 − mean over answers of P(item's class = its label)."""
    if answers.n_answers == 0:
        return 0.0
    w = None if item_weights is None else item_weights[answers.item]
    return float(1.0 - np.average(fit.posterior[answers.item, answers.label], weights=w))


def leave_one_out_posterior(fit: CrowdFit, answers: Answers) -> np.ndarray:
    """P(item's class | every other answer of the item), per answer, shape (A, K).

    The posterior with the answer's own likelihood factor divided out; what an annotator is judged
    against, so that their own answer does not vouch for itself.
    """
    own = fit.confusion[answers.annotator, :, answers.label]  # (A, K)
    q = fit.posterior[answers.item] / np.maximum(own, 1e-300)
    return q / q.sum(axis=1, keepdims=True)


def copy_scores(
    fit: CrowdFit, answers: Answers, reference: np.ndarray, *, pseudo_items: float = 2.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """How often each annotator follows a reference labeller where the other annotators disagree with it.

    Where the reference's label is not what the item's other answers (and prior) point to, an honest
    annotator answers from the item and mostly sides with the others; someone pasting the reference's
    answers sides with the reference every time. Peer agreement explains an honest annotator's
    agreement with the reference on the undisputed items; only the disputed ones separate the two.

    Parameters
    ----------
    fit : CrowdFit
    answers : Answers
    reference : ndarray of shape (I,), int64
        The reference's label code per item, -1 where unknown.
    pseudo_items : float
        Shrinks the share of annotators with few disputed items toward the crowd's share.

    Returns
    -------
    copy_score : ndarray of shape (M,)
        Share of the annotator's disputed items on which they gave the reference's label, shrunk toward
        the crowd's share (NaN without a reference item).
    z : ndarray of shape (M,)
        (followed − expected at the crowd's share) / its binomial standard error (NaN without a disputed item).
    n_reference : ndarray of shape (M,), int64
        Answers of each annotator on items with a known reference.
    """
    m = answers.n_annotators
    ref = reference[answers.item]
    known = ref >= 0
    who = answers.annotator[known]
    n_ref = np.bincount(who, minlength=m)
    if not known.any():
        nan = np.full(m, np.nan)
        return nan, nan.copy(), n_ref
    others = leave_one_out_posterior(fit, answers.subset(known)).argmax(axis=1)
    disputed = ref[known] != others
    follows = (answers.label[known] == ref[known]) & disputed
    n_disputed = np.bincount(who[disputed], minlength=m).astype(np.float64)
    n_follows = np.bincount(who, weights=follows, minlength=m)
    base = n_follows.sum() / n_disputed.sum() if n_disputed.sum() else 0.0
    with np.errstate(invalid="ignore", divide="ignore"):
        score = np.where(n_ref > 0, (n_follows + pseudo_items * base) / (n_disputed + pseudo_items), np.nan)
        spread = np.sqrt(n_disputed * max(base * (1.0 - base), 1e-6))
        z = np.where(n_disputed > 0, (n_follows - base * n_disputed) / spread, np.nan)
    return score, z, n_ref


@dataclass(frozen=True)
class CrowdEstimate:
    """Everything estimated about a crowd.

    Attributes
    ----------
    fit : CrowdFit
        The point fit.
    consensus_transition : ndarray of shape (K, K) or None
        T from within-item label triples alone (None when fewer than ``min_triple_items`` items
        have three answers); it initialised the fit.
    n_triple_items : int
        Items with at least three answers.
    accuracy : ndarray of shape (M,)
    accuracy_low, accuracy_high : ndarray of shape (M,)
        Bootstrap interval of each annotator's accuracy.
    noise_rate : tuple of float
        (estimate, low, high): the share of single answers that are wrong.
    credibility : dict
        ``estimate``, ``low``, ``high`` of Ψ = 1 − ‖T − I‖_F / √(2K) for the pooled T.
    n_bootstrap : int
    model : str
        The annotator model Akaike's criterion chose: ``full`` (a confusion matrix each) or ``one_coin``.
    aic : dict
        The criterion of each model (lower is better).
    """

    fit: CrowdFit
    consensus_transition: np.ndarray | None
    n_triple_items: int
    accuracy: np.ndarray
    accuracy_low: np.ndarray
    accuracy_high: np.ndarray
    noise_rate: tuple[float, float, float]
    credibility: dict[str, float]
    n_bootstrap: int
    model: str = "full"
    aic: dict[str, float] | None = None


def estimate_crowd(
    answers: Answers,
    *,
    neighbor_indices: np.ndarray | None = None,
    neighbor_similarities: np.ndarray | None = None,
    shrinkage: float | None = None,
    n_bootstrap: int = 50,
    bootstrap_max_iter: int = 10,
    confidence_level: float = 0.95,
    min_triple_items: int = 20,
    seed: int = 0,
    progress: Progress | None = None,
) -> CrowdEstimate:
    """T from the answers, per-annotator matrices, posteriors, and bootstrap intervals.

    Parameters
    ----------
    answers : Answers
    neighbor_indices, neighbor_similarities : ndarray of shape (I, k), optional
        The items' neighbour graph (from their texts); adds the neighbour prior.
    shrinkage : float, optional
        See :func:`fit_dawid_skene`; default :func:`default_shrinkage`.
    n_bootstrap : int
        Item resamples for the intervals (0: none).
    bootstrap_max_iter : int
        EM iterations per resample, warm-started at the point fit.
    confidence_level : float
    min_triple_items : int
        Items with three answers needed before the consensus T is fitted and tried as a start.
    seed : int
    progress : Progress, optional
        One ``advance`` per resample.

    Returns
    -------
    CrowdEstimate
    """
    progress = progress or NullProgress()
    k = answers.n_classes
    n_answers_per_item = np.bincount(answers.item, minlength=answers.n_items)
    n_triple_items = int((n_answers_per_item >= 3).sum())
    if shrinkage is None:
        shrinkage = default_shrinkage(k)
    consensus_t = None
    off = 0.3 / max(k - 1, 1)
    # Two starts, the higher likelihood wins: the consensus T (when enough items have three answers)
    # and "every annotator right 70 % of the time". With many classes and few triples the consensus T
    # is coarse, and EM from it was seen to stop at a worse optimum (K = 77, 3,000 items).
    starts = [(np.full((k, k), off) + np.eye(k) * (0.7 - off), np.bincount(answers.label, minlength=k) + 1.0)]
    if n_triple_items >= min_triple_items:
        counts = count_item_triples(answers.item, answers.label, n_classes=k, seed=seed)
        # One BLAS thread, as in noise.estimate_noise (the fit's small products run slower on two), and one
        # initialisation beyond 20 classes: it costs O(K^4) per step, and it only starts the EM below.
        with threadpool_limits(limits=1, user_api="blas"):
            hoc = fit_transition_matrix(counts, seed=seed, n_restarts=4 if k <= 20 else 1)
        consensus_t = hoc.transition_matrix
        if np.all(np.diag(consensus_t) > 1.0 / k):  # a fit calling most answers wrong starts nothing
            starts.insert(0, (consensus_t, hoc.clean_prior))
    weights = None if neighbor_similarities is None else np.clip(neighbor_similarities, 0.0, None).astype(np.float64)
    fits = {
        model: max(
            (
                fit_dawid_skene(
                    answers,
                    init_confusion=init_confusion,
                    init_prior=init_prior / init_prior.sum(),
                    shrinkage=shrinkage,
                    neighbor_indices=neighbor_indices,
                    neighbor_weights=weights,
                    model=model,
                )
                for init_confusion, init_prior in starts
            ),
            key=lambda f: f.log_likelihood,
        )
        for model in ANNOTATOR_MODELS
    }
    # The full model has M·K·(K − 1) free cells, the one-coin model M accuracies; Akaike's criterion
    # picks between them. Many classes and few answers per annotator and class favour the one-coin
    # model (K = 77, 40 annotators, 9,000 answers: consensus 0.911 vs 0.900); with a few classes the
    # full matrices see who confuses what (K = 4: 0.846 vs 0.823; CIFAR-10N 0.9195 vs 0.907).
    m = answers.n_annotators
    aic = {
        "full": 2 * m * k * (k - 1) - 2 * fits["full"].log_likelihood,
        "one_coin": 2 * m - 2 * fits["one_coin"].log_likelihood,
    }
    model = min(aic, key=aic.get)
    fit = fits[model]
    accuracy = annotator_accuracy(fit, answers, shrinkage=shrinkage)
    noise = answer_error_rate(fit, answers)

    rng = np.random.default_rng(seed)
    acc_samples, noise_samples, cred_samples = [], [], []
    progress.start("annotator intervals", total=n_bootstrap)
    incidence = _Incidence(answers)
    for _ in range(n_bootstrap):
        # Items drawn with replacement, as multiplicities: the same answers, weighted.
        drawn = np.bincount(rng.integers(0, answers.n_items, size=answers.n_items), minlength=answers.n_items)
        boot_fit = fit_dawid_skene(
            answers,
            init_confusion=fit.confusion,
            init_prior=fit.prior,
            shrinkage=shrinkage,
            fixed_neighbor_prior=fit.neighbor_prior,
            init_neighbor_weight=fit.neighbor_weight,
            fit_neighbor_weight=False,
            item_weights=drawn.astype(np.float64),
            incidence=incidence,
            model=model,
            max_iter=bootstrap_max_iter,
        )
        acc_samples.append(annotator_accuracy(boot_fit, answers, shrinkage=shrinkage, item_weights=drawn))
        noise_samples.append(answer_error_rate(boot_fit, answers, item_weights=drawn))
        cred_samples.append(_credibility(boot_fit.pooled))
        progress.advance()
    progress.finish()
    alpha = (1.0 - confidence_level) / 2.0
    # Accuracy intervals: the bootstrap sees the fit's sampling error; the right/wrong of each answer is
    # itself uncertain given the fit (a sum of Bernoulli(q_a)), which the bootstrap cannot see for an
    # annotator's own answers. Both variances add, around the estimate (normal approximation).
    right = fit.posterior[answers.item, answers.label]
    n_w = np.bincount(answers.annotator, minlength=answers.n_annotators)
    answer_var = np.bincount(answers.annotator, weights=right * (1.0 - right), minlength=answers.n_annotators)
    answer_var = answer_var / (n_w + shrinkage) ** 2
    boot_var = np.var(np.array(acc_samples), axis=0) if acc_samples else 0.0
    from scipy.stats import norm

    half = norm.ppf(1.0 - alpha) * np.sqrt(answer_var + boot_var)
    low, high = np.clip(accuracy - half, 0.0, 1.0), np.clip(accuracy + half, 0.0, 1.0)
    if acc_samples:
        n_low, n_high = np.quantile(noise_samples, [alpha, 1.0 - alpha])
        c_low, c_high = np.quantile(cred_samples, [alpha, 1.0 - alpha])
    else:
        n_low, n_high = noise, noise
        c_low = c_high = _credibility(fit.pooled)
    credibility = _credibility(fit.pooled)
    return CrowdEstimate(
        fit=fit,
        consensus_transition=consensus_t,
        n_triple_items=n_triple_items,
        accuracy=accuracy,
        accuracy_low=np.minimum(low, accuracy),
        accuracy_high=np.maximum(high, accuracy),
        noise_rate=(noise, float(min(n_low, noise)), float(max(n_high, noise))),
        credibility={
            "estimate": credibility,
            "low": float(min(c_low, credibility)),
            "high": float(max(c_high, credibility)),
        },
        n_bootstrap=n_bootstrap,
        model=model,
        aic=aic,
    )


def default_shrinkage(n_classes: int) -> float:
    """Pseudo-answers per confusion-matrix row: 2 + K/4.

    Each row of π_w rests on the annotator's answers for one true class, about n_w / K of them, so more
    classes need a firmer pull toward the annotator's one-coin matrix. Measured on the simulated crowds of
    ``benchmarks/crowd.py`` (consensus accuracy): K = 4 flat from 1 to 8; K = 77 0.894 at 2, 0.901 at 8,
    0.903 at 32; RTE (K = 2) flat.
    """
    return 2.0 + n_classes / 4.0


def _credibility(transition_matrix: np.ndarray) -> float:
    k = transition_matrix.shape[0]
    return float(1.0 - np.linalg.norm(transition_matrix - np.eye(k)) / math.sqrt(2 * k))


@dataclass(frozen=True)
class AnnotatorProfile:
    """What the fit says about each annotator; every array has shape (M,).

    Attributes
    ----------
    n_answers : int64
    agreement : float
        Share of their answers equal to the item's consensus label.
    kappa : float
        Accuracy beyond chance, (acc − chance) / (1 − chance), chance = Σ_c p̂_w[c] ρ_w[c] (the accuracy of
        someone answering with their own label frequencies ρ_w, blind to the item).
    top_share : float
        Share of their answers on their most frequent label.
    top_label : int64
    worst_true, worst_answer : int64
        The confusion with the most expected wrong answers: true class → answered label (-1 if none).
    """

    n_answers: np.ndarray
    agreement: np.ndarray
    kappa: np.ndarray
    top_share: np.ndarray
    top_label: np.ndarray
    worst_true: np.ndarray
    worst_answer: np.ndarray


def profile_annotators(fit: CrowdFit, answers: Answers, accuracy: np.ndarray) -> AnnotatorProfile:
    """Per-annotator counts, agreement with the consensus, kappa and the worst confusion."""
    m, k = answers.n_annotators, answers.n_classes
    n = np.bincount(answers.annotator, minlength=m)
    consensus = fit.posterior.argmax(axis=1)
    agree = np.bincount(answers.annotator, weights=answers.label == consensus[answers.item], minlength=m)
    label_counts = np.zeros((m, k))
    np.add.at(label_counts, (answers.annotator, answers.label), 1.0)
    mix = np.zeros((m, k))
    np.add.at(mix, answers.annotator, fit.posterior[answers.item])
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = label_counts / np.maximum(n, 1)[:, None]
        true_mix = mix / np.maximum(n, 1)[:, None]
        chance = np.einsum("wc,wc->w", true_mix, rho)
        kappa = np.where(n > 0, (accuracy - chance) / np.maximum(1.0 - chance, 1e-9), np.nan)
    expected_errors = true_mix[:, :, None] * fit.confusion * (1.0 - np.eye(k))[None]  # [w, true, answered]
    flat = expected_errors.reshape(m, -1)
    worst = flat.argmax(axis=1)
    has_error = flat.max(axis=1) > 0
    return AnnotatorProfile(
        n_answers=n,
        agreement=np.where(n > 0, agree / np.maximum(n, 1), np.nan),
        kappa=kappa,
        top_share=np.where(n > 0, label_counts.max(axis=1) / np.maximum(n, 1), np.nan),
        top_label=label_counts.argmax(axis=1),
        worst_true=np.where(has_error & (n > 0), worst // k, -1),
        worst_answer=np.where(has_error & (n > 0), worst % k, -1),
    )


def suspect_reasons(
    profile: AnnotatorProfile,
    prior: np.ndarray,
    copy_score: np.ndarray,
    copy_z: np.ndarray,
    *,
    min_answers: int = 10,
    spammer_kappa: float = 0.15,
    biased_share: float = 0.8,
    copier_z: float = 3.0,
    copier_share: float = 0.5,
) -> list[str | None]:
    """Why each annotator is suspect, or None: ``biased``, ``spammer`` or ``copier`` (first match wins).

    - biased: one label on at least ``biased_share`` of the answers while that class is at most
      ``biased_share`` − 0.3 of the items (a rater who answers the same whatever the item);
    - spammer: kappa below ``spammer_kappa`` (answers carry next to no information on the class);
    - copier: follows the reference on at least ``copier_share`` of the items where the other answers
      disagree with it, ``copier_z`` standard errors above the crowd's share.

    Annotators with fewer than ``min_answers`` answers are never called anything: there is too
    little to tell bad luck from bad work.
    """
    reasons: list[str | None] = []
    for w in range(len(profile.n_answers)):
        if profile.n_answers[w] < min_answers:
            reasons.append(None)
        elif profile.top_share[w] >= biased_share and prior[profile.top_label[w]] <= biased_share - 0.3:
            reasons.append("biased")
        elif profile.kappa[w] < spammer_kappa:
            reasons.append("spammer")
        elif np.isfinite(copy_z[w]) and copy_z[w] >= copier_z and copy_score[w] >= copier_share:
            reasons.append("copier")
        else:
            reasons.append(None)
    return reasons
