import multiprocessing
import os
import signal
import time

import numpy as np
import polars as pl
import pytest

from credaudit.encoders.cache import EmbeddingCache, text_keys
from credaudit.engine import LocalEngine
from credaudit.features import distinct_texts, embed_texts
from credaudit.neighbors import normalize_rows
from tests.fakes import BagOfWordsEncoder


def texts(n, start=0):
    return [f"text number {i} about topic {i % 7}" for i in range(start, start + n)]


def test_second_run_embeds_nothing_and_appended_rows_only_embed_new(tmp_path):
    encoder = BagOfWordsEncoder()
    cache = EmbeddingCache(tmp_path, encoder.fingerprint, encoder.dimension)
    first = embed_texts(texts(100), encoder, cache=cache)
    assert (first.n_embedded, first.n_cached) == (100, 0)
    second = embed_texts(texts(100), encoder, cache=cache)
    assert (second.n_embedded, second.n_cached) == (0, 100)
    np.testing.assert_array_equal(first.vectors, second.vectors)
    appended = embed_texts(texts(130), encoder, cache=cache)
    assert (appended.n_embedded, appended.n_cached) == (30, 100)
    assert encoder.embedded == 130


def test_duplicates_are_embedded_once(tmp_path):
    encoder = BagOfWordsEncoder()
    result = embed_texts(["a b", "c d", "a b", "a b"], encoder, cache=None)
    assert result.n_unique == 2 and encoder.embedded == 2
    np.testing.assert_array_equal(result.vectors[0], result.vectors[2])


def test_vectors_held_in_many_small_blocks_are_each_rows_own(tmp_path, monkeypatch):
    # The distinct texts' vectors are held in blocks (cache hits first, then encoded chunks) and each
    # block of rows gathers its rows from them: with blocks of 7 rows and chunks of 11 texts, a row
    # that got another text's vector would show here.
    encoder = BagOfWordsEncoder()
    cache = EmbeddingCache(tmp_path, encoder.fingerprint, encoder.dimension)
    embed_texts(texts(120, start=50), encoder, cache=cache)
    monkeypatch.setattr("credaudit.engine.BLOCK_ROWS", 7)
    monkeypatch.setattr("credaudit.features.CHUNK_TEXTS", 11)
    wanted = texts(300) + texts(100)[::-1]
    result = embed_texts(wanted, encoder, cache=cache)
    assert (result.n_unique, result.n_cached, result.n_embedded) == (300, 120, 180)
    expected = normalize_rows(encoder.encode(wanted).astype(np.float16).astype(np.float32))
    np.testing.assert_array_equal(result.vectors, expected)
    # The same through the shuffle the Ray engine runs (an engine holding blocks of 7 rows): each
    # task sent only its own held block or its own pieces, the blocks of rows in row order.
    engine = LocalEngine(block_rows=7)
    shuffled = embed_texts(wanted, encoder, cache=cache, engine=engine).vectors
    assert len(shuffled.parts) == 58 and shuffled.order is None
    np.testing.assert_array_equal(engine.gather(shuffled), expected)


def test_vectors_are_float16_rounded_with_or_without_cache(tmp_path):
    encoder = BagOfWordsEncoder()
    fresh = embed_texts(texts(20), encoder, cache=None).vectors
    cache = EmbeddingCache(tmp_path, encoder.fingerprint, encoder.dimension)
    embed_texts(texts(20), encoder, cache=cache)
    cached = embed_texts(texts(20), encoder, cache=cache).vectors
    np.testing.assert_array_equal(fresh, cached)


def test_another_fingerprint_does_not_reuse_vectors(tmp_path):
    a, b = BagOfWordsEncoder("v1"), BagOfWordsEncoder("v2")
    embed_texts(texts(10), a, cache=EmbeddingCache(tmp_path, a.fingerprint, a.dimension))
    result = embed_texts(texts(10), b, cache=EmbeddingCache(tmp_path, b.fingerprint, b.dimension))
    assert result.n_embedded == 10


def test_unfinished_shard_files_are_ignored(tmp_path):
    encoder = BagOfWordsEncoder()
    cache = EmbeddingCache(tmp_path, encoder.fingerprint, encoder.dimension)
    embed_texts(texts(10), encoder, cache=cache)
    folder = tmp_path / encoder.fingerprint
    # What a kill leaves: a temporary file, and a vectors file whose keys file never appeared.
    (folder / ".x.vecs.npy.tmp").write_bytes(b"garbage")
    np.save(folder / "99999999999999999999-dead.vecs.npy", np.zeros((3, 32), dtype=np.float16))
    found, _ = cache.lookup(text_keys(texts(10)))
    assert found.all()
    assert embed_texts(texts(12), encoder, cache=cache).n_embedded == 2


