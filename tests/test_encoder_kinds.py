"""The non-default encoders and --encoder auto."""

import numpy as np
import polars as pl
import pytest

from credaudit import ScanConfig, audit
from credaudit.config import merge
from credaudit.encoders import registry
from credaudit.encoders.auto import choose_encoder, knn_label_agreement, stratified_sample
from credaudit.errors import EncoderLoadError
from credaudit.features import embed_texts
from tests.fakes import BagOfWordsEncoder

TEXTS = [f"the {w} is {adj}" for w in ("film", "movie", "show", "play") for adj in ("great", "awful", "fine", "dull")]


def test_tfidf_fits_the_corpus_and_is_never_cached(tmp_path):
    from credaudit.encoders.cache import EmbeddingCache
    from credaudit.encoders.tfidf import TfidfEncoder

    encoder = TfidfEncoder()
    cache = EmbeddingCache(tmp_path, encoder.fingerprint, encoder.dimension)
    result = embed_texts(TEXTS * 3, encoder, cache=cache)
    assert result.vectors.shape == (48, 256)
    np.testing.assert_allclose(np.linalg.norm(result.vectors, axis=1), 1.0, atol=1e-3)
    assert result.n_unique == 16 and result.n_cached == 0
    assert not (tmp_path / encoder.fingerprint).exists()


def test_int8_onnx_matches_the_default_model():
    int8 = registry.get_encoder("minilm-int8")
    full = registry.get_encoder("minilm", device="cpu")
    texts = ["my card has not arrived", "what is the exchange rate today?", "", "x" * 3000]
    a, b = int8.encode(texts), full.encode(texts)
    cosines = (a * b).sum(axis=1)
    assert cosines[[0, 1, 3]].min() >= 0.995
    assert int8.fingerprint != full.fingerprint


def test_static_distils_once_and_reuses_the_cached_model(tmp_path, monkeypatch):
    model2vec = pytest.importorskip("model2vec")
    import model2vec.distill as distill_module

    from credaudit.encoders.static import StaticEncoder

    calls = []

    def tiny_distill(model_name, pca_dims, device):
        # A stand-in for the 3-minute distillation: the real tokenizer, random static vectors.
        from tokenizers import Tokenizer

        calls.append(model_name)
        tokenizer = Tokenizer.from_file(f"{model_name}/tokenizer.json")
        vectors = np.random.default_rng(0).normal(size=(tokenizer.get_vocab_size(), pca_dims)).astype(np.float32)
        return model2vec.StaticModel(vectors=vectors, tokenizer=tokenizer, normalize=True)

    monkeypatch.setattr(distill_module, "distill", tiny_distill)
    base = registry._minilm_dir()
    first = StaticEncoder(base, tmp_path)
    assert not first.is_distilled
    vectors = first.encode(TEXTS)
    assert vectors.shape == (16, 256) and first.is_distilled and len(calls) == 1
    second = StaticEncoder(base, tmp_path)
    np.testing.assert_allclose(second.encode(TEXTS), vectors, atol=1e-6)
    assert len(calls) == 1, "the distilled model is reused"
    assert first.fingerprint == second.fingerprint


def test_stratified_sample_keeps_every_class():
    labels = np.array([0] * 900 + [1] * 90 + [2] * 10)
    sample = stratified_sample(labels, 100, seed=0)
    counts = np.bincount(labels[sample], minlength=3)
    assert 85 <= counts[0] <= 95 and 8 <= counts[1] <= 10 and counts[2] >= 2
    assert len(stratified_sample(labels[:50], 100, seed=0)) == 50


def test_choose_encoder_picks_the_best_agreement_and_reports_all():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 100)

    class Separating(BagOfWordsEncoder):
        name = "good"

        def encode(self, texts, *, progress=None):
            ids = np.array([int(t) for t in texts])
            x = np.stack([labels[ids] * 2.0 - 1.0, rng.normal(scale=0.3, size=len(ids))], axis=1)
            return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    class Random(BagOfWordsEncoder):
        name = "bad"

        def encode(self, texts, *, progress=None):
            x = rng.normal(size=(len(texts), 8))
            return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    def make(name):
        if name == "missing":
            raise EncoderLoadError("not installed")
        return {"bad": Random, "good": Separating}[name]()

    chosen, results = choose_encoder(
        [str(i) for i in range(200)],
        labels,
        make,
        lambda e, t: e.encode(t),
        sample_size=120,
        seed=0,
        candidates=("bad", "missing", "good"),
    )
    assert chosen.name == "good"
    by_name = {r.name: r for r in results}
    assert by_name["good"].knn_label_agreement > 0.9 > by_name["bad"].knn_label_agreement
    assert by_name["missing"].knn_label_agreement is None and "unavailable" in by_name["missing"].note


def test_knn_label_agreement_bounds():
    x = np.eye(4, dtype=np.float32).repeat(5, axis=0)
    assert knn_label_agreement(x, np.repeat(np.arange(4), 5), k=4) == 1.0


