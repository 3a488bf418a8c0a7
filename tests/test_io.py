import gzip
import json
from dataclasses import replace
from datetime import date

import numpy as np
import polars as pl
import pytest

from credaudit.errors import DataReadError, InputError, OutputWriteError, UsageError
from credaudit.io import (
    DataFormat,
    _stamp,
    check_out_dir,
    default_out_dir,
    detect_format,
    read_frame,
    read_table,
    write_frame,
    write_outputs,
)
from tests.conftest import write_table

FORMATS = ["data.parquet", "data.jsonl", "data.ndjson", "data.jsonl.gz", "data.csv"]


@pytest.mark.parametrize("name", FORMATS)
def test_each_format_reads_with_order_and_columns_kept(tmp_path, small_frame, name):
    frame = small_frame.drop("emb") if name.endswith(".csv") else small_frame
    path = write_table(frame, tmp_path / name)
    table = read_table(path, id_col="id", embedding_col=None if name.endswith(".csv") else "emb")
    assert table.frame.columns == frame.columns
    assert list(table.row_ids) == frame["id"].to_list()
    assert table.label_values.to_list() == frame["label"].to_list()
    assert table.texts.to_list() == frame["text"].to_list()
    if not name.endswith(".csv"):
        np.testing.assert_allclose(table.embeddings, np.array(frame["emb"].to_list()), rtol=1e-6)


@pytest.mark.parametrize("name", FORMATS)
def test_cleaned_copy_round_trips_in_the_input_format(tmp_path, small_frame, name):
    frame = small_frame.drop("emb")
    path = write_table(frame, tmp_path / name)
    table = read_table(path)
    out = tmp_path / table.format.file_name("cleaned")
    write_frame(table.frame, out, table.format)
    assert out.name.startswith("cleaned.")
    assert out.name.endswith(".gz") == name.endswith(".gz")
    again = read_table(out)
    assert again.frame.equals(table.frame)


def test_directory_of_parquet_files(tmp_path, small_frame):
    folder = tmp_path / "parts"
    folder.mkdir()
    small_frame[:30].write_parquet(folder / "a.parquet")
    small_frame[30:].write_parquet(folder / "b.parquet")
    table = read_table(folder, id_col="id")
    assert table.format == DataFormat("parquet-dir")
    assert list(table.row_ids) == small_frame["id"].to_list()
    # Files in a subdirectory (or a Hive layout) are refused, not left out of the audit unseen.
    (folder / "part=2").mkdir()
    small_frame[:10].write_parquet(folder / "part=2" / "c.parquet")
    with pytest.raises(DataReadError, match=r"holds parquet files in subdirectories \(part=2/c\.parquet\)"):
        read_table(folder, id_col="id")


def test_ids_must_be_present_and_single_values(tmp_path, small_frame):
    ids = small_frame["id"].cast(pl.String).to_list()
    ids[4] = None
    with pytest.raises(InputError, match=r"column 'id' \(--id-col\) in d\.parquet is empty at row 4"):
        read_table(write_table(small_frame.with_columns(pl.Series("id", ids)), tmp_path / "d.parquet"), id_col="id")
    floats = np.arange(60) / 100.0
    floats[2] = np.nan
    with pytest.raises(InputError, match="is empty at row 2"):
        read_table(write_table(small_frame.with_columns(pl.Series("id", floats)), tmp_path / "f.parquet"), id_col="id")
    lists = small_frame.with_columns(pl.concat_list("id", "id").alias("id"))
    with pytest.raises(InputError, match=r"holds List\(String\) values; ids must be single values"):
        read_table(write_table(lists, tmp_path / "l.parquet"), id_col="id")


