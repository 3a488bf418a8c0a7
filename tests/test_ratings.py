"""Ratings on an ordered scale: the scale codec, the ordinal prior, curated scores and the CLI."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from credaudit import audit
from credaudit.config import merge
from credaudit.errors import InputError
from credaudit.ratings import expected_step_error, jump_cost, rating_codec
from tests.conftest import write_table
from tests.helpers import invoke


def ordinal_data(n_rows: int, rate: float, seed: int, dim: int = 32):
    """Five ratings along a curve in feature space, a few sub-topics, and ±1 / ±2 rating moves.

    Returns x (N, dim), true ratings (N,) in 1..5, noisy ratings (N,).
    """
    rng = np.random.default_rng(seed)
    steps = rng.normal(size=(5, dim))
    base = np.cumsum(steps, axis=0) * 0.8
    topics = rng.normal(size=(8, dim)) * 0.6
    true = rng.integers(1, 6, n_rows)
    x = base[true - 1] + topics[rng.integers(0, 8, n_rows)] + 0.6 * rng.normal(size=(n_rows, dim))
    move = np.where(rng.random(n_rows) < 0.8, 1, 2) * np.where(rng.random(n_rows) < 0.5, -1, 1)
    moved = true + move
    moved = np.where((moved < 1) | (moved > 5), true - move, moved)
    noisy = np.where(rng.random(n_rows) < rate, moved, true)
    return x.astype(np.float32), true, noisy


def test_numeric_ratings_keep_their_values_and_order():
    codec, scale = rating_codec([3, 1, 5, 1], label_order=None, column="stars", row_ids=[0, 1, 2, 3])
    assert codec.values == (1, 3, 5)
    np.testing.assert_array_equal(scale, [1.0, 3.0, 5.0])


def test_label_order_sets_the_scale_and_rejects_values_off_it():
    codec, scale = rating_codec(["ok", "bad", "good"], label_order=["bad", "ok", "good"], column="q", row_ids=[0, 1, 2])
    assert codec.values == ("bad", "ok", "good")
    np.testing.assert_array_equal(scale, [1.0, 2.0, 3.0])
    with pytest.raises(InputError, match="row 'r2'.*'great'.*not on the declared scale"):
        rating_codec(["ok", "great"], label_order=["bad", "ok", "good"], column="q", row_ids=["r1", "r2"])
    with pytest.raises(InputError, match="row 1.*not a number"):
        rating_codec([1, "two"], label_order=None, column="q", row_ids=[0, 1])


def test_jump_cost_is_free_up_to_two_steps():
    cost = jump_cost(np.arange(1, 6.0), 0.1)
    assert cost[0, 0] == cost[0, 1] == cost[0, 2] == 0.0
    assert cost[0, 3] == pytest.approx(0.1) and cost[0, 4] == pytest.approx(0.2)
    np.testing.assert_array_equal(cost, cost.T)


def test_step_error_reads_t():
    t = np.array([[0.8, 0.2, 0.0], [0.1, 0.8, 0.1], [0.0, 0.0, 1.0]])
    assert expected_step_error(t, np.array([0.5, 0.5, 0.0]), np.array([1.0, 2.0, 3.0])) == pytest.approx(0.2)
    assert expected_step_error(np.eye(3), np.full(3, 1 / 3), np.arange(3.0)) == 0.0


def test_ordinal_audit_curates_scores_closer_to_the_truth():
    x, true, noisy = ordinal_data(3000, 0.2, seed=2)
    result = audit(pl.DataFrame({"label": noisy}), merge({"ratings": {"ordinal": True}}), embeddings=x)
    assert result.report.noise["trustworthy"]
    curated = result.issues.get_column("curated_score").to_numpy()
    raw_error = np.abs(noisy - true).mean()
    assert np.abs(curated - true).mean() < 0.8 * raw_error
    flagged = result.issues.get_column("is_label_error").to_numpy()
    truth = noisy != true
    assert (flagged & truth).sum() / flagged.sum() > 0.8
    ratings = result.report.to_dict()["ratings"]
    assert sum(ratings["given"]) == sum(ratings["curated"]) == 3000
    assert [s["value"] for s in ratings["scale"]] == [1.0, 2.0, 3.0, 4.0, 5.0]


def test_nominal_audit_has_no_curated_score():
    x, _, noisy = ordinal_data(300, 0.1, seed=3)
    result = audit(pl.DataFrame({"label": noisy}), merge({}), embeddings=x)
    assert "curated_score" not in result.issues.columns
    assert "ratings" not in result.report.to_dict()


def test_cli_label_order_run_and_an_off_scale_rating_exits_3(tmp_path):
    x, _, noisy = ordinal_data(400, 0.1, seed=4)
    names = np.array(["awful", "bad", "ok", "good", "great"])
    frame = pl.DataFrame({"rating": names[noisy - 1].tolist(), "emb": x.tolist()})
    path = write_table(frame, tmp_path / "r.parquet")
    out = tmp_path / "out"
    invoke(
        [
            "scan",
            path,
            "--label-col",
            "rating",
            "--embedding-col",
            "emb",
            "--label-order",
            "awful,bad,ok,good,great",
            "--out",
            out,
            "--format",
            "quiet",
        ]
    )
    issues = pl.read_parquet(out / "issues.parquet")
    assert "curated_score" in issues.columns
    assert issues.get_column("curated_score").is_between(1.0, 5.0).all()
    report = json.loads((out / "report.json").read_text())
    assert report["ratings"]["scale"][0] == {"label": "awful", "value": 1.0}
    assert "Ratings" in (out / "report.md").read_text()
    bad = write_table(
        frame.with_columns(
            pl.when(pl.int_range(pl.len()) == 7).then(pl.lit("superb")).otherwise(pl.col("rating")).alias("rating")
        ),
        tmp_path / "bad.parquet",
    )
    result = invoke(
        [
            "scan",
            bad,
            "--label-col",
            "rating",
            "--embedding-col",
            "emb",
            "--label-order",
            "awful,bad,ok,good,great",
            "--out",
            tmp_path / "o2",
        ],
        expect_exit=3,
    )
    assert "row 7" in result.stderr and "not on the declared scale" in result.stderr


def test_numbers_kept_as_text_are_ordered_by_value():
    # A CSV's "1", "1.5", "2" stay text (as floats they would write back as "1.0"): still a scale.
    codec, scale = rating_codec(["2", "10", "1.5", "1", "2"], label_order=None, column="stars", row_ids=range(5))
    assert codec.values == ("1", "1.5", "2", "10")
    np.testing.assert_array_equal(scale, [1.0, 1.5, 2.0, 10.0])
    with pytest.raises(InputError, match="in column 'stars' are the same number spelled two ways"):
        rating_codec(["2", "2.0", "3"], label_order=None, column="stars", row_ids=range(3))
    with pytest.raises(InputError, match="rating 'nan' in column 'stars' is not a number"):
        rating_codec(["2", "nan", "3"], label_order=None, column="stars", row_ids=range(3))
