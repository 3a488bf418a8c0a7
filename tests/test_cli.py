import json
import os
import subprocess
import sys

import numpy as np
import polars as pl
import pytest

from tests.conftest import make_clusterable, symmetric_t, write_table
from tests.helpers import invoke


@pytest.fixture
def noisy_file(tmp_path):
    """600 rows, 3 classes, 15 % symmetric noise, with vectors in a column."""
    x, true, observed = make_clusterable(600, 3, symmetric_t(3, 0.15), 0)
    names = np.array(["a", "b", "c"])
    frame = pl.DataFrame(
        {
            "text": [f"row {i}" for i in range(600)],
            "label": names[observed].tolist(),
            "truth": names[true].tolist(),
            "emb": x.tolist(),
        }
    )
    return write_table(frame, tmp_path / "noisy.parquet")


def scan(path, *extra, expect_exit=0, out=None):
    out = out or path.parent / "out"
    return invoke(["scan", path, "--embedding-col", "emb", "--out", out, *extra], expect_exit=expect_exit)


def test_json_format_is_the_report_on_stdout(noisy_file):
    result = scan(noisy_file, "--format", "json")
    report = json.loads(result.stdout)
    assert report["schema_version"] == 4
    assert report["verdict"] == "pass"
    assert 0.08 < report["noise"]["noise_rate"]["estimate"] < 0.22
    written = json.loads((noisy_file.parent / "out" / "report.json").read_text())
    assert written["noise"] == report["noise"]
    assert "rows = true class" in report["noise"]["transition_matrix"]["orientation"]


def test_rich_format_verdict_first_and_plain_under_ci(noisy_file):
    result = invoke(
        ["scan", noisy_file, "--embedding-col", "emb", "--out", noisy_file.parent / "o"], env={"CI": "true"}
    )
    assert result.stdout.lstrip().startswith("PASS")
    assert "\x1b[" not in result.stdout, "no ANSI codes when CI is set"
    assert "Estimated noise rate" in result.stdout and "Transition matrix" in result.stdout


def test_quiet_format_is_one_line(noisy_file):
    result = scan(noisy_file, "--format", "quiet")
    assert len(result.stdout.strip().splitlines()) == 1
    assert result.stdout.startswith("PASS ")


@pytest.mark.parametrize(
    "args,code",
    [
        (["--max-noise-rate", "0.01"], 1),
        (["--max-noise-rate", "0.5"], 0),
        (["--min-credibility", "0.99"], 1),
        (["--max-flagged", "0.5"], 0),
        (["--max-flagged", "3"], 1),
        (["--max-noise-rate", "0.17", "--gate-on", "bound"], 1),
    ],
)
def test_gates_decide_the_exit_code(noisy_file, args, code):
    result = scan(noisy_file, *args, "--format", "json", expect_exit=code)
    report = json.loads(result.stdout)
    assert report["verdict"] == ("fail" if code else "pass")
    statuses = {c["id"]: c["status"] for c in report["checks"]}
    assert set(statuses) == {
        "max_noise_rate",
        "min_credibility",
        "max_flagged",
        "max_outliers",
        "max_duplicates",
        "max_leakage",
        "max_regression",
    }


def test_gate_on_bound_uses_the_pessimistic_end(noisy_file):
    report = json.loads(scan(noisy_file, "--max-noise-rate", "0.5", "--gate-on", "bound", "--format", "json").stdout)
    check = next(c for c in report["checks"] if c["id"] == "max_noise_rate")
    assert check["bound"] == "upper95"
    assert check["value"] == report["noise"]["noise_rate"]["high"]


