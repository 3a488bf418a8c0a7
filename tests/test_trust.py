"""Trust in the noise estimate: checks, detection fallback, honest intervals, inconclusive gates."""

import numpy as np
import polars as pl
import pytest

from credaudit import ScanConfig, audit
from credaudit.config import merge
from credaudit.detect import detect_label_errors
from credaudit.errors import ExitCode, exit_code_for
from credaudit.neighbors import NeighborGraph, build_knn_graph
from credaudit.noise import estimate_noise
from credaudit.report.markdown import render_markdown
from credaudit.report.terminal import render_quiet, render_terminal
from credaudit.trust import assess_trust, chance_corrected_agreement, knn_label_agreement
from tests.conftest import make_clusterable, make_imbalanced_weak, symmetric_t, write_table
from tests.helpers import invoke


def test_chance_agreement_follows_the_class_balance():
    chance, kappa = chance_corrected_agreement(0.5, np.array([0.5, 0.5]))
    assert chance == pytest.approx(0.5) and kappa == pytest.approx(0.0)
    # 88 / 12: 79 % agreement is what the class frequencies alone give.
    chance, kappa = chance_corrected_agreement(0.8, np.array([0.88, 0.12]))
    assert chance == pytest.approx(0.7888) and kappa == pytest.approx((0.8 - 0.7888) / (1 - 0.7888))
    assert chance_corrected_agreement(1.0, np.array([0.3, 0.7]))[1] == pytest.approx(1.0)


def test_knn_label_agreement_counted_by_blocks_is_the_share_of_agreeing_pairs(monkeypatch):
    monkeypatch.setattr("credaudit.engine.BLOCK_ROWS", 7)  # many blocks, the last one short
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=100)
    indices = rng.integers(0, 100, size=(100, 6))
    expected = np.mean(labels[indices[:, :4]] == labels[:, None])
    graph = NeighborGraph.from_arrays(indices, np.zeros(indices.shape, dtype=np.float32), "exact")
    assert knn_label_agreement(labels, graph, 4) == expected
    assert knn_label_agreement(np.zeros(100, dtype=np.int64), graph, 6) == 1.0


@pytest.mark.parametrize(("seed", "separation"), [(0, 1.0), (1, 1.0), (2, 0.5), (0, 1.5)])
def test_weak_imbalanced_binary_is_untrusted_never_a_silent_pass(seed, separation):
    """The failure of the issue: 88/12 binary, weak features, 5 % noise."""
    x, true, observed = make_imbalanced_weak(3000, seed, separation=separation)
    errors = int((observed != true).sum())
    config = merge({"gates": {"max_noise_rate": 0.5}, "seed": seed})
    result = audit(pl.DataFrame({"label": observed}), config, embeddings=x)
    t = result.noise.transition_matrix
    report = result.report
    assert not report.noise["trustworthy"]
    assert not (t[1, 1] < 0.5 and report.verdict == "pass"), "a collapsed minority row with a PASS verdict"
    assert report.verdict == "inconclusive"
    assert exit_code_for(result) == ExitCode.GATE_FAILED
    assert result.detection.is_label_error.sum() <= 2 * errors
    for c in range(2):
        in_class = observed == c
        assert result.detection.is_label_error[in_class].mean() <= 0.2 + 1e-9
    # The untrusted interval must not claim what the data cannot support: it covers the truth.
    true_rate = (observed != true).mean()
    assert report.noise["noise_rate"]["low"] <= true_rate <= report.noise["noise_rate"]["high"]
    # Said in the verdict area of every rendering, not as a footnote.
    assert "UNTRUSTWORTHY" in render_markdown(report).split("\n## ")[0]
    assert "UNTRUSTWORTHY" in render_terminal(report, color=False, width=200).split("\n\n")[0]
    assert "UNTRUSTWORTHY" in render_quiet(report)
    allowed = merge({"gates": {"max_noise_rate": 0.5, "allow_inconclusive": True}, "seed": seed})
    assert exit_code_for(audit(pl.DataFrame({"label": observed}), allowed, embeddings=x)) == ExitCode.OK


def test_clusterable_data_is_trusted_and_a_clean_set_gets_no_flags(seed):
    x, true, _ = make_clusterable(2000, 4, None, seed)
    result = audit(pl.DataFrame({"label": true}), ScanConfig(seed=seed), embeddings=x)
    assert result.report.noise["trustworthy"]
    assert result.report.detection["fallback"] is None
    assert result.detection.is_label_error.sum() == 0
    assert result.report.noise["trust"]["kappa"] > 0.9


def test_a_non_dominant_row_sends_only_its_classes_to_the_vote():
    x, true, observed = make_clusterable(3000, 4, symmetric_t(4, 0.1), 0)
    graph = build_knn_graph(x, k=17)
    estimate = estimate_noise(observed, graph.indices, n_classes=4, n_bootstrap=0)
    # Break row 0 of T by hand: it now sends most of class 0 to label 1.
    t = estimate.transition_matrix.copy()
    t[0] = [0.3, 0.6, 0.05, 0.05]
    broken = type(estimate)(
        **{**estimate.__dict__, "transition_matrix": t, "is_diagonally_dominant": np.array([False, True, True, True])}
    )
    trust = assess_trust(broken, 0.9, class_names=list("abcd"), min_kappa=0.2)
    assert not trust.trusted
    assert trust.trusted_classes.tolist() == [False, False, True, True]
    rates = np.array([r.estimate for r in estimate.observed_error_rate])
    rates[:2] = 0.9  # a wrong budget for the untrusted classes must not matter
    detection = detect_label_errors(
        observed,
        graph,
        x,
        n_classes=4,
        transition_matrix=t,
        observed_error_rate=rates,
        trusted_classes=trust.trusted_classes,
    )
    assert detection.fallback is not None
    for c in (0, 1):
        assert detection.is_label_error[observed == c].mean() <= 0.2 + 1e-9
        # The vote judges these rows: a flagged row is one its neighbours outvote.
        flagged_here = detection.is_label_error & (observed == c)
        assert (detection.suggested_label[flagged_here] != c).all()
        assert (detection.neighbour_agreement[flagged_here] < 0.5 + 1e-9).all()
    errors = observed != true
    flagged = detection.is_label_error
    assert (flagged & errors).sum() / flagged.sum() > 0.9


def test_weak_features_exit_inconclusive_from_the_cli(tmp_path):
    x, true, observed = make_imbalanced_weak(1500, 3)
    frame = pl.DataFrame({"label": observed.tolist(), "emb": x.tolist(), "text": [f"r{i}" for i in range(1500)]})
    path = write_table(frame, tmp_path / "weak.parquet")
    base = ["scan", path, "--embedding-col", "emb", "--no-html", "--format", "quiet"]
    result = invoke([*base, "--out", tmp_path / "o1", "--max-noise-rate", "0.9"], expect_exit=1)
    assert result.stdout.startswith("INCONCLUSIVE") and "max_noise_rate" in result.stdout
    invoke([*base, "--out", tmp_path / "o2", "--max-noise-rate", "0.9", "--allow-inconclusive"], expect_exit=0)
    # With no gate that reads the estimate, nothing is inconclusive: the flag gate still judges.
    invoke([*base, "--out", tmp_path / "o3", "--max-flagged", "0.5"], expect_exit=0)
