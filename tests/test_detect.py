import numpy as np
import pytest

import credaudit.detect as detect_module
from credaudit.detect import (
    VoteScores,
    detect_label_errors,
    flag_rank,
    score_label_errors,
    stored_neighbours,
    suggest_labels,
)
from credaudit.engine import LocalEngine
from credaudit.neighbors import NeighborGraph, build_knn_graph
from credaudit.noise import estimate_noise
from tests.conftest import make_clusterable, symmetric_t


def run(x, labels, k_classes, *, method="rank", seed=0, n_rounds=5, steps=3, n_bootstrap=0):
    graph = build_knn_graph(x, k=17)
    estimate = estimate_noise(labels, graph.indices, n_classes=k_classes, n_bootstrap=n_bootstrap, seed=seed)
    detection = detect_label_errors(
        labels,
        graph,
        x,
        n_classes=k_classes,
        transition_matrix=estimate.transition_matrix,
        observed_error_rate=np.array([r.estimate for r in estimate.observed_error_rate]),
        method=method,
        n_rounds=n_rounds,
        propagation_steps=steps,
        seed=seed,
    )
    return detection, estimate


@pytest.mark.parametrize("method", ["rank", "vote"])
def test_clean_data_gets_no_flags(method, seed):
    x, true, _ = make_clusterable(2000, 5, None, seed)
    detection, _ = run(x, true, 5, method=method, seed=seed)
    assert detection.is_label_error.sum() == 0
    np.testing.assert_array_equal(detection.suggested_label, true)


@pytest.mark.parametrize("method", ["rank", "vote"])
def test_finds_injected_errors(method, seed):
    x, true, observed = make_clusterable(3000, 4, symmetric_t(4, 0.2), seed)
    detection, _ = run(x, observed, 4, method=method, seed=seed)
    errors = observed != true
    flagged = detection.is_label_error
    precision = (flagged & errors).sum() / flagged.sum()
    recall = (flagged & errors).sum() / errors.sum()
    assert precision > 0.9 and recall > 0.9
    assert detection.error_score[errors].mean() > detection.error_score[~errors].mean() + 0.5


def test_suggestions_are_calibrated(seed):
    x, true, observed = make_clusterable(4000, 5, symmetric_t(5, 0.25), seed, spread=0.6)
    detection, _ = run(x, observed, 5, seed=seed)
    confident = detection.is_label_error & (detection.suggestion_confidence >= 0.9)
    assert confident.sum() >= 50
    assert (detection.suggested_label[confident] == true[confident]).mean() >= 0.85


def test_a_one_row_class_and_a_two_row_class_do_not_crash():
    x, true, _ = make_clusterable(400, 3, None, 0)
    labels = true.copy()
    labels[0] = 3
    labels[1:3] = 4
    detection, _ = run(x, labels, 5, n_rounds=7)
    assert detection.is_label_error.shape == (400,)
    assert np.isfinite(detection.error_score).all()


def test_exact_duplicates_with_different_labels():
    x, true, _ = make_clusterable(300, 3, None, 0)
    x = np.concatenate([x, x[:20]])  # 20 exact duplicates ...
    labels = np.concatenate([true, (true[:20] + 1) % 3])  # ... carrying another label
    detection, _ = run(x, labels, 3)
    assert detection.is_label_error[300:].sum() >= 18
    assert detection.is_label_error[:20].sum() <= 2


def test_same_seed_same_output_and_other_seed_runs():
    x, _, observed = make_clusterable(1500, 4, symmetric_t(4, 0.3), 5, spread=0.8)
    first, _ = run(x, observed, 4, seed=11)
    second, _ = run(x, observed, 4, seed=11)
    for field in ("error_score", "flag_rate", "is_label_error", "suggested_label", "suggestion_confidence"):
        np.testing.assert_array_equal(getattr(first, field), getattr(second, field))


def scores_of(error, n_disagree, other_sim, vote_top=None) -> VoteScores:
    n = len(error)
    return VoteScores(
        error_score=np.asarray(error, float),
        own_belief=np.zeros(n),
        best_other=np.zeros(n, dtype=int),
        best_other_belief=np.zeros(n),
        n_disagree=np.asarray(n_disagree),
        other_similarity=np.asarray(other_sim, float),
        vote_top=np.zeros(n, dtype=int) if vote_top is None else np.asarray(vote_top),
    )