def _slow_embed(root: str) -> None:
    class Slow(BagOfWordsEncoder):
        def encode(self, batch, *, progress=None):
            time.sleep(0.05)
            return super().encode(batch, progress=progress)

    import credaudit.features as features

    features.CHUNK_TEXTS = 50
    encoder = Slow()
    embed_texts(texts(5000), encoder, cache=EmbeddingCache(root, encoder.fingerprint, encoder.dimension))


def test_a_killed_run_leaves_a_usable_cache_and_the_next_run_resumes(tmp_path):
    # Spawned, not forked: polars' thread pool, already running here, does not survive a fork.
    process = multiprocessing.get_context("spawn").Process(target=_slow_embed, args=(str(tmp_path),))
    process.start()
    folder = tmp_path / BagOfWordsEncoder().fingerprint
    deadline = time.time() + 30
    while time.time() < deadline and len(list(folder.glob("*.keys.npy"))) < 3:
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.join()
    encoder = BagOfWordsEncoder()
    cache = EmbeddingCache(tmp_path, encoder.fingerprint, encoder.dimension)
    result = embed_texts(texts(5000), encoder, cache=cache)
    assert result.n_cached >= 150, "work done before the kill is kept"
    assert result.n_cached + result.n_embedded == 5000
    np.testing.assert_array_equal(result.vectors, embed_texts(texts(5000), BagOfWordsEncoder(), cache=None).vectors)


def test_two_writers_at_once(tmp_path):
    ctx = multiprocessing.get_context("spawn")  # not fork: see the test above
    workers = [ctx.Process(target=_slow_embed, args=(str(tmp_path),)) for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
        assert w.exitcode == 0
    encoder = BagOfWordsEncoder()
    result = embed_texts(texts(5000), encoder, cache=EmbeddingCache(tmp_path, encoder.fingerprint, encoder.dimension))
    assert result.n_embedded == 0


def test_many_shards_are_compacted_and_size_limit_evicts(tmp_path):
    encoder = BagOfWordsEncoder()
    cache = EmbeddingCache(tmp_path, encoder.fingerprint, encoder.dimension)
    cache.add(text_keys(texts(300, start=1000)), encoder.encode(texts(300, start=1000)))
    (large,) = cache.dir.glob("*.keys.npy")
    for i in range(40):
        # Each shard also repeats a text of the one before: the merge keeps one copy of each key.
        batch = texts(6, start=5 * i)
        cache.add(text_keys(batch), encoder.encode(batch))
    assert len(list(cache.dir.glob("*.keys.npy"))) <= 33
    assert large.exists(), "merging the small shards leaves the large one as it was"
    wanted = texts(201) + texts(300, start=1000)
    found, vectors = cache.lookup(text_keys(wanted))
    assert found.all()
    np.testing.assert_array_equal(vectors, encoder.encode(wanted).astype(np.float16))
    for path in cache.dir.glob("*.keys.npy"):
        keys = np.load(path)
        assert len(np.unique(keys, axis=0)) == len(keys), "a merged shard keeps one copy of each key"
    size = cache.size_bytes()
    cache.evict(size // 2)
    assert cache.size_bytes() <= size // 2


@pytest.mark.parametrize("n", [1, 3])
def test_key_search_handles_tiny_shards(tmp_path, n):
    encoder = BagOfWordsEncoder()
    cache = EmbeddingCache(tmp_path, encoder.fingerprint, encoder.dimension)
    cache.add(text_keys(texts(n)), encoder.encode(texts(n)))
    found, vectors = cache.lookup(text_keys(texts(n + 2)))
    assert found.tolist() == [True] * n + [False, False]


def test_distinct_texts_are_numpys_unique_of_the_texts():
    # Found by polars over a column (or a list), in the order np.unique gives: code points,
    # whatever the script, accents, emoji, combining marks or empty texts.
    rng = np.random.default_rng(0)
    alphabet = ["a", "Z", "é", "ß", "中", "😀", "\u0301", " ", "\n", "Ä", "z"]
    texts = ["".join(rng.choice(alphabet, size=rng.integers(0, 5))) for _ in range(5000)]
    unique, inverse = np.unique(np.asarray(texts, dtype=object), return_inverse=True)
    for given in (texts, pl.Series(texts)):
        found, positions = distinct_texts(given)
        assert found == unique.tolist()
        np.testing.assert_array_equal(positions, inverse)
