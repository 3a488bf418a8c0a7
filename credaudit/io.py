"""Reading the user's data and writing every output: the only file I/O in credaudit.

Everything read is validated here, once, with messages that name the file, the column and the row.
Outputs are staged in a temporary directory beside the output directory and moved into place only
when all of them are written, so a failed run leaves no half-written file.
"""

from __future__ import annotations

import codecs
import gzip
import hashlib
import io as _io
import json
import os
import shutil
import tempfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from credaudit.errors import (
    DataReadError,
    EmptyDataError,
    InputError,
    MissingColumnError,
    OutputWriteError,
    SingleClassError,
    UsageError,
)

FORMATS_TEXT = ".parquet, .jsonl or .ndjson (optionally .gz), .csv, or a directory of .parquet files"
MIN_ROWS = 3  # a row and two neighbours: the smallest consensus triple


@dataclass(frozen=True)
class DataFormat:
    """How a dataset is stored: ``kind`` is parquet, parquet-dir, jsonl or csv; ``gzip`` whether compressed;
    ``encoding`` the text encoding of a CSV or JSONL file (the cleaned copy is written in it too)."""

    kind: str
    gzip: bool = False
    encoding: str = "utf-8"

    def parts_name(self, stem: str) -> str:
        """Like :meth:`file_name`, but a directory input's output is a directory of parts: ``stem`` itself."""
        return stem if self.kind == "parquet-dir" else self.file_name(stem)

    def file_name(self, stem: str) -> str:
        """``stem`` with the input format's extension: ``cleaned.csv``, ``selected.jsonl.gz``."""
        ext = {"parquet": ".parquet", "parquet-dir": ".parquet", "jsonl": ".jsonl", "csv": ".csv"}[self.kind]
        return stem + ext + (".gz" if self.gzip else "")


@dataclass(frozen=True)
class Parts:
    """The files of a parquet-directory input, and which of them each row of a frame came from.

    Attributes
    ----------
    names : tuple of str
        The input's .parquet file names, in the order they were read (name order).
    index : ndarray of shape (N,), dtype int32
        Per row, its file's position in ``names``.
    """

    names: tuple[str, ...]
    index: np.ndarray

    def subset(self, keep: np.ndarray) -> Parts:
        """The parts of the rows ``keep`` (a boolean mask over the rows) selects."""
        return Parts(self.names, self.index[np.asarray(keep, dtype=bool)])


def kept_parts(parts: Parts | None, keep: np.ndarray) -> Parts | None:
    """``parts`` of the rows ``keep`` selects (an output's rows); None for an input that is not a directory."""
    return None if parts is None else parts.subset(keep)


def parquet_parts(path: Path, fmt: DataFormat) -> Parts | None:
    """Which file of the parquet directory ``path`` each row of :func:`read_frame`'s frame came from
    (the row counts are read from the files' footers, not their data); None for other formats."""
    import pyarrow.parquet as pq

    if fmt.kind != "parquet-dir":
        return None
    files = _parquet_files(path)
    counts = [pq.read_metadata(f).num_rows for f in files]
    return Parts(tuple(f.name for f in files), np.repeat(np.arange(len(files), dtype=np.int32), counts))


def _parquet_files(path: Path) -> list[Path]:
    """The .parquet files directly in the directory ``path``, by name. Files further down (a Hive
    layout ``part=1/...``, or ``sub/b.parquet``) are refused rather than left out of the audit
    unseen: the outputs are written file by file, named after the input files."""
    nested = next((p for p in path.rglob("*.parquet") if p.parent != path and p.is_file()), None)
    if nested is not None:
        raise DataReadError(
            f"directory {path} holds parquet files in subdirectories ({nested.relative_to(path)}); credaudit "
            "reads the .parquet files directly in the directory given: name each directory, or move the files up"
        )
    return sorted(p for p in path.iterdir() if p.suffix == ".parquet" and p.is_file())


@dataclass(frozen=True)
class Table:
    """A validated dataset, ready for the audit.

    Attributes
    ----------
    path : Path
        The input as given.
    format : DataFormat
    frame : polars.DataFrame
        Every input column, rows in input order (minus unlabelled rows if they were dropped);
        without the vector column when it was left in its files (``source``).
    texts : polars.Series of str, or None
        Per row, the text columns joined with a newline (null -> ""); None when no text column
        exists (precomputed embeddings only). Arrow strings, not a Python list (a million short
        texts took 114 MB as a list, 57 MB as a column).
    label_values : polars.Series
        Per row, the label as the user wrote it: the frame's label column, not a copy (a Python
        list of a million string labels held 68 MB beside it).
    row_ids : polars.Series or range
        Per row, the ``--id-col`` value (the frame's id column) or the 0-based input row number (a
        ``range`` when no row was dropped).
    embeddings : ndarray of shape (N, d), dtype float32, or None
        From ``--embedding-col``: for a float32 column a read-only view of ``frame``'s buffer,
        otherwise a float32 copy (which the audit normalises in place). On an engine other than
        the local one the audit keeps the vectors where that engine keeps them, and the table it
        returns has None here. None too when the column is left in its files (``source``).
    n_empty_texts : int
        Rows whose text is null or empty.
    n_dropped_unlabelled : int
        Rows removed by ``--drop-unlabelled``.
    sha256 : str
        Of the input file (for a directory: of its files' hashes in name order).
    text_cols : tuple of str
        The text columns found and used.
    parts : Parts or None
        For a directory of parquet files: which file each row came from (None otherwise).
    source : ParquetSource or None
        A parquet input whose vector column was left in its files (``read_table(...,
        vectors_in_files=True)``): ``frame`` holds every other column, and :meth:`rows` re-reads
        them all.
    """

    path: Path
    format: DataFormat
    frame: pl.DataFrame
    texts: pl.Series | None
    label_values: pl.Series
    row_ids: pl.Series | range
    embeddings: np.ndarray | None
    n_empty_texts: int
    n_dropped_unlabelled: int
    sha256: str
    text_cols: tuple[str, ...]
    parts: Parts | None = None
    source: ParquetSource | None = None

    @property
    def n_rows(self) -> int:
        return self.frame.height

    def rows(self, extras: pl.DataFrame | None = None) -> pl.LazyFrame:
        """Every input column of the audited rows, in input order, with ``extras`` (one value per
        row) beside them: a plan (see :func:`input_rows`)."""
        return input_rows(self.frame, self.source, extras)

    def output(
        self,
        stem: str,
        extras: pl.DataFrame,
        transform: Callable[[pl.LazyFrame], pl.LazyFrame],
        kept: np.ndarray,
    ) -> tuple[str, Callable[[Path], None]]:
        """(output name, writer) of ``transform(self.rows(extras))``: see :func:`rows_output`."""
        return rows_output(stem, self.frame, self.source, self.format, self.parts, extras, transform, kept)


