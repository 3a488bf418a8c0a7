"""Data hygiene: outliers, near-duplicate groups, leakage against reference files, their gates and reports."""

import json
import re

import numpy as np
import polars as pl
import pytest

from credaudit import ScanConfig, audit
from credaudit.hygiene import dedupe_mask, linked, near_duplicate_groups, score_outliers
from credaudit.neighbors import build_knn_graph, normalize_rows
from tests.conftest import make_clusterable, symmetric_t, write_table
from tests.helpers import invoke

WORDS = ["card", "pin", "transfer", "refund", "fee", "rate", "top", "up", "account", "limit", "cash", "app"]


def sentences(n, seed):
    """Distinct six-word sentences (no two share more than a few words)."""
    rng = np.random.default_rng(seed)
    return [" ".join(f"{rng.choice(WORDS)}{i}x{j}" for j in range(6)) for i in range(n)]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_clean_clusterable_data_has_almost_no_outliers(seed):
    # Gaussian clusters in 16 dimensions have a heavier distance tail than real 384-d embeddings:
    # a handful of rows sit beyond the fence (README, Limitations), never more than 0.5 %.
    x, _, observed = make_clusterable(2000, 5, symmetric_t(5, 0.1), seed)
    graph = build_knn_graph(x, k=15)
    outliers = score_outliers(x, observed, graph, n_classes=5, k=10)
    assert outliers.is_outlier.sum() <= 10
    assert ((outliers.score >= 0) & (outliers.score < 1)).all()


def test_scattered_and_clustered_off_task_rows_are_outliers():
    x, _, labels = make_clusterable(2000, 5, None, 0)
    rng = np.random.default_rng(1)
    scattered = normalize_rows(rng.normal(size=(20, x.shape[1])))
    # A tight block far from every class: each row's neighbours are the block itself.
    direction = normalize_rows(rng.normal(size=(1, x.shape[1])))
    block = normalize_rows(direction + 0.05 * rng.normal(size=(40, x.shape[1])))
    everything = np.vstack([x, scattered, block]).astype(np.float32)
    all_labels = np.r_[labels, rng.integers(0, 5, 60)]
    graph = build_knn_graph(everything, k=15)
    outliers = score_outliers(everything, all_labels, graph, n_classes=5, k=10)
    planted = np.r_[np.zeros(2000, bool), np.ones(60, bool)]
    assert outliers.is_outlier[planted].mean() >= 0.9
    assert outliers.is_outlier[~planted].sum() <= 5
    block_rows = np.arange(2020, 2060)
    assert (graph.indices[block_rows, 0] >= 2020).all(), "the block's neighbours are each other"
    assert outliers.is_outlier[block_rows].all(), "caught by the class-centroid distance"
    top = score_outliers(everything, all_labels, graph, n_classes=5, k=10, rate=0.01)
    assert top.is_outlier.sum() == round(0.01 * len(everything)) and "top 1.0%" in top.rule


@pytest.mark.parametrize("pair_block", [None, 30])
def test_near_duplicates_need_close_vectors_and_shared_words(pair_block, monkeypatch):
    if pair_block:  # candidate pairs made and tested 3 rows at a time: groups span many blocks
        monkeypatch.setattr("credaudit.hygiene._PAIR_BLOCK", pair_block)
    rng = np.random.default_rng(0)
    texts = sentences(300, 0)
    x = normalize_rows(rng.normal(size=(300, 32)))
    # Rows 300-302: copies of row 0 with one small edit each; 303: a paraphrase (close vector, other words).
    words = texts[0].split()
    texts += [" ".join(words[1:]), texts[0].upper() + "?", " ".join([words[1], words[0], *words[2:]]), "other words"]
    x = np.vstack([x, normalize_rows(x[[0, 0, 0, 0]] + 0.02 * rng.normal(size=(4, 32)))]).astype(np.float32)
    texts[10] = texts[20] = "an identical text"  # exact duplicates, whatever their vectors
    graph = build_knn_graph(x, k=10)
    groups = near_duplicate_groups(graph, texts)
    assert len({groups[i] for i in (0, 300, 301, 302)}) == 1 and groups[0] >= 0
    assert groups[303] == -1, "a close vector with other words is a paraphrase, not a copy"
    assert groups[10] == groups[20] >= 0
    assert (groups >= 0).sum() == 6
    assert groups[0] == 0 and groups[10] == 1, "ids follow each group's first row"
    drop = dedupe_mask(groups)
    assert drop.sum() == 4 and not drop[0] and not drop[10], "the first row of each group stays"
    # Without texts, only nearly identical vectors link.
    assert near_duplicate_groups(graph, None, vector_threshold=0.999)[303] == -1


