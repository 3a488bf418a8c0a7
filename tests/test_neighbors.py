import numpy as np
import polars as pl
import pytest

from credaudit.neighbors import build_knn_graph, estimate_recall, ivf_lists, normalize_rows, restrict_graph
from tests.conftest import make_clusterable


def brute_force(x: np.ndarray, k: int) -> np.ndarray:
    sims = x @ x.T
    np.fill_diagonal(sims, -np.inf)
    return np.argsort(-sims, axis=1, kind="stable")[:, :k]


def test_self_is_never_a_neighbour(seed):
    x, _, _ = make_clusterable(300, 4, None, seed)
    graph = build_knn_graph(x, k=10)
    assert graph.indices.shape == (300, 10)
    assert not (graph.indices == np.arange(300)[:, None]).any()
    assert np.all(np.diff(graph.similarities, axis=1) <= 1e-6), "nearest first"


def test_exact_duplicates_exclude_self_by_index():
    rng = np.random.default_rng(0)
    base = normalize_rows(rng.normal(size=(5, 8)))
    # Row 0's vector appears 15 times: more copies than k + 1, so self may not even be returned.
    x = np.concatenate([np.repeat(base[:1], 15, axis=0), base[1:]])
    graph = build_knn_graph(x, k=10)
    for row in range(15):
        assert row not in graph.indices[row]
        assert set(graph.indices[row]) <= set(range(15)), "its duplicates are its nearest neighbours"
        assert np.allclose(graph.similarities[row], 1.0, atol=1e-5)


def test_k_at_least_rows_minus_one_is_capped():
    x, _, _ = make_clusterable(6, 2, None, 0)
    graph = build_knn_graph(x, k=50)
    assert graph.indices.shape == (6, 5)
    for row in range(6):
        assert sorted(graph.indices[row]) == sorted(set(range(6)) - {row})


def test_blocked_search_equals_one_block_and_brute_force():
    x, _, _ = make_clusterable(500, 5, None, 3, spread=1.0)
    small_blocks = build_knn_graph(x, k=7, block_rows=37)
    one_block = build_knn_graph(x, k=7, block_rows=10_000)
    np.testing.assert_array_equal(small_blocks.indices, one_block.indices)
    np.testing.assert_array_equal(small_blocks.indices, brute_force(x, 7))


def test_ivf_is_deterministic_and_close_to_exact():
    x, _, _ = make_clusterable(3000, 10, None, 1, dim=32, spread=0.5)
    exact = build_knn_graph(x, k=10, index="exact")
    ivf_a = build_knn_graph(x, k=10, index="ivf", ivf_probe_share=0.25, seed=5)
    ivf_b = build_knn_graph(x, k=10, index="ivf", ivf_probe_share=0.25, seed=5)
    np.testing.assert_array_equal(ivf_a.indices, ivf_b.indices)
    assert ivf_a.method == "ivf"
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ivf_a.indices, exact.indices, strict=True)])
    assert recall > 0.9
    assert not (ivf_a.indices == np.arange(3000)[:, None]).any()


def test_restrict_graph_equals_a_fresh_search_on_the_subsample(seed):
    x, _, _ = make_clusterable(400, 4, None, seed, spread=1.0)
    graph = build_knn_graph(x, k=8)  # few spare neighbours: some rows need the exact fallback
    keep = np.random.default_rng(seed).random(400) < 0.7
    sub = restrict_graph(graph, x, keep, k=6)
    kept = np.flatnonzero(keep)
    fresh = kept[brute_force(x[kept], 6)]
    np.testing.assert_array_equal(sub.indices[kept], fresh)
    assert (sub.indices[~keep] == -1).all()