@dataclass(frozen=True, eq=False)
class ParquetSource:
    """A parquet input's vector column, left in its files: read block by block for the audit, and
    re-read with every other column for the outputs that carry the input's rows.

    Held in the frame, the column stayed in memory for the whole run (1.5 GB per million 384-d
    rows; on Ray, on the driver), beside the unit vectors the audit reads.

    Attributes
    ----------
    files : tuple of Path
        The input's parquet files, in the order read.
    stamps : tuple of tuple of int
        Each file's size, inode, modification and change times before it was read; a file
        changed since is refused.
    counts : tuple of int
        Audited rows per file.
    labelled : ndarray of shape (rows in the files,), dtype bool, or None
        Which of the files' rows are audited (``--drop-unlabelled``); None: all.
    label_col : str
    label_dtype : polars.DataType
    vector_col : str
    where : str
        The column and file, for messages.
    """

    files: tuple[Path, ...]
    stamps: tuple[tuple[int, ...], ...]
    counts: tuple[int, ...]
    labelled: np.ndarray | None
    label_col: str
    label_dtype: pl.DataType
    vector_col: str
    where: str

    def check_unchanged(self, file: int | None = None) -> None:
        """Raise DataReadError if a file (every file, or ``files[file]``) changed since it was read
        (its rows would no longer match)."""
        for position, (path, stamp) in enumerate(zip(self.files, self.stamps, strict=True)):
            if file in (None, position) and _stamp(path) != stamp:
                raise DataReadError(f"{path} changed while it was being audited; run the audit again")

    def vector_blocks(self, block_rows: int | None = None) -> Iterator[np.ndarray]:
        """The audited rows' vectors, in row order, as writable float32 blocks of ``block_rows``
        rows (the last one shorter; default ``credaudit.engine.BLOCK_ROWS``), validated as they
        are read: an InputError names the first bad row, as :func:`read_table` does for a column
        read whole."""
        from credaudit.engine import BLOCK_ROWS

        block_rows = block_rows or BLOCK_ROWS
        self.check_unchanged()
        dim = block = None
        filled = row = 0
        file_row = 0  # rows of the files read so far, audited or not
        for path in self.files:
            for batch in self._batches(path, block_rows):
                series = pl.from_arrow(batch.column(0))
                if self.labelled is not None:
                    series = series.filter(pl.Series(self.labelled[file_row : file_row + batch.num_rows]))
                file_row += batch.num_rows
                if not len(series):
                    continue
                values, dim = _vector_values(series, self.where, row, dim)
                row += len(values)
                start = 0
                while start < len(values):
                    if block is None:
                        block, filled = np.empty((block_rows, dim), dtype=np.float32), 0
                    take = min(block_rows - filled, len(values) - start)
                    block[filled : filled + take] = values[start : start + take]
                    filled, start = filled + take, start + take
                    if filled == block_rows:
                        yield block
                        block = None
        if block is not None:
            yield block[:filled]

    def _batches(self, path: Path, block_rows: int) -> Iterator[Any]:
        """The vector column of ``path`` in record batches; a file that cannot be read is a DataReadError."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            # pre_buffer=False: buffering whole row groups ahead doubled the peak (3.6 GB against
            # 2.2 GB for a million 384-d rows read into one array).
            yield from pq.ParquetFile(path, pre_buffer=False).iter_batches(
                batch_size=block_rows, columns=[self.vector_col]
            )
        except (OSError, pa.ArrowException, pl.exceptions.PolarsError) as exc:
            raise DataReadError(f"{path} is not a readable parquet file ({_first_line(exc)})") from None

    def rows(self, extras: pl.DataFrame | None = None, file: int | None = None) -> pl.LazyFrame:
        """A scan of the audited rows (of every file, or of ``files[file]``), every column, with
        ``extras`` beside them (one row per audited row of the scan)."""
        self.check_unchanged(file)
        expected = sum(self.counts) if file is None else self.counts[file]
        if extras is not None and extras.height != expected:
            raise ValueError(f"{extras.height} rows of extra columns for {expected} audited rows")
        files = list(self.files) if file is None else [self.files[file]]
        plan = pl.scan_parquet(files, hive_partitioning=False)
        if self.labelled is not None:
            plan = plan.filter(~_unlabelled(self.label_col, self.label_dtype))
        if extras is not None and extras.width:
            plan = pl.concat([plan, extras.lazy()], how="horizontal")
        return plan

    def write(
        self,
        path: Path,
        extras: pl.DataFrame,
        transform: Callable[[pl.LazyFrame], pl.LazyFrame],
        *,
        by_file: bool,
    ) -> None:
        """Stream ``transform(self.rows(extras))`` into the parquet file ``path``, or with
        ``by_file`` into the directory ``path``, one file per input file under its name (each
        scan checks its files are unchanged)."""
        if not by_file:
            transform(self.rows(extras)).sink_parquet(path, row_group_size=SINK_ROW_GROUP)
            return
        path.mkdir()
        start = 0
        for position, (file, count) in enumerate(zip(self.files, self.counts, strict=True)):
            plan = transform(self.rows(extras.slice(start, count), file=position))
            plan.sink_parquet(path / file.name, row_group_size=SINK_ROW_GROUP)
            start += count


def parquet_source(
    path: Path,
    fmt: DataFormat,
    vector_col: str,
    label_col: str,
    label_dtype: pl.DataType,
    labelled: np.ndarray | None,
    name: str,
    stamps: dict[Path, tuple[int, ...]],
    schema: dict[str, pl.DataType],
    parts: Parts | None,
    n_rows: int,
) -> ParquetSource:
    """The :class:`ParquetSource` of a parquet file or directory, its vector column's type checked
    (the same in every file). ``stamps``: :func:`_stamps` of ``path`` before it was read;
    ``schema``: its (first) file's columns; ``parts``, ``n_rows``: the audited rows' files and count."""
    files = (path,) if fmt.kind == "parquet" else tuple(_parquet_files(path))
    where = f"column '{vector_col}' (--embedding-col) in {name}"
    dtype = schema[vector_col]
    _check_vector_type(dtype, where)
    for file in files[1:]:
        # read_frame compared the other columns; this one was left out of that.
        other = pl.read_parquet_schema(file).get(vector_col)
        if other != dtype:
            found = "no such column" if other is None else other
            raise DataReadError(
                f"the parquet files in {path} do not share one schema: column '{vector_col}' is {dtype} in "
                f"{files[0].name}, {found} in {file.name}"
            )
    if any(stamps.get(file) != _stamp(file) for file in files):
        raise DataReadError(f"{path} changed while it was being read; run the audit again")
    counts = [n_rows] if parts is None else np.bincount(parts.index, minlength=len(files))
    return ParquetSource(
        files=files,
        stamps=tuple(stamps[f] for f in files),
        counts=tuple(int(c) for c in counts),
        labelled=labelled,
        label_col=label_col,
        label_dtype=label_dtype,
        vector_col=vector_col,
        where=where,
    )


def _parquet_schema(path: Path, fmt: DataFormat) -> dict[str, pl.DataType]:
    """The columns of a parquet file, or of a directory's first file (read_frame checked they agree)."""
    return dict(pl.read_parquet_schema(path if fmt.kind == "parquet" else _parquet_files(path)[0]))


