"""Vectors held as several row blocks (engine.Rows, as the Ray engine keeps them) give every stage
the same result as the one array: checked here on the local engine, with hand-made blocks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from credaudit.engine import (
    LOCAL,
    LocalEngine,
    Rows,
    assemble_block,
    read_rows,
    row_blocks,
    shuffle_plan,
    split_block,
    staged_shuffle,
    unique_rows,
)
from credaudit.hygiene import score_outliers
from credaudit.neighbors import build_knn_graph, estimate_recall, normalize_rows, restrict_graph, search_rows
from credaudit.noise import consensus_counts
from tests.conftest import make_clusterable, make_noisy


def _blocks(x: np.ndarray, cuts: list[int]) -> Rows:
    bounds = [0, *cuts, len(x)]
    parts = tuple(x[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True))
    return Rows(parts, np.asarray(bounds, dtype=np.int64), x.shape[1])


@pytest.mark.parametrize(
    "n_rows, size", [(100_000, 65_536), (200_000, 65_536), (1_000_000, 65_536), (7, 3), (3, 3), (1, 5)]
)
def test_row_blocks_are_the_fewest_equal_ranges_of_at_most_the_block_size(n_rows, size):
    # Equal ranges make a map's tasks finish together: 100,000 rows on two workers are two tasks of
    # 50,000, not 65,536 then 34,464 with one worker idle.
    blocks = row_blocks(n_rows, size)
    sizes = [b - a for a, b in blocks]
    assert blocks[0][0] == 0 and blocks[-1][1] == n_rows
    assert all(a == b for (_, a), (b, _) in zip(blocks[:-1], blocks[1:], strict=True))
    assert len(blocks) == -(-n_rows // size) and max(sizes) <= size and max(sizes) - min(sizes) <= 1
    assert row_blocks(0, size) == []


@pytest.fixture(scope="module")
def data():
    x, true, _ = make_clusterable(1500, 5, None, 4, dim=16, spread=0.7)
    return normalize_rows(x), true


def test_the_reader_reads_rows_across_blocks_as_the_array(data):
    x, _ = data
    rows = _blocks(x, [400, 401, 1000])
    reader = read_rows(rows.offsets, *rows.parts)
    index = np.array([[0, 399, 400], [401, 1499, 700]])
    np.testing.assert_array_equal(reader[index], x[index])
    np.testing.assert_array_equal(reader[390:1100], x[390:1100])
    np.testing.assert_array_equal(reader[402:990], x[402:990])
    assert np.shares_memory(reader[402:990], x)  # inside one block: a view, not a copy
    assert reader.shape == x.shape
    assert reader[1500:1500].shape == (0, x.shape[1]) and reader[700:650].shape == (0, x.shape[1])
    np.testing.assert_array_equal(reader[::-7], x[::-7])


@pytest.mark.parametrize("high", [70_000, 1 << 33])  # past 16 bits (two radix passes), past 32 (np.unique)
def test_unique_rows_is_numpys_unique(high):
    index = np.random.default_rng(0).integers(0, high, size=(3000, 7))
    index[5] = index[9]  # repeats within and across rows
    unique, inverse = unique_rows(index)
    expected, expected_inverse = np.unique(index, return_inverse=True)
    np.testing.assert_array_equal(unique, expected)
    np.testing.assert_array_equal(inverse, expected_inverse.reshape(index.shape))
    assert unique_rows(np.zeros((0, 7), dtype=np.int64))[1].shape == (0, 7)


@pytest.mark.parametrize("index", ["exact", "ivf"])
def test_the_graph_over_blocks_is_the_graph_over_the_array(data, index):
    x, _ = data
    whole = build_knn_graph(x, k=8, index=index, seed=2)
    split = build_knn_graph(_blocks(x, [500, 1024]), k=8, index=index, seed=2)
    np.testing.assert_array_equal(split.indices, whole.indices)
    np.testing.assert_array_equal(split.similarities, whole.similarities)


def test_the_exact_stages_after_the_graph_read_blocks_like_the_array(data):
    x, labels = data
    rows = _blocks(x, [300, 1200])
    graph = build_knn_graph(x, k=12, index="ivf", seed=0)
    assert estimate_recall(graph, rows, k=8, n_sample=200) == estimate_recall(graph, x, k=8, n_sample=200)
    keep = np.random.default_rng(0).random(len(x)) < 0.3  # a small subsample: many rows run short
    np.testing.assert_array_equal(
        restrict_graph(graph, rows, keep, k=8).indices, restrict_graph(graph, x, keep, k=8).indices
    )
    queries = np.array([0, 299, 300, 1499])
    sims, idx = search_rows(rows, queries, None, 5)
    exact = x[queries] @ x.T
    np.testing.assert_array_equal(idx, np.argsort(-exact, axis=1, kind="stable")[:, :5])
    np.testing.assert_allclose(sims, np.sort(exact, axis=1)[:, ::-1][:, :5], atol=1e-6)
    allowed = np.zeros(len(x), dtype=bool)
    allowed[[3, 700]] = True
    sims, idx = search_rows(rows, queries, allowed, 4)  # fewer rows allowed than asked for
    assert (np.sort(idx[:, :2], axis=1) == [3, 700]).all() and (idx[:, 2:] == -1).all()
    assert np.isneginf(sims[:, 2:]).all()


def test_outliers_and_triple_tightness_over_blocks(data, monkeypatch):
    x, labels = data
    monkeypatch.setattr("credaudit.engine.BLOCK_ROWS", 400)  # several engine blocks of rows too
    rows = _blocks(x, [400, 800, 1200])
    graph = build_knn_graph(x, k=8, seed=0)
    a = score_outliers(x, labels, graph, n_classes=5, k=8, rate=0.02)
    b = score_outliers(rows, labels, graph, n_classes=5, k=8, rate=0.02, engine=LOCAL)
    np.testing.assert_allclose(a.score, b.score, atol=1e-6)
    np.testing.assert_array_equal(a.is_outlier, b.is_outlier)
    kwargs = dict(n_classes=5, triple_share=0.5)
    whole = consensus_counts(labels, graph, embeddings=x, **kwargs)
    split = consensus_counts(labels, graph, embeddings=rows, **kwargs)
    np.testing.assert_array_equal(split.triples, whole.triples)
    np.testing.assert_array_equal(split.counts, whole.counts)


@pytest.mark.parametrize("block_rows", [None, 100])
def test_exact_duplicates_beyond_the_rescore_margin_tie_by_row_number(block_rows, monkeypatch):
    # 30 copies of each vector: more rows tie at the cut than the search proposes, so the proposals
    # alone would pick tied copies by the float32 product's whim (which differs between engines).
    if block_rows:
        monkeypatch.setattr("credaudit.engine.BLOCK_ROWS", block_rows)
    rng = np.random.default_rng(5)
    x = np.repeat(normalize_rows(rng.normal(size=(40, 8)).astype(np.float32)), 30, axis=0)
    order = rng.permutation(len(x))
    x = x[order]
    source = np.repeat(np.arange(40), 30)[order]
    graph = build_knn_graph(x, k=10, index="exact")
    for i in (0, 17, 599, 1199):
        copies = np.flatnonzero(source == source[i])
        np.testing.assert_array_equal(graph.indices[i], copies[copies != i][:10])
    sims, idx = search_rows(_blocks(x, [333, 800]), np.array([3, 900]), None, 12)
    for row, i in enumerate((3, 900)):
        np.testing.assert_array_equal(idx[row], np.flatnonzero(source == source[i])[:12])


def test_a_task_reads_only_the_blocks_it_was_sent(data):
    x, _ = data
    rows = _blocks(x, [400, 1000])
    reader = read_rows(*rows.shared([1]))
    np.testing.assert_array_equal(reader[[400, 999, 500]], x[[400, 999, 500]])
    np.testing.assert_array_equal(reader.stored(450, 460), x[450:460])
    with pytest.raises(LookupError, match="block 0"):
        reader[[10, 500]]
    with pytest.raises(LookupError, match="block 2"):
        reader.stored(990, 1010)
    np.testing.assert_array_equal(rows.parts_of(np.array([[0, 1499], [401, 3]])), [0, 1, 2])


def _doubled(item, x, layout, *parts):
    start, stop = item
    return 2 * read_rows(layout, *parts)[start:stop], stop - start


def test_map_rows_keeps_new_rows_where_the_engine_keeps_rows(data):
    x, _ = data
    blocks = [(0, 700), (700, 1400), (1400, 1500)]
    for engine, n_parts in ((LocalEngine(), 1), (LocalEngine(block_rows=500), 3)):
        rows = engine.place(x)
        made, sizes = engine.map_rows(_doubled, blocks, x, dim=x.shape[1], rows=rows)
        assert sizes == [700, 700, 100] and len(made.parts) == n_parts and made.n_rows == 1500
        reader = read_rows(*made.shared())
        np.testing.assert_array_equal(reader[:], 2 * x)
        # One array in row order is read in place; blocks, or rows stored in another order, are not.
        assert (reader.whole() is made.parts[0]) == (n_parts == 1)
    arranged = LocalEngine(block_rows=1500).place(x)
    LocalEngine(block_rows=1500).arrange(arranged, np.arange(1500)[::-1].copy())
    assert len(arranged.parts) == 1 and read_rows(*arranged.shared()).whole() is None


def test_arranged_blocks_hold_the_rows_in_the_new_order_and_read_by_row_number(data):
    x, _ = data
    engine = LocalEngine(block_rows=256)
    rows = engine.place(x)
    order = np.random.default_rng(1).permutation(len(x))
    engine.arrange(rows, order)
    assert [len(part) for part in rows.parts] == [250] * 6  # the fewest blocks of at most 256, equal
    np.testing.assert_array_equal(np.concatenate(rows.parts), x[order])  # stored in the new order
    np.testing.assert_array_equal(engine.gather(rows), x)  # gathered in row order
    reader = read_rows(*rows.shared())
    index = np.array([[5, 1499, 0], [700, 701, 702]])
    np.testing.assert_array_equal(reader[index], x[index])
    np.testing.assert_array_equal(reader[100:900:7], x[100:900:7])
    np.testing.assert_array_equal(rows.numbers(256, 300), order[256:300])
    np.testing.assert_array_equal(rows.parts_of(order[[0, 255, 256]]), [0, 1])
    engine.arrange(rows, np.arange(len(x)))  # arranged again, from an arranged layout
    np.testing.assert_array_equal(np.concatenate(rows.parts), x)
    np.testing.assert_array_equal(engine.gather(rows), x)
    with pytest.raises(ValueError, match="each of the 1500 rows once"):
        engine.arrange(rows, np.r_[0, np.arange(len(x) - 1)])  # row 0 twice, the last row never


def _shuffle_round(rows: Rows, index: np.ndarray, block_rows: int, offsets=None) -> tuple[Rows, int]:
    """One round of the blocks' shuffle (as the engines run it), and how many non-empty pieces it made."""
    takes, sources, offsets = shuffle_plan(rows, index, block_rows, offsets)
    pieces = [split_block(take, part) for take, part in zip(takes, rows.parts, strict=True)]
    made = sum(len(piece) > 0 for source in pieces for piece in source)
    parts = []
    for q, source in enumerate(sources):
        present = [int(p) for p in np.unique(source)]
        parts.append(assemble_block(source, present, None, *(pieces[p][q] for p in present)))
    return Rows(tuple(parts), offsets, rows.dim), made