def test_labels_keep_their_type_and_nulls_can_be_dropped(tmp_path):
    frame = pl.DataFrame({"text": ["a", "b", "c", "d", "e"], "label": [True, False, None, True, False]})
    with pytest.raises(InputError, match=r"column 'label' in d\.parquet has 1 null label\(s\), the first at row 2"):
        read_table(write_table(frame, tmp_path / "d.parquet"))
    table = read_table(tmp_path / "d.parquet", drop_unlabelled=True)
    assert table.label_values.to_list() == [True, False, True, False]
    assert list(table.row_ids) == [0, 1, 3, 4], "row ids stay those of the input"
    assert table.n_dropped_unlabelled == 1
    # Without an id column and with every row kept, the ids are the row numbers, held as a range
    # (a list would hold a Python int per row for the whole run).
    every = read_table(write_table(frame.drop_nulls(), tmp_path / "e.parquet"))
    assert every.row_ids == range(4) and list(every.row_ids) == [0, 1, 2, 3]


def test_several_text_columns_are_joined_and_empty_texts_counted(tmp_path):
    frame = pl.DataFrame({"title": ["t1", None, "t3"], "body": ["b1", None, ""], "label": [0, 1, 0]})
    table = read_table(write_table(frame, tmp_path / "d.parquet"), text_cols=("title", "body"))
    assert table.texts.to_list() == ["t1\nb1", "\n", "t3\n"]
    assert table.n_empty_texts == 1


def test_malformed_jsonl_names_the_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a", "label": 1}\n{"text": "b", "label": 2}\n{"text": "c", label: 3}\n')
    with pytest.raises(DataReadError, match=r"d\.jsonl line 3: invalid JSON"):
        read_table(path)


def test_jsonl_with_blank_lines_is_fine(tmp_path):
    path = tmp_path / "d.jsonl.gz"
    path.write_bytes(
        gzip.compress(b'{"text": "a", "label": 1}\n\n{"text": "b", "label": 2}\n{"text": "c", "label": 1}\n')
    )
    assert read_table(path).label_values.to_list() == [1, 2, 1]


def test_a_gzip_input_of_several_members_reads_whole_and_a_broken_one_is_named(tmp_path):
    path = tmp_path / "d.jsonl.gz"
    body = b'{"text": "a", "label": 1}\n{"text": "b", "label": 2}\n{"text": "c", "label": 1}\n'
    # Members one after another (what `cat a.gz b.gz` makes) are one stream.
    path.write_bytes(gzip.compress(body[:26]) + gzip.compress(body[26:]))
    assert read_table(path).texts.to_list() == ["a", "b", "c"]
    whole = gzip.compress(body)
    broken = {
        "not gzip": body,
        "cut short": whole[:-12],
        "corrupt": whole[:10] + bytes(b ^ 0xFF for b in whole[10:20]) + whole[20:],
    }
    for data in broken.values():
        path.write_bytes(data)
        with pytest.raises(DataReadError, match=r"d\.jsonl\.gz is not a valid gzip file \(.+\)"):
            read_table(path)


def test_duplicate_ids_are_refused(tmp_path, small_frame):
    frame = small_frame.with_columns(pl.lit("same").alias("id"))
    with pytest.raises(InputError, match="is not unique"):
        read_table(write_table(frame, tmp_path / "d.parquet"), id_col="id")


def test_format_detection():
    from pathlib import Path

    with pytest.raises(DataReadError, match="does not exist"):
        detect_format(Path("/nonexistent/x.parquet"))
    assert default_out_dir(Path("some/dir/train.jsonl.gz")) == Path("credaudit-out/train")


def test_outputs_are_all_or_nothing(tmp_path):
    out = tmp_path / "out"

    def broken(path):
        raise OSError(28, "No space left on device")

    with pytest.raises(OutputWriteError, match="No space left on device"):
        write_outputs(out, {"a.txt": lambda p: p.write_text("a"), "b.txt": broken})
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [], "the staging directory is gone too"

    write_outputs(out, {"a.txt": lambda p: p.write_text("old")})
    with pytest.raises(OutputWriteError):
        write_outputs(out, {"a.txt": lambda p: p.write_text("new"), "b.txt": broken})
    assert (out / "a.txt").read_text() == "old", "a failed run leaves earlier outputs untouched"