def frame_with_plants(n=600, seed=0):
    x, _, observed = make_clusterable(n, 3, symmetric_t(3, 0.1), seed, dim=16)
    texts = sentences(n, seed)
    names = np.array(["alpha", "beta", "gamma"])
    return x, texts, names[observed]


def test_outliers_get_no_label_verdict_and_reports_show_hygiene(tmp_path):
    x, texts, labels = frame_with_plants()
    rng = np.random.default_rng(3)
    far = normalize_rows(rng.normal(size=(6, x.shape[1])))
    texts += [f"zzz off task {i}" for i in range(6)]
    texts[1] = texts[2]  # one exact duplicate pair
    labels = np.r_[labels, ["alpha", "beta", "gamma"] * 2]
    x = np.vstack([x, far]).astype(np.float32)
    frame = pl.DataFrame(
        {"id": [f"r{i}" for i in range(len(texts))], "text": texts, "label": labels.tolist(), "emb": x.tolist()}
    )
    path = write_table(frame, tmp_path / "d.parquet")
    out = tmp_path / "o"
    result = invoke(["scan", path, "--embedding-col", "emb", "--id-col", "id", "--out", out, "--format", "json"])
    report = json.loads(result.stdout)
    issues = pl.read_parquet(out / "issues.parquet")
    outliers = issues.filter(pl.col("is_outlier"))
    assert set(outliers["row_id"]) >= {f"r{i}" for i in range(600, 606)}
    assert not outliers["is_label_error"].any(), "an outlier is not a label error"
    assert report["hygiene"]["outliers"]["count"] == outliers.height
    assert issues.filter(pl.col("row_id").is_in(["r1", "r2"]))["duplicate_group"].n_unique() == 1
    assert report["hygiene"]["near_duplicates"]["groups"] >= 1 and report["hygiene"]["leakage"] is None
    markdown = (out / "report.md").read_text()
    assert "## Data hygiene" in markdown and "Most outlying rows" in markdown and "zzz off task" in markdown
    assert 'id="hygiene"' in (out / "report.html").read_text()
    terminal = invoke(["scan", path, "--embedding-col", "emb", "--out", tmp_path / "o2"], env={"CI": "true"}).stdout
    assert "Outliers: " in terminal and "Near-duplicates: " in terminal
    # Gates on the counts, and dedupe as a cleaning mode.
    gated = ["scan", path, "--embedding-col", "emb", "--out", tmp_path / "o3", "--format", "quiet"]
    invoke([*gated, "--max-outliers", "2"], expect_exit=1)
    invoke([*gated, "--max-outliers", "0.05", "--max-duplicates", "5"])
    invoke([*gated, "--max-duplicates", "0"], expect_exit=1)
    invoke([*gated, "--clean", "dedupe"])
    deduped = pl.read_parquet(tmp_path / "o3" / "cleaned.parquet")
    assert deduped.height == len(texts) - 1 and "r1" in deduped["id"].to_list() and "r2" not in deduped["id"].to_list()


