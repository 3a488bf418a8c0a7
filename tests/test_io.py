import gzip

import numpy as np
import polars as pl
import pytest

from credaudit.errors import DataReadError, InputError, OutputWriteError, UsageError
from credaudit.io import (
    DataFormat,
    check_out_dir,
    default_out_dir,
    detect_format,
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
    assert table.row_ids == frame["id"].to_list()
    assert table.label_values == frame["label"].to_list()
    assert table.texts == frame["text"].to_list()
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
    assert table.row_ids == small_frame["id"].to_list()


def test_labels_keep_their_type_and_nulls_can_be_dropped(tmp_path):
    frame = pl.DataFrame({"text": ["a", "b", "c", "d", "e"], "label": [True, False, None, True, False]})
    with pytest.raises(InputError, match=r"column 'label' in d\.parquet has 1 null label\(s\), the first at row 2"):
        read_table(write_table(frame, tmp_path / "d.parquet"))
    table = read_table(tmp_path / "d.parquet", drop_unlabelled=True)
    assert table.label_values == [True, False, True, False]
    assert table.row_ids == [0, 1, 3, 4], "row ids stay those of the input"
    assert table.n_dropped_unlabelled == 1


def test_several_text_columns_are_joined_and_empty_texts_counted(tmp_path):
    frame = pl.DataFrame({"title": ["t1", None, "t3"], "body": ["b1", None, ""], "label": [0, 1, 0]})
    table = read_table(write_table(frame, tmp_path / "d.parquet"), text_cols=("title", "body"))
    assert table.texts == ["t1\nb1", "\n", "t3\n"]
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
    assert read_table(path).label_values == [1, 2, 1]


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