def test_out_dir_checks(tmp_path, small_frame):
    data = write_table(small_frame, tmp_path / "cleaned.parquet")
    with pytest.raises(UsageError, match="is the input itself"):
        check_out_dir(data, data, ["cleaned.parquet"])
    with pytest.raises(UsageError, match="exists and is not a directory"):
        check_out_dir(data, tmp_path / "other.parquet", ["cleaned.parquet"])
    with pytest.raises(OutputWriteError, match="would overwrite the input"):
        check_out_dir(tmp_path, data, ["cleaned.parquet"])
    with pytest.raises(OutputWriteError, match="not writable"):
        check_out_dir(data / "sub", tmp_path / "other.parquet", ["cleaned.parquet"])
    check_out_dir(tmp_path / "new" / "dir", data, ["cleaned.parquet", "report.json"])


def _vector_parts(tmp_path, frame: pl.DataFrame, bounds: list[tuple[int, int]]):
    folder = tmp_path / "parts"
    folder.mkdir()
    for position, (start, stop) in enumerate(bounds):
        frame.slice(start, stop - start).write_parquet(folder / f"p{position}.parquet", row_group_size=5)
    return folder


def test_a_vector_column_left_in_its_files_reads_as_blocks_and_rows(tmp_path, small_frame):
    # Three files, the middle one all unlabelled, unlabelled rows in the others too; row groups of
    # 5 and blocks of 7, so that blocks straddle row groups and files.
    labels = small_frame["label"].to_list()
    for row in (3, 20, 21, 22, 23, 24, 25, 41):
        labels[row] = None
    frame = small_frame.with_columns(pl.Series("label", labels))
    folder = _vector_parts(tmp_path, frame, [(0, 20), (20, 26), (26, 60)])
    table = read_table(folder, id_col="id", embedding_col="emb", drop_unlabelled=True, vectors_in_files=True)
    labelled = frame.filter(pl.col("label").is_not_null())
    assert table.embeddings is None and table.source is not None
    assert table.frame.columns == ["id", "text", "label"]
    assert list(table.row_ids) == labelled["id"].to_list()
    assert table.source.counts == (19, 0, 33)
    blocks = list(table.source.vector_blocks(block_rows=7))
    assert [len(b) for b in blocks] == [7] * 7 + [3]
    assert all(b.flags.writeable and b.dtype == np.float32 for b in blocks)
    np.testing.assert_array_equal(np.concatenate(blocks), np.array(labelled["emb"].to_list(), dtype=np.float32))
    # The outputs' rows: every column of the audited rows, in order, with the extras beside them.
    extras = pl.DataFrame({"n": np.arange(52)})
    assert table.rows(extras).collect().equals(labelled.with_columns(extras["n"]))
    out = tmp_path / "out"
    write = table.output("cleaned", extras, lambda rows: rows.filter(pl.col("n") % 2 == 0).drop("n"), np.ones(52))[1]
    write(out)
    assert sorted(p.name for p in out.iterdir()) == ["p0.parquet", "p1.parquet", "p2.parquet"]
    written = [pl.read_parquet(out / f"p{i}.parquet") for i in range(3)]
    assert [w.height for w in written] == [10, 0, 16]
    assert pl.concat(written).equals(labelled.filter(pl.Series(np.arange(52) % 2 == 0)))
    assert written[1].schema == frame.schema