def test_rank_breaks_ties_instead_of_flagging_the_whole_tie():
    labels = np.zeros(6, dtype=int)
    # All six rows tie on the score; the budget is two rows.
    scores = scores_of([0.5] * 6, [1, 3, 2, 3, 1, 1], [0.1, 0.5, 0.9, 0.7, 0.2, 0.3])
    flags = flag_rank(labels, scores, np.array([2 / 6, 0.0]), n_classes=2)
    assert flags.sum() == 2
    assert flags[[1, 3]].all(), "most disagreeing neighbours first, then the closest other-label neighbour"


def test_rank_never_flags_unanimous_rows_and_has_no_floor():
    labels = np.array([0, 0, 0, 1, 1, 1])
    scores = scores_of([0.0, 0.0, 0.0, 0.0, 0.4, 0.9], [0, 0, 0, 0, 1, 3], [-np.inf] * 4 + [0.5, 0.6])
    flags = flag_rank(labels, scores, np.array([1.0, 0.0]), n_classes=2)
    assert not flags.any(), "class 0's rows all agree with their neighbours; class 1 has a zero budget"


def test_plain_vote_is_the_similarity_weighted_share():
    labels = np.array([0, 0, 1, 1])
    graph = NeighborGraph.from_arrays(
        np.array([[1, 2], [0, 3], [3, 0], [2, 1]]),
        np.array([[0.9, 0.3], [0.9, 0.2], [0.8, 0.3], [0.8, 0.2]], dtype=np.float32),
        "exact",
    )
    scores = score_label_errors(labels, graph, n_classes=2, propagation_steps=0)
    np.testing.assert_allclose(scores.error_score, [0.3 / 1.2, 0.2 / 1.1, 0.3 / 1.1, 0.2 / 1.0], atol=1e-4)
    with_self = score_label_errors(labels, graph, n_classes=2, propagation_steps=0, self_weight=1.0)
    assert (with_self.error_score < scores.error_score).all()


def test_suggest_excludes_the_given_label_only_when_flagged():
    # Row 0 (label 0): neighbours 1, 2, 3 labelled 1, 1, 2; the plain vote is its posterior.
    labels = np.array([0, 1, 1, 2])
    graph = NeighborGraph.from_arrays(
        np.array([[1, 2, 3], [2, 0, 3], [1, 0, 3], [0, 1, 2]]),
        np.array([[0.5, 0.3, 0.2]] * 4, dtype=np.float32),
        "exact",
    )
    scores = score_label_errors(labels, graph, n_classes=3, propagation_steps=0)
    assert scores.best_other[0] == 1 and scores.best_other_belief[0] == pytest.approx(0.8, abs=1e-5)
    suggested, confidence = suggest_labels(labels[:2], scores_slice(scores, 2), np.array([True, False]))
    assert suggested.tolist() == [1, 1], "flagged: the best other class; unflagged: its own label"
    np.testing.assert_allclose(confidence, [0.8, 0.5], atol=1e-5)


def scores_slice(scores: VoteScores, n: int) -> VoteScores:
    return VoteScores(**{f: None if v is None else v[:n] for f, v in vars(scores).items()})


def dense_beliefs(labels, graph, n_classes, t, steps):
    """The scoring's math with dense arrays, row by row: the reference the blocks must match."""
    n = len(labels)
    w = np.zeros((n, n))
    for x in range(n):
        sims = np.clip(graph.similarities[x].astype(float), 0, None) + 1e-6
        for r, s in zip(graph.indices[x], sims / sims.sum(), strict=True):
            w[x, r] += s
    belief = np.eye(n_classes)[labels]
    if steps == 0:
        return w @ belief
    for _ in range(steps):
        belief = (w @ belief) * np.clip(t, 1e-4, None)[:, labels].T
        belief /= belief.sum(axis=1, keepdims=True)
    return belief