def test_recall_is_measured_against_an_exact_search_and_low_recall_is_reported():
    # Diffuse data (no clusters to align the lists with): one list per list is far from enough.
    rng = np.random.default_rng(4)
    x = normalize_rows(rng.normal(size=(3000, 32)).astype(np.float32))
    labels = rng.integers(0, 3, 3000)
    exact = build_knn_graph(x, k=10, index="exact")
    assert estimate_recall(exact, x, k=10, n_sample=300) == (1.0, 300)
    coarse = build_knn_graph(x, k=10, index="ivf", ivf_probe_share=0.01, seed=5)
    truth = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(coarse.indices, exact.indices, strict=True)])
    measured, sampled = estimate_recall(coarse, x, k=10, n_sample=1000)
    assert sampled == 1000 and truth < 0.95 and abs(measured - truth) < 0.05

    from credaudit import audit
    from credaudit.config import merge

    config = merge({"graph": {"index": "ivf", "ivf_probe_share": 0.01}})
    result = audit(pl.DataFrame({"label": labels.tolist()}), config, embeddings=x)
    assert result.report.run["graph"]["recall_at_k"] < 0.95
    assert any(f.kind == "low_recall" for f in result.findings)


@pytest.mark.parametrize("rows", [1])
def test_too_few_rows_is_refused(rows):
    with pytest.raises(ValueError):
        build_knn_graph(np.ones((rows, 4), dtype=np.float32), k=3)


def test_torch_search_matches_faiss():
    # The CUDA path is a torch matrix product; its logic is checked here on the CPU.
    from credaudit.neighbors import _drop_self, _torch_searcher

    x, _, _ = make_clusterable(200, 4, None, 2)
    sims, idx = _torch_searcher(x, "cpu")(x, 6)
    out_idx = np.empty((200, 5), dtype=np.int64)
    out_sim = np.empty((200, 5), dtype=np.float32)
    _drop_self(idx, sims, np.arange(200), 5, out_idx, out_sim)
    np.testing.assert_array_equal(out_idx, build_knn_graph(x, k=5).indices)


def test_two_level_lists_find_the_neighbours_and_are_deterministic(monkeypatch):
    import credaudit.neighbors as neighbors

    x, _, _ = make_clusterable(6000, 12, None, 3, dim=24, spread=0.4)
    exact = build_knn_graph(x, k=10, index="exact")
    one_level = build_knn_graph(x, k=10, index="ivf", ivf_probe_share=0.25, seed=2)
    monkeypatch.setattr(neighbors, "_FLAT_LISTS", 3)  # 12 lists -> 4 cells of about 3 lists
    two_a = build_knn_graph(x, k=10, index="ivf", ivf_probe_share=0.25, seed=2)
    two_b = build_knn_graph(x, k=10, index="ivf", ivf_probe_share=0.25, seed=2)
    np.testing.assert_array_equal(two_a.indices, two_b.indices)
    for graph in (one_level, two_a):
        assert estimate_recall(graph, x, k=10, n_sample=500)[0] > 0.95
    assert not (two_a.indices == np.arange(6000)[:, None]).any()
    assert (two_a.indices >= 0).all()
    assert exact.method == "exact" and two_a.method == "ivf"


def test_probes_counted_in_rows_stop_once_the_row_budget_is_reached():
    rng = np.random.default_rng(2)
    x = normalize_rows(rng.normal(size=(6000, 16)).astype(np.float32))
    home, by_lists = ivf_lists(x, probe_share=0.25, max_probes=4, seed=0)
    _, by_rows = ivf_lists(x, probe_share=0.25, max_probes=4, seed=0, probe_by="rows")
    sizes = np.bincount(home, minlength=len(by_lists))
    n_probe = by_lists.shape[1]
    budget = n_probe * len(x) / len(by_lists)
    for lists_probes, rows_probes in zip(by_lists, by_rows, strict=True):
        taken = rows_probes[rows_probes >= 0]
        # nearest lists first, the same order as the list count gives
        shared = min(len(taken), n_probe)
        np.testing.assert_array_equal(taken[:shared], lists_probes[:shared])
        assert sizes[taken[:-1]].sum() < budget
        assert sizes[taken].sum() >= budget or len(taken) == by_rows.shape[1]


