import itertools

import numpy as np
import pytest

from credaudit.neighbors import build_knn_graph
from credaudit.noise import (
    ConsensusCounts,
    consensus_counts,
    count_consensus,
    derived_rates,
    estimate_noise,
    fit_clean_prior,
    fit_transition_matrix,
    triple_tightness,
)
from tests.conftest import flip_labels, make_clusterable, symmetric_t


def model_triples(t: np.ndarray, prior: np.ndarray, n_rows: int, rng) -> ConsensusCounts:
    """Triples drawn from the HOC model itself: one true class, three independent noisy labels."""
    k = len(prior)
    true = rng.choice(k, size=n_rows, p=prior)
    draws = np.stack([flip_labels(true, t, rng) for _ in range(3)], axis=1)
    codes = (draws[:, 0] * k + draws[:, 1]) * k + draws[:, 2]
    unique, counts = np.unique(codes, return_counts=True)
    triples = np.stack([unique // (k * k), (unique // k) % k, unique % k], axis=1)
    return ConsensusCounts(triples, counts, k)


def random_t(k: int, rate: float, rng) -> np.ndarray:
    t = np.zeros((k, k))
    for i in range(k):
        off = rng.dirichlet(np.full(k - 1, 0.5)) * rate
        t[i] = np.insert(off, i, 1.0 - rate)
    return t


@pytest.mark.parametrize("k,rate", [(2, 0.3), (5, 0.25), (10, 0.2)])
def test_recovers_known_t_from_its_own_model(k, rate, seed):
    rng = np.random.default_rng(seed)
    t = random_t(k, rate, rng)
    prior = rng.dirichlet(np.full(k, 5.0))
    fit = fit_transition_matrix(model_triples(t, prior, 20_000, rng), seed=seed)
    assert np.abs(fit.transition_matrix - t).mean() <= 0.02
    assert np.abs(fit.clean_prior - prior).max() <= 0.05  # K = 2 identifies p less sharply than T


@pytest.mark.parametrize("jump,block_cells", [(False, None), (True, None), (False, 12)])
def test_consensus_loss_and_gradient_match_the_full_tensors(jump, block_cells, monkeypatch):
    """The loss over the pairs b <= c (and only the used ones, in blocks of pairs) is the
    cross-entropy of the full tensors, and its gradient matches finite differences."""
    import credaudit.noise
    from credaudit.noise import _ConsensusLoss, _softmax

    if block_cells is not None:
        monkeypatch.setattr(credaudit.noise, "_BLOCK_CELLS", block_cells)

    rng = np.random.default_rng(3)
    k = 6
    # Few rows, so that some cells and pairs of the third-order tensor are empty.
    counts = model_triples(random_t(k, 0.3, rng), rng.dirichlet(np.full(k, 2.0)), 150, rng)
    cost = rng.random((k, k)) if jump else None
    loss = _ConsensusLoss(counts, np.float64, cost)
    assert len(loss.first) < k * (k + 1) // 2  # some pairs are unused
    assert len(loss.blocks) == (1 if block_cells is None else -(-len(loss.first) // 2))
    theta = rng.normal(size=k * k + k)
    value, grad = loss(theta)

    def reference(theta: np.ndarray) -> float:
        t, p = _softmax(theta[: k * k].reshape(k, k), axis=1), _softmax(theta[k * k :], axis=0)
        # The full symmetrised tensors, from the triples by definition.
        c3 = np.zeros((k, k, k))
        np.add.at(c3, tuple(counts.triples.T), counts.counts)
        c3 = sum(c3.transpose(axes) for axes in itertools.permutations(range(3))) / (6.0 * counts.n_rows)
        c1 = c3.sum(axis=(1, 2))
        c2 = c3.sum(axis=2)
        m1 = np.einsum("i,ia->a", p, t)
        m2 = np.einsum("i,ia,ib->ab", p, t, t)
        m3 = np.einsum("i,ia,ib,ic->abc", p, t, t, t)
        total = -sum(np.sum(c[c > 0] * np.log(m[c > 0])) for c, m in ((c1, m1), (c2, m2), (c3, m3)))
        return total + (0.0 if cost is None else float(np.sum(cost * t)))

    assert value == pytest.approx(reference(theta), rel=1e-12)
    step = 1e-6
    numeric = [(reference(theta + step * e) - reference(theta - step * e)) / (2 * step) for e in np.eye(len(theta))]
    np.testing.assert_allclose(grad, numeric, atol=1e-7)


def test_returned_loss_is_the_minimum_seen_and_rows_sum_to_one():
    rng = np.random.default_rng(0)
    t = random_t(6, 0.3, rng)
    fit = fit_transition_matrix(model_triples(t, np.full(6, 1 / 6), 5000, rng), n_restarts=3)
    assert fit.loss == pytest.approx(fit.loss_trace.min())
    assert fit.loss <= min(fit.restart_losses)
    np.testing.assert_allclose(fit.transition_matrix.sum(axis=1), 1.0)
    assert fit.clean_prior.sum() == pytest.approx(1.0)


def test_best_iterate_is_returned_even_when_the_optimiser_ends_worse(monkeypatch):
    """If the optimiser's last evaluation is worse than an earlier one, the earlier one comes back."""
    import scipy.optimize

    real = scipy.optimize.minimize

    def wandering(fun, x0, **kwargs):
        result = real(fun, x0, **kwargs)
        fun(x0 + 3.0)  # a last, bad evaluation, as an oscillating optimiser would leave
        return result

    monkeypatch.setattr(scipy.optimize, "minimize", wandering)
    rng = np.random.default_rng(1)
    t = random_t(4, 0.2, rng)
    fit = fit_transition_matrix(model_triples(t, np.full(4, 0.25), 5000, rng), n_restarts=1)
    assert fit.loss_trace[-1] > fit.loss
    assert fit.loss == pytest.approx(fit.loss_trace.min())
    assert np.abs(fit.transition_matrix - t).mean() <= 0.02


def test_permuted_solutions_are_named_by_the_diagonal():
    # Symmetric 40 % noise over 4 classes: the likelihood has relabelled copies of the answer.
    rng = np.random.default_rng(3)
    t = symmetric_t(4, 0.4)
    for restart_seed in range(4):
        fit = fit_transition_matrix(model_triples(t, np.full(4, 0.25), 20_000, rng), seed=restart_seed)
        assert np.all(np.argmax(fit.transition_matrix, axis=1) == np.arange(4))


def test_clean_prior_refit_inverts_the_noise():
    t = np.array([[0.8, 0.2], [0.1, 0.9]])
    prior = np.array([0.3, 0.7])
    observed = prior @ t
    np.testing.assert_allclose(fit_clean_prior(t, observed * 1e6), prior, atol=1e-6)


def test_derived_rates():
    t = np.array([[0.8, 0.2], [0.1, 0.9]])
    prior = np.array([0.5, 0.5])
    rates = derived_rates(t, prior, prior @ t)
    assert rates["noise_rate"] == pytest.approx(1 - 0.5 * 0.8 - 0.5 * 0.9)
    observed = prior @ t
    assert rates["observed_error_rate"][0] == pytest.approx(1 - 0.8 * 0.5 / observed[0])
    assert rates["credibility"] == pytest.approx(1 - np.linalg.norm(t - np.eye(2)) / 2)
    identity = derived_rates(np.eye(3), np.full(3, 1 / 3), np.full(3, 1 / 3))
    assert identity["noise_rate"] == 0 and identity["credibility"] == 1


def test_estimate_on_clusterable_data_with_intervals(seed):
    t = symmetric_t(4, 0.2)
    x, true, observed = make_clusterable(4000, 4, t, seed)
    graph = build_knn_graph(x, k=10)
    estimate = estimate_noise(observed, graph.indices, n_classes=4, n_bootstrap=20, seed=seed)
    true_rate = float(np.mean(observed != true))
    assert abs(estimate.noise_rate.estimate - true_rate) <= 0.03
    assert estimate.noise_rate.low <= estimate.noise_rate.estimate <= estimate.noise_rate.high
    assert estimate.noise_rate.high - estimate.noise_rate.low < 0.1
    assert estimate.is_diagonally_dominant.all()
    assert len(estimate.observed_error_rate) == 4


def test_clean_data_estimates_no_noise():
    x, true, _ = make_clusterable(2000, 5, None, 0)
    graph = build_knn_graph(x, k=10)
    estimate = estimate_noise(true, graph.indices, n_classes=5, n_bootstrap=5)
    assert estimate.noise_rate.estimate < 0.005
    assert estimate.credibility.estimate > 0.99


def test_one_row_class_does_not_crash():
    x, true, _ = make_clusterable(300, 3, None, 0)
    labels = true.copy()
    labels[0] = 3  # a fourth class with a single row
    graph = build_knn_graph(x, k=5)
    estimate = estimate_noise(labels, graph.indices, n_classes=4, n_bootstrap=3)
    assert np.isfinite(estimate.noise_rate.estimate)
    np.testing.assert_allclose(estimate.transition_matrix.sum(axis=1), 1.0)


def test_triple_share_uses_only_the_tightest_triples():
    x, true, _ = make_clusterable(1000, 3, None, 0)
    graph = build_knn_graph(x, k=5)
    tightness = np.linspace(0, 1, 1000)
    estimate = estimate_noise(true, graph.indices, n_classes=3, tightness=tightness, triple_share=0.5, n_bootstrap=0)
    assert estimate.n_triples == 500
    counts = count_consensus(true, graph.indices, n_classes=3)
    assert counts.n_rows == 1000


def test_fit_and_intervals_do_not_depend_on_the_number_of_workers():
    x, _, observed = make_clusterable(1500, 4, symmetric_t(4, 0.2), 0)
    graph = build_knn_graph(x, k=10)
    one = estimate_noise(observed, graph.indices, n_classes=4, n_bootstrap=6, n_workers=1)
    two = estimate_noise(observed, graph.indices, n_classes=4, n_bootstrap=6, n_workers=2)
    assert one.noise_rate == two.noise_rate and one.credibility == two.credibility
    # The initialisations explored side by side end where they end one after the other.
    assert one.fit.restart_losses == two.fit.restart_losses and one.fit.loss == two.fit.loss
    np.testing.assert_array_equal(one.transition_matrix, two.transition_matrix)


@pytest.mark.parametrize("triple_share", [1.0, 0.75])
def test_counts_made_block_by_block_equal_one_count_of_all_rows(triple_share):
    # The map-reduce form (per-block counts, then summed) must be the count of all rows at once,
    # whatever the block size, including the tightness cutoff taken over all rows.
    x, _, observed = make_clusterable(2000, 4, symmetric_t(4, 0.2), 3, spread=0.5)
    graph = build_knn_graph(x, k=5)
    tightness = triple_tightness(x, graph.indices, graph.similarities)
    whole = estimate_noise(
        observed, graph.indices, n_classes=4, tightness=tightness, triple_share=triple_share, n_bootstrap=0
    )
    for block_rows in (333, 2000, 65_536):
        counts = consensus_counts(
            observed, graph, n_classes=4, triple_share=triple_share, embeddings=x, block_rows=block_rows
        )
        assert counts.n_rows == whole.n_triples
        blocked = estimate_noise(observed, counts=counts, n_classes=4, triple_share=triple_share, n_bootstrap=0)
        np.testing.assert_array_equal(blocked.transition_matrix, whole.transition_matrix)
    if triple_share < 1:
        assert whole.n_triples == 1500


def test_merged_counts_sum_each_triple_over_the_parts():
    labels = np.array([0, 1, 1, 2, 0, 1])
    indices = np.array([[1, 2], [2, 0], [1, 3], [4, 5], [0, 1], [3, 3]])
    whole = count_consensus(labels, indices, n_classes=3)
    parts = [
        count_consensus(labels, np.where(np.isin(np.arange(6), rows)[:, None], indices, -1), n_classes=3)
        for rows in ([0, 1], [2, 3, 4], [5])
    ]
    merged = ConsensusCounts.merge(parts, 3)
    np.testing.assert_array_equal(merged.triples, whole.triples)
    np.testing.assert_array_equal(merged.counts, whole.counts)
    assert ConsensusCounts.merge([], 3).n_rows == 0
