"""credaudit select: the greedy rule, quality per kind, tiers, and the CLI on labels, ratings and pairs."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from credaudit.config import merge
from credaudit.neighbors import normalize_rows, search_neighbors
from credaudit.select_run import select
from credaudit.selection import cluster_coverage, rating_quality, resolve_budget, select_diverse
from tests.conftest import write_table
from tests.helpers import invoke
from tests.test_pairs import make_pairs
from tests.test_ratings import ordinal_data


def _graph(x: np.ndarray, k: int):
    sims, idx = search_neighbors(x, x, k + 1)
    return idx[:, 1:], sims[:, 1:]


def _sequential(quality, indices, sims, budget, diversity, tiers):
    """The rule one item at a time, straight from the definition (selection.py's docstring)."""
    n = quality.size
    quality = quality * (1 - 0.05 * sims.mean(axis=1))  # the default long-tail weight
    s0 = np.median(sims[:, -1])
    close = np.clip((sims - s0) / (1 - s0), 0, 1)
    nearest = np.zeros(n)
    chosen = np.zeros(n, dtype=bool)
    out = []
    for _ in range(budget):
        utility = quality * (1 - diversity * nearest)
        pool = np.flatnonzero(~chosen)
        pool = pool[tiers[pool] == tiers[pool].min()]
        best = pool[np.lexsort((pool, -utility[pool]))][0]
        chosen[best] = True
        out.append(best)
        for j, c in zip(indices[best], close[best], strict=True):  # best's own neighbours
            nearest[j] = max(nearest[j], c)
        rows, cols = np.nonzero(indices == best)  # rows that have best as a neighbour
        for r, c in zip(rows, cols, strict=True):
            nearest[r] = max(nearest[r], close[r, c])
    return np.array(out)


@pytest.mark.parametrize("diversity", [0.0, 0.5, 1.0])
def test_batched_greedy_equals_the_one_at_a_time_rule(diversity):
    rng = np.random.default_rng(1)
    x = normalize_rows(rng.normal(size=(300, 6)).astype(np.float32))
    idx, sims = _graph(x, 5)
    quality = rng.random(300)
    tiers = (rng.random(300) < 0.2).astype(np.int64)
    got = select_diverse(quality, idx, sims, 120, diversity, tiers=tiers)
    np.testing.assert_array_equal(got, _sequential(quality, idx, sims, 120, diversity, tiers))
    assert tiers[got[: (tiers == 0).sum()]].max() == 0  # tier 0 is used up first


def test_diversity_prefers_the_long_tail_over_near_copies():
    rng = np.random.default_rng(2)
    centre = rng.normal(size=16)
    copies = centre + 0.01 * rng.normal(size=(8, 16))  # 8 near-copies of one thing, quality 1.0
    spread = rng.normal(size=(60, 16)) * 3  # 60 unlike items, quality 0.8
    x = normalize_rows(np.vstack([copies, spread]).astype(np.float32))
    quality = np.r_[np.ones(8), np.full(60, 0.8)]
    idx, sims = _graph(x, 10)
    plain = select_diverse(quality, idx, sims, 20, 0.0)
    diverse = select_diverse(quality, idx, sims, 20, 1.0)
    assert (plain[:8] < 8).all()  # top by quality: every copy first
    assert (diverse < 8).sum() == 1  # with diversity: the best thing once, then the long tail
    assert diverse[0] < 8


def test_rating_quality_orders_by_rating_then_credibility_when_untrusted():
    scale = np.arange(1.0, 6.0)
    given = np.array([5.0, 5.0, 4.0, 1.0])
    error = np.array([0.9, 0.1, 0.0, 0.0])
    q = rating_quality(given, given, error, np.zeros(4, dtype=bool), scale)
    assert list(np.argsort(-q)) == [1, 0, 2, 3]
    trusted = rating_quality(given, np.array([3.0, 5.0, 4.0, 1.0]), error, np.ones(4, dtype=bool), scale)
    np.testing.assert_allclose(trusted, [0.5, 1.0, 0.75, 0.0])


def test_budget_as_count_or_share_and_random_coverage():
    assert resolve_budget(0.1, 1000) == 100
    assert resolve_budget(25, 1000) == 25
    assert resolve_budget(25.0, 1000) == 25
    assert resolve_budget(5000, 1000) == 1000
    rng = np.random.default_rng(3)
    x = normalize_rows(rng.normal(size=(2000, 8)).astype(np.float32))
    everything = cluster_coverage(x, np.ones(2000, dtype=bool), n_clusters=20)
    assert everything["coverage"] == 1.0 and everything["random_coverage"] == pytest.approx(1.0)
    one = np.zeros(2000, dtype=bool)
    one[0] = True
    assert cluster_coverage(x, one, n_clusters=20)["coverage"] == pytest.approx(1 / 20)


def test_coverage_reads_the_rows_where_the_engine_keeps_them():
    # Blocks of 300 rows: the k-means is trained on rows taken from the blocks and each row's
    # cluster found block by block; the figures are those of one array.
    import faiss

    from credaudit.engine import LocalEngine

    rng = np.random.default_rng(3)
    x = normalize_rows(rng.normal(size=(8, 16))[rng.integers(0, 8, 2000)] + 0.4 * rng.normal(size=(2000, 16)))
    selected = rng.random(2000) < 0.05
    engine = LocalEngine(block_rows=300)
    for n_clusters in (5, 20):  # 5 x 256 rows: a sample of the 2,000; 20 x 256: every row
        whole = cluster_coverage(x, selected, n_clusters=n_clusters, seed=4)
        assert cluster_coverage(engine.place(x), selected, n_clusters=n_clusters, seed=4, engine=engine) == whole
    # Where every row trains the k-means, the clusters are faiss' own over the whole array.
    kmeans = faiss.Kmeans(16, 20, niter=20, seed=5, spherical=True, verbose=False, min_points_per_centroid=1)
    kmeans.train(x)
    assign = kmeans.index.search(x, 1)[1][:, 0]
    assert whole["covered"] == np.unique(assign[selected]).size
    assert whole["clusters"] == np.unique(assign).size


def test_select_ratings_prefers_truly_high_ratings(engines_made):
    x, true, noisy = ordinal_data(1500, 0.2, seed=5)
    config = merge({"ratings": {"ordinal": True}, "select": {"budget": 0.1}})
    result = select(pl.DataFrame({"label": noisy}), config, embeddings=x)
    chosen = result.selection.get_column("selected").to_numpy()
    assert chosen.sum() == 150
    assert (true[chosen] == 5).mean() > (noisy == 5).mean() + 0.3
    top_raw = (true[noisy == 5] == 5).mean()  # what picking given 5s at random buys
    assert (true[chosen] == 5).mean() > top_raw
    assert result.report["run"]["kind"] == "ratings"
    assert [g["group"] for g in result.report["groups"]] == ["1", "2", "3", "4", "5"]
    assert len(engines_made) == 1


def test_select_pairs_leaves_reversed_pairs_out(engines_made):
    chosen, rejected, truth = make_pairs(800, 0.2, seed=7)
    frame = pl.DataFrame({"chosen": [f"c{i}" for i in range(800)], "rejected": [f"r{i}" for i in range(800)]})
    config = merge({"pairs": {"chosen_col": "chosen", "rejected_col": "rejected"}, "select": {"budget": 200}})
    result = select(frame, config, pair_embeddings=(chosen, rejected))
    picked = result.selection.get_column("selected").to_numpy()
    assert picked.sum() == 200
    assert truth[picked].mean() < 0.03  # 20 % reversed in the data
    assert result.report["run"]["kind"] == "preference_pairs"
    assert result.selected().height == 200
    assert len(engines_made) == 1


def test_cli_select_single_labels_writes_the_set_and_checks_the_budget(tmp_path):
    rng = np.random.default_rng(8)
    centres = rng.normal(size=(4, 16)) * 3
    labels = rng.integers(0, 4, 600)
    x = centres[labels] + rng.normal(size=(600, 16))
    wrong = rng.random(600) < 0.15
    given = np.where(wrong, (labels + 1) % 4, labels)
    frame = pl.DataFrame({"id": [f"r{i}" for i in range(600)], "label": given, "emb": x.tolist()})
    path = write_table(frame, tmp_path / "data.parquet")
    out = tmp_path / "out"
    args = ["select", path, "--embedding-col", "emb", "--id-col", "id", "--out", out]
    result = invoke([*args, "--budget", "0.2", "--format", "json"])
    report = json.loads(result.stdout)
    assert report["selected"]["items"] == 120
    selected = pl.read_parquet(out / "selected.parquet")
    assert selected.columns == frame.columns and selected.height == 120
    picked = pl.read_parquet(out / "selection.parquet")
    assert picked.columns == ["row_id", "quality", "tier", "selected", "rank"]
    keep = picked.get_column("selected").to_numpy()
    assert wrong[keep].mean() < 0.03  # 15 % wrong labels in the data
    assert sorted(picked.get_column("rank").drop_nulls().to_list()) == list(range(120))
    assert "Per class" in (out / "report.md").read_text()
    invoke([*args], expect_exit=2)  # no budget
    invoke([*args, "--budget", "1.5"], expect_exit=2)
    invoke([*args, "--budget", "some"], expect_exit=2)
    invoke([*args, "--budget", "10", "--diversity", "2"], expect_exit=2)
