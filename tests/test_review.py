"""The review queue (scan --review) and credaudit apply: round trips through CSV and Label Studio."""

import csv
import json

import numpy as np
import polars as pl
import pytest

from credaudit.review import DROP_CHOICE, neighbour_label_summary
from tests.conftest import make_clusterable, symmetric_t, write_table
from tests.helpers import invoke


@pytest.fixture
def labelled(tmp_path):
    """600 rows, 3 classes, 15 % symmetric noise, ids, a truth column and precomputed vectors, as CSV-able jsonl."""
    x, true, observed = make_clusterable(600, 3, symmetric_t(3, 0.15), 1)
    names = np.array(["alpha", "beta", "gamma"])
    frame = pl.DataFrame(
        {
            "id": [f"r{i:04d}" for i in range(600)],
            "text": [f"row {i}, with a comma" for i in range(600)],
            "label": names[observed].tolist(),
            "truth": names[true].tolist(),
            "emb": x.tolist(),
        }
    )
    return write_table(frame, tmp_path / "data.parquet"), frame


def write_rows(path, rows):
    """A reviewer's edited queue, written back as CSV."""
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def scan_with_review(path, out, *reviews):
    args = ["scan", path, "--embedding-col", "emb", "--id-col", "id", "--out", out, "--format", "quiet"]
    for review in reviews:
        args += ["--review", review]
    return invoke(args)


def test_csv_queue_ranks_every_flagged_row_and_apply_writes_the_decisions(labelled, tmp_path):
    path, frame = labelled
    queue_path = tmp_path / "review" / "queue.csv"
    scan_with_review(path, tmp_path / "out", queue_path)
    queue = pl.read_csv(queue_path)
    issues = pl.read_parquet(tmp_path / "out" / "issues.parquet")
    flagged = issues.filter(pl.col("is_label_error"))
    assert queue.height == flagged.height > 20
    assert queue["rank"].to_list() == list(range(1, queue.height + 1))
    assert queue["error_score"].to_list() == sorted(queue["error_score"].to_list(), reverse=True)
    assert set(queue["row_id"]) == set(flagged["row_id"])
    first = queue.row(0, named=True)
    assert first["text"] == f"row {int(first['row_id'][1:])}, with a comma", "full text, commas and all"
    counts = [int(part.rsplit("×", 1)[1]) for part in first["neighbour_labels"].split(", ")]
    assert sum(counts) == 10 and counts == sorted(counts, reverse=True), "the 10 neighbours, most frequent first"
    assert (queue["decision"].fill_null("") == "").all(), "left for the reviewer"

    # A reviewer decides the first three rows and leaves the rest.
    rows = list(csv.DictReader(queue_path.open()))
    rows[0]["decision"] = "relabel"  # to the suggestion
    rows[1]["corrected_label"] = "gamma" if rows[1]["given_label"] != "gamma" else "alpha"  # a label alone: relabel
    rows[2]["decision"] = "drop"
    write_rows(queue_path, rows)
    out_file = tmp_path / "fixed.parquet"
    result = invoke(["apply", queue_path, "--data", path, "--id-col", "id", "--out", out_file])
    assert "2 relabelled, 1 dropped, 0 kept" in result.stdout and f"{queue.height - 3} flagged row(s)" in result.stdout
    fixed = pl.read_parquet(out_file)
    assert fixed.height == 599 and rows[2]["row_id"] not in fixed["id"].to_list()
    by_id = dict(zip(fixed["id"].to_list(), fixed["label"].to_list(), strict=True))
    assert by_id[rows[0]["row_id"]] == rows[0]["suggested_label"]
    assert by_id[rows[1]["row_id"]] == rows[1]["corrected_label"]
    untouched = frame.filter(~pl.col("id").is_in([r["row_id"] for r in rows[:3]]))
    assert fixed.filter(~pl.col("id").is_in([r["row_id"] for r in rows[:3]])).equals(untouched)