@pytest.mark.parametrize(
    ("row", "value", "message"),
    [
        (33, None, r"has no vector at row 30"),
        (33, [1.0, 2.0], r"is ragged: row 30 has 2 values, row 0 has 8"),
        (44, [float("nan")] * 8, r"has a missing or non-finite value at row 41"),
    ],
)
def test_a_bad_vector_read_from_the_files_names_its_row(tmp_path, small_frame, row, value, message):
    # Rows are numbered as the audit numbers them: after the unlabelled rows 3, 4 and 5 are dropped.
    vectors = small_frame["emb"].to_list()
    vectors[row] = value
    labels = [None if i in (3, 4, 5) else v for i, v in enumerate(small_frame["label"].to_list())]
    frame = small_frame.with_columns(pl.Series("emb", vectors), pl.Series("label", labels))
    path = tmp_path / "d.parquet"
    frame.write_parquet(path, row_group_size=5)
    table = read_table(path, embedding_col="emb", drop_unlabelled=True, vectors_in_files=True)
    with pytest.raises(InputError, match=r"column 'emb' \(--embedding-col\) in d\.parquet " + message):
        list(table.source.vector_blocks(block_rows=7))


def test_a_vector_column_is_checked_when_read_and_its_file_must_not_change(tmp_path, small_frame):
    path = write_table(small_frame.with_columns(pl.col("text").alias("words")), tmp_path / "d.parquet")
    with pytest.raises(InputError, match=r"column 'words' \(--embedding-col\) in d\.parquet must hold numeric vectors"):
        read_table(path, embedding_col="words", vectors_in_files=True)
    with pytest.raises(
        InputError,
        match=r"column 'vec' \(--embedding-col\) is not in d\.parquet; columns are: id, text, label, emb, words$",
    ):
        read_table(path, embedding_col="vec", vectors_in_files=True)
    table = read_table(path, embedding_col="emb", vectors_in_files=True)
    write_table(small_frame[:50], path)
    with pytest.raises(DataReadError, match=r"d\.parquet changed while it was being audited"):
        list(table.source.vector_blocks())
    with pytest.raises(DataReadError, match=r"d\.parquet changed while it was being audited"):
        table.output("cleaned", pl.DataFrame(), lambda rows: rows, np.ones(60))[1](tmp_path / "c.parquet")


@pytest.mark.parametrize(
    ("name", "encoding"), [("c.csv", "utf-8"), ("c.jsonl", "utf-8"), ("c.csv.gz", "latin-1"), ("c.jsonl.gz", "utf-8")]
)
def test_a_text_output_written_in_chunks_has_the_bytes_of_one_piece(tmp_path, monkeypatch, small_frame, name, encoding):
    # Chunks of 7 rows (60 rows: 9 chunks, the last short): the same bytes as the whole frame
    # encoded and compressed at once, so the header comes once and gzip's stream is one member.
    frame = small_frame.drop("emb").with_columns(pl.col("text") + " café")
    fmt = DataFormat("jsonl" if "jsonl" in name else "csv", gzip=name.endswith(".gz"), encoding=encoding)
    write_frame(frame, tmp_path / ("whole." + name), fmt)
    monkeypatch.setattr("credaudit.io.TEXT_CHUNK_ROWS", 7)
    write_frame(frame, tmp_path / name, fmt)
    assert (tmp_path / name).read_bytes() == (tmp_path / ("whole." + name)).read_bytes()
    whole = (frame.write_ndjson() if "jsonl" in name else frame.write_csv()).encode(encoding)
    assert (gzip.decompress if fmt.gzip else bytes)((tmp_path / name).read_bytes()) == whole
    assert read_table(tmp_path / name, id_col="id", encoding=encoding).frame.equals(frame)
    write_frame(frame[:0], tmp_path / ("empty." + name), fmt)
    assert (gzip.decompress if fmt.gzip else bytes)((tmp_path / ("empty." + name)).read_bytes()) == (
        b"" if "jsonl" in name else b"id,text,label\n"
    )