def _stamp(path: Path) -> tuple[int, ...]:
    """What changes when a file is rewritten: size, inode, modification and change times (a
    missing file: an empty stamp)."""
    try:
        stat = path.stat()
    except OSError:
        return ()
    return stat.st_size, stat.st_ino, stat.st_mtime_ns, stat.st_ctime_ns


def _stamps(path: Path) -> dict[Path, tuple[int, ...]]:
    """:func:`_stamp` of a parquet file, or of each parquet file of a directory."""
    if path.is_dir():
        return {file: _stamp(file) for file in _parquet_files(path)}
    return {path: _stamp(path)} if path.is_file() else {}


def _unlabelled(label_col: str, dtype: pl.DataType) -> pl.Expr:
    """True where a row has no label: null, or NaN in a float column (what --drop-unlabelled drops)."""
    missing = pl.col(label_col).is_null()
    return missing | pl.col(label_col).is_nan() if dtype.is_float() else missing


def input_rows(frame: pl.DataFrame, source: ParquetSource | None, extras: pl.DataFrame | None = None) -> pl.LazyFrame:
    """Every input column of the audited rows, in input order, with ``extras`` (one value per row)
    beside them, as a plan: over ``frame`` (its buffers shared, not copied), or with a ``source``
    a scan of its files, so that a parquet output streams it to disk."""
    if source is not None:
        return source.rows(extras)
    return (frame if extras is None or not extras.width else frame.hstack(extras)).lazy()


def rows_output(
    stem: str,
    frame: pl.DataFrame,
    source: ParquetSource | None,
    fmt: DataFormat,
    parts: Parts | None,
    extras: pl.DataFrame,
    transform: Callable[[pl.LazyFrame], pl.LazyFrame],
    kept: np.ndarray,
) -> tuple[str, Callable[[Path], None]]:
    """(output name, writer) of an output that carries the input's rows: ``transform`` (filters,
    replaced columns) of :func:`input_rows`, which keeps the input rows ``kept`` (a boolean mask
    over the audited rows). Written as :func:`frame_output` writes; with a ``source`` streamed
    from its files, file by file for a directory."""
    if source is None:
        return frame_output(stem, transform(input_rows(frame, None, extras)), kept, fmt, parts)
    return fmt.parts_name(stem), lambda path: source.write(path, extras, transform, by_file=parts is not None)


def detect_format(path: Path) -> DataFormat:
    """The format of ``path`` from its name (or a directory of parquet files).

    Raises
    ------
    DataReadError
        The path does not exist or its extension is not one credaudit reads.
    """
    if not path.exists():
        raise DataReadError(f"{path} does not exist")
    if path.is_dir():
        return DataFormat("parquet-dir")
    name = path.name.lower()
    compressed = name.endswith(".gz")
    stem = name[:-3] if compressed else name
    if stem.endswith(".parquet") and not compressed:
        return DataFormat("parquet")
    if stem.endswith((".jsonl", ".ndjson")):
        return DataFormat("jsonl", gzip=compressed)
    if stem.endswith(".csv"):
        return DataFormat("csv", gzip=compressed)
    raise DataReadError(f"{path} has an unknown extension; credaudit reads {FORMATS_TEXT}")


def read_frame(path: Path, fmt: DataFormat, *, leave_out: str | None = None) -> pl.DataFrame:
    """Read the whole file into a DataFrame, mapping every failure to a one-line DataReadError.

    CSV and JSONL bytes are decoded strictly with ``fmt.encoding``: a byte sequence that is not
    valid in it stops the read, naming the line, instead of being replaced (the cleaned copy must
    carry the user's text unchanged). ``leave_out``: a column of a parquet input not to read."""
    try:
        if fmt.kind == "parquet":
            return _read_parquet(path, leave_out)
        if fmt.kind == "parquet-dir":
            files = _parquet_files(path)
            if not files:
                raise DataReadError(f"directory {path} holds no .parquet files")
            frames = [_read_parquet(f, leave_out) for f in files]
            try:
                return pl.concat(frames, how="vertical")
            except (pl.exceptions.PolarsError, ValueError) as exc:
                raise DataReadError(
                    f"the parquet files in {path} do not share one schema: {_first_line(exc)}"
                ) from None
        raw = _decoded_utf8(path, _read_bytes(path, fmt), fmt.encoding)
        if not raw or raw.isspace():  # (strip() would copy the whole file to say so)
            raise EmptyDataError(f"{path} is empty")
        if fmt.kind == "jsonl":
            return _read_jsonl(path, raw)
        return _read_csv(path, raw)
    except PermissionError:
        raise DataReadError(f"{path} cannot be read: permission denied") from None
    except IsADirectoryError:
        raise DataReadError(f"{path} is a directory, not a {fmt.kind} file") from None


