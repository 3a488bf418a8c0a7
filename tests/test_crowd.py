"""Several labels per item: the consensus estimator, annotator quality, copy scores, the three input shapes, the CLI."""

import json

import numpy as np
import polars as pl
import pytest

from credaudit.annotators import Answers, copy_scores, count_item_triples, estimate_crowd, profile_annotators
from tests.helpers import invoke

K = 3
CLASSES = ["ant", "bee", "cat"]


def planted_crowd(n_items=400, seed=0, answers_per_item=3, with_vectors=False):
    """A crowd with a known truth: 14 good annotators, 2 spammers, 2 biased, 2 copiers of a flawed reference.

    Returns the long answers, gold per item, each annotator's kind, the reference (known on half the
    items) and, optionally, item vectors clustered by class.
    """
    rng = np.random.default_rng(seed)
    gold = rng.integers(0, K, n_items)
    kinds = ["good"] * 14 + ["spammer"] * 2 + ["biased"] * 2 + ["copier"] * 2
    accuracy = np.where(np.array(kinds) == "good", rng.uniform(0.7, 0.92, len(kinds)), 0.0)
    # The reference is right 70% of the time, wrong on items of its own choosing.
    model = np.where(rng.random(n_items) < 0.7, gold, (gold + rng.integers(1, K, n_items)) % K)
    item, who, label = [], [], []
    for i in range(n_items):
        for w in rng.choice(len(kinds), size=answers_per_item, replace=False):
            kind = kinds[w]
            if kind == "good":
                answer = gold[i] if rng.random() < accuracy[w] else (gold[i] + rng.integers(1, K)) % K
            elif kind == "spammer":
                answer = rng.integers(0, K)
            elif kind == "biased":
                answer = 2 if rng.random() < 0.9 else rng.integers(0, K)
            else:
                answer = model[i]
            item.append(i)
            who.append(w)
            label.append(int(answer))
    reference = np.where(rng.random(n_items) < 0.5, model, -1)
    vectors = None
    if with_vectors:
        centers = rng.normal(size=(K, 16)) * 3
        vectors = (centers[gold] + rng.normal(size=(n_items, 16))).astype(np.float32)
    answers = Answers(np.array(item), np.array(who), np.array(label), n_items, len(kinds), K)
    return answers, gold, kinds, reference, vectors


def majority(answers):
    votes = np.zeros((answers.n_items, answers.n_classes))
    np.add.at(votes, (answers.item, answers.label), 1)
    return votes.argmax(axis=1)


def test_item_triples_weigh_each_item_once():
    item = np.array([0, 0, 0, 1, 1, 1, 1, 2, 2])
    label = np.array([0, 0, 1, 1, 1, 1, 0, 0, 1])
    counts = count_item_triples(item, label, n_classes=2)
    assert counts.counts.sum() == pytest.approx(2.0)  # item 2 has two answers: no triple
    # Item 1's four triples: three with two 1s and a 0, one with three 1s.
    triples = {tuple(t): c for t, c in zip(counts.triples.tolist(), counts.counts, strict=True)}
    assert triples[(1, 1, 1)] == pytest.approx(0.25)


def test_consensus_t_from_answers_alone_recovers_the_pooled_matrix():
    rng = np.random.default_rng(1)
    t_true = np.array([[0.8, 0.15, 0.05], [0.1, 0.75, 0.15], [0.05, 0.1, 0.85]])
    n = 6000
    gold = rng.integers(0, K, n)
    answers = np.array([[rng.choice(K, p=t_true[g]) for _ in range(3)] for g in gold])
    item = np.repeat(np.arange(n), 3)
    est = estimate_crowd(Answers(item, np.zeros(3 * n, dtype=int), answers.ravel(), n, 1, K), n_bootstrap=0)
    assert np.abs(est.consensus_transition - t_true).sum(axis=1).mean() / 2 < 0.03
    assert np.abs(est.fit.pooled - t_true).sum(axis=1).mean() / 2 < 0.03
    truth_rate = 1 - np.mean(answers == gold[:, None])
    assert est.noise_rate[0] == pytest.approx(truth_rate, abs=0.02)
    assert est.noise_rate[1] <= truth_rate + 0.01 and truth_rate - 0.01 <= est.noise_rate[2]