def test_the_files_of_a_directory_must_agree_on_the_vector_column(tmp_path, small_frame):
    folder = tmp_path / "parts"
    folder.mkdir()
    small_frame[:30].write_parquet(folder / "a.parquet")
    small_frame[30:].with_columns(pl.col("emb").cast(pl.List(pl.Float32))).write_parquet(folder / "b.parquet")
    message = r"do not share one schema: column 'emb' is List\(Float64\) in a\.parquet, List\(Float32\) in b\.parquet"
    with pytest.raises(DataReadError, match=message):
        read_table(folder, embedding_col="emb", vectors_in_files=True)
    small_frame[30:].drop("emb").write_parquet(folder / "b.parquet")
    with pytest.raises(DataReadError, match=r"column 'emb' is List\(Float\d+\) in a\.parquet, no such column in b"):
        read_table(folder, embedding_col="emb", vectors_in_files=True)


def test_a_corrupt_or_changed_file_is_a_data_read_error(tmp_path, small_frame):
    import pyarrow.parquet as pq

    path = write_table(small_frame, tmp_path / "d.parquet")
    table = read_table(path, embedding_col="emb", vectors_in_files=True)
    extras = pl.DataFrame({"n": np.arange(60)})
    assert table.rows(extras).collect().height == 60
    with pytest.raises(ValueError, match="59 rows of extra columns for 60 audited rows"):
        table.rows(extras[:59])
    # The vector column's first data page zeroed: the file keeps its size, not its stamp.
    start = pq.read_metadata(path).row_group(0).column(3).data_page_offset
    data = bytearray(path.read_bytes())
    data[start : start + 200] = bytes(200)
    path.write_bytes(bytes(data))
    with pytest.raises(DataReadError, match=r"d\.parquet changed while it was being audited"):
        table.rows(extras)
    stale = replace(table.source, stamps=(_stamp(path),))
    with pytest.raises(DataReadError, match=r"d\.parquet is not a readable parquet file"):
        list(stale.vector_blocks())
    path.unlink()
    with pytest.raises(DataReadError, match=r"d\.parquet changed while it was being audited"):
        list(table.source.vector_blocks())


def test_a_float_label_column_with_nan_drops_the_same_rows_from_the_vectors_and_the_outputs(tmp_path, small_frame):
    labels = [float("nan") if i in (0, 7) else None if i == 8 else float(i % 3) for i in range(60)]
    frame = small_frame.with_columns(pl.Series("label", labels))
    path = write_table(frame, tmp_path / "d.parquet")
    table = read_table(path, embedding_col="emb", drop_unlabelled=True, vectors_in_files=True)
    kept = np.setdiff1d(np.arange(60), [0, 7, 8])
    assert list(table.row_ids) == kept.tolist()
    np.testing.assert_array_equal(
        np.concatenate(list(table.source.vector_blocks(block_rows=16))),
        np.array(frame["emb"].to_list(), dtype=np.float32)[kept],
    )
    assert table.rows().collect().equals(frame[kept.tolist()])


@pytest.mark.parametrize(
    "column",
    [
        pl.Series(["b", "a", "c", "a", "b"]),
        pl.Series([3, 1, 2, 1, 3]),
        pl.Series([2.5, 0.5, 2.5, 1.0, 0.5]),
        pl.Series([True, False, True, True, False]),
        pl.Series(["x", "y", "x", "z", "y"], dtype=pl.Categorical),
        pl.Series([date(2024, 1, 2), date(2023, 5, 1), date(2024, 1, 2), date(2023, 5, 1), date(2022, 1, 1)]),
    ],
)
def test_a_label_column_is_coded_as_its_values_are(column):
    # The column is coded by polars (its distinct values, then a replace), its values by a Python
    # loop: the same codec and the same codes.
    from credaudit.labels import LabelCodec

    codec = LabelCodec.fit(column)
    assert codec == LabelCodec.fit(column.to_list())
    np.testing.assert_array_equal(codec.encode(column), codec.encode(column.to_list()))
    assert [codec.values[c] for c in codec.encode(column)] == column.to_list()