def test_leakage_against_a_reference_file(tmp_path):
    x, texts, labels = frame_with_plants()
    rng = np.random.default_rng(5)
    # The reference (a test split): 100 new rows, plus an exact copy of train row 3 and an edited copy of row 4.
    ref_texts = sentences(100, 9) + [texts[3], " ".join(texts[4].split()[1:])]
    ref_x = np.vstack([normalize_rows(rng.normal(size=(100, x.shape[1]))), x[[3]], normalize_rows(x[[4]] + 0.01)])
    train = write_table(
        pl.DataFrame({"id": [f"t{i}" for i in range(600)], "text": texts, "label": labels.tolist(), "emb": x.tolist()}),
        tmp_path / "train.parquet",
    )
    test = write_table(
        pl.DataFrame({"id": [f"s{i}" for i in range(102)], "text": ref_texts, "emb": ref_x.tolist()}),
        tmp_path / "test.parquet",
    )
    out = tmp_path / "o"
    base = ["scan", train, "--embedding-col", "emb", "--id-col", "id", "--out", out]
    result = invoke([*base, "--reference", test, "--reference-embedding-col", "emb", "--format", "json"])
    leak = json.loads(result.stdout)["hygiene"]["leakage"]
    assert leak["rows"] == 2 and leak["references"] == [{"reference": "test.parquet", "rows": 2, "exact": 1}]
    issues = pl.read_parquet(out / "issues.parquet")
    leaked = issues.filter(pl.col("leaked_from").is_not_null())
    assert dict(zip(leaked["row_id"], leaked["leaked_row_id"], strict=True)) == {"t3": "s100", "t4": "s101"}
    assert leaked.filter(pl.col("row_id") == "t3")["leak_similarity"].item() == 1.0
    invoke(
        [*base, "--reference", test, "--reference-embedding-col", "emb", "--max-leakage", "1", "--format", "quiet"],
        expect_exit=1,
    )
    invoke([*base, "--reference", test, "--reference-embedding-col", "emb", "--max-leakage", "2", "--format", "quiet"])
    # Usage errors: a leakage gate without a reference; precomputed vectors without the reference's column.
    assert "--reference" in invoke([*base, "--max-leakage", "1"], expect_exit=2).stderr
    assert "--reference-embedding-col" in invoke([*base, "--reference", test], expect_exit=2).stderr


def test_api_result_carries_hygiene():
    x, texts, labels = frame_with_plants(300)
    result = audit(pl.DataFrame({"text": texts, "label": labels.tolist()}), ScanConfig(), embeddings=x)
    assert result.hygiene.outliers.score.shape == (300,)
    assert result.report.to_dict()["hygiene"]["near_duplicates"]["rows"] == int(
        (result.hygiene.duplicate_groups >= 0).sum()
    )
    assert result.cleaned("dedupe").height == 300 - int(dedupe_mask(result.hygiene.duplicate_groups).sum())


def test_a_reference_is_embedded_with_the_input_encoder_and_its_cache(tmp_path):
    from credaudit.config import merge
    from tests.fakes import BagOfWordsEncoder

    words = ["card", "pin", "refund", "fee", "rate", "transfer", "limit", "cash"]
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(words, 5)) + f" w{i}" for i in range(200)]
    labels = [i % 2 for i in range(200)]
    reference = write_table(
        pl.DataFrame({"text": ["unrelated words entirely", texts[7], texts[9] + "!"]}), tmp_path / "r.csv"
    )
    encoder = BagOfWordsEncoder()
    config = merge({"hygiene": {"reference": [str(reference)]}, "encoder": {"cache_dir": str(tmp_path / "cache")}})
    result = audit(pl.DataFrame({"text": texts, "label": labels}), config, encoder=encoder)
    # The same encoder embedded the reference; row 7's text was already in the cache from the input.
    assert encoder.calls[-1] == 2
    leaked = result.issues.filter(pl.col("leaked_from").is_not_null())
    assert set(leaked["row_id"]) == {7, 9} and set(leaked["leaked_row_id"]) == {"1", "2"}