def test_estimates_beat_the_majority_and_rank_annotators():
    answers, gold, kinds, reference, _ = planted_crowd()
    est = estimate_crowd(answers, n_bootstrap=30)
    consensus = est.fit.posterior.argmax(axis=1)
    assert (consensus == gold).mean() > (majority(answers) == gold).mean() + 0.015
    kinds = np.array(kinds)
    good, spam = est.accuracy[kinds == "good"], est.accuracy[kinds == "spammer"]
    assert spam.max() < good.min()
    # The intervals cover each annotator's real accuracy (on these items) nearly always.
    real = np.bincount(answers.annotator, weights=answers.label == gold[answers.item]) / np.bincount(answers.annotator)
    covered = (est.accuracy_low - 0.02 <= real) & (real <= est.accuracy_high + 0.02)
    assert covered.mean() >= 0.85


def test_a_one_answer_annotator_keeps_the_crowds_accuracy():
    answers, gold, *_ = planted_crowd(n_items=300)
    lone = Answers(
        np.r_[answers.item, 0],
        np.r_[answers.annotator, answers.n_annotators],
        np.r_[answers.label, gold[0]],
        answers.n_items,
        answers.n_annotators + 1,
        K,
    )
    est = estimate_crowd(lone, n_bootstrap=20)
    assert 0.4 < est.accuracy[-1] < 0.95
    assert est.accuracy_high[-1] - est.accuracy_low[-1] > 0.02


def test_copiers_score_highest():
    answers, gold, kinds, reference, _ = planted_crowd(n_items=600)
    est = estimate_crowd(answers, n_bootstrap=0)
    score, z, n_ref = copy_scores(est.fit, answers, reference)
    kinds = np.array(kinds)
    honest = kinds == "good"
    assert np.nanmin(z[kinds == "copier"]) > np.nanmax(z[honest])
    assert np.nanmin(score[kinds == "copier"]) > 0.1
    assert (n_ref > 0).all()


def test_neighbours_help_items_with_one_answer():
    answers, gold, kinds, _, vectors = planted_crowd(n_items=500, answers_per_item=1, with_vectors=True)
    from credaudit.neighbors import build_knn_graph, normalize_rows

    graph = build_knn_graph(normalize_rows(vectors), k=10)
    plain = estimate_crowd(answers, n_bootstrap=0)
    with_texts = estimate_crowd(
        answers, neighbor_indices=graph.indices, neighbor_similarities=graph.similarities, n_bootstrap=0
    )
    acc_plain = (plain.fit.posterior.argmax(1) == gold).mean()
    acc_texts = (with_texts.fit.posterior.argmax(1) == gold).mean()
    assert acc_texts > acc_plain + 0.1
    assert with_texts.fit.neighbor_weight > 0.3


def test_profiles_name_the_worst_confusion():
    answers, gold, kinds, *_ = planted_crowd()
    est = estimate_crowd(answers, n_bootstrap=0)
    profile = profile_annotators(est.fit, answers, est.accuracy)
    biased = [w for w, k in enumerate(kinds) if k == "biased"]
    assert (profile.worst_answer[biased] == 2).all()
    assert (profile.top_share[biased] > 0.8).all()


# ----------------------------------------------------------------------------------------------
# Files and the command line


def long_frame(seed=0, n_items=400):
    answers, gold, kinds, reference, _ = planted_crowd(n_items=n_items, seed=seed)
    names = [f"{k}-{w:02d}" for w, k in enumerate(kinds)]
    frame = pl.DataFrame(
        {
            "item": [f"q{i:04d}" for i in answers.item],
            "worker": [names[w] for w in answers.annotator],
            "answer": [CLASSES[c] for c in answers.label],
            "llm": [CLASSES[reference[i]] if reference[i] >= 0 else None for i in answers.item],
        }
    )
    return frame, gold, names