@pytest.mark.parametrize("steps", [0, 1, 3])
def test_scores_are_the_posterior_of_the_math(steps):
    x, _, observed = make_clusterable(300, 3, symmetric_t(3, 0.3), 2, spread=0.8)
    graph = build_knn_graph(x, k=6)
    t = symmetric_t(3, 0.3)
    values = np.array([1.0, 2.0, 5.0])
    posterior = dense_beliefs(observed, graph, 3, t, steps)
    scores = score_label_errors(
        observed, graph, n_classes=3, transition_matrix=t, propagation_steps=steps, class_values=values
    )
    rows = np.arange(len(observed))
    np.testing.assert_allclose(scores.own_belief, posterior[rows, observed], atol=1e-9)
    np.testing.assert_allclose(scores.error_score, 1 - posterior[rows, observed], atol=1e-9)
    np.testing.assert_allclose(scores.expected_value, posterior @ values, atol=1e-9)
    masked = posterior.copy()
    masked[rows, observed] = -1
    np.testing.assert_array_equal(scores.best_other, masked.argmax(axis=1))
    np.testing.assert_allclose(scores.best_other_belief, masked.max(axis=1), atol=1e-9)


def test_rank_budget_is_capped_by_the_vote_and_floored_by_the_score():
    labels = np.zeros(8, dtype=int)
    scores = scores_of(
        [0.9, 0.8, 0.7, 0.6, 0.15, 0.1, 0.05, 0.0],
        [8, 7, 6, 5, 2, 1, 1, 0],
        np.full(8, 0.5),
        vote_top=[1, 0, 0, 0, 0, 0, 0, 0],  # only row 0 is outvoted
    )
    rate = np.array([1.0, 0.0])  # a wildly wrong budget: every row of class 0
    assert flag_rank(labels, scores, rate, n_classes=2).sum() == 7, "no cap, no floor: all rows with a dissenter"
    assert flag_rank(labels, scores, rate, n_classes=2, vote_cap_factor=0).sum() == 7, "0 means no cap"
    capped = flag_rank(labels, scores, rate, n_classes=2, vote_cap_factor=2.0)
    assert capped.tolist() == [True, True] + [False] * 6, "at most twice the outvoted rows"
    floored = flag_rank(labels, scores, rate, n_classes=2, min_score=0.2)
    assert floored.tolist() == [True] * 4 + [False] * 4, "rows scoring below the floor never fill the budget"


@pytest.mark.parametrize("method", ["rank", "vote", "threshold"])
def test_within_a_class_no_flagged_row_scores_below_an_unflagged_one(method):
    x, _, observed = make_clusterable(2000, 5, symmetric_t(5, 0.25), 3, spread=0.9)
    detection, estimate = run(x, observed, 5, method=method)
    assert detection.is_label_error.any()
    candidates = detection.neighbour_agreement < 1
    if method == "vote":
        # The vote flags only rows their neighbours outvote: the order holds among those.
        model = score_label_errors(
            observed,
            build_knn_graph(x, k=10),  # detection scores on the 10 nearest
            n_classes=5,
            transition_matrix=estimate.transition_matrix,
            propagation_steps=3,
        )
        candidates &= model.vote_top != observed
    for c in range(5):
        in_class = observed == c
        flagged = detection.error_score[in_class & detection.is_label_error]
        # Rows whose neighbours all share their label are never flagged, whatever their score.
        others = detection.error_score[in_class & ~detection.is_label_error & candidates]
        if len(flagged) and len(others):
            assert flagged.min() >= others.max()


def test_vote_method_flags_only_outvoted_rows():
    x, _, observed = make_clusterable(2000, 4, symmetric_t(4, 0.3), 5, spread=1.0)
    detection, estimate = run(x, observed, 4, method="vote")
    graph = build_knn_graph(x, k=10)  # detection scores on the 10 nearest
    model = score_label_errors(
        observed, graph, n_classes=4, transition_matrix=estimate.transition_matrix, propagation_steps=3
    )
    np.testing.assert_allclose(model.error_score, detection.error_score)
    assert detection.is_label_error.any()
    assert (model.vote_top[detection.is_label_error] != observed[detection.is_label_error]).all()