def test_normalize_rows_in_place_only_where_it_may_write():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(70_000, 8)).astype(np.float32)  # more than one block of norms
    expected = x / np.linalg.norm(x, axis=1, keepdims=True)
    owned = x.copy()
    assert normalize_rows(owned, in_place=True) is owned
    np.testing.assert_allclose(owned, expected, rtol=1e-6)
    frozen = x.copy()
    frozen.flags.writeable = False  # as a zero-copy view of a polars column
    out = normalize_rows(frozen, in_place=True)
    assert out is not frozen
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    np.testing.assert_array_equal(frozen, x)


def test_normalize_rows_decides_each_row_on_its_own():
    # Unit rows stay bit for bit, zero rows stay zero, the others are divided: so rows normalised
    # block by block (a vector column read from its files) equal rows normalised at once.
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 8)).astype(np.float32)
    x[::3] /= np.linalg.norm(x[::3], axis=1, keepdims=True)
    x[5] = 0.0
    whole = normalize_rows(x)
    np.testing.assert_array_equal(whole[::3], x[::3])
    assert not whole[5].any()
    np.testing.assert_allclose(np.linalg.norm(whole[np.arange(300) != 5], axis=1), 1.0, rtol=1e-6)
    blocks = np.concatenate([normalize_rows(x[a : a + 100]) for a in (0, 100, 200)])
    np.testing.assert_array_equal(blocks, whole)
    unit = normalize_rows(x[::3])
    assert np.shares_memory(unit, x) or np.array_equal(unit, x[::3])


def _traced_peak(fn):
    """(result, peak bytes newly allocated by numpy and Python while ``fn`` ran)."""
    import tracemalloc

    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        result = fn()
        return result, tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def test_the_search_and_the_restriction_hold_little_beside_the_graph():
    # The driver of a large scan holds the graph; what the search and a detection round make
    # besides it must not grow with the rows: the search's blocks come back finished and are
    # written into the graph, and a round restricts the graph block by block. (Before: (N, k + 1)
    # arrays, their reordering and (N, k) sort temporaries, several times the graph at 1M rows.)
    rng = np.random.default_rng(0)
    x = normalize_rows(rng.normal(size=(24, 8))[rng.integers(0, 24, size=200_000)] + rng.normal(size=(200_000, 8)))
    build_knn_graph(x[:2000], k=17, index="ivf")  # imports (torch) are not what is measured
    graph, peak = _traced_peak(lambda: build_knn_graph(x, k=17, index="ivf"))
    graph_bytes = graph.indices.nbytes + graph.similarities.nbytes
    assert peak < 1.6 * graph_bytes
    keep = rng.random(len(x)) < 0.9
    sub, peak = _traced_peak(lambda: restrict_graph(graph, x, keep, k=10))
    # Beside its result, less than one (N, graph.k) array of row numbers (the whole-graph sort's).
    assert peak - (sub.indices.nbytes + sub.similarities.nbytes) < graph.indices.nbytes


def test_the_gpu_search_makes_the_exact_graph(monkeypatch):
    # The CUDA branch (blocked torch products, no rescoring) run on the CPU: its graph is the
    # exact search's, placed where the engine keeps rows like every other graph.
    import credaudit.neighbors as neighbors

    on_cpu = neighbors._torch_searcher
    monkeypatch.setattr(neighbors, "_torch_searcher", lambda base, device: on_cpu(base, "cpu"))
    x = normalize_rows(np.random.default_rng(3).normal(size=(700, 16)).astype(np.float32))
    gpu = build_knn_graph(x, k=6, device="cuda", block_rows=256)
    exact = build_knn_graph(x, k=6, index="exact")
    assert gpu.method == "exact" and len(gpu.edges.parts) == 1
    np.testing.assert_array_equal(gpu.indices, exact.indices)
    np.testing.assert_allclose(gpu.similarities, exact.similarities, atol=1e-6)