def test_scan_long_writes_items_and_annotators(tmp_path):
    frame, gold, names = long_frame()
    path = tmp_path / "answers.csv"
    frame.write_csv(path)
    out = tmp_path / "out"
    invoke(
        [
            "scan",
            path,
            "--item-col",
            "item",
            "--annotator-col",
            "worker",
            "--label-col",
            "answer",
            "--reference-col",
            "llm",
            "--out",
            out,
            "--clean",
            "flag",
        ]
    )
    items = pl.read_parquet(out / "items.parquet")
    assert items.columns[:7] == [
        "item_id",
        "consensus_label",
        "consensus_confidence",
        "n_annotations",
        "agreement",
        "majority_label",
        "majority_disagrees",
    ]
    assert "is_uncertain" in items.columns
    consensus = items.sort("item_id").get_column("consensus_label").to_list()
    assert np.mean([CLASSES.index(c) for c in consensus] == gold) > 0.85
    annotators = pl.read_parquet(out / "annotators.parquet")
    for column in (
        "annotator",
        "n_answers",
        "accuracy",
        "accuracy_low",
        "accuracy_high",
        "agreement_with_consensus",
        "copy_score",
        "suspect",
    ):
        assert column in annotators.columns
    suspects = dict(zip(annotators["annotator"], annotators["suspect"], strict=True))
    assert {suspects[n] for n in names if n.startswith("spammer")} == {"spammer"}
    assert {suspects[n] for n in names if n.startswith("biased")} == {"biased"}
    assert {suspects[n] for n in names if n.startswith("copier")} == {"copier"}
    assert all(suspects[n] is None for n in names if n.startswith("good"))
    report = json.loads((out / "report.json").read_text())
    assert report["kind"] == "multi_annotator"
    assert report["annotators"]["n_suspect"] == 6
    assert 0.0 < report["noise"]["noise_rate"]["estimate"] < 0.6
    cleaned = pl.read_csv(out / "cleaned.csv")
    assert cleaned.height == frame.height and "consensus_label" in cleaned.columns
    html = (out / "report.html").read_text()
    assert 'id="annotators"' in html and "<svg" in html


def test_gates_and_dropping_suspects(tmp_path):
    frame, *_ = long_frame()
    path = tmp_path / "answers.parquet"
    frame.write_parquet(path)
    base = ["scan", path, "--item-col", "item", "--annotator-col", "worker", "--label-col", "answer", "--no-html"]
    invoke([*base, "--out", tmp_path / "a", "--max-suspect-annotators", "0"], expect_exit=1)
    invoke([*base, "--out", tmp_path / "b", "--min-annotator-accuracy", "0.5"], expect_exit=1)
    invoke([*base, "--out", tmp_path / "c", "--max-suspect-annotators", "10", "--max-noise-rate", "0.9"])
    result = invoke([*base, "--out", tmp_path / "d", "--drop-annotators", "suspect", "--format", "json"])
    report = json.loads(result.stdout)
    assert report["annotators"]["dropped"] is True
    cleaned = pl.read_parquet(tmp_path / "d" / "cleaned.parquet")
    assert not cleaned.get_column("worker").str.starts_with("spammer").any()
    items = pl.read_parquet(tmp_path / "d" / "items.parquet")
    kept = cleaned.get_column("item").n_unique()
    assert kept == items.filter(~pl.col("is_uncertain")).height


def test_three_shapes_agree(tmp_path):
    frame, *_ = long_frame(n_items=200)
    long_path = tmp_path / "long.csv"
    frame.write_csv(long_path)
    wide = (
        frame.group_by("item", maintain_order=True)
        .agg(pl.col("answer"), pl.col("worker"))
        .rename({"answer": "answers", "worker": "workers"})
    )
    lists_path = tmp_path / "lists.jsonl"
    wide.write_ndjson(lists_path)
    common = ["--no-html", "--format", "quiet"]
    invoke(
        [
            "scan",
            long_path,
            "--item-col",
            "item",
            "--annotator-col",
            "worker",
            "--label-col",
            "answer",
            "--out",
            tmp_path / "o1",
            *common,
        ]
    )
    invoke(
        [
            "scan",
            lists_path,
            "--annotations-col",
            "answers",
            "--annotators-col",
            "workers",
            "--id-col",
            "item",
            "--out",
            tmp_path / "o2",
            *common,
        ]
    )
    a = pl.read_parquet(tmp_path / "o1" / "items.parquet").sort("item_id")
    b = pl.read_parquet(tmp_path / "o2" / "items.parquet").sort("item_id")
    assert a.get_column("consensus_label").to_list() == b.get_column("consensus_label").to_list()
    np.testing.assert_allclose(a["consensus_confidence"].to_numpy(), b["consensus_confidence"].to_numpy(), atol=1e-9)

    # Slots: one column per labelling position (here: the first three answers of each item).
    slots = wide.with_columns([pl.col("answers").list.get(j, null_on_oob=True).alias(f"r{j}") for j in range(3)]).drop(
        "answers", "workers"
    )
    slots_path = tmp_path / "slots.parquet"
    slots.write_parquet(slots_path)
    result = invoke(
        [
            "scan",
            slots_path,
            "--label-col",
            "r0",
            "--label-col",
            "r1",
            "--label-col",
            "r2",
            "--out",
            tmp_path / "o3",
            "--format",
            "json",
            "--no-html",
        ]
    )
    report = json.loads(result.stdout)
    assert [r["annotator"] for r in report["annotators"]["rows"]] == ["r0", "r1", "r2"]
    assert report["run"]["input"]["shape"] == "slots"