def test_threshold_flags_by_score():
    x, _, observed = make_clusterable(1500, 3, symmetric_t(3, 0.2), 4, spread=0.6)
    graph = build_knn_graph(x, k=17)
    estimate = estimate_noise(observed, graph.indices, n_classes=3, n_bootstrap=0)
    detection = detect_label_errors(
        observed,
        graph,
        x,
        n_classes=3,
        transition_matrix=estimate.transition_matrix,
        observed_error_rate=np.array([r.estimate for r in estimate.observed_error_rate]),
        method="threshold",
        min_score=0.6,
    )
    assert detection.is_label_error.any()
    assert (detection.error_score[detection.is_label_error] >= 0.6).all()


@pytest.mark.parametrize("steps", [0, 1, 3])
def test_scores_made_block_by_block_equal_one_pass_over_all_rows(steps, monkeypatch):
    # Each row is scored from its neighbours only, so splitting the rows into engine blocks
    # (each propagation step one map over them) must change nothing, bit for bit.
    x, _, observed = make_clusterable(1500, 4, symmetric_t(4, 0.25), 5, spread=0.6)
    graph = build_knn_graph(x, k=10)
    t = symmetric_t(4, 0.25)
    args = dict(n_classes=4, transition_matrix=t, propagation_steps=steps, class_values=np.arange(4.0))
    whole = score_label_errors(observed, graph, **args)
    # Beliefs held as blocks of 300 rows (as on Ray), each step gathering its rows' neighbours'
    # beliefs from them, 7 rows at a time: the same sums in the same order.
    monkeypatch.setattr(detect_module, "_GATHER_VALUES", 7 * 10 * 4)
    for block_rows, engine in ((97, None), (1500, None), (97, LocalEngine(block_rows=300))):
        blocked = score_label_errors(observed, graph, block_rows=block_rows, engine=engine or LocalEngine(), **args)
        for field in vars(whole):
            np.testing.assert_array_equal(getattr(blocked, field), getattr(whole, field))


def test_detection_does_not_depend_on_the_block_size(seed):
    x, true, observed = make_clusterable(1200, 4, symmetric_t(4, 0.2), seed, spread=0.5)
    graph = build_knn_graph(x, k=17)
    estimate = estimate_noise(observed, graph.indices, n_classes=4, n_bootstrap=0, seed=seed)
    args = dict(
        n_classes=4,
        transition_matrix=estimate.transition_matrix,
        observed_error_rate=np.array([r.estimate for r in estimate.observed_error_rate]),
        seed=seed,
    )
    whole = detect_label_errors(observed, graph, x, **args)
    blocked = detect_label_errors(observed, graph, x, block_rows=250, **args)
    np.testing.assert_array_equal(blocked.is_label_error, whole.is_label_error)
    np.testing.assert_array_equal(blocked.error_score, whole.error_score)
    np.testing.assert_array_equal(blocked.suggested_label, whole.suggested_label)
    assert whole.is_label_error.sum() > 0


def test_the_default_stores_seventeen_neighbours():
    # k = 10 with 90 % rounds: the count every benchmark figure was measured with.
    assert stored_neighbours(10, 0.9) == 17
    assert stored_neighbours(10, 1.0) == 10
    assert stored_neighbours(1, 0.9) >= 2  # the consensus triples read two neighbours


@pytest.mark.parametrize("k, rate", [(10, 0.9), (50, 0.9), (10, 0.5)])
def test_stored_neighbours_leave_few_rows_short_in_a_round(k, rate):
    # A row short of k kept neighbours is searched exactly in that round, a pass over all rows;
    # with k + 11 stored at k = 50 (the earlier margin) about 1.7 % of the rows were.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4000, 16)).astype(np.float32)
    graph = build_knn_graph(x, k=stored_neighbours(k, rate))
    short = 0
    for keep in detect_module._subsamples(len(x), 5, rate, rng):
        n_inside = keep[graph.indices].sum(axis=1)
        short += int((keep & (n_inside < k)).sum())
    assert short <= 10  # about 4 expected in 5 rounds of 4,000 rows; 300 with the earlier margin