@pytest.mark.parametrize("name", ["big.csv", "big.jsonl", "big.csv.gz"])
def test_a_utf8_file_is_checked_piece_by_piece_without_decoding_it_whole(tmp_path, name):
    # About 14-20 MB: a character split between two 1 MiB pieces is fine, a bad byte far down names
    # its line, and the check holds no string of the whole file beside its bytes.
    import tracemalloc

    n = 300_000
    for pad in range(64):  # shift the rows until the first 1 MiB read ends inside a character
        texts = [f"{'p' * pad * (i == 0)}row {i} café naïve 日本 {'x' * (i % 17)}" for i in range(n)]
        frame = pl.DataFrame({"id": np.arange(n), "text": texts}).with_columns(label=pl.col("id") % 3)
        body = (frame.write_ndjson() if "jsonl" in name else frame.write_csv()).encode()
        if 0x80 <= body[1 << 20] < 0xC0:
            break
    assert 0x80 <= body[1 << 20] < 0xC0
    path = tmp_path / name
    path.write_bytes(gzip.compress(body) if name.endswith(".gz") else body)
    fmt = detect_format(path)
    tracemalloc.start()
    read = read_frame(path, fmt)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert read.equals(frame)
    # The bytes, and a piece's string; decoding the file whole added up to 3 bytes per byte (UCS-2/4),
    # and checking it for emptiness a stripped copy. A compressed file is decompressed into one
    # buffer (gzip.decompress held about three times the bytes: the compressed file, zlib's growing
    # output and the joined result).
    assert len(body) > 12e6
    assert peak < len(body) * (1.25 if name.endswith(".gz") else 1) + 8e6
    lines = body.split(b"\n")
    lines[31_000] = lines[31_000].replace(b"caf\xc3\xa9", b"caf\xe9")  # latin-1, not UTF-8
    bad = b"\n".join(lines)
    path.write_bytes(gzip.compress(bad) if name.endswith(".gz") else bad)
    with pytest.raises(DataReadError, match=r"line 31001: byte 0xe9 is not valid utf-8 \(name the file"):
        read_frame(path, fmt)
    cut = body.rstrip(b"\n") + "\nend 日".encode()[:-1]  # the file stops inside a character
    path.write_bytes(gzip.compress(cut) if name.endswith(".gz") else cut)
    with pytest.raises(DataReadError, match=f"line {n + 2 - ('jsonl' in name)}: byte 0xe6"):
        read_frame(path, fmt)


def test_csv_values_are_written_back_as_the_file_spells_them(tmp_path):
    # Leading zeros, trailing zeros and TRUE/False would be rewritten by their inferred types
    # (13, 1.5, true) in every copy the tool writes; such columns stay text. Columns that write
    # back unchanged keep their numbers.
    from tests.helpers import invoke

    words = ["card", "pin", "transfer", "refund", "cash", "fee", "limit", "app"]
    rows = ["id,text,label,score,flag,count"]
    for i in range(60):
        text = " ".join(words[(i + j) % 8] for j in range(3)) + f" {['alpha', 'beta', 'gamma'][i % 3]}"
        score = "1.50" if i % 2 else "2"
        rows.append(f"{i:05d},{text},0{i % 3},{score},{'TRUE' if i % 2 else 'False'},{i}")
    path = tmp_path / "d.csv"
    path.write_text("\n".join(rows) + "\n")
    frame = read_frame(path, detect_format(path))
    assert frame.schema["count"] == pl.Int64
    assert all(frame.schema[c] == pl.String for c in ("id", "label", "score", "flag"))
    out = tmp_path / "out"
    invoke(["scan", path, "--id-col", "id", "--encoder", "tfidf", "--no-cache", "--out", out, "--clean", "flag"])
    cleaned = (out / "cleaned.csv").read_text().splitlines()
    assert cleaned[0].startswith("id,text,label,score,flag,count")
    assert [line.split(",")[:6] for line in cleaned[1:]] == [line.split(",") for line in rows[1:]]
    report = json.loads((out / "report.json").read_text())
    assert sorted(c["label"] for c in report["classes"]) == ["00", "01", "02"]