@pytest.mark.parametrize("kind", ["permutation", "repeats", "in place", "few rows"])
def test_a_shuffle_in_two_rounds_takes_the_same_rows_with_fewer_pieces(kind):
    # 100 source blocks into 100 destination blocks: one round makes a piece for (nearly) every
    # pair of blocks, two rounds about P·√Q + √P·Q, and no intermediate block exceeds the block size.
    rng = np.random.default_rng(3)
    n, size = 40_000 if kind != "few rows" else 7, 400
    x = rng.normal(size=(n, 3)).astype(np.float32)
    rows = LocalEngine(block_rows=size).place(x)
    index = {
        "permutation": rng.permutation(n),
        "repeats": rng.integers(0, n, size=n),
        "in place": np.arange(n),
        "few rows": rng.permutation(n),
    }[kind]
    first, offsets, second = staged_shuffle(rows, index, size)
    assert offsets[0] == 0 and offsets[-1] == n and np.diff(offsets).min() > 0 and np.diff(offsets).max() <= size
    middle, made_first = _shuffle_round(rows, first, size, offsets)
    final, made_second = _shuffle_round(middle, second, size)
    np.testing.assert_array_equal(np.concatenate(final.parts), x[index])
    assert [len(part) for part in final.parts] == [len(part) for part in _shuffle_round(rows, index, size)[0].parts]
    one_round = _shuffle_round(rows, index, size)[1]
    if kind in ("permutation", "repeats"):
        assert one_round > 9_000 and made_first + made_second < 2_600
    elif kind == "in place":  # each block to itself: one piece per block and round
        assert one_round == 100 and made_first + made_second == 200


