import json

import numpy as np
import polars as pl
import pytest

from credaudit import ScanConfig, audit
from credaudit.config import merge
from credaudit.report.json import render_json
from credaudit.report.markdown import render_markdown
from credaudit.report.terminal import render_quiet, render_terminal
from tests.conftest import make_clusterable, make_noisy, small_blocks, symmetric_t
from tests.fakes import BagOfWordsEncoder


@pytest.fixture
def noisy():
    x, true, observed = make_clusterable(900, 3, symmetric_t(3, 0.2), 0)
    names = np.array(["cat", "dog", "fox"])
    frame = pl.DataFrame({"text": [f"t{i}" for i in range(900)], "label": names[observed].tolist()})
    return frame, x, names[true]


def test_api_on_a_dataframe_with_embeddings(noisy):
    frame, x, truth = noisy
    result = audit(frame, ScanConfig(), embeddings=x)
    assert result.issues.height == 900
    assert result.issues["given_label"].to_list() == frame["label"].to_list()
    flagged = result.issues.filter(pl.col("is_label_error"))
    n_errors = int((frame["label"].to_numpy() != truth).sum())
    assert 0.8 * n_errors < flagged.height < 1.2 * n_errors
    assert (flagged["suggested_label"].to_numpy() == truth[result.detection.is_label_error]).mean() > 0.9
    assert result.verdict == "pass"
    assert abs(result.noise.noise_rate.estimate - (frame["label"].to_numpy() != truth).mean()) < 0.03


def test_report_has_every_spec_field(noisy):
    frame, x, _ = noisy
    report = json.loads(render_json(audit(frame, ScanConfig(), embeddings=x).report))
    assert {
        "schema_version",
        "tool_version",
        "created_at",
        "run",
        "classes",
        "noise",
        "detection",
        "findings",
        "checks",
        "verdict",
    } <= set(report)
    run = report["run"]
    assert {"input", "encoder", "seed", "config", "stage_seconds", "peak_memory_mb"} <= set(run)
    assert {"read", "embed", "graph", "noise", "detect", "total"} <= set(run["stage_seconds"])
    noise = report["noise"]
    assert {
        "transition_matrix",
        "clean_prior",
        "noise_rate",
        "credibility",
        "per_class",
        "fit",
        "knn_label_agreement",
    } <= set(noise)
    assert noise["transition_matrix"]["labels"] == ["cat", "dog", "fox"]
    assert np.allclose(np.sum(noise["transition_matrix"]["values"], axis=1), 1.0, atol=1e-5)
    per = noise["per_class"][0]
    assert {"noise_rate", "observed_label_error_rate", "diagonally_dominant"} <= set(per)
    assert {"method", "k", "rounds", "flagged", "flagged_per_class", "top_flagged"} <= set(report["detection"])
    top = report["detection"]["top_flagged"][0]
    assert {"row_id", "given_label", "suggested_label", "suggestion_confidence", "excerpt"} <= set(top)
    assert [c["id"] for c in report["checks"]] == [
        "max_noise_rate",
        "min_credibility",
        "max_flagged",
        "max_outliers",
        "max_duplicates",
        "max_leakage",
        "max_regression",
    ]
    assert all(c["status"] == "skipped" for c in report["checks"])
    assert report["baseline"] is None and report["schema_version"] == 4
    histogram = report["detection"]["error_score_histogram"]
    assert sum(histogram["flagged"]) == report["detection"]["flagged"]
    assert sum(histogram["flagged"]) + sum(histogram["unflagged"]) == 900


def test_same_seed_same_results_other_seed_may_differ(noisy):
    frame, x, _ = noisy
    a = audit(frame, ScanConfig(seed=4), embeddings=x)
    b = audit(frame, ScanConfig(seed=4), embeddings=x)
    assert a.issues.equals(b.issues)
    assert a.report.noise == b.report.noise


@pytest.mark.parametrize("index", ["exact", "ivf"])
def test_threads_of_the_local_engine_change_no_result(index, monkeypatch):
    # Every stage runs as many blocks, several at a time on three threads.
    small_blocks(monkeypatch, 500)
    x, labels = make_noisy(3000, seed=5)
    frame = pl.DataFrame({"label": labels})
    runs = {
        threads: audit(frame, merge({"engine": {"threads": threads}, "graph": {"index": index}}), embeddings=x)
        for threads in (1, 3)
    }
    one, three = runs[1], runs[3]
    assert (one.report.run["engine"]["threads"], three.report.run["engine"]["threads"]) == (1, 3)
    np.testing.assert_array_equal(three.graph.indices, one.graph.indices)
    np.testing.assert_array_equal(three.graph.similarities, one.graph.similarities)
    assert three.issues.equals(one.issues)
    assert three.report.noise == one.report.noise
    assert one.detection.is_label_error.sum() > 100  # a real audit, not an empty one


