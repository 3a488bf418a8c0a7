"""The Ray engine against the local one on a local 2-CPU Ray cluster started inside the test run."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from credaudit import audit
from credaudit.config import merge
from credaudit.features import CHUNK_TEXTS
from credaudit.neighbors import GRAPH_DTYPE
from tests.conftest import make_noisy, small_blocks, write_table
from tests.fakes import BagOfWordsEncoder, DiesOnceEncoder
from tests.helpers import invoke

# CI installs the extra (.ci/run): there a missing Ray is a failure, not a skip.
ray = pytest.importorskip("ray") if not os.environ.get("CI") else __import__("ray")

ROOT = Path(__file__).resolve().parents[1]


def record_gathers(monkeypatch) -> list:
    """Every array the Ray engine gathers to the driver from now on (the list fills as it does)."""
    from credaudit.engine_ray import RayEngine

    gathered = []
    gather = RayEngine.gather

    def recording(self, rows):
        gathered.append(gather(self, rows))
        return gathered[-1]

    monkeypatch.setattr(RayEngine, "gather", recording)
    return gathered


@pytest.fixture(scope="module", autouse=True)
def local_cluster():
    # Workers import tests.fakes (the test encoder) from the checkout.
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}},
    )
    yield
    ray.shutdown()


@pytest.mark.parametrize("index", ["exact", "ivf"])
def test_ray_engine_gives_the_local_engines_flags(index, monkeypatch):
    # The consensus counts (map, then reduce), every detection scoring step and the search run as
    # several Ray tasks, the search's each reading some of the (list-ordered) blocks.
    small_blocks(monkeypatch, 1000)
    x, labels = make_noisy(3000, seed=11)
    frame = pl.DataFrame({"label": labels})
    n_classes = len(np.unique(labels))
    put = ray.put
    driver_put = []

    def recording_put(value, *args, **kwargs):
        driver_put.extend(v for v in (value if isinstance(value, tuple) else (value,)) if isinstance(v, np.ndarray))
        return put(value, *args, **kwargs)

    monkeypatch.setattr(ray, "put", recording_put)
    gathered = record_gathers(monkeypatch)
    results = {}
    for engine in ("local", "ray"):
        # Stored by list as on a cluster of several nodes (this one has one).
        config = merge({"engine": {"name": engine, "ray_arrange": "always"}, "graph": {"index": index}})
        results[engine] = audit(frame, config, embeddings=x)
    local, distributed = results["local"], results["ray"]
    assert not gathered  # nothing of the vectors or the graph came to the driver whole
    # The graph stayed in the object store, in the blocks its search tasks made; every stage read
    # it there, and it equals the local engine's.
    assert all(isinstance(part, ray.ObjectRef) for part in distributed.graph.edges.parts)
    for a, b in zip(distributed.graph.gathered(distributed.engine), local.graph.gathered(local.engine), strict=True):
        np.testing.assert_array_equal(a, b)
    assert distributed.issues.equals(local.issues)
    assert distributed.report.noise["noise_rate"] == local.report.noise["noise_rate"]
    assert distributed.report.run["engine"]["name"] == "ray"
    assert local.report.run["engine"]["name"] == "local"
    assert local.detection.is_label_error.sum() > 100  # a real audit, not an empty one
    # The driver held references to the vectors' blocks, not the vectors.
    assert len(distributed.vectors.parts) == 3
    assert all(isinstance(part, ray.ObjectRef) for part in distributed.vectors.parts)
    np.testing.assert_allclose(distributed.embeddings, local.embeddings)  # gathered in row order
    reads = distributed.report.run["engine"]["blocks_read"]
    assert reads["search_part"]["mean_sent"] == 1  # the recall sample: each task its own block
    if index == "ivf":
        # Stored by k-means list (a shuffle on the cluster), each search task sent only its blocks.
        assert distributed.vectors.order is not None
        assert reads["search_lists"]["mean_sent"] < reads["search_lists"]["mean_held"]
        # The triples' tightness: the blocks of the graph its range spans, and the blocks of
        # vectors holding their neighbours.
        assert reads["tightness_block"]["mean_sent"] < reads["tightness_block"]["mean_held"]
        assert reads["tightness_block#1"]["mean_sent"] < reads["tightness_block#1"]["mean_held"]
        assert len(distributed.graph.edges.parts) > 1 and distributed.graph.edges.order is not None
    else:
        assert distributed.vectors.order is None and reads["exact_graph_block"]["mean_sent"] == 3
    # Detection's beliefs passed between propagation steps as object-store blocks, never put from
    # the driver whole; each scoring task read its own block of the graph.
    assert reads["propagate_block"]["tasks"] >= 6 and reads["propagate_block#1"]["mean_held"] >= 3
    for name in ("restrict_block", "agreeing", "count_block", "vote_block", "propagate_block"):
        # The few blocks of the graph each task's range spans, of the many the search made.
        assert reads[name]["mean_sent"] < reads[name]["mean_held"] or reads[name]["mean_held"] == 1, name
    assert driver_put and not [v for v in driver_put if v.dtype == np.float64 and v.shape[1:] == (n_classes,)]
    # Nor was the graph: no (N, k) array of neighbours was put from the driver.
    assert not [v for v in driver_put if v.dtype.names or (v.ndim == 2 and v.dtype == np.int64 and len(v) == len(x))]


def test_ray_actor_pool_embeds_the_same_vectors_as_the_local_encoder(tmp_path, monkeypatch):
    # Blocks of 1,000 rows: the row vectors go to the object store in several blocks as they are made.
    monkeypatch.setattr("credaudit.engine.BLOCK_ROWS", 1000)
    rng = np.random.default_rng(3)
    words = np.array(["card", "refund", "late", "fee", "top", "up", "pin", "lost", "rate", "cash"])
    # More texts than one chunk, so several actors' batches come back and must be put in order.
    n_rows = CHUNK_TEXTS + 900
    texts = [" ".join(rng.choice(words, size=rng.integers(2, 7))) + f" {i % 97}" for i in range(n_rows)]
    frame = pl.DataFrame({"text": texts, "label": rng.integers(0, 3, n_rows)})
    local = audit(frame, merge({"encoder": {"cache": False}}), encoder=BagOfWordsEncoder())
    config = merge({"encoder": {"cache": False}, "engine": {"name": "ray", "ray_actors": 2}})
    distributed = audit(frame, config, encoder=BagOfWordsEncoder())
    np.testing.assert_array_equal(distributed.embeddings, local.embeddings)
    assert distributed.issues.equals(local.issues)
    assert len(distributed.vectors.parts) == 5
    assert all(isinstance(part, ray.ObjectRef) for part in distributed.vectors.parts)
    # With a cache holding a third of the texts: cached and fresh vectors, held in blocks on the
    # cluster, make the same row vectors; shuffled into blocks of rows too (as on several nodes).
    cache = {"cache": True, "cache_dir": str(tmp_path / "cache")}
    audit(frame[: n_rows // 3], merge({"encoder": cache}), encoder=BagOfWordsEncoder())
    config = merge({"encoder": cache, "engine": {"name": "ray", "ray_actors": 2, "ray_arrange": "always"}})
    mixed = audit(frame, config, encoder=BagOfWordsEncoder())
    assert 0 < mixed.report.run["encoder"]["cached_texts"] < mixed.report.run["encoder"]["embedded_texts"]
    np.testing.assert_array_equal(mixed.embeddings, local.embeddings)


def test_cli_scan_with_engine_ray(tmp_path, monkeypatch):
    x, labels = make_noisy(600, seed=5)
    path = write_table(pl.DataFrame({"label": labels, "emb": x.tolist()}), tmp_path / "d.parquet")
    result = invoke(
        ["scan", path, "--embedding-col", "emb", "--engine", "ray", "--out", tmp_path / "out", "--format", "json"]
    )
    report = json.loads(result.stdout)
    assert report["run"]["engine"]["name"] == "ray"
    assert report["run"]["engine"]["cpus"] == 2
    assert report["run"]["engine"]["arrange"] == "auto"
    issues = pl.read_parquet(tmp_path / "out" / "issues.parquet")
    # The file's vectors went to the object store block by block as they were read; the driver's
    # table keeps none of them (its frame was read without the column).
    from credaudit.engine_ray import RayEngine

    monkeypatch.setattr("credaudit.engine.BLOCK_ROWS", 128)
    place = RayEngine.place

    def place_no_array(self, array):
        # The whole matrix must never reach the engine from the driver: only blocks, as read.
        assert not isinstance(array, np.ndarray), "the vectors were read whole and placed from the driver"
        return place(self, array)

    monkeypatch.setattr(RayEngine, "place", place_no_array)
    distributed = audit(path, merge({"input": {"embedding_col": "emb"}, "engine": {"name": "ray"}}))
    assert distributed.table.embeddings is None and "emb" not in distributed.table.frame.columns
    assert len(distributed.vectors.parts) == 5
    assert all(isinstance(part, ray.ObjectRef) for part in distributed.vectors.parts)
    local = audit(path, merge({"input": {"embedding_col": "emb"}}))
    assert distributed.issues.equals(local.issues)
    assert issues.equals(local.issues)
    # The same rows given as a frame in memory (vectors read whole) make the same audit.
    in_memory = audit(pl.read_parquet(path), merge({"input": {"embedding_col": "emb"}}))
    assert in_memory.table.embeddings is not None
    assert in_memory.issues.equals(local.issues)
    np.testing.assert_array_equal(distributed.embeddings, in_memory.embeddings)
    for mode in ("drop", "relabel", "flag"):
        assert local.cleaned(mode).equals(in_memory.cleaned(mode))


def test_on_one_node_auto_leaves_the_rows_where_they_are(monkeypatch):
    # One node: every task reads the one object store in place, so the search does not shuffle.
    from credaudit.engine_ray import RayEngine
    from credaudit.neighbors import build_knn_graph, normalize_rows

    monkeypatch.setattr("credaudit.engine.BLOCK_ROWS", 1000)
    monkeypatch.setattr("credaudit.neighbors._LIST_ROWS", 60)
    x = normalize_rows(make_noisy(3000, seed=2)[0])
    expected = build_knn_graph(x, k=8, index="ivf").indices
    for arrange, arranged in (("auto", False), ("always", True)):
        engine = RayEngine(arrange=arrange)
        rows = engine.place(x.copy())
        graph = build_knn_graph(rows, k=8, index="ivf", engine=engine)
        np.testing.assert_array_equal(graph.gathered(engine)[0], expected)
        assert (rows.order is not None) is arranged and len(rows.parts) == 3


def test_a_shuffle_goes_in_two_rounds_where_its_pieces_would_pass_through_the_driver(monkeypatch):
    from credaudit.engine_ray import shuffle_rounds

    def blocks(n: int) -> int:
        return -(-n // 65_536)

    # 384-d rows in blocks of 65,536: one round up to about 32M rows (pieces of 100 KiB at 2 bytes a value).
    assert [shuffle_rounds(blocks(n), n, 384) for n in (3_000, 1_000_000, 10**7, 3 * 10**7)] == [1, 1, 1, 1]
    assert [shuffle_rounds(blocks(n), n, 384) for n in (4 * 10**7, 10**8)] == [2, 2]
    # Small blocks make small pieces; a small shuffle stays in one round all the same.
    monkeypatch.setattr("credaudit.engine.BLOCK_ROWS", 4_096)
    assert shuffle_rounds(489, 2_000_000, 384) == 2
    assert shuffle_rounds(3, 10_000, 384) == 1


def test_a_shuffle_of_many_blocks_goes_in_two_rounds_and_takes_the_same_rows(monkeypatch):
    # Blocks of 100 rows, pieces of a few rows, and no size below which one round is kept: both
    # take_blocks (with repeats and a block function) and arrange run the staged shuffle, and make
    # the rows numpy's take makes.
    import credaudit.engine_ray
    from credaudit.engine_ray import RayEngine

    monkeypatch.setattr("credaudit.engine.BLOCK_ROWS", 100)
    monkeypatch.setattr(credaudit.engine_ray, "SHUFFLE_DRIVER_BYTES", 0)
    rounds = []
    staged = credaudit.engine_ray.staged_shuffle
    monkeypatch.setattr(credaudit.engine_ray, "staged_shuffle", lambda *a: rounds.append(1) or staged(*a))
    rng = np.random.default_rng(4)
    x = rng.normal(size=(2_000, 4)).astype(np.float32)
    engine = RayEngine(arrange="always")
    rows = engine.place(x)
    index = rng.integers(0, len(x), size=1_500)
    taken = engine.take_blocks(rows, index, fn=lambda block: 2 * block)
    assert [len(part) for part in map(ray.get, taken.parts)] == [100] * 15
    np.testing.assert_array_equal(engine.gather(taken), 2 * x[index])
    order = rng.permutation(len(x))
    engine.arrange(rows, order)
    np.testing.assert_array_equal(np.concatenate(ray.get(list(rows.parts))), x[order])
    np.testing.assert_array_equal(engine.gather(rows), x)
    assert len(rounds) == 2


def _dies_once(item: int, marker_dir: str) -> int:
    """An engine block whose worker process dies the first time it runs (a lost worker)."""
    marker = Path(marker_dir) / f"{item}.started"
    if item == 1 and not marker.exists():
        marker.touch()
        os._exit(1)
    return item * 10


def test_a_block_whose_worker_dies_is_retried(tmp_path):
    from credaudit.engine_ray import RayEngine

    engine = RayEngine()
    assert list(engine.map(_dies_once, range(4), str(tmp_path))) == [0, 10, 20, 30]
    assert (tmp_path / "1.started").exists()  # the worker did die once


def test_an_encoder_actor_that_dies_is_restarted_and_its_chunk_encoded(tmp_path):
    from credaudit.engine_ray import RayEngine

    texts = [f"card refund {i % 13} fee {i % 7}" for i in range(3000)]
    chunks = [texts[i : i + 500] for i in range(0, len(texts), 500)]
    engine = RayEngine(actors=2)
    vectors = list(engine.encode(DiesOnceEncoder(str(tmp_path)), None, chunks))
    assert (tmp_path / "died").exists()  # an actor did die mid-run
    expected = BagOfWordsEncoder()
    assert len(vectors) == len(chunks)
    for got, chunk in zip(vectors, chunks, strict=True):
        # Rounded to float16 by the actor, as embed_texts keeps every vector.
        np.testing.assert_array_equal(got, expected.encode(chunk).astype(np.float16))


def test_an_array_is_put_in_the_object_store_once_while_it_lives():
    from credaudit.engine_ray import RayEngine

    engine = RayEngine()
    vectors = np.ones((100, 8), dtype=np.float32)
    first = engine.share(vectors)
    assert engine.share(vectors) is first
    assert engine.share(vectors.copy()) is not first
    np.testing.assert_array_equal(ray.get(first), vectors)
    del vectors
    assert not engine._shared  # the array is gone, so is its object-store reference


def test_placed_vectors_are_object_store_blocks_put_once_while_they_live(monkeypatch):
    from credaudit.engine import read_rows
    from credaudit.engine_ray import RayEngine

    monkeypatch.setattr("credaudit.engine.BLOCK_ROWS", 1000)
    engine = RayEngine()
    vectors = np.arange(2500 * 8, dtype=np.float32).reshape(2500, 8)
    rows = engine.place(vectors)
    assert rows.offsets.tolist() == [0, 833, 1666, 2500]  # three equal blocks of at most 1000 rows
    assert all(isinstance(part, ray.ObjectRef) for part in rows.parts)
    assert engine.place(vectors) is rows  # every stage reads the same blocks
    assert engine.place(rows) is rows
    np.testing.assert_array_equal(engine.gather(rows), vectors)
    reader = read_rows(rows.offsets, *ray.get(list(rows.parts)))
    index = np.array([[5, 999], [1000, 2499], [1500, 0]])
    np.testing.assert_array_equal(reader[index], vectors[index])
    np.testing.assert_array_equal(reader[990:1010], vectors[990:1010])
    del vectors
    assert not engine._placed  # the array is gone, so are its blocks' references


def test_hygiene_on_ray_reads_the_blocks_like_the_local_engine(tmp_path, monkeypatch):
    # 400 rows in blocks of 100: outliers (class sums per block) and leakage (each block of input rows
    # against the reference) run as several Ray tasks.
    monkeypatch.setattr("credaudit.engine.BLOCK_ROWS", 100)
    words = ["card", "pin", "refund", "fee", "rate", "transfer", "limit", "cash"]
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(words, 5)) + f" w{i}" for i in range(400)]
    frame = pl.DataFrame({"text": texts, "label": [i % 3 for i in range(400)]})
    reference = write_table(
        pl.DataFrame({"text": ["unrelated words entirely", texts[7], texts[250] + "!"]}), tmp_path / "r.csv"
    )
    results = {}
    for engine in ("local", "ray"):
        config = merge(
            {
                "engine": {"name": engine},
                "encoder": {"cache": False},
                "hygiene": {"reference": [str(reference)], "outlier_rate": 0.02},
            }
        )
        results[engine] = audit(frame, config, encoder=BagOfWordsEncoder())
    local, distributed = results["local"], results["ray"]
    assert len(distributed.vectors.parts) == 4
    assert distributed.issues.equals(local.issues)
    np.testing.assert_array_equal(distributed.hygiene.outliers.score, local.hygiene.outliers.score)
    leaked = distributed.issues.filter(pl.col("leaked_from").is_not_null())
    assert set(leaked["row_id"]) == {7, 250}
    assert distributed.hygiene.outliers.is_outlier.sum() == 8


def test_select_on_ray_chooses_the_local_engines_rows_without_gathering_the_vectors(monkeypatch):
    # Blocks of 500 rows: the coverage's k-means sample and cluster assignment are Ray tasks, and
    # the vectors never come to the driver whole.
    from credaudit.select_run import select

    monkeypatch.setattr("credaudit.engine.BLOCK_ROWS", 500)
    x, labels = make_noisy(2000, seed=5)
    gathered = record_gathers(monkeypatch)
    results = {}
    for engine in ("local", "ray"):
        config = merge({"engine": {"name": engine}, "select": {"budget": 200, "clusters": 20}})
        results[engine] = select(pl.DataFrame({"label": labels}), config, embeddings=x)
    assert results["ray"].selection.equals(results["local"].selection)
    assert results["ray"].report["coverage"] == results["local"].report["coverage"]
    assert results["ray"].report["coverage"]["clusters"] == 20
    # The greedy choice reads the whole graph on the driver (gathered once); never the vectors.
    assert [array.dtype for array in gathered] == [GRAPH_DTYPE]


@pytest.mark.parametrize("source", ["vectors", "texts"])
def test_pairs_on_ray_give_the_local_engines_results_without_gathering_the_vectors(source, monkeypatch):
    # Blocks of 500 rows: the directions, their reordering and their mirror images are made by
    # Ray tasks over the responses' blocks, and the audit of the directions runs over their blocks.
    from credaudit.pairs_run import audit_pairs
    from tests.test_pairs import make_pairs

    small_blocks(monkeypatch, 500)
    chosen, rejected, truth = make_pairs(1200, 0.2, seed=4)
    if source == "texts":
        # Words standing for the responses' content: a topic, a filler and a quality word.
        topic = [f"topic{t}" for t in np.argmax(chosen[:, :6], axis=1)]
        good, bad = np.where(truth, "bad", "good"), np.where(truth, "good", "bad")
        frame = pl.DataFrame(
            {
                "chosen": [f"{t} w{i % 13} {q}" for i, (t, q) in enumerate(zip(topic, good, strict=True))],
                "rejected": [f"{t} w{i % 13} {q}" for i, (t, q) in enumerate(zip(topic, bad, strict=True))],
            }
        )
        vectors = {}
        encoder = {"name": "tfidf", "cache": False}
    else:
        frame = pl.DataFrame({"chosen": [f"c{i}" for i in range(1200)], "rejected": [f"r{i}" for i in range(1200)]})
        vectors = {"chosen_embeddings": chosen, "rejected_embeddings": rejected}
        encoder = {}
    gathered = record_gathers(monkeypatch)
    results = {}
    for engine in ("local", "ray"):
        config = merge(
            {
                "engine": {"name": engine},
                "encoder": encoder,
                "pairs": {"chosen_col": "chosen", "rejected_col": "rejected"},
            }
        )
        results[engine] = audit_pairs(frame, config, **vectors)
    assert not gathered
    local, distributed = results["local"], results["ray"]
    assert distributed.issues.equals(local.issues)
    assert distributed.report.noise["noise_rate"] == local.report.noise["noise_rate"]
    assert distributed.report.run["engine"]["name"] == "ray"
    assert local.issues["is_reversed"].sum() > 150  # a real audit
    assert all(isinstance(part, ray.ObjectRef) for part in distributed.content.parts)
    np.testing.assert_array_equal(np.concatenate(ray.get(list(distributed.content.parts))), local.content.parts[0])


def test_crowd_on_ray_gives_the_local_engines_consensus(tmp_path, monkeypatch):
    # The items' texts are embedded on the engine into blocks of 100 rows and their neighbour
    # graph is searched there; the vectors are never gathered, the graph once for the annotator
    # model's EM (which runs on the driver); the consensus is the local engine's.
    from credaudit.crowd_run import audit_crowd
    from tests.test_crowd import planted_crowd

    small_blocks(monkeypatch, 100)
    answers, gold, _, _, _ = planted_crowd(n_items=300, answers_per_item=1)
    frame = pl.DataFrame(
        {"item": answers.item, "worker": [f"w{w}" for w in answers.annotator], "answer": answers.label}
    )
    frame.write_parquet(tmp_path / "answers.parquet")
    texts = [f"topic{c} filler{i % 11}" for i, c in enumerate(gold)]
    pl.DataFrame({"item": np.arange(300), "text": texts}).write_parquet(tmp_path / "items.parquet")
    gathered = record_gathers(monkeypatch)
    results = {}
    for engine in ("local", "ray"):
        config = merge(
            {
                "engine": {"name": engine},
                "input": {"label_col": "answer"},
                "encoder": {"name": "tfidf", "cache": False},
                "crowd": {"item_col": "item", "annotator_col": "worker", "items": str(tmp_path / "items.parquet")},
            }
        )
        results[engine] = audit_crowd(tmp_path / "answers.parquet", config)
    assert [array.dtype for array in gathered] == [GRAPH_DTYPE]
    local, distributed = results["local"], results["ray"]
    assert distributed.items.equals(local.items)
    assert distributed.report.run["features"]["neighbor_weight"] > 0.3  # the graph was used