def _read_parquet(path: Path, leave_out: str | None = None) -> pl.DataFrame:
    try:
        columns = [c for c in pl.read_parquet_schema(path) if c != leave_out]
        # Without any other column the frame would have no rows; read it all (read_table then
        # reports what is missing).
        if leave_out is None or not columns:
            return pl.read_parquet(path)
        return pl.read_parquet(path, columns=columns)
    except (pl.exceptions.PolarsError, OSError, ValueError) as exc:
        if isinstance(exc, PermissionError):
            raise
        raise DataReadError(f"{path} is not a readable parquet file ({_first_line(exc)})") from None


def _read_bytes(path: Path, fmt: DataFormat) -> bytes:
    if not fmt.gzip:
        return path.read_bytes()
    # Decompressed 4 MiB at a time into one growing buffer, whose bytes ``getvalue`` hands over
    # without a copy: the file's text is held once. ``gzip.decompress`` held the compressed file,
    # zlib's growing output and the joined members: 2.75x the text at its peak (a 197 MB CSV:
    # 543 MB against 205 MB, scratch measurement), in the same time.
    out = _io.BytesIO()
    try:
        with gzip.open(path, "rb") as stream:
            shutil.copyfileobj(stream, out, 1 << 22)
    except (OSError, EOFError, zlib.error) as exc:
        if isinstance(exc, PermissionError | IsADirectoryError):
            raise
        raise DataReadError(f"{path} is not a valid gzip file ({_first_line(exc)})") from None
    return out.getvalue()


def _decoded_utf8(path: Path, raw: bytes, encoding: str) -> bytes:
    """``raw`` (in ``encoding``) as UTF-8 bytes, for the parsers; stops at the first invalid byte.

    UTF-8 input is checked 1 MiB at a time and passed on as it is: decoding it whole made a string
    of the whole file (one to four bytes a character) only to drop it."""
    if not _is_utf8(encoding):
        try:
            return raw.decode(encoding).encode("utf-8")
        except UnicodeDecodeError as exc:
            raise _bad_byte(path, raw, exc.start, encoding) from None
    decoder = codecs.getincrementaldecoder("utf-8")()
    view, step = memoryview(raw), 1 << 20
    for start in range(0, len(raw), step):
        piece = view[start : start + step]
        try:
            decoder.decode(piece, final=start + step >= len(raw))
        except UnicodeDecodeError as exc:
            # exc.object: the bytes held back from the last piece (at most 3) and this piece.
            raise _bad_byte(path, raw, start - (len(exc.object) - len(piece)) + exc.start, encoding) from None
    return raw


def _bad_byte(path: Path, raw: bytes, position: int, encoding: str) -> DataReadError:
    line = raw[:position].count(b"\n") + 1
    hint = " (name the file's encoding with --encoding, e.g. --encoding latin-1)" if _is_utf8(encoding) else ""
    return DataReadError(
        f"{path} line {line}: byte 0x{raw[position]:02x} is not valid {encoding}{hint}; "
        "credaudit never replaces characters it cannot read"
    )


def _is_utf8(encoding: str) -> bool:
    return codecs.lookup(encoding).name == "utf-8"


