"""credaudit fairness: the proxies' consensus fit, calibrated gaps, and the command's contract."""

import json

import numpy as np
import polars as pl
import pytest

from credaudit.fairness import FairnessData, audit_fairness, majority_vote
from credaudit.noise import fit_latent_classes
from tests.conftest import write_table
from tests.helpers import invoke

T_TRUE = [
    np.array([[0.75, 0.25], [0.3, 0.7]]),
    np.array([[0.65, 0.35], [0.2, 0.8]]),
    np.array([[0.7, 0.3], [0.25, 0.75]]),
]


def draw(n, seed, *, share_first=0.45):
    """Groups, a prediction and an outcome whose rates differ by group, and three noisy proxies."""
    rng = np.random.default_rng(seed)
    group = (rng.random(n) > share_first).astype(int)
    label = (rng.random(n) < np.where(group == 0, 0.5, 0.35)).astype(int)
    pred = (rng.random(n) < np.where(label == 1, 0.7, 0.3) + np.where(group == 0, 0.15, -0.1)).astype(int)
    proxies = np.stack([np.where(rng.random(n) < t[group, group], group, 1 - group) for t in T_TRUE], axis=1).astype(
        np.int64
    )
    return group, label, pred, proxies


def test_the_consensus_fit_recovers_each_proxys_matrix():
    group, _, _, proxies = draw(20_000, 0)
    patterns, counts = np.unique(proxies, axis=0, return_counts=True)
    fit = fit_latent_classes(patterns, counts, n_groups=2)
    np.testing.assert_allclose(fit.prior, [0.45, 0.55], atol=0.02)
    for k in range(3):
        np.testing.assert_allclose(fit.transition_matrices[k], T_TRUE[k], atol=0.03)


def test_calibrated_gaps_beat_the_naive_vote_and_cover_the_truth():
    group, label, pred, proxies = draw(8_000, 1)
    data = FairnessData(pred, label, proxies, group, ["a", "b"])
    result = audit_fairness(data, n_bootstrap=60)
    for metric in ("dp_gap", "eop_gap", "eo_gap"):
        truth = result.reference[metric][0]
        naive_error = abs(result.naive[metric][0] - truth)
        calibrated_error = abs(result.calibrated[metric][0] - truth)
        assert calibrated_error < 0.5 * naive_error, metric
        assert result.low[metric][0] <= truth <= result.high[metric][0], metric


def test_majority_vote_breaks_ties_with_the_first_proxy():
    proxies = np.array([[0, 1, 2], [1, 1, 0], [2, 0, 0]])
    assert majority_vote(proxies, 3).tolist() == [0, 1, 0]


@pytest.fixture
def fairness_file(tmp_path):
    group, label, pred, proxies = draw(3000, 2)
    names = np.array(["north", "south"])
    frame = pl.DataFrame(
        {
            "pred": pred.astype(bool).tolist(),
            "outcome": label.tolist(),
            "p1": names[proxies[:, 0]].tolist(),
            "p2": names[proxies[:, 1]].tolist(),
            "p3": names[proxies[:, 2]].tolist(),
            "known": [names[g] if i % 10 == 0 else None for i, g in enumerate(group)],
            "constant": ["north"] * 3000,
            "score": np.linspace(0, 1, 3000).tolist(),
        }
    )
    return write_table(frame, tmp_path / "people.csv")


def base_args(path, tmp_path, *extra):
    return [
        "fairness",
        path,
        "--pred-col",
        "pred",
        "--label-col",
        "outcome",
        *("--proxy-col p1 --proxy-col p2 --proxy-col p3".split()),
        "--n-bootstrap",
        "30",
        "--out",
        tmp_path / "f",
        *extra,
    ]


def test_the_command_reports_every_gap_three_ways(fairness_file, tmp_path):
    result = invoke(base_args(fairness_file, tmp_path, "--group-col", "known", "--format", "json"))
    report = json.loads(result.stdout)
    assert report["kind"] == "fairness" and report["verdict"] == "pass"
    metrics = {
        (m["metric"], m["groups"] if m["groups"] == "all" else tuple(m["groups"])): m
        for m in report["fairness"]["metrics"]
    }
    assert set(metrics) == {(m, g) for m in ("dp_gap", "eop_gap", "eo_gap") for g in ("all", ("north", "south"))}
    entry = metrics[("dp_gap", "all")]
    assert {"metric", "groups", "naive", "calibrated", "reference"} <= set(entry)
    assert entry["calibrated"]["low"] <= entry["calibrated"]["estimate"] <= entry["calibrated"]["high"]
    assert entry["reference"] is not None
    proxies = report["fairness"]["diagnostics"]["proxies"]
    assert [p["column"] for p in proxies] == ["p1", "p2", "p3"] and all(0.6 < p["accuracy"] < 0.85 for p in proxies)
    written = json.loads((tmp_path / "f" / "report.json").read_text())
    assert written["fairness"]["metrics"] == report["fairness"]["metrics"]
    html = (tmp_path / "f" / "report.html").read_text()
    assert 'id="gaps-chart"' in html and "<svg" in html and "calibrated" in html
    assert "## Gaps" in (tmp_path / "f" / "report.md").read_text()