def test_an_audit_over_arranged_blocks_gives_the_flags_of_the_one_array(monkeypatch):
    # The local engine holding blocks of 300 rows and arranging them by k-means list, as the Ray
    # engine does; lists of 60 rows, searched 4 at a time, so that a block of lists reads only
    # some of the blocks. Any stage reading a block it did not ask for raises (LookupError).
    from credaudit import audit
    from credaudit.config import merge

    monkeypatch.setattr("credaudit.neighbors._LIST_ROWS", 60)
    monkeypatch.setattr("credaudit.neighbors._LISTS_PER_BLOCK", 4)
    x, labels = make_noisy(3000, seed=7)
    frame = pl.DataFrame({"label": labels})
    config = merge({"graph": {"index": "ivf"}})
    whole = audit(frame, config, embeddings=x)
    monkeypatch.setattr("credaudit.engine.BLOCK_ROWS", 300)  # detection's blocks too
    engine = LocalEngine(block_rows=300)
    monkeypatch.setattr("credaudit.pipeline.engine_for", lambda *args, **kwargs: engine)
    split = audit(frame, config, embeddings=x)
    assert split.vectors.order is not None and len(split.vectors.parts) == 10  # arranged by list
    # The graph is held in blocks too, as the search made them (by list), never one array.
    assert len(split.graph.edges.parts) > 1 and split.graph.edges.order is not None
    with pytest.raises(LookupError, match="held in blocks"):
        split.graph.indices  # noqa: B018
    for a, b in zip(split.graph.gathered(engine), whole.graph.gathered(LOCAL), strict=True):
        np.testing.assert_array_equal(a, b)
    assert split.issues.equals(whole.issues)
    assert split.report.noise == whole.report.noise
    np.testing.assert_allclose(split.embeddings, normalize_rows(x))
    assert whole.detection.is_label_error.sum() > 100  # a real audit, not an empty one
    counts = engine.reads.counts
    tasks, sent, held = counts["_search_lists"]
    assert sent < 0.7 * held  # the search's tasks read some of the blocks, not all
    assert counts["_search_part"][1] == counts["_search_part"][0]  # one block each (recall sample)
    assert counts["_class_sums"][1] == counts["_class_sums"][0]
    # Tasks over the graph read the few of its blocks their range spans, and of the vectors (the
    # tightness) or the beliefs (detection's steps) only the blocks holding their neighbours.
    graph_maps = ("_tightness_block", "_count_block", "_restrict_block", "_agreeing", "_knn_distance", "_vote_block")
    for name in (*graph_maps, "_propagate_block"):
        tasks, sent, held = counts[name]
        assert sent <= 3 * tasks < held, name
    for name in ("_tightness_block#1", "_propagate_block#1"):
        assert counts[name][1] < counts[name][2], name