def test_count_gates_name_a_bad_value_and_dedupe_keeps_a_trusted_row(tmp_path):
    x, texts, labels = frame_with_plants(300)
    path = write_table(
        pl.DataFrame({"text": texts, "label": labels.tolist(), "emb": x.tolist()}), tmp_path / "d.parquet"
    )
    bad = invoke(["scan", path, "--embedding-col", "emb", "--max-outliers", "abc"], expect_exit=2).stderr
    assert "--max-outliers must be a row count" in bad
    groups = np.array([0, 0, 0, -1])
    flagged = np.array([True, False, False, False])
    assert dedupe_mask(groups, avoid=flagged).tolist() == [True, False, True, False]


def test_no_leak_keeps_the_leak_columns_typed(tmp_path):
    x, texts, labels = frame_with_plants(200)
    reference = write_table(
        pl.DataFrame({"text": ["nothing alike"], "emb": [normalize_rows(np.ones((1, x.shape[1])))[0].tolist()]}),
        tmp_path / "r.parquet",
    )
    from credaudit.config import merge

    config = merge({"hygiene": {"reference": [str(reference)], "reference_embedding_col": "emb"}})
    result = audit(pl.DataFrame({"text": texts, "label": labels.tolist()}), config, embeddings=x)
    assert result.issues.schema["leaked_from"] == pl.String and result.issues["leaked_from"].null_count() == 200


def _overlap_by_sets(a: str, b: str, min_overlap: float) -> bool:
    """The word-overlap rule one pair at a time, on Python sets (the reference)."""
    wa, wb = set(re.findall(r"\w+", a.lower())), set(re.findall(r"\w+", b.lower()))
    union = len(wa | wb)
    if not union:
        return False
    small, large = sorted((wa, wb), key=len)
    return len(wa & wb) / union >= min_overlap or (small <= large and len(large) - len(small) <= 1)


def test_word_overlap_of_candidate_pairs_matches_the_rule_on_word_sets():
    rng = np.random.default_rng(3)
    vocabulary = ["card", "PIN", "pin", "top-up", "café", "naïve", "Über", "how", "do", "I", "get", "my", "_x", "42"]

    def text():
        return " ".join(rng.choice(vocabulary, size=rng.integers(0, 7))) + rng.choice(["", "?", "!!"])

    texts_a = [text() for _ in range(300)]
    texts_b = texts_a[:150] + [text() for _ in range(150)]
    rows = rng.integers(0, 300, 5000)
    cols = rng.integers(0, 300, 5000)
    similarities = rng.uniform(0.8, 1.0, 5000)
    for b, overlap in ((texts_a, 0.8), (texts_b, 0.8)):  # within one list (near-duplicates), across two (leakage)
        got = linked(rows, cols, similarities, texts_a, b, threshold=0.9, min_overlap=overlap, vector_threshold=0.99)
        expected = [
            s >= 0.9 and _overlap_by_sets(texts_a[i], b[j], overlap)
            for i, j, s in zip(rows.tolist(), cols.tolist(), similarities.tolist(), strict=True)
        ]
        np.testing.assert_array_equal(got, expected)
        assert 0 < got.sum() < (similarities >= 0.9).sum()  # both outcomes occur


def test_a_jaccard_exactly_at_the_threshold_links():
    # 7 shared words of 25: Jaccard 0.28 exactly, where 0.28 * 25 rounds above 7 in floating point.
    a, b = " ".join(f"w{i}" for i in range(16)), " ".join(f"w{i}" for i in range(9, 25))
    pair = np.array([0]), np.array([0]), np.array([0.95])
    assert linked(*pair, [a], [b], threshold=0.9, min_overlap=0.28, vector_threshold=0.99).tolist() == [True]
    assert _overlap_by_sets(a, b, 0.28)