@pytest.mark.parametrize("mode", ["drop", "relabel", "flag"])
def test_clean_modes(noisy_file, mode):
    scan(noisy_file, "--clean", mode, "--format", "quiet")
    out = noisy_file.parent / "out"
    cleaned = pl.read_parquet(out / "cleaned.parquet")
    issues = pl.read_parquet(out / "issues.parquet")
    flagged = issues["is_label_error"]
    assert issues.columns == [
        "row_id",
        "given_label",
        "suggested_label",
        "suggestion_confidence",
        "error_score",
        "flag_rate",
        "is_label_error",
        "neighbour_agreement",
        "outlier_score",
        "is_outlier",
        "duplicate_group",
    ]
    assert 40 < flagged.sum() < 140
    original = pl.read_parquet(noisy_file)
    if mode != "flag":
        # Streamed to disk from a plan over the input frame: the input's columns and types, its rows
        # in order, unflagged rows as they were, and every relabelled row given its suggestion.
        assert cleaned.schema == original.schema
        joined = issues.with_columns(original["text"]).join(
            cleaned.select("text", pl.col("label").alias("new")), on="text", maintain_order="left"
        )
        assert joined["text"].to_list() == cleaned["text"].to_list()
        assert (joined.filter(~pl.col("is_label_error"))["new"] == original.filter(~flagged)["label"]).all()
        changed = joined.filter(pl.col("is_label_error"))
        assert (changed["new"] == changed["suggested_label"]).all()
    if mode == "drop":
        assert cleaned.height == 600 - flagged.sum()
        assert cleaned.equals(original.filter(~flagged))
    elif mode == "flag":
        assert cleaned.height == 600 and "credaudit_is_label_error" in cleaned.columns
    else:
        assert cleaned.height >= 600 - flagged.sum()
        assert changed.height > 0
        # relabelled rows are mostly right, and better than before
        kept = original.join(cleaned.select("text", pl.col("label").alias("new")), on="text")
        assert (kept["new"] == kept["truth"]).mean() > (kept["label"] == kept["truth"]).mean()
    assert (out / "report.md").read_text().startswith("# credaudit: ✅ PASS")


def test_config_file_and_flag_precedence(noisy_file, tmp_path):
    cfg = tmp_path / "ci.toml"
    cfg.write_text('[gates]\nmax_noise_rate = 0.01\n[output]\nformat = "json"\n')
    invoke(["scan", noisy_file, "--embedding-col", "emb", "--out", tmp_path / "o", "--config", cfg], expect_exit=1)
    invoke(
        [
            "scan",
            noisy_file,
            "--embedding-col",
            "emb",
            "--out",
            tmp_path / "o",
            "--config",
            cfg,
            "--max-noise-rate",
            "0.9",
        ],
        expect_exit=0,
    )


def test_version_help_and_encoders():
    assert invoke(["--version"]).stdout.startswith("credaudit ")
    assert "scan" in invoke(["--help"]).stdout
    assert "minilm" in invoke(["encoders"]).stdout


