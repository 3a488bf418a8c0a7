"""Every bad input of the SPEC: exit code, one-sentence message, no traceback, no outputs, input untouched."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from credaudit.errors import InputError
from credaudit.io import read_table
from tests.conftest import write_table
from tests.helpers import invoke


def good(tmp_path: Path, small_frame: pl.DataFrame) -> Path:
    return write_table(small_frame, tmp_path / "data.parquet")


def make(tmp_path: Path, small_frame: pl.DataFrame, case: str) -> tuple[Path, list[str]]:
    """(input path, extra args) for each case."""
    emb = ["--embedding-col", "emb"]
    if case == "missing file":
        return tmp_path / "nope.parquet", emb
    if case == "unknown extension":
        path = tmp_path / "data.txt"
        path.write_text("text,label\n")
        return path, emb
    if case == "corrupt parquet":
        path = tmp_path / "data.parquet"
        path.write_bytes(b"PAR1 this is not parquet")
        return path, emb
    if case == "malformed jsonl":
        path = tmp_path / "data.jsonl"
        path.write_text('{"text": "a", "label": 1, "emb": [1, 0]}\n{"text": "b", "label": 2, "emb": [0, 1]}\n{oops}\n')
        return path, emb
    if case == "missing text column":
        return good(tmp_path, small_frame), ["--text-col", "body"]
    if case == "missing label column":
        return good(tmp_path, small_frame), [*emb, "--label-col", "intent"]
    if case == "empty file":
        path = tmp_path / "data.csv"
        path.write_text("")
        return path, []
    if case == "all labels null":
        frame = small_frame.with_columns(pl.lit(None, dtype=pl.String).alias("label"))
        return write_table(frame, tmp_path / "data.parquet"), emb
    if case == "one class":
        frame = small_frame.with_columns(pl.lit("billing").alias("label"))
        return write_table(frame, tmp_path / "data.parquet"), emb
    if case == "ragged vectors":
        frame = small_frame.with_columns(
            pl.when(pl.int_range(pl.len()) == 7).then(pl.col("emb").list.head(5)).otherwise(pl.col("emb")).alias("emb")
        )
        return write_table(frame, tmp_path / "data.parquet"), emb
    if case == "non-numeric vectors":
        frame = small_frame.with_columns(pl.col("emb").list.eval(pl.element().cast(pl.String)))
        return write_table(frame, tmp_path / "data.parquet"), emb
    if case == "unknown encoder":
        return good(tmp_path, small_frame), ["--encoder", "no-such-encoder"]
    if case == "model path that is not a model":
        folder = tmp_path / "not-a-model"
        folder.mkdir()
        (folder / "notes.txt").write_text("hi")
        return good(tmp_path, small_frame), ["--encoder", str(folder)]
    if case == "out is the input":
        path = good(tmp_path, small_frame)
        return path, [*emb, "--out", str(path)]
    if case == "out is a file":
        path = good(tmp_path, small_frame)
        (tmp_path / "notes.txt").write_text("x")
        return path, [*emb, "--out", str(tmp_path / "notes.txt")]
    if case == "unwritable out":
        path = good(tmp_path, small_frame)
        blocker = tmp_path / "file"
        blocker.write_text("x")
        return path, [*emb, "--out", str(blocker / "out")]
    if case == "bad config file":
        cfg = tmp_path / "ci.toml"
        cfg.write_text("[detect]\nk = 0\n")
        return good(tmp_path, small_frame), [*emb, "--config", str(cfg)]
    if case == "bad flag value":
        return good(tmp_path, small_frame), [*emb, "--k", "0"]
    if case == "unknown flag":
        return good(tmp_path, small_frame), [*emb, "--kk", "3"]
    if case == "empty out":  # --out "$DIR" with the variable unset: never the current directory
        return good(tmp_path, small_frame), [*emb, "--out", ""]
    if case == "NaN gate":  # NaN compares false with every bound: the gate would always pass
        return good(tmp_path, small_frame), [*emb, "--max-noise-rate", "nan"]
    if case == "config not UTF-8":
        cfg = tmp_path / "ci.toml"
        cfg.write_bytes(b"\xff\xfe[detect]\n")
        return good(tmp_path, small_frame), [*emb, "--config", str(cfg)]
    if case == "ray address, local engine":
        return good(tmp_path, small_frame), [*emb, "--ray-address", "10.0.0.9:6379"]
    if case == "label order repeats":
        return good(tmp_path, small_frame), [*emb, "--label-order", "billing,refund,refund"]
    if case == "empty label order":
        return good(tmp_path, small_frame), [*emb, "--label-order", " , "]
    if case == "null id":
        frame = small_frame.with_columns(pl.when(pl.int_range(pl.len()) == 4).then(None).otherwise("id").alias("id"))
        return write_table(frame, tmp_path / "data.parquet"), [*emb, "--id-col", "id"]
    raise ValueError(case)


CASES = [
    ("missing file", 3, r"nope\.parquet does not exist"),
    ("unknown extension", 3, r"data\.txt has an unknown extension; credaudit reads \.parquet"),
    ("corrupt parquet", 3, r"data\.parquet is not a readable parquet file"),
    ("malformed jsonl", 3, r"data\.jsonl line 3: invalid JSON"),
    (
        "missing text column",
        3,
        r"column 'body' \(--text-col\) is not in data\.parquet; columns are: id, text, label, emb",
    ),
    (
        "missing label column",
        3,
        r"column 'intent' \(--label-col\) is not in data\.parquet; columns are: id, text, label, emb",
    ),
    ("empty file", 3, r"data\.csv is empty"),
    ("all labels null", 3, r"every label in column 'label' of data\.parquet is null"),
    (
        "one class",
        3,
        r"all 60 labelled rows of data\.parquet have the label 'billing'; an audit needs at least two classes",
    ),
    (
        "ragged vectors",
        3,
        r"column 'emb' \(--embedding-col\) in data\.parquet is ragged: row 7 has 5 values, row 0 has 8",
    ),
    (
        "non-numeric vectors",
        3,
        r"column 'emb' \(--embedding-col\) in data\.parquet must hold numeric vectors; found vectors of String",
    ),
    (
        "unknown encoder",
        2,
        r"--encoder 'no-such-encoder' is neither a known encoder \(minilm.*\) nor an existing model directory",
    ),
    ("model path that is not a model", 3, r"not-a-model is not a sentence-transformers model directory"),
    ("out is the input", 2, r"--out .*data\.parquet is the input itself"),
    ("out is a file", 2, r"--out .*notes\.txt exists and is not a directory"),
    ("unwritable out", 3, r"--out .*file/out is not writable"),
    ("bad config file", 2, r"detect\.k in .*ci\.toml must be an int >= 1; got 0"),
    ("bad flag value", 2, r"--k must be an int >= 1; got 0"),
    ("unknown flag", 2, r"No such option: --kk"),
    ("empty out", 2, r"Invalid value for '--out': is empty; name a path"),
    ("NaN gate", 2, r"--max-noise-rate must be a finite number in \[0, 1\]; got nan"),
    ("config not UTF-8", 2, r"config file .*ci\.toml is not UTF-8 text"),
    ("ray address, local engine", 2, r"--ray-address 10\.0\.0\.9:6379 applies to --engine ray; the engine is local"),
    ("label order repeats", 2, r"--label-order must list at least two distinct values, lowest first"),
    ("empty label order", 2, r"--label-order must list at least two distinct values"),
    ("null id", 3, r"column 'id' \(--id-col\) in data\.parquet is empty at row 4; every row needs an id"),
]


def snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize("case,code,message", CASES, ids=[c[0] for c in CASES])
def test_bad_input(tmp_path, small_frame, monkeypatch, case, code, message):
    monkeypatch.chdir(tmp_path)
    data, extra = make(tmp_path, small_frame, case)
    before = snapshot(tmp_path)
    result = invoke(["scan", data, *extra], expect_exit=code)
    assert pytest.importorskip("re").search(message, result.stderr), result.stderr
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    if code == 3:
        lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("credaudit: error: "), result.stderr
    assert snapshot(tmp_path) == before, "no output written, input untouched"
    assert not (tmp_path / "credaudit-out").exists()


def test_debug_shows_the_traceback(tmp_path, small_frame):
    from typer.testing import CliRunner

    from credaudit.cli import app
    from credaudit.errors import DataReadError

    result = CliRunner().invoke(app, ["scan", str(tmp_path / "nope.parquet"), "--debug"])
    assert isinstance(result.exception, DataReadError)


def test_text_in_another_encoding_is_never_altered(tmp_path, small_frame):
    frame = small_frame.with_columns(pl.format("café n°{}", pl.int_range(pl.len())).alias("text"))
    lines = [
        json.dumps({"text": t, "label": lab, "emb": e}, ensure_ascii=False)
        for t, lab, e in zip(frame["text"], frame["label"], frame["emb"].to_list(), strict=True)
    ]
    path = tmp_path / "latin.jsonl"
    path.write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    out = tmp_path / "out"
    args = ["scan", path, "--embedding-col", "emb", "--out", out, "--no-html", "--format", "quiet", "--clean", "flag"]
    result = invoke(args, expect_exit=3)
    assert "line 1" in result.stderr and "--encoding" in result.stderr
    assert not out.exists()
    invoke([*args, "--encoding", "latin-1"])
    cleaned = (out / "cleaned.jsonl").read_bytes()
    assert b"\xef\xbf\xbd" not in cleaned, "no replacement characters"
    assert cleaned.decode("latin-1").count("café n°") == frame.height
    # The same text as CSV: the same message, naming the line (the header is line 1).
    csv = tmp_path / "latin.csv"
    csv.write_bytes(
        ("text,label\n" + "".join(f"{t},{lab}\n" for t, lab in zip(frame["text"], frame["label"], strict=True))).encode(
            "latin-1"
        )
    )
    assert "line 2" in invoke(["scan", csv, "--out", tmp_path / "o2"], expect_exit=3).stderr
    invoke(["scan", path, "--encoding", "no-such-codec", "--out", tmp_path / "o3"], expect_exit=2)


@pytest.mark.parametrize("dtype", [pl.Float32, pl.Float64])
@pytest.mark.parametrize("bad", [None, float("nan"), float("inf")])
def test_a_missing_or_non_finite_value_names_its_row(tmp_path, bad, dtype):
    vectors = np.random.default_rng(0).normal(size=(30, 4)).tolist()
    vectors[11][2] = bad
    frame = pl.DataFrame({"text": [f"t{i}" for i in range(30)], "label": ["a", "b"] * 15})
    frame = frame.with_columns(pl.Series("emb", vectors, dtype=pl.List(dtype)))
    path = write_table(frame, tmp_path / "data.parquet")
    with pytest.raises(
        InputError,
        match=r"column 'emb' \(--embedding-col\) in data\.parquet has a missing or non-finite value at row 11",
    ):
        read_table(path, embedding_col="emb")


def test_float32_vectors_are_read_without_a_copy(tmp_path):
    x = np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32)
    frame = pl.DataFrame(
        {"text": ["t"] * 50, "label": ["a", "b"] * 25, "emb": pl.Series(x.tolist(), dtype=pl.Array(pl.Float32, 8))}
    )
    table = read_table(write_table(frame, tmp_path / "data.parquet"), embedding_col="emb")
    np.testing.assert_array_equal(table.embeddings, x)
    # A view of the frame's own column (which the cleaned copy writes back), not a second copy.
    column = table.frame.get_column("emb").to_arrow().flatten().to_numpy()
    assert np.shares_memory(table.embeddings, column)