def test_shuffled_rows_give_the_same_consensus(tmp_path):
    frame, *_ = long_frame(n_items=200)
    shuffled = frame.sample(fraction=1.0, shuffle=True, seed=3)
    results = []
    for name, f in (("a.csv", frame), ("b.csv", shuffled)):
        f.write_csv(tmp_path / name)
        invoke(
            [
                "scan",
                tmp_path / name,
                "--item-col",
                "item",
                "--annotator-col",
                "worker",
                "--label-col",
                "answer",
                "--out",
                tmp_path / name.replace(".", "_"),
                "--no-html",
                "--format",
                "quiet",
            ]
        )
        results.append(pl.read_parquet(tmp_path / name.replace(".", "_") / "items.parquet").sort("item_id"))
    assert results[0]["consensus_label"].to_list() == results[1]["consensus_label"].to_list()
    np.testing.assert_allclose(results[0]["consensus_confidence"], results[1]["consensus_confidence"], atol=1e-8)


def test_texts_from_an_items_file(tmp_path, engines_made):
    answers, gold, kinds, _, vectors = planted_crowd(n_items=300, answers_per_item=1, with_vectors=True)
    frame = pl.DataFrame(
        {"item": answers.item, "worker": [f"w{w}" for w in answers.annotator], "answer": answers.label}
    )
    frame.write_parquet(tmp_path / "answers.parquet")
    pl.DataFrame({"item": np.arange(300), "vec": vectors.tolist()}).write_parquet(tmp_path / "items.parquet")
    result = invoke(
        [
            "scan",
            tmp_path / "answers.parquet",
            "--item-col",
            "item",
            "--annotator-col",
            "worker",
            "--label-col",
            "answer",
            "--items",
            tmp_path / "items.parquet",
            "--embedding-col",
            "vec",
            "--out",
            tmp_path / "out",
            "--no-html",
            "--format",
            "json",
        ]
    )
    report = json.loads(result.stdout)
    assert report["run"]["features"]["neighbor_weight"] > 0.3
    items = pl.read_parquet(tmp_path / "out" / "items.parquet").sort("item_id")
    assert (items.get_column("consensus_label").to_numpy() == gold).mean() > 0.8
    assert len(engines_made) == 1  # the item vectors and their graph on one engine


@pytest.mark.parametrize(
    "frame, args, expect, message",
    [
        (
            pl.DataFrame(
                {
                    "item": np.repeat(np.arange(6), 3),
                    "w": list("abc") * 6,
                    "y": [0, 1, 1] * 6,
                    "text": ["x", "y"] + ["z"] * 16,
                }
            ),
            ["--item-col", "item", "--annotator-col", "w", "--label-col", "y"],
            3,
            "different texts at rows 0 and",
        ),
        (
            pl.DataFrame({"item": [1, 1, 2], "w": ["a", "a", "b"], "y": [0, 1, 1]}),
            ["--item-col", "item", "--annotator-col", "w", "--label-col", "y"],
            3,
            "two answers from annotator 'a' for item 1",
        ),
        (
            pl.DataFrame({"r1": [0, 1, 0, 1, 1], "r2": ["0", "1", "1", "0", "1"]}),
            ["--label-col", "r1", "--label-col", "r2"],
            3,
            "different label types",
        ),
        (
            pl.DataFrame(
                {"a": [[0, 1], [1, 1, 0], [0], [1, 1], [0, 0]], "w": [["x", "y"], ["x"], ["z"], ["x", "y"], ["x", "z"]]}
            ),
            ["--annotations-col", "a", "--annotators-col", "w"],
            3,
            "row 1 of",
        ),
        (
            pl.DataFrame({"item": [1], "w": ["a"], "y": [0]}),
            ["--item-col", "item", "--annotations-col", "y"],
            2,
            "give one multi-annotator shape",
        ),
        (
            pl.DataFrame({"item": [1], "w": ["a"], "y": [0]}),
            ["--item-col", "item", "--label-col", "y"],
            2,
            "needs both --item-col and --annotator-col",
        ),
    ],
)
def test_bad_crowd_inputs_name_the_row(tmp_path, frame, args, expect, message):
    path = tmp_path / "bad.parquet"
    frame.write_parquet(path)
    result = invoke(["scan", path, *args, "--out", tmp_path / "out"], expect_exit=expect)
    assert message in result.stderr
    assert not (tmp_path / "out").exists()