def test_text_path_with_an_encoder_and_duplicate_conflicts(tmp_path):
    words = [["cat", "fur", "meow"], ["dog", "bark", "leash"]]
    texts, labels = [], []
    for i in range(300):
        k = i % 2
        texts.append(" ".join(words[k]) + f" w{i % 5}")
        labels.append(["cats", "dogs"][k])
    labels[0] = "dogs"  # a wrong label on a text that appears 30 times with the right one
    frame = pl.DataFrame({"text": texts, "label": labels})
    encoder = BagOfWordsEncoder()
    result = audit(frame, ScanConfig(), encoder=encoder)
    assert encoder.embedded == 10, "300 rows but 10 distinct texts"
    kinds = {f.kind: f for f in result.findings}
    assert "conflicting_duplicates" in kinds
    assert kinds["conflicting_duplicates"].details["groups"] == 1
    # All of its neighbours are copies labelled "cats"; only the propagation reaches back to it
    # through them (it is their neighbour too), so its belief in "dogs" is ~1e-8, not exactly 0.
    assert result.detection.error_score.argmax() == 0 and result.detection.error_score[0] > 0.999
    # One wrong label in 300 rows: the estimated budget (n_j·r_j ≈ 0.3 rows) rounds to zero flags,
    # by design (no floor); the vote method flags it.
    voted = audit(frame, merge({"detect": {"method": "vote"}}), encoder=encoder)
    assert voted.detection.is_label_error.tolist() == [True] + [False] * 299
    assert result.report.run["encoder"]["name"] == "bag-of-words"


def test_cleaned_modes(noisy):
    frame, x, truth = noisy
    result = audit(frame, ScanConfig(), embeddings=x)
    flagged = result.detection.is_label_error
    assert result.cleaned("drop").height == 900 - flagged.sum()
    flag = result.cleaned("flag")
    assert flag["credaudit_is_label_error"].to_list() == flagged.tolist()
    relabelled = result.cleaned("relabel", min_confidence=0.0)
    assert relabelled.height == 900
    assert (relabelled["label"].to_numpy() == truth).mean() > (frame["label"].to_numpy() == truth).mean() + 0.1
    strict = result.cleaned("relabel", min_confidence=1.01)
    assert strict.height == 900 - flagged.sum(), "nothing confident enough: flagged rows are dropped"


def test_gates_and_interval_bound(noisy):
    frame, x, _ = noisy
    config = merge({"gates": {"max_noise_rate": 0.05, "min_credibility": 0.1, "max_flagged": 0.5}})
    result = audit(frame, config, embeddings=x)
    status = {c.id: c.status.value for c in result.checks}
    assert status == {
        "max_noise_rate": "fail",
        "min_credibility": "pass",
        "max_flagged": "pass",
        "max_outliers": "skipped",
        "max_duplicates": "skipped",
        "max_leakage": "skipped",
        "max_regression": "skipped",
    }
    assert result.verdict == "fail"


def test_renderers(noisy):
    frame, x, _ = noisy
    report = audit(frame, ScanConfig(), embeddings=x).report
    text = render_terminal(report, color=False, width=100)
    assert text.lstrip().startswith("PASS") and "\x1b[" not in text
    assert "\x1b[" in render_terminal(report, color=True, width=100)
    md = render_markdown(report)
    assert md.startswith("# credaudit: ✅ PASS") and "| true \\ observed |" in md
    assert render_quiet(report).count("\n") == 1


def test_many_classes_show_largest_confusions():
    x, true, observed = make_clusterable(2600, 26, symmetric_t(26, 0.1), 1, dim=32)
    frame = pl.DataFrame({"label": [f"class-{c:02d}" for c in observed]})
    report = audit(frame, merge({"noise": {"n_bootstrap": 5}}), embeddings=x).report
    md = render_markdown(report)
    assert "## Largest confusions" in md and "## Transition matrix" not in md
    assert "Per class (25 of 26" in render_terminal(report, width=120)


def test_labels_keep_their_type():
    x, true, _ = make_clusterable(300, 2, None, 0)
    frame = pl.DataFrame({"label": (true == 1).tolist()})
    result = audit(frame, ScanConfig(), embeddings=x)
    assert result.issues["given_label"].dtype == pl.Boolean
    assert [c["label"] for c in result.report.classes] == [False, True]


def test_too_many_classes_is_a_clear_input_error():
    from credaudit.errors import InputError

    x, _, _ = make_clusterable(40, 2, None, 0)
    frame = pl.DataFrame({"label": [f"c{i % 20}" for i in range(40)]})
    with pytest.raises(InputError, match="has 20 distinct labels; credaudit audits at most 10 classes"):
        audit(frame, merge({"noise": {"max_classes": 10}}), embeddings=x)


def test_report_records_the_cache_directory_actually_used(noisy):
    import os

    frame, x, _ = noisy
    report = json.loads(render_json(audit(frame, ScanConfig(), embeddings=x).report))
    assert report["run"]["config"]["encoder"]["cache_dir"] == os.environ["CREDAUDIT_CACHE_DIR"]