def test_leakage_over_arranged_blocks_matches_the_one_array(data):
    from credaudit.io import Reference
    from credaudit.leakage import find_leakage

    x, _ = data
    engine = LocalEngine(block_rows=256)
    rows = engine.place(x)
    engine.arrange(rows, np.random.default_rng(2).permutation(len(x)))
    reference = Reference(path=Path("ref.csv"), row_ids=list(range(40)), texts=None, embeddings=x[::37][:40])
    kwargs = dict(threshold=0.95, min_overlap=0.5, vector_threshold=0.99)
    a = find_leakage(x, None, [reference], **kwargs)
    b = find_leakage(rows, None, [reference], **kwargs, engine=engine)
    np.testing.assert_array_equal(a.row, b.row)
    np.testing.assert_array_equal(a.similarity, b.similarity)
    assert (a.row >= 0).sum() >= 40


def test_renumbering_the_lists_keeps_the_graph_and_brings_probed_lists_near(monkeypatch):
    from credaudit import neighbors

    monkeypatch.setattr("credaudit.neighbors._LIST_ROWS", 40)
    x = normalize_rows(make_clusterable(4000, 8, None, 3, dim=24, spread=0.6)[0])
    renumbered = build_knn_graph(x, k=8, index="ivf", seed=1)
    home, probes = neighbors.ivf_lists(x, probe_share=0.08, max_probes=16, seed=1)
    new_home, new_probes = neighbors._near_lists_adjacent(home, probes)
    # The same lists under new numbers: each row's list and each list's probes map one to one.
    mapping = np.full(len(probes), -1)
    mapping[home] = new_home
    np.testing.assert_array_equal(mapping[probes], new_probes[mapping[np.arange(len(probes))]])
    spread = lambda p: np.abs(p - np.arange(len(p))[:, None]).mean()  # noqa: E731
    assert spread(new_probes) < 0.5 * spread(probes)
    monkeypatch.setattr("credaudit.neighbors._near_lists_adjacent", lambda home, probes: (home, probes))
    plain = build_knn_graph(x, k=8, index="ivf", seed=1)
    np.testing.assert_array_equal(renumbered.indices, plain.indices)
    np.testing.assert_array_equal(renumbered.similarities, plain.similarities)