def test_label_studio_tasks_round_trip(labelled, tmp_path):
    path, _ = labelled
    tasks_path = tmp_path / "tasks.json"
    scan_with_review(path, tmp_path / "out", tasks_path, tmp_path / "queue.csv")
    assert (tmp_path / "queue.csv").exists(), "--review repeats"
    config = (tmp_path / "tasks.label_config.xml").read_text()
    for name in ("alpha", "beta", "gamma", DROP_CHOICE):
        assert f'<Choice value="{name}"/>' in config
    tasks = json.loads(tasks_path.read_text())
    first = tasks[0]
    assert {"text", "row_id", "given_label", "suggested_label", "neighbour_labels"} <= set(first["data"])
    prediction = first["predictions"][0]["result"][0]
    assert prediction["from_name"] == "label" and prediction["to_name"] == "text"
    assert prediction["value"]["choices"] == [first["data"]["suggested_label"]]

    # What Label Studio exports after review: annotations on some tasks, one cancelled.
    def annotated(task, choice, cancelled=False):
        result = [{"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": [choice]}}]
        return {**task, "id": 1, "annotations": [{"result": result, "was_cancelled": cancelled}]}

    exported = [
        annotated(tasks[0], DROP_CHOICE),
        annotated(tasks[1], tasks[1]["data"]["given_label"]),  # the label was right after all
        annotated(tasks[2], tasks[2]["data"]["suggested_label"]),
        annotated(tasks[3], DROP_CHOICE, cancelled=True),
        *tasks[4:],
    ]
    export_path = tmp_path / "export.json"
    export_path.write_text(json.dumps(exported))
    result = invoke(["apply", export_path, "--data", path, "--id-col", "id", "--out", tmp_path / "f.parquet"])
    assert "1 relabelled, 1 dropped, 1 kept" in result.stdout
    # JSON-MIN: the data fields at the top level, the choice under the control's name.
    minimal = [{**tasks[0]["data"], "label": DROP_CHOICE}, {**tasks[1]["data"]}]
    (tmp_path / "min.json").write_text(json.dumps(minimal))
    result = invoke(["apply", tmp_path / "min.json", "--data", path, "--id-col", "id", "--out", tmp_path / "m.parquet"])
    assert "0 relabelled, 1 dropped, 0 kept" in result.stdout and "1 flagged row(s) without a decision" in result.stdout


def test_apply_refuses_decisions_that_do_not_fit_the_data(labelled, tmp_path):
    path, _ = labelled
    queue_path = tmp_path / "queue.csv"
    scan_with_review(path, tmp_path / "out", queue_path)
    rows = list(csv.DictReader(queue_path.open()))

    def apply_with(change, message):
        edited = [dict(r) for r in rows]
        change(edited)
        bad = tmp_path / "bad.csv"
        write_rows(bad, edited)
        out = tmp_path / "never.parquet"
        result = invoke(["apply", bad, "--data", path, "--id-col", "id", "--out", out], expect_exit=3)
        assert message in result.stderr and not out.exists()

    apply_with(lambda r: r[0].update(decision="maybe"), "bad.csv line 2: decision must be keep, relabel or drop")
    apply_with(lambda r: r[1].update(corrected_label="omega"), "line 3: corrected label 'omega' is not a class")
    apply_with(lambda r: r[0].update(row_id="nope", decision="drop"), "row_id 'nope' is not in the data")
    apply_with(lambda r: r[0].update(given_label="zeta", decision="keep"), "was the data changed since the scan?")
    usage = invoke(["scan", path, "--embedding-col", "emb", "--review", tmp_path / "q.txt"], expect_exit=2)
    assert "--review" in usage.stderr and ".csv" in usage.stderr


def test_neighbour_summary_counts_nearest_first_on_ties():
    codes = np.array([[1, 0, 0, 1, 2], [2, 2, -1, -1, -1]])
    assert neighbour_label_summary(codes, ["a", "b", "c"]) == ["b ×2, a ×2, c ×1", "c ×2"]


def test_apply_keeps_rows_the_scan_skipped_and_refuses_a_malformed_export(tmp_path):
    x, _, observed = make_clusterable(300, 3, symmetric_t(3, 0.15), 4)
    labels = [["a", "b", "c"][c] for c in observed]
    labels[5] = None  # unlabelled: skipped by --drop-unlabelled, kept by apply
    frame = pl.DataFrame({"text": [f"t{i}" for i in range(300)], "label": labels, "emb": x.tolist()})
    path = write_table(frame, tmp_path / "d.parquet")
    queue = tmp_path / "q.csv"
    invoke(
        [
            "scan",
            path,
            "--embedding-col",
            "emb",
            "--drop-unlabelled",
            "--out",
            tmp_path / "o",
            "--review",
            queue,
            "--format",
            "quiet",
        ]
    )
    rows = list(csv.DictReader(queue.open()))
    rows[0]["decision"] = "drop"
    write_rows(queue, rows)
    out = tmp_path / "r.parquet"
    invoke(["apply", queue, "--data", path, "--out", out])
    result = pl.read_parquet(out)
    assert result.height == 299 and result["label"].null_count() == 1
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"data": "not an object"}]))
    assert "task 1" in invoke(["apply", bad, "--data", path, "--out", tmp_path / "x.parquet"], expect_exit=3).stderr