def test_fairness_gates_decide_the_exit_code(fairness_file, tmp_path):
    invoke(base_args(fairness_file, tmp_path, "--max-dp-gap", "0.01", "--format", "quiet"), expect_exit=1)
    invoke(base_args(fairness_file, tmp_path, "--max-dp-gap", "0.9", "--max-eo-gap", "0.9", "--format", "quiet"))
    bound = invoke(base_args(fairness_file, tmp_path, "--max-dp-gap", "0.9", "--gate-on", "bound", "--format", "json"))
    check = next(c for c in json.loads(bound.stdout)["checks"] if c["id"] == "max_dp_gap")
    assert check["bound"] == "upper95" and check["status"] == "pass"


def test_clear_errors_name_the_column(fairness_file, tmp_path):
    two = ["fairness", fairness_file, "--pred-col", "pred", "--proxy-col", "p1", "--proxy-col", "p2"]
    assert "at least three --proxy-col" in invoke(two, expect_exit=2).stderr
    constant = [*two, "--proxy-col", "constant", "--out", tmp_path / "c"]
    assert "'constant' (--proxy-col)" in invoke(constant, expect_exit=3).stderr
    score = base_args(fairness_file, tmp_path)
    score[score.index("pred")] = "score"
    assert (
        "'score' (--pred-col)" in invoke(score, expect_exit=3).stderr
        and "binary" in invoke(score, expect_exit=3).stderr
    )
    no_label = [
        "fairness",
        fairness_file,
        "--pred-col",
        "pred",
        *"--proxy-col p1 --proxy-col p2 --proxy-col p3".split(),
    ]
    assert "--label-col" in invoke([*no_label, "--max-eo-gap", "0.1", "--n-bootstrap", "5"], expect_exit=2).stderr


def test_group_codes_are_matched_and_one_valued_outcomes_refused(tmp_path):
    group, label, pred, proxies = draw(1500, 3)
    known = np.where(np.arange(1500) % 3 == 0, group.astype(float), np.nan)  # a pandas-style float column
    frame = pl.DataFrame(
        {
            "pred": pred.tolist(),
            "y": label.tolist(),
            "zero": [0] * 1500,
            "p1": proxies[:, 0].tolist(),
            "p2": proxies[:, 1].tolist(),
            "p3": proxies[:, 2].tolist(),
            "known": known.tolist(),
            "letters": ["x" if g else "y" for g in group],
        }
    )
    path = write_table(frame, tmp_path / "f.parquet")
    base = [
        "fairness",
        path,
        "--pred-col",
        "pred",
        *"--proxy-col p1 --proxy-col p2 --proxy-col p3".split(),
        "--n-bootstrap",
        "10",
    ]
    report = json.loads(invoke([*base, "--group-col", "known", "--format", "json", "--out", tmp_path / "a"]).stdout)
    assert report["fairness"]["groups"] == ["0", "1"] and report["run"]["input"]["rows_with_group"] == 500
    stray = invoke([*base, "--group-col", "letters", "--out", tmp_path / "b"], expect_exit=3).stderr
    assert "'letters' (--group-col)" in stray and "no proxy names" in stray
    one = invoke([*base, "--label-col", "zero", "--max-eo-gap", "0.2", "--out", tmp_path / "c"], expect_exit=3).stderr
    assert "'zero' (--label-col)" in one and "one value" in one


def test_proxies_coded_differently_or_naming_the_prediction_are_refused(fairness_file, tmp_path):
    # "female"/"male" in one proxy and "F"/"M" in the others made four groups and a false gap; a
    # stray value would make a one-row group; the prediction as a proxy measures nothing.
    frame = pl.read_csv(fairness_file).with_columns(
        pl.col("p1").replace({"north": "N", "south": "S"}), pl.col("p2").replace({"south": "sud"}).alias("p2")
    )
    recoded = write_table(frame, tmp_path / "recoded.csv")
    result = invoke(base_args(recoded, tmp_path), expect_exit=3)
    assert "column 'p1' (--proxy-col) in recoded.csv names 'N', 'S', which no other proxy names" in result.stderr
    stray = write_table(frame.with_columns(pl.col("p3").alias("p1"), pl.col("p3").alias("p2")), tmp_path / "s.csv")
    stray_rows = pl.read_csv(stray).with_columns(
        pl.when(pl.int_range(pl.len()) == 7).then(pl.lit("nrth")).otherwise(pl.col("p2")).alias("p2")
    )
    result = invoke(base_args(write_table(stray_rows, tmp_path / "s2.csv"), tmp_path), expect_exit=3)
    assert "names 'nrth', which no other proxy names" in result.stderr
    args = base_args(fairness_file, tmp_path)
    args[args.index("p3")] = "pred"
    assert "--proxy-col pred is also the --pred-col column" in invoke(args, expect_exit=2).stderr
