"""Preference pairs: planted reversals, order invariance, transcripts, errors and the CLI."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from credaudit.config import merge
from credaudit.engine import LocalEngine
from credaudit.errors import InputError
from credaudit.neighbors import normalize_rows
from credaudit.pairs import _shared_prefix_length, pair_labels, pair_rows, preference_directions, split_shared_prefix
from credaudit.pairs_run import _cleaning_summary, audit_pairs, cleaning_plan
from tests.conftest import small_blocks, write_table
from tests.helpers import invoke


def make_pairs(n_pairs: int, rate: float, seed: int, dim: int = 24):
    """Pairs on a few topics; the better response sits along one quality direction per topic.

    Returns chosen (P, dim), rejected (P, dim), reversed (P,) bool.
    """
    rng = np.random.default_rng(seed)
    topics = rng.normal(size=(6, dim))
    quality = rng.normal(size=(6, dim))
    quality /= np.linalg.norm(quality, axis=1, keepdims=True)
    topic = rng.integers(0, 6, n_pairs)
    base = topics[topic] + 0.3 * rng.normal(size=(n_pairs, dim))
    better = base + 0.8 * quality[topic] + 0.15 * rng.normal(size=(n_pairs, dim))
    worse = base - 0.8 * quality[topic] + 0.15 * rng.normal(size=(n_pairs, dim))
    reversed_ = rng.random(n_pairs) < rate
    chosen = np.where(reversed_[:, None], worse, better).astype(np.float32)
    rejected = np.where(reversed_[:, None], better, worse).astype(np.float32)
    return chosen, rejected, reversed_


def pairs_config(**extra):
    return merge({"pairs": {"chosen_col": "chosen", "rejected_col": "rejected", **extra}})


@pytest.mark.parametrize("block_rows", [None, 7])
def test_pair_rows_are_the_ordered_directions_then_their_reverses(block_rows, monkeypatch):
    # Over blocks of 7 rows (blocks of pairs straddle the chosen / rejected boundary of the
    # vectors' blocks), the rows are those made from whole arrays.
    if block_rows:
        small_blocks(monkeypatch, block_rows)
    chosen, rejected, _ = make_pairs(20, 0.0, seed=1)
    directions, similarity, topics = preference_directions(chosen, rejected)
    order = np.random.default_rng(0).permutation(20)
    engine = LocalEngine(block_rows=block_rows)
    rows, sim, top = pair_rows(engine, engine.place(np.concatenate([chosen, rejected])), order)
    vectors = engine.gather(rows)
    assert vectors.shape == (40, chosen.shape[1]) and len(rows.parts) == (1 if block_rows is None else 6)
    np.testing.assert_array_equal(vectors[:20], normalize_rows(directions[order]))
    np.testing.assert_array_equal(vectors[20:], -vectors[:20])
    np.testing.assert_array_equal(sim, similarity)
    np.testing.assert_array_equal(engine.gather(top), topics)
    assert pair_labels(20).tolist() == [0] * 20 + [1] * 20
    np.testing.assert_allclose(np.linalg.norm(directions, axis=1), 1.0, rtol=1e-5)
    assert (similarity < 1.0).all()


def test_planted_reversals_are_found_and_the_rate_estimated():
    chosen, rejected, truth = make_pairs(1500, 0.2, seed=3)
    frame = pl.DataFrame({"chosen": [f"c{i}" for i in range(1500)], "rejected": [f"r{i}" for i in range(1500)]})
    result = audit_pairs(frame, pairs_config(), chosen_embeddings=chosen, rejected_embeddings=rejected)
    issues = result.issues
    assert issues.columns[:4] == ["row_id", "flip_score", "is_reversed", "action"]
    flagged = issues.get_column("is_reversed").to_numpy()
    tp = (flagged & truth).sum()
    precision, recall = tp / flagged.sum(), tp / truth.sum()
    assert precision > 0.9 and recall > 0.9
    rate = result.report.noise["noise_rate"]
    assert abs(rate["estimate"] - truth.mean()) < 0.03
    assert result.report.noise["reversal_rate"] == rate
    # Reversed pairs score higher than correct ones, and get swapped.
    scores = issues.get_column("flip_score").to_numpy()
    assert scores[truth].mean() > scores[~truth].mean() + 0.4
    assert set(issues.filter(pl.col("is_reversed")).get_column("action")) == {"swap"}
    assert result.report.run["kind"] == "preference_pairs"


def test_a_shuffled_input_gives_identical_results():
    chosen, rejected, _ = make_pairs(400, 0.2, seed=4)
    frame = pl.DataFrame(
        {
            "id": [f"p{i}" for i in range(400)],
            "chosen": [f"c{i}" for i in range(400)],
            "rejected": [f"r{i}" for i in range(400)],
        }
    )
    config = merge({"input": {"id_col": "id"}, "pairs": {"chosen_col": "chosen", "rejected_col": "rejected"}})
    first = audit_pairs(frame, config, chosen_embeddings=chosen, rejected_embeddings=rejected)
    perm = np.random.default_rng(0).permutation(400)
    second = audit_pairs(frame[perm], config, chosen_embeddings=chosen[perm], rejected_embeddings=rejected[perm])
    a = first.issues.sort("row_id")
    b = second.issues.sort("row_id")
    assert a.equals(b)
    assert first.report.noise["noise_rate"] == second.report.noise["noise_rate"]


def test_clean_pairs_have_no_reversals():
    chosen, rejected, _ = make_pairs(600, 0.0, seed=5)
    frame = pl.DataFrame({"chosen": [f"c{i}" for i in range(600)], "rejected": [f"r{i}" for i in range(600)]})
    result = audit_pairs(frame, pairs_config(), chosen_embeddings=chosen, rejected_embeddings=rejected)
    assert result.issues.get_column("is_reversed").sum() <= 3
    assert result.report.noise["noise_rate"]["estimate"] < 0.02


def test_transcripts_split_at_the_last_shared_assistant_turn():
    chosen = ["\n\nHuman: hi\n\nAssistant: hello\n\nHuman: help me\n\nAssistant: Sure, here is how."]
    rejected = ["\n\nHuman: hi\n\nAssistant: hello\n\nHuman: help me\n\nAssistant: Surely not."]
    # A pair without a shared marker keeps its texts whole, with an empty prompt; the pieces are
    # stripped of what str.strip() strips (the separator \x1c too), characters counted, not bytes.
    chosen += [" plain a ", "\n\nHuman: é🙂\n\nAssistant:\x1c ça\u3000"]
    rejected += [" plain b ", "\n\nHuman: é🙂\n\nAssistant: non"]
    prompts, c, r = split_shared_prefix(pl.Series(chosen), pl.Series(rejected))
    assert prompts.to_list() == [
        "Human: hi\n\nAssistant: hello\n\nHuman: help me\n\nAssistant:",
        "",
        "Human: é🙂\n\nAssistant:",
    ]
    assert c.to_list() == ["Sure, here is how.", " plain a ", "ça"] and r.to_list() == [
        "Surely not.",
        " plain b ",
        "non",
    ]
    assert split_shared_prefix(pl.Series(["good answer"]), pl.Series(["bad answer"])) is None


def test_pairs_of_identical_responses_are_dropped_and_leave_the_others_as_they_were():
    # No preference to audit: out of the directions' audit (which would see a zero direction),
    # action drop, no score; the other pairs get exactly the results they get without them.
    chosen, rejected, _ = make_pairs(200, 0.2, seed=3)
    same = np.zeros(200, dtype=bool)
    same[[5, 17]] = True
    rejected[same] = chosen[same]
    frame = pl.DataFrame(
        {
            "id": [f"p{i}" for i in range(200)],
            "chosen": [f"c{i}" for i in range(200)],
            "rejected": [f"c{i} " if same[i] else f"r{i}" for i in range(200)],  # the same, but for a space
        }
    )
    config = merge({"input": {"id_col": "id"}, "pairs": {"chosen_col": "chosen", "rejected_col": "rejected"}})
    result = audit_pairs(frame, config, chosen_embeddings=chosen, rejected_embeddings=rejected)
    issues = result.issues
    assert issues.filter(pl.col("row_id").is_in(["p5", "p17"])).get_column("action").to_list() == ["drop", "drop"]
    assert issues.get_column("flip_score").is_nan().to_numpy().tolist() == same.tolist()
    assert not issues.get_column("is_reversed").to_numpy()[same].any()
    assert result.report.run["input"]["identical_pairs"] == 2
    without = audit_pairs(
        frame.filter(~pl.Series(same)), config, chosen_embeddings=chosen[~same], rejected_embeddings=rejected[~same]
    )
    assert issues.filter(~pl.Series(same)).equals(without.issues)
    every = frame.with_columns(pl.col("chosen").alias("rejected"))
    with pytest.raises(InputError, match="every pair has the same text as chosen and rejected"):
        audit_pairs(every, config, chosen_embeddings=chosen, rejected_embeddings=chosen)


def test_cli_pairs_with_precomputed_vectors_writes_one_row_per_pair(tmp_path):
    chosen, rejected, truth = make_pairs(300, 0.2, seed=6)
    frame = pl.DataFrame(
        {
            "chosen": [f"c{i}" for i in range(300)],
            "rejected": [f"r{i}" for i in range(300)],
            "ce": chosen.tolist(),
            "re": rejected.tolist(),
        }
    )
    path = write_table(frame, tmp_path / "pairs.parquet")
    cfg = tmp_path / "pairs.toml"
    cfg.write_text('[pairs]\nchosen_embedding_col = "ce"\nrejected_embedding_col = "re"\n')
    out = tmp_path / "out"
    invoke(
        [
            "scan",
            path,
            "--chosen-col",
            "chosen",
            "--rejected-col",
            "rejected",
            "--config",
            cfg,
            "--out",
            out,
            "--clean",
            "relabel",
            "--format",
            "quiet",
        ]
    )
    issues = pl.read_parquet(out / "issues.parquet")
    assert issues.height == 300
    report = json.loads((out / "report.json").read_text())
    assert report["run"]["kind"] == "preference_pairs"
    cleaned = pl.read_parquet(out / "cleaned.parquet")
    swapped = issues.get_column("action").to_numpy() == "swap"
    kept = issues.get_column("action").to_numpy() != "drop"
    assert cleaned.height == int(kept.sum())
    # A swapped pair's chosen text is now its old rejected one.
    first = int(np.flatnonzero(swapped)[0])
    row = cleaned.filter(pl.col("rejected") == f"c{first}")
    assert row.height == 1 and row.get_column("chosen")[0] == f"r{first}"
    # The headers count pairs, not the engine's two direction "classes".
    markdown = (out / "report.md").read_text()
    assert "300 pairs" in markdown and "2 classes" not in markdown


def test_cli_pairs_from_transcripts_with_a_text_encoder(tmp_path):
    rng = np.random.default_rng(0)
    good = ["I can't help with that, but here is a safe alternative", "Sorry, that would hurt someone; try this"]
    bad = ["Sure, here is how to break into the house", "Yes, steal it when nobody is looking"]
    rows = []
    for i in range(60):
        prompt = f"\n\nHuman: question {i} about topic {i % 5}\n\nAssistant:"
        c, r = good[i % 2] + f" ({i})", bad[i % 2] + f" ({i})"
        if rng.random() < 0.1:
            c, r = r, c
        rows.append({"chosen": prompt + " " + c, "rejected": prompt + " " + r})
    path = write_table(pl.DataFrame(rows), tmp_path / "hh.jsonl")
    out = tmp_path / "out"
    invoke(
        [
            "scan",
            path,
            "--chosen-col",
            "chosen",
            "--rejected-col",
            "rejected",
            "--encoder",
            "tfidf",
            "--out",
            out,
            "--format",
            "json",
        ]
    )
    report = json.loads((out / "report.json").read_text())
    assert report["run"]["input"]["prompt_source"] == "shared_prefix"
    assert report["run"]["input"]["pairs"] == 60


def test_cli_half_a_pair_and_mixed_kinds_are_usage_errors(tmp_path, small_frame):
    path = write_table(small_frame, tmp_path / "d.parquet")
    result = invoke(["scan", path, "--chosen-col", "text"], expect_exit=2)
    assert "--rejected-col" in result.stderr
    result = invoke(["scan", path, "--chosen-col", "text", "--rejected-col", "label", "--ordinal"], expect_exit=2)
    assert "does not apply to preference pairs" in result.stderr
    result = invoke(["scan", path, "--chosen-col", "text", "--rejected-col", "text"], expect_exit=2)
    assert "--chosen-col and --rejected-col both name 'text'" in result.stderr


def test_order_invariance_holds_for_vectors_without_texts():
    chosen, rejected, _ = make_pairs(300, 0.2, seed=8)
    frame = pl.DataFrame({"id": [f"p{i}" for i in range(300)]})
    config = merge({"input": {"id_col": "id"}, "pairs": {"chosen_col": "chosen", "rejected_col": "rejected"}})
    first = audit_pairs(frame, config, chosen_embeddings=chosen, rejected_embeddings=rejected)
    perm = np.random.default_rng(1).permutation(300)
    second = audit_pairs(frame[perm], config, chosen_embeddings=chosen[perm], rejected_embeddings=rejected[perm])
    assert first.issues.sort("row_id").equals(second.issues.sort("row_id"))


def test_a_repeated_pair_id_is_an_input_error_naming_it():
    # Every pair output is keyed by the id: two pairs with one id would become one in a review.
    ids = [f"p{i}" for i in range(40)]
    ids[7] = "p3"
    frame = pl.DataFrame({"id": ids, "chosen": [f"c{i}" for i in range(40)], "rejected": [f"r{i}" for i in range(40)]})
    config = merge({"input": {"id_col": "id"}, "pairs": {"chosen_col": "chosen", "rejected_col": "rejected"}})
    with pytest.raises(InputError, match="'id' \\(--id-col\\).*not unique: 'p3'"):
        audit_pairs(frame, config)


def test_shared_prefix_length_matches_a_character_walk():
    rng = np.random.default_rng(0)
    for _ in range(2000):
        a = "".join(rng.choice(list("ab"), size=rng.integers(0, 12)))
        b = "".join(rng.choice(list("ab"), size=rng.integers(0, 12)))
        n = 0
        while n < min(len(a), len(b)) and a[n] == b[n]:
            n += 1
        assert _shared_prefix_length(a, b) == n


@pytest.mark.parametrize(
    ("mode", "trusted", "force", "keep", "swap", "held"),
    [
        ("flag", True, False, [1, 1, 1], [0, 0, 0], 0),
        ("relabel", True, False, [1, 1, 0], [0, 1, 0], 0),
        ("drop", True, False, [1, 0, 0], [0, 0, 0], 0),
        ("relabel", False, False, [1, 1, 1], [0, 0, 0], 2),
        ("drop", False, True, [1, 0, 0], [0, 0, 0], 0),
    ],
)
def test_one_cleaning_plan_decides_the_file_and_the_report(mode, trusted, force, keep, swap, held):
    config = merge({"output": {"clean": mode, "force_clean": force}})
    actions = np.array(["keep", "swap", "drop"], dtype=object)
    plan = cleaning_plan(config, actions, trusted)
    assert plan.keep.tolist() == [bool(v) for v in keep]
    assert plan.swap.tolist() == [bool(v) for v in swap]
    assert plan.held_back == held
    summary = _cleaning_summary(config, pl.Series(actions.tolist()), trusted)
    assert (summary["dropped"], summary["relabelled"], summary["held_back"]) == (
        len(keep) - sum(keep),
        sum(swap),
        held,
    )