def test_auto_in_a_scan_records_every_candidate(monkeypatch):
    """Sentiment words: TF-IDF separates the labels better than a bag of hashed words of 32 dims."""
    real_get = registry.get_encoder

    def fake_get(name, *, device="auto", batch_size=None, precision="auto"):
        if name in ("minilm", "static"):
            if name == "static":
                raise EncoderLoadError("not distilled in tests")
            return BagOfWordsEncoder(fingerprint=name)
        return real_get(name, device=device, batch_size=batch_size)

    monkeypatch.setattr(registry, "get_encoder", fake_get)
    from sklearn.decomposition import TruncatedSVD

    fits = []
    real_fit = TruncatedSVD.fit_transform
    monkeypatch.setattr(TruncatedSVD, "fit_transform", lambda self, m: fits.append(1) or real_fit(self, m))
    rng = np.random.default_rng(1)
    good = ["great", "wonderful", "superb", "lovely", "brilliant"]
    bad = ["awful", "terrible", "dreadful", "boring", "poor"]
    fillers = [f"w{i}" for i in range(200)]
    texts, labels = [], []
    for i in range(600):
        positive = i % 2 == 0
        words = list(rng.choice(fillers, 8)) + list(rng.choice(good if positive else bad, 2))
        texts.append(" ".join(words))
        labels.append("pos" if positive else "neg")
    result = audit(
        pl.DataFrame({"text": texts, "label": labels}), merge({"encoder": {"name": "auto", "auto_sample": 300}})
    )
    encoder = result.report.run["encoder"]
    assert encoder["name"] == "tfidf"
    assert len(fits) == 1, "auto's whole-corpus tfidf fit is the one the scan uses; it is not fitted twice"
    names = [c["name"] for c in encoder["auto_candidates"]]
    assert names == ["minilm", "static", "tfidf"]
    static = next(c for c in encoder["auto_candidates"] if c["name"] == "static")
    assert static["knn_label_agreement"] is None and "unavailable" in static["note"]


def test_listing_shows_every_builtin():
    names = [info.name for info in registry.list_encoders()]
    assert names[:5] == ["minilm", "minilm-int8", "static", "tfidf", "auto"]


def test_embed_refuses_auto(tmp_path):
    from tests.helpers import invoke

    path = tmp_path / "d.csv"
    path.write_text("text\nhello\n")
    result = invoke(["embed", path, "--encoder", "auto"], expect_exit=2)
    assert "auto chooses with the labels" in result.stderr


def test_scan_with_default_config_has_no_auto_candidates():
    assert ScanConfig().encoder.name == "minilm"


def test_embed_reads_the_encoding_it_is_given(tmp_path):
    from tests.helpers import invoke

    path = tmp_path / "latin.csv"
    path.write_bytes("text\ncafé au lait\nthé vert\n".encode("latin-1"))
    cache = tmp_path / "cache"
    refused = invoke(["embed", path, "--encoder", "tfidf", "--cache-dir", cache], expect_exit=3)
    assert "line 2" in refused.stderr and "--encoding" in refused.stderr
    vectors = tmp_path / "v.parquet"
    invoke(["embed", path, "--encoder", "tfidf", "--cache-dir", cache, "--encoding", "latin-1", "--output", vectors])
    assert pl.read_parquet(vectors).height == 2


def test_tfidf_on_texts_of_few_words_or_none():
    # Fewer distinct words than dimensions: the TF-IDF rows themselves (the SVD needs more words
    # than components and failed on one-word texts); no word at all: zero vectors, not an error.
    from credaudit.encoders.tfidf import TfidfEncoder

    vectors = TfidfEncoder().encode([f"question {i}" for i in range(20)] + ["answer"] * 5)
    assert vectors.shape == (25, 256)
    np.testing.assert_allclose(vectors @ vectors[0], [1.0] * 20 + [0.0] * 5, atol=1e-6)
    assert not TfidfEncoder().encode(["", " ", "a"]).any()


def test_embed_never_writes_over_its_input_and_its_file_is_readable_by_others(tmp_path):
    import os

    from tests.helpers import invoke

    path = tmp_path / "d.parquet"
    pl.DataFrame({"text": ["card pin", "card fee", "refund late", "refund due"]}).write_parquet(path)
    before = path.read_bytes()
    cache = tmp_path / "cache"
    refused = invoke(["embed", path, "--encoder", "tfidf", "--cache-dir", cache, "--output", path], expect_exit=3)
    assert "--output" in refused.stderr and "would write over or into the input" in refused.stderr
    assert path.read_bytes() == before
    vectors = tmp_path / "v.npy"
    invoke(["embed", path, "--encoder", "tfidf", "--cache-dir", cache, "--output", vectors])
    # Written through a private temporary file; the output gets the mode any new file gets.
    umask = os.umask(0o022)
    os.umask(umask)
    assert vectors.stat().st_mode & 0o777 == 0o666 & ~umask