def _read_jsonl(path: Path, raw: bytes) -> pl.DataFrame:
    try:
        return pl.read_ndjson(_io.BytesIO(raw), infer_schema_length=None)
    except (pl.exceptions.PolarsError, ValueError, RuntimeError):
        pass
    # polars does not say which line is bad: find it, and fall back to a line-by-line parse when
    # every line is valid JSON (blank lines, schema quirks).
    records = []
    for number, line in enumerate(raw.decode("utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataReadError(f"{path} line {number}: invalid JSON ({exc.msg})") from None
        if not isinstance(record, dict):
            raise DataReadError(f"{path} line {number}: expected a JSON object, found {type(record).__name__}")
        records.append(record)
    if not records:
        raise EmptyDataError(f"{path} has no rows")
    try:
        return pl.from_dicts(records, infer_schema_length=None)
    except (pl.exceptions.PolarsError, ValueError, TypeError) as exc:
        raise DataReadError(f"{path}: the JSON objects do not form one table ({_first_line(exc)})") from None


def _read_csv(path: Path, raw: bytes) -> pl.DataFrame:
    try:
        frame = pl.read_csv(_io.BytesIO(raw), infer_schema_length=None)
        typed = [name for name, dtype in frame.schema.items() if dtype != pl.String]
        if typed:
            as_written = pl.read_csv(_io.BytesIO(raw), columns=typed, infer_schema=False)
            frame = frame.with_columns(as_written.select(_lossy(frame, as_written)))
        return frame
    except pl.exceptions.NoDataError:
        raise EmptyDataError(f"{path} has no rows") from None
    except (pl.exceptions.PolarsError, ValueError) as exc:
        raise DataReadError(f"{path} is not a readable CSV file ({_first_line(exc)})") from None


def _lossy(frame: pl.DataFrame, as_written: pl.DataFrame) -> list[str]:
    """The columns of a CSV whose inferred type would not write back as the file spells them
    ("00013" read as 13, "1.50" as 1.5, "TRUE" as true): they stay text, so that every copy the
    tool writes (the cleaned, selected and applied files) carries the user's values unchanged.
    Columns that round-trip ("12", "2.5", "true") keep their numbers and booleans, which ratings
    and the fairness columns read."""
    lossy = []
    for name in as_written.columns:
        written = frame.select(name).write_csv()
        again = pl.read_csv(_io.BytesIO(written.encode()), infer_schema=False)[name]
        if not again.equals(as_written[name]):
            lossy.append(name)
    return lossy


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def file_sha256(path: Path) -> str:
    """sha256 of a file, or of a directory's parquet files' hashes in name order."""
    if path.is_dir():
        outer = hashlib.sha256()
        for f in sorted(p for p in path.iterdir() if p.suffix == ".parquet" and p.is_file()):
            outer.update(f.name.encode() + b"\0" + file_sha256(f).encode())
        return outer.hexdigest()
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def require_columns(
    frame: pl.DataFrame, wanted: Iterable[tuple[str | None, str]], name: str, columns: list[str] | None = None
) -> None:
    """Raise MissingColumnError for the first (column, flag) whose column ``frame`` lacks (None: not asked).

    The message names the flag, the file and the columns there are (``columns``: the file's,
    where ``frame`` was read without some).
    """
    columns = frame.columns if columns is None else columns
    for column, flag in wanted:
        if column is not None and column not in columns:
            raise MissingColumnError(f"column '{column}' ({flag}) is not in {name}; columns are: {', '.join(columns)}")


def load_frame(
    source: str | Path | pl.DataFrame, *, encoding: str = "utf-8", leave_out: str | None = None
) -> tuple[Path, DataFormat, pl.DataFrame, str]:
    """(path, format, frame, sha256) of a file, a parquet directory or an in-memory DataFrame.

    Every reader (single labels, pairs) starts here, so the input hash is the same everywhere.
    ``leave_out``: a column of a parquet file or directory not to read (read_table's vector column).
    """
    if isinstance(source, pl.DataFrame):
        return Path("<dataframe>"), DataFormat("parquet"), source, _frame_sha256(source)
    path = Path(source)
    fmt = replace(detect_format(path), encoding=encoding)
    return path, fmt, read_frame(path, fmt, leave_out=leave_out), file_sha256(path)


def read_table(
    source: str | Path | pl.DataFrame,
    *,
    text_cols: tuple[str, ...] = ("text",),
    label_col: str = "label",
    id_col: str | None = None,
    embedding_col: str | None = None,
    drop_unlabelled: bool = False,
    text_optional: bool = False,
    encoding: str = "utf-8",
    vectors_in_files: bool = False,
) -> Table:
    """Read and validate a dataset.

    Parameters
    ----------
    source : path or polars.DataFrame
        A file or directory (see :data:`FORMATS_TEXT`), or a DataFrame already in memory.
    text_cols, label_col, id_col, embedding_col, drop_unlabelled :
        As the ``[input]`` config section.
    text_optional : bool
        Missing text columns are allowed (precomputed embeddings and the default text column).
    encoding : str
        Text encoding of a CSV or JSONL file.
    vectors_in_files : bool
        Leave a parquet input's ``embedding_col`` in its files (``Table.source``): the audit reads
        it block by block and the outputs re-read it, so it is never held whole in this process.
        Its type is checked here; its values (nulls, ragged rows, non-finite numbers) as they are
        read, with the same messages.

    Returns
    -------
    Table

    Raises
    ------
    DataReadError, MissingColumnError, EmptyDataError, SingleClassError
        With a message naming the file, the column and, where one is at fault, the row.
    """
    leave_out = None
    if vectors_in_files and embedding_col not in (None, label_col, id_col, *text_cols):
        leave_out = embedding_col
    # Stamped before anything is read: the vectors and the outputs are read again later, and a
    # file changed in between must be noticed.
    stamps = _stamps(Path(source)) if leave_out is not None and not isinstance(source, pl.DataFrame) else {}
    path, fmt, frame, sha = load_frame(source, encoding=encoding, leave_out=leave_out)
    name = path.name if path.name else str(path)
    if frame.height == 0:
        raise EmptyDataError(f"{name} has no rows")
    in_files = bool(stamps) and fmt.kind in ("parquet", "parquet-dir") and leave_out not in frame.columns

    columns = frame.columns
    schema = _parquet_schema(path, fmt) if in_files else {}
    file_columns = list(schema) if in_files else None
    wanted = [(label_col, "--label-col"), (id_col, "--id-col"), (embedding_col, "--embedding-col")]
    require_columns(frame, wanted, name, file_columns)
    present_text = tuple(c for c in text_cols if c in columns)
    if not (text_optional and not present_text):
        require_columns(frame, ((c, "--text-col") for c in text_cols), name, file_columns)

    labels = frame.get_column(label_col)
    if labels.dtype.is_nested() or labels.dtype == pl.Object:
        raise InputError(f"column '{label_col}' in {name} must hold one scalar label per row; found {labels.dtype}")
    n_dropped = 0
    null_labels = frame.select(_unlabelled(label_col, labels.dtype)).to_series()
    n_null = int(null_labels.sum())
    if n_null:
        if n_null == frame.height:
            raise EmptyDataError(f"every label in column '{label_col}' of {name} is null")
        if not drop_unlabelled:
            first = int(null_labels.arg_true()[0])
            raise InputError(
                f"column '{label_col}' in {name} has {n_null} null label(s), the first at row {first}; "
                "pass --drop-unlabelled to audit only the labelled rows"
            )
        frame = frame.filter(~null_labels)
        n_dropped = n_null
    if frame.height < MIN_ROWS:
        raise EmptyDataError(f"{name} has {frame.height} labelled row(s); an audit needs at least {MIN_ROWS}")

    label_values = frame.get_column(label_col)
    distinct = label_values.unique()
    if len(distinct) < 2:
        raise SingleClassError(
            f"all {frame.height} labelled rows of {name} have the label {distinct[0]!r}; "
            "an audit needs at least two classes"
        )

    if id_col is not None:
        row_ids = unique_ids(frame, id_col, name)
    else:
        # A range, not a list: a million Python ints would be 36 MB held for the whole run.
        row_ids = range(frame.height) if not n_dropped else (~null_labels).arg_true().cast(pl.Int64)

    texts = None
    n_empty = 0
    if present_text:
        texts = _join_texts(frame, present_text)
        n_empty = int((texts.str.strip_chars() == "").sum())

    parts = parquet_parts(path, fmt)
    if n_dropped:
        parts = kept_parts(parts, ~null_labels.to_numpy())
    source = None
    if in_files:
        labelled = ~null_labels.to_numpy() if n_dropped else None
        source = parquet_source(
            path, fmt, embedding_col, label_col, labels.dtype, labelled, name, stamps, schema, parts, frame.height
        )
        embeddings = None
    else:
        embeddings = _embedding_matrix(frame, embedding_col, name) if embedding_col is not None else None
    return Table(
        path=path,
        format=fmt,
        frame=frame,
        texts=texts,
        label_values=label_values,
        row_ids=row_ids,
        embeddings=embeddings,
        n_empty_texts=n_empty,
        n_dropped_unlabelled=n_dropped,
        sha256=sha,
        text_cols=present_text,
        parts=parts,
        source=source,
    )


def unique_ids(frame: pl.DataFrame, id_col: str, name: str) -> pl.Series:
    """The ``--id-col`` column, or an InputError naming the first value that repeats (every output
    is keyed by them, so a repeated id would make two rows one)."""
    ids = frame.get_column(id_col)
    where = f"column '{id_col}' (--id-col) in {name}"
    if isinstance(ids.dtype, (pl.List, pl.Array, pl.Struct)):
        raise InputError(f"{where} holds {ids.dtype} values; ids must be single values (text or numbers)")
    missing = ids.is_null() | (ids.is_nan() if ids.dtype.is_float() else False)
    if bool(missing.any()):
        raise InputError(f"{where} is empty at row {int(missing.arg_true()[0])}; every row needs an id")
    duplicated = ids.is_duplicated()
    if bool(duplicated.any()):
        first = int(duplicated.arg_true()[0])
        raise InputError(f"{where} is not unique: {ids[first]!r} appears more than once")
    return ids


def _embedding_matrix(frame: pl.DataFrame, column: str, name: str, flag: str = "--embedding-col") -> np.ndarray:
    """The (N, d) float32 matrix of a list/array column, or an InputError naming the bad row."""
    return _vector_values(frame.get_column(column), f"column '{column}' ({flag}) in {name}")[0]


def _check_vector_type(dtype: pl.DataType, where: str) -> None:
    if not isinstance(dtype, (pl.List, pl.Array)):
        raise InputError(f"{where} must hold numeric vectors (lists or arrays); found {dtype}")
    inner = dtype.inner
    if not (inner.is_numeric() or inner == pl.Null):
        raise InputError(f"{where} must hold numeric vectors; found vectors of {inner}")


def _vector_values(series: pl.Series, where: str, first_row: int = 0, dim: int | None = None) -> tuple[np.ndarray, int]:
    """(the (n, d) float32 matrix of the vectors in ``series``, d), or an InputError naming the bad row.

    ``series`` may be one block of a longer column: ``first_row`` is its first row's number, and
    ``dim`` the length of the column's row 0 (None: this block holds row 0).
    """
    import pyarrow as pa

    from credaudit.engine import row_blocks

    _check_vector_type(series.dtype, where)
    nulls = series.is_null()
    if bool(nulls.any()):
        raise InputError(f"{where} has no vector at row {first_row + int(nulls.arg_true()[0])}")
    if isinstance(series.dtype, pl.List):
        lengths = series.list.len()
        if dim is None:
            dim = int(lengths[0])
        ragged = lengths != dim
        if bool(ragged.any()):
            row = int(ragged.arg_true()[0])
            raise InputError(
                f"{where} is ragged: row {first_row + row} has {int(lengths[row])} values, row 0 has {dim}"
            )
    else:
        if dim is not None and series.dtype.size != dim:
            raise InputError(f"{where} is ragged: row {first_row} has {series.dtype.size} values, row 0 has {dim}")
        dim = series.dtype.size
    if dim == 0:
        raise InputError(f"{where} holds empty vectors")
    # The column's own buffer where it already is one float32 array (a zero-copy, read-only view:
    # the vectors are not held twice); a copy for other value types.
    values = series.rechunk().to_arrow().flatten()
    if values.type != pa.float32():
        values = values.cast(pa.float32())
    if values.null_count:
        first = int(np.flatnonzero(values.is_null().to_numpy(zero_copy_only=False))[0])
        raise InputError(f"{where} has a missing or non-finite value at row {first_row + first // dim}")
    matrix = values.to_numpy().reshape(len(series), dim)
    for start, stop in row_blocks(len(series)):
        finite = np.isfinite(matrix[start:stop]).all(axis=1)
        if not finite.all():
            row = first_row + start + int(np.argmin(finite))
            raise InputError(f"{where} has a missing or non-finite value at row {row}")
    return matrix, dim


def _frame_sha256(frame: pl.DataFrame) -> str:
    buffer = _io.BytesIO()
    frame.write_ipc(buffer)
    return hashlib.sha256(buffer.getvalue()).hexdigest()


# --------------------------------------------------------------------------------------------
# Writing


def default_out_dir(path: Path, suffix: str = "") -> Path:
    """``./credaudit-out/<data stem><suffix>/``."""
    name = path.name
    for ext in (".gz", ".parquet", ".jsonl", ".ndjson", ".csv"):
        if name.lower().endswith(ext):
            name = name[: -len(ext)]
    return Path("credaudit-out") / ((name or "data") + suffix)


def out_dir_for(out: str | None, data: Path, suffix: str = "") -> Path:
    """The output directory: ``--out`` when given, else :func:`default_out_dir` (each command its suffix)."""
    return Path(out) if out else default_out_dir(data, suffix)


def check_out_dir(out_dir: Path, input_path: Path, output_names: list[str]) -> None:
    """Fail early, before any work, if the outputs cannot be written or would touch the input.

    Raises
    ------
    UsageError
        ``out_dir`` is the input itself or an existing file (the flag's value is wrong: exit 2).
    OutputWriteError
        ``out_dir`` is inside an input directory, would overwrite the input with one of
        ``output_names``, or is not writable.
    """
    out = out_dir.resolve()
    source = input_path.resolve() if input_path.exists() else None
    if source is not None:
        if out == source:
            raise UsageError(f"--out {out_dir} is the input itself; choose another directory")
        if source.is_dir() and (out == source or source in out.parents):
            raise OutputWriteError(
                f"--out {out_dir} is inside the input directory {input_path}; choose another directory"
            )
        for name in output_names:
            if (out / name) == source:
                raise OutputWriteError(f"--out {out_dir} would overwrite the input {input_path} with {name}")
    if out.exists() and not out.is_dir():
        # The flag's value is wrong, not the environment: a usage error (exit 2).
        raise UsageError(f"--out {out_dir} exists and is not a directory; name a directory")
    existing = out
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise OutputWriteError(f"--out {out_dir} is not writable ({existing} does not accept new files)")


def check_out_file(path: Path, input_path: Path, *, flag: str) -> None:
    """Fail early if a single output file (e.g. ``--junit``) would hit the input or cannot be written.

    Raises
    ------
    OutputWriteError
    """
    target = path.resolve()
    if input_path.exists() and (target == input_path.resolve() or input_path.resolve() in target.parents):
        raise OutputWriteError(f"{flag} {path} would write over or into the input {input_path}")
    if target.exists() and target.is_dir():
        raise OutputWriteError(f"{flag} {path} is a directory")
    existing = target.parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise OutputWriteError(f"{flag} {path} is not writable ({existing} does not accept new files)")


def append_text(path: Path, text: str) -> None:
    """Append ``text`` to ``path`` (for files another program owns, like $GITHUB_STEP_SUMMARY).

    Raises
    ------
    OutputWriteError
    """
    try:
        with Path(path).open("a", encoding="utf-8") as handle:
            handle.write(text if text.endswith("\n") else text + "\n")
    except OSError as exc:
        raise OutputWriteError(f"cannot append to {path}: {exc.strerror or exc}") from None


# Lists the files the last run wrote into an output directory, so a rerun removes only its own
# earlier outputs (never a user's file that happens to share a name).
OUTPUTS_MANIFEST = ".credaudit-outputs.json"


def write_outputs(
    out_dir: Path, writers: dict[str, Callable[[Path], None]], *, replace_previous: bool = False
) -> list[Path]:
    """Write every output atomically as a set.

    Each writer receives a path inside a staging directory next to ``out_dir``; only when all have
    succeeded are the files moved into ``out_dir`` (``os.replace``: atomic per file, same
    filesystem). A failure leaves ``out_dir`` as it was. With ``replace_previous``, the names are
    recorded in ``OUTPUTS_MANIFEST``, and the files an earlier run recorded there that this run did
    not write (outputs of other options) are removed, so the directory holds only this run's
    outputs; a file that cannot be removed is left in place.

    Raises
    ------
    OutputWriteError
    """
    out_dir = Path(out_dir)
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    except OSError as exc:
        raise OutputWriteError(f"cannot write to {out_dir}: {exc.strerror or exc}") from None
    created_dir = False
    previous = _previous_outputs(out_dir) if replace_previous else set()
    if replace_previous:
        names = sorted(writers)
        writers = {**writers, OUTPUTS_MANIFEST: lambda path: path.write_text(json.dumps(names) + "\n")}
    try:
        for name, writer in writers.items():
            writer(staging / name)
        if not out_dir.exists():
            out_dir.mkdir()
            created_dir = True
        written = []
        for name in writers:
            target = out_dir / name
            if (staging / name).is_dir() and target.is_dir() and name in previous:
                # A directory output (parts) replaces the earlier run's: move that aside first,
                # since a directory cannot be renamed onto a non-empty one.
                os.replace(target, staging / f".previous-{name}")
            os.replace(staging / name, target)
            if name != OUTPUTS_MANIFEST:
                written.append(target)
        for name in previous - set(writers):
            try:
                old = out_dir / name
                if old.is_dir() and not old.is_symlink():
                    shutil.rmtree(old)
                else:
                    old.unlink(missing_ok=True)
            except OSError:
                pass  # an old output that cannot go is harmless; this run's files are in place
        return written
    except OSError as exc:
        if created_dir:
            shutil.rmtree(out_dir, ignore_errors=True)
        raise OutputWriteError(f"cannot write to {out_dir}: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _previous_outputs(out_dir: Path) -> set[str]:
    """The plain file names a previous run recorded in ``out_dir``'s manifest (none if unreadable)."""
    try:
        names = json.loads((out_dir / OUTPUTS_MANIFEST).read_text())
    except (OSError, ValueError):
        return set()
    if not isinstance(names, list):
        return set()
    # Only bare names: a tampered manifest must not reach outside the directory.
    return {n for n in names if isinstance(n, str) and n and Path(n).name == n and n not in (".", "..")}


def atomic_write_file(path: Path, writer: Callable[[Path], None]) -> None:
    """Write one file through a temporary sibling and rename it into place.

    Raises
    ------
    OutputWriteError
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(handle)
    except OSError as exc:
        raise OutputWriteError(f"cannot write {path}: {exc.strerror or exc}") from None
    tmp = Path(tmp_name)
    try:
        writer(tmp)
        # mkstemp makes the file private (0600); the output gets the mode any new file would.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as exc:
        raise OutputWriteError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        tmp.unlink(missing_ok=True)


def _umask() -> int:
    """This process's umask (reading it means setting it; set straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def read_texts(
    source: str | Path, *, text_cols: tuple[str, ...], id_col: str | None = None, encoding: str = "utf-8"
) -> tuple[list[str], list[Any]]:
    """Texts (text columns joined with a newline, null -> "") and row ids of a file, without labels.

    ``encoding`` is the text encoding of a CSV or JSONL file, as for :func:`read_table`.

    Raises
    ------
    DataReadError, MissingColumnError, EmptyDataError
    """
    path = Path(source)
    frame = read_frame(path, replace(detect_format(path), encoding=encoding))
    if frame.height == 0:
        raise EmptyDataError(f"{path.name} has no rows")
    require_columns(frame, [*((c, "--text-col") for c in text_cols), (id_col, "--id-col")], path.name)
    texts = _join_texts(frame, text_cols).to_list()
    ids = frame.get_column(id_col).to_list() if id_col else list(range(frame.height))
    return texts, ids


@dataclass(frozen=True)
class Reference:
    """A file the input is checked against for leakage (e.g. the test split).

    Attributes
    ----------
    path : Path
    texts : list of str, or None
        The text columns joined as for the input; None when the file has none of them.
    row_ids : sequence
        The ``--id-col`` value where the file has that column, else the 0-based row number.
    embeddings : ndarray of shape (M, d), float32, or None
        From ``--reference-embedding-col``; None when the reference is to be embedded.
    """

    path: Path
    texts: list[str] | None
    row_ids: Sequence[Any]
    embeddings: np.ndarray | None


def read_reference(
    source: str | Path,
    *,
    text_cols: tuple[str, ...],
    id_col: str | None,
    embedding_col: str | None,
    encoding: str = "utf-8",
) -> Reference:
    """Read a reference file for the leakage check.

    Raises
    ------
    DataReadError, MissingColumnError, EmptyDataError, InputError
        With a message naming the file (and ``--reference``).
    """
    path = Path(source)
    if not path.exists():
        raise DataReadError(f"--reference {path} does not exist")
    frame = read_frame(path, replace(detect_format(path), encoding=encoding))
    if frame.height == 0:
        raise EmptyDataError(f"--reference {path.name} has no rows")
    present = tuple(c for c in text_cols if c in frame.columns)
    require_columns(frame, [(embedding_col, "--reference-embedding-col")], path.name)
    if embedding_col is None and len(present) < len(text_cols):
        missing = ", ".join(c for c in text_cols if c not in frame.columns)
        raise MissingColumnError(
            f"--reference {path.name} lacks the text column(s) {missing} to embed; "
            f"columns are: {', '.join(frame.columns)}"
        )
    texts = _join_texts(frame, present).to_list() if present else None
    ids = frame.get_column(id_col).to_list() if id_col and id_col in frame.columns else list(range(frame.height))
    vectors = (
        _embedding_matrix(frame, embedding_col, path.name, flag="--reference-embedding-col") if embedding_col else None
    )
    return Reference(path, texts, ids, vectors)


def _join_texts(frame: pl.DataFrame, text_cols: tuple[str, ...]) -> pl.Series:
    columns = [pl.col(c).cast(pl.String).fill_null("") for c in text_cols]
    return frame.select(pl.concat_str(columns, separator="\n").alias("text")).to_series()


def frame_output(
    stem: str, frame: pl.DataFrame | pl.LazyFrame, kept: np.ndarray, fmt: DataFormat, parts: Parts | None
) -> tuple[str, Callable[[Path], None]]:
    """(output name, writer) of ``frame``, which holds the input rows ``kept`` selects (a boolean
    mask over the input's rows): ``cleaned.csv`` in the input's format, or for a directory of
    parquet files (``parts``) a directory ``cleaned/`` of parts, one per input file."""
    kept_in = kept_parts(parts, kept)
    return fmt.parts_name(stem), lambda path: write_frame(frame, path, fmt, kept_in)


# Rows per row group of a streamed parquet output: with a 384-d vector column about 25 MB, so the
# streaming writer's buffers stay small (measured at 1,000,000 such rows: 1.1 GB more than the
# input frame with groups of 16,384 rows, 1.5 GB with 65,536, 2.2 GB for the copy it replaces).
SINK_ROW_GROUP = 16_384

# Rows per chunk of a CSV or JSONL output, encoded and written one chunk at a time.
TEXT_CHUNK_ROWS = 65_536


def write_frame(frame: pl.DataFrame | pl.LazyFrame, path: Path, fmt: DataFormat, parts: Parts | None = None) -> None:
    """Write ``frame`` to ``path`` in ``fmt`` (the cleaned copy keeps the input's format).

    With ``parts`` (one entry per row of ``frame``), ``path`` becomes a directory holding one
    parquet file per input file, under the input file's name, with that file's rows in order (a
    file whose rows were all removed is written empty, so the layout stays the input's).

    A lazy ``frame`` (a plan over frames already in memory) is streamed into a single parquet
    file, so its rows are never all copied at once; other outputs collect it first.
    """
    if isinstance(frame, pl.LazyFrame):
        if parts is None and fmt.kind == "parquet":
            frame.sink_parquet(path, row_group_size=SINK_ROW_GROUP)
            return
        frame = frame.collect()
    if parts is not None:
        path.mkdir()
        for position, name in enumerate(parts.names):
            frame.filter(pl.Series(parts.index == position)).write_parquet(path / name)
        return
    if fmt.kind in ("parquet", "parquet-dir"):
        frame.write_parquet(path)
        return
    # One gzip member made by zlib (wbits=31: a gzip header with mtime 0 and no file name), so
    # that the same cleaned data gives the same bytes.
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31) if fmt.gzip else None
    with path.open("wb") as out:
        # Chunk by chunk, so that the encoded (and compressed) text is never held whole: at a
        # million rows of text it is the size of the file, and was held twice with gzip.
        for start in range(0, max(frame.height, 1), TEXT_CHUNK_ROWS):
            buffer = _io.BytesIO()
            chunk = frame.slice(start, TEXT_CHUNK_ROWS)
            if fmt.kind == "jsonl":
                chunk.write_ndjson(buffer)
            else:
                chunk.write_csv(buffer, include_header=start == 0)
            data = buffer.getvalue()
            data = data if _is_utf8(fmt.encoding) else data.decode("utf-8").encode(fmt.encoding)
            out.write(compressor.compress(data) if compressor else data)
        if compressor:
            out.write(compressor.flush())


def write_text(text: str) -> Callable[[Path], None]:
    """A writer for :func:`write_outputs` that stores ``text`` as UTF-8."""
    return lambda path: path.write_text(text, encoding="utf-8")