def test_real_subprocess_with_the_default_encoder(tmp_path):
    """End to end as a user runs it: the installed console script, the real MiniLM weights, offline."""
    texts = [
        "my card has not arrived yet",
        "when will my new card come",
        "card still not delivered",
        "where is my card",
        "card delivery is taking forever",
        "has my card been sent",
        "what is the exchange rate",
        "how much is the euro rate today",
        "exchange rate for dollars",
        "which rate do you use to convert",
        "currency conversion rate please",
        "rate for pounds to euros",
    ]
    labels = ["card"] * 6 + ["rate"] * 6
    labels[2] = "rate"  # one wrong label
    path = write_table(pl.DataFrame({"text": texts, "label": labels}), tmp_path / "tiny.csv")
    env = {**os.environ, "CI": "true", "CREDAUDIT_CACHE_DIR": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    command = [
        sys.executable,
        "-m",
        "credaudit",
        "scan",
        str(path),
        "--out",
        str(tmp_path / "out"),
        "--format",
        "json",
        "--k",
        "4",
    ]
    first = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    assert report["run"]["encoder"]["name"] == "minilm" and report["run"]["encoder"]["dimension"] == 384
    assert report["run"]["encoder"]["embedded_texts"] == 12
    issues = pl.read_parquet(tmp_path / "out" / "issues.parquet")
    assert issues.filter(pl.col("is_label_error"))["row_id"].to_list() == [2]
    assert (tmp_path / "out" / "cleaned.csv").exists()
    # In a log: plain progress lines of credaudit's own, no bars, no library noise.
    log = first.stderr.strip().splitlines()
    assert log and all(line.startswith("credaudit: ") for line in log), first.stderr
    assert any(line.startswith("credaudit: embedding") for line in log)
    second = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    again = json.loads(second.stdout)
    assert again["run"]["encoder"]["cached_texts"] == 12 and again["run"]["encoder"]["embedded_texts"] == 0
    assert again["noise"] == report["noise"], "cached vectors give identical results"


def test_a_rerun_leaves_only_its_own_files(noisy_file, tmp_path):
    out = tmp_path / "rerun"
    scan(noisy_file, "--format", "quiet", out=out)
    assert (out / "report.html").exists()
    (out / "notes.txt").write_text("mine")  # not credaudit's: never touched
    scan(noisy_file, "--format", "quiet", "--no-html", "--seed", "7", out=out)
    assert not (out / "report.html").exists(), "the seed-0 report.html would contradict the seed-7 report.json"
    assert json.loads((out / "report.json").read_text())["run"]["seed"] == 7
    assert (out / "notes.txt").read_text() == "mine"


def test_a_rerun_never_removes_a_file_it_did_not_write(noisy_file, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "report.html").write_text("the user's own page")  # same name as an output, written by someone else
    scan(noisy_file, "--format", "quiet", "--no-html", out=out)
    assert (out / "report.html").read_text() == "the user's own page"
    assert (out / "report.json").exists()


def test_an_unknown_option_gets_a_suggestion_only_when_one_is_close(noisy_file):
    bogus = invoke(["scan", noisy_file, "--bogus"], expect_exit=2)
    assert "No such option: --bogus" in bogus.stderr and "--out" not in bogus.stderr
    typo = invoke(["scan", noisy_file, "--lable-col", "label"], expect_exit=2)
    assert "did you mean --label-col?" in typo.stderr
    # Values after "--" and "--opt=value" forms are not mistaken for options.
    invoke(["scan", noisy_file, "--embedding-col=emb", "--format=quiet", "--out", noisy_file.parent / "eq"])


def test_help_shows_defaults_and_report_sizes_have_flags(noisy_file, tmp_path):
    help_text = invoke(["scan", "--help"], env={"COLUMNS": "200"}).stdout
    assert "[default: rank]" in help_text and "[default: 0.25]" in help_text
    assert "<bool>" not in help_text and "list[str]" not in help_text
    report = json.loads(
        scan(noisy_file, "--format", "json", "--top-rows", "3", "--excerpt-chars", "12", out=tmp_path / "o").stdout
    )
    assert len(report["detection"]["top_flagged"]) == 3
    assert all(len(row["excerpt"]) <= 13 for row in report["detection"]["top_flagged"])


def test_a_directory_of_parquet_files_gets_a_directory_of_cleaned_parts(noisy_file, tmp_path):
    # A partitioned input stays partitioned: one cleaned file per input file, same names, each
    # holding its own rows in order, minus the dropped ones; `select` writes its parts the same way.
    frame = pl.read_parquet(noisy_file)
    folder = tmp_path / "parts"
    folder.mkdir()
    bounds = {"a.parquet": (0, 250), "b.parquet": (250, 260), "c.parquet": (260, 600)}
    for name, (start, stop) in bounds.items():
        frame.slice(start, stop - start).write_parquet(folder / name)
    (folder / "notes.txt").write_text("not data")
    out = tmp_path / "out"
    scan(folder, "--clean", "drop", "--id-col", "text", out=out)
    issues = pl.read_parquet(out / "issues.parquet")
    dropped = set(issues.filter(pl.col("is_label_error")).get_column("row_id").to_list())
    assert dropped, "the audit must flag some rows for the parts to differ from the input"
    assert sorted(p.name for p in (out / "cleaned").iterdir()) == sorted(bounds)
    for name, (start, stop) in bounds.items():
        part = pl.read_parquet(out / "cleaned" / name)
        expected = frame.slice(start, stop - start).filter(~pl.col("text").is_in(list(dropped)))
        assert part.equals(expected)
    # A rerun with another mode replaces the directory as a whole.
    scan(folder, "--clean", "flag", "--id-col", "text", out=out)
    assert pl.read_parquet(out / "cleaned" / "b.parquet").height == 10
    assert "credaudit_is_label_error" in pl.read_parquet(out / "cleaned" / "a.parquet").columns

    result = invoke(["select", folder, "--embedding-col", "emb", "--budget", "60", "--out", tmp_path / "sel"])
    assert result.exit_code == 0
    selected = pl.concat([pl.read_parquet(tmp_path / "sel" / "selected" / name) for name in sorted(bounds)])
    assert selected.height == 60
    chosen = pl.read_parquet(tmp_path / "sel" / "selection.parquet").filter(pl.col("selected"))
    assert sorted(selected.get_column("text").to_list()) == sorted(
        frame.get_column("text")[chosen.get_column("row_id").to_list()].to_list()
    )


def test_flagging_a_flagged_copy_replaces_its_columns(noisy_file, tmp_path):
    # An earlier run's flagged copy already has the credaudit_* columns: they are replaced where
    # they stand, from the file (vectors left in it) and from a frame in memory alike.
    from credaudit import audit
    from credaudit.config import merge

    scan(noisy_file, "--clean", "flag", "--format", "quiet")
    first = noisy_file.parent / "out" / "cleaned.parquet"
    once = pl.read_parquet(first)
    scan(first, "--clean", "flag", "--format", "quiet", out=tmp_path / "again")
    assert pl.read_parquet(tmp_path / "again" / "cleaned.parquet").equals(once)
    assert audit(once, merge({"input": {"embedding_col": "emb"}})).cleaned("flag").equals(once)