def test_many_classes_and_few_answers_choose_the_one_coin_model():
    rng = np.random.default_rng(4)
    n_items, k, n_workers = 1500, 40, 30
    gold = rng.integers(0, k, n_items)
    skill = rng.uniform(0.55, 0.95, n_workers)
    item = np.repeat(np.arange(n_items), 3)
    who = np.concatenate([rng.choice(n_workers, 3, replace=False) for _ in range(n_items)])
    right = rng.random(len(item)) < skill[who]
    label = np.where(right, gold[item], (gold[item] + rng.integers(1, k, len(item))) % k)
    est = estimate_crowd(Answers(item, who, label, n_items, n_workers, k), n_bootstrap=0)
    assert est.model == "one_coin"
    assert est.aic["one_coin"] < est.aic["full"]
    real = np.bincount(who, weights=right) / np.bincount(who)
    assert np.abs(est.accuracy - real).mean() < 0.05

    answers, *_ = planted_crowd(n_items=600, answers_per_item=5)
    assert estimate_crowd(answers, n_bootstrap=0).model == "full"


def test_report_json_is_strict_json(tmp_path):
    frame, *_ = long_frame(n_items=150)
    path = tmp_path / "answers.csv"
    frame.write_csv(path)
    result = invoke(
        [
            "scan",
            path,
            "--item-col",
            "item",
            "--annotator-col",
            "worker",
            "--label-col",
            "answer",
            "--out",
            tmp_path / "o",
            "--format",
            "json",
            "--no-html",
        ]
    )

    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    report = json.loads(result.stdout, parse_constant=refuse)
    assert report == json.loads((tmp_path / "o" / "report.json").read_text(), parse_constant=refuse)
    assert report["noise"]["annotator_model"] in ("full", "one_coin")
    assert {row["copy_score"] for row in report["annotators"]["rows"]} == {None}  # no --reference-col


def test_single_label_options_are_refused(tmp_path):
    frame, *_ = long_frame(n_items=100)
    path = tmp_path / "answers.csv"
    frame.write_csv(path)
    base = ["scan", path, "--item-col", "item", "--annotator-col", "worker", "--label-col", "answer"]
    result = invoke([*base, "--clean", "relabel", "--out", tmp_path / "o"], expect_exit=2)
    assert "--clean relabel is for single labels" in result.stderr
    result = invoke([*base, "--drop-annotators", "all", "--out", tmp_path / "o"], expect_exit=2)
    assert "--drop-annotators" in result.stderr or "drop_annotators" in result.stderr


def test_one_annotator_or_nothing_relating_the_answers_is_refused(tmp_path):
    # One annotator has no one to be compared with (the model overruled its answers with the
    # neighbours' consensus and passed); several annotators on disjoint items, without item texts
    # or vectors, have nothing relating their answers either.
    answers, *_ = planted_crowd(n_items=60, answers_per_item=1)
    frame = pl.DataFrame(
        {"item": answers.item, "worker": [f"w{w}" for w in answers.annotator], "answer": answers.label}
    )
    args = ["--item-col", "item", "--annotator-col", "worker", "--label-col", "answer", "--no-cache"]
    frame.with_columns(pl.lit("solo").alias("worker")).write_parquet(tmp_path / "one.parquet")
    result = invoke(["scan", tmp_path / "one.parquet", *args, "--out", tmp_path / "o1"], expect_exit=3)
    assert "one.parquet has one annotator ('solo')" in result.stderr
    frame.write_parquet(tmp_path / "disjoint.parquet")
    result = invoke(["scan", tmp_path / "disjoint.parquet", *args, "--out", tmp_path / "o2"], expect_exit=3)
    assert "no item answered twice and no item texts or vectors" in result.stderr
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()
