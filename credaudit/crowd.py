"""The multi-annotator label adapter: three input shapes in, the engine's answer arrays out.

Shapes, chosen from the flags (SPEC §7):

- **long**: one row per answer, ``--item-col I --annotator-col A --label-col L``; texts (``--text-col``)
  must agree within an item, or come from ``--items FILE`` joined on the item column;
- **lists**: one row per item, ``--annotations-col C [--annotators-col W]`` (list columns); without
  annotator lists every answer comes from one anonymous pool;
- **slots**: one row per item, ``--label-col r1 --label-col r2 --label-col r3``; each column is an
  annotator (a labelling slot, as in CIFAR-10N).

A null answer (a null list entry or slot cell) is a missing answer, not an error. ``--reference-col``
holds a reference labeller's answer per item (null where unknown).

Everything is validated here, once, with messages naming the file, column and row; the engine
(annotators.py) sees only dense integer codes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from credaudit.annotators import Answers
from credaudit.config import CrowdConfig, ScanConfig
from credaudit.errors import EmptyDataError, InputError, SingleClassError, UsageError
from credaudit.io import (
    MIN_ROWS,
    DataFormat,
    Parts,
    Table,
    _embedding_matrix,
    _join_texts,
    detect_format,
    load_frame,
    parquet_parts,
    read_frame,
    require_columns,
    unique_ids,
)
from credaudit.labels import LabelCodec, as_scalar

ANONYMOUS = "(anonymous)"


@dataclass(frozen=True)
class CrowdTable:
    """A validated multi-annotator dataset.

    Attributes
    ----------
    path : Path
    format : DataFormat
    frame : polars.DataFrame
        The input as read (the cleaned copy is built from it).
    shape : str
        ``long``, ``lists`` or ``slots``.
    answers : Answers
        Item, annotator and label codes per answer.
    codec : LabelCodec
        Label values <-> codes.
    item_ids : list, length I
        The item column's value (long) or the ``--id-col`` value / row number (lists, slots).
    annotator_names : list of str, length M
    texts : list of str or None, length I
    embeddings : ndarray of shape (I, d) or None
    reference : ndarray of shape (I,), int64
        The reference label code per item, -1 where unknown.
    answer_rows : ndarray of shape (A,), int64
        The input row each answer came from.
    row_items : ndarray of shape (n_rows,), int64
        The item code of each input row.
    n_empty_texts : int
    sha256 : str
    parts : Parts or None
        For a directory of parquet files: which file each input row came from.
    """

    path: Path
    format: DataFormat
    frame: pl.DataFrame
    shape: str
    answers: Answers
    codec: LabelCodec
    item_ids: list[Any]
    annotator_names: list[str]
    texts: list[str] | None
    embeddings: np.ndarray | None
    reference: np.ndarray
    answer_rows: np.ndarray
    row_items: np.ndarray
    n_empty_texts: int
    sha256: str
    parts: Parts | None = None

    def item_table(self) -> Table:
        """The items as a one-row-per-item Table, for the feature stage of the pipeline."""
        frame = pl.DataFrame({"item_id": pl.Series(self.item_ids, strict=False)})
        return Table(
            self.path,
            self.format,
            frame,
            None if self.texts is None else pl.Series(self.texts, dtype=pl.String),
            pl.Series(np.zeros(frame.height, dtype=np.int64)),
            frame.get_column("item_id"),
            self.embeddings,
            self.n_empty_texts,
            0,
            self.sha256,
            (),
        )


def crowd_shape(cfg: CrowdConfig) -> str | None:
    """The input shape the flags ask for, or None for single-label data.

    Raises
    ------
    UsageError
        Flags of two shapes at once, or one shape's flags incomplete.
    """
    long = cfg.item_col is not None or cfg.annotator_col is not None
    lists = cfg.annotations_col is not None
    slots = len(cfg.label_cols) > 1
    if sum((long, lists, slots)) > 1:
        raise UsageError(
            "give one multi-annotator shape: --item-col/--annotator-col (one row per answer), --annotations-col "
            "(list columns) or several --label-col (one column per annotator)"
        )
    if long and (cfg.item_col is None or cfg.annotator_col is None):
        raise UsageError("one row per answer needs both --item-col and --annotator-col")
    if cfg.annotators_col is not None and not lists:
        raise UsageError("--annotators-col goes with --annotations-col")
    if cfg.items is not None and not long:
        raise UsageError("--items goes with --item-col (one row per answer)")
    if len(set(cfg.label_cols)) < len(cfg.label_cols):
        raise UsageError("each --label-col must name a different column")
    return "long" if long else "lists" if lists else "slots" if slots else None


def _scalar_type(dtype: pl.DataType) -> str:
    if dtype == pl.Boolean:
        return "bool"
    if dtype.is_integer():
        return "int"
    if dtype.is_float():
        return "float"
    if dtype in (pl.String, pl.Categorical) or dtype == pl.Enum:
        return "str"
    if dtype == pl.Null:
        return "null"
    return str(dtype)


def _label_series(frame: pl.DataFrame, column: str, flag: str, name: str) -> pl.Series:
    series = frame.get_column(column)
    if series.dtype.is_nested() or series.dtype == pl.Object:
        raise InputError(
            f"column '{column}' ({flag}) in {name} must hold one scalar label per row; found {series.dtype}"
        )
    if series.dtype.is_float():
        # 1.0 and 1 are one label; NaN is a missing answer.
        series = series.fill_nan(None)
        if bool((series.drop_nulls() == series.drop_nulls().round()).all()):
            series = series.cast(pl.Int64)
    return series


def _codes(values: list[Any], codec: LabelCodec) -> np.ndarray:
    return codec.encode(values) if values else np.zeros(0, dtype=np.int64)


def read_crowd(path: Path, config: ScanConfig) -> CrowdTable:
    """Read and validate a multi-annotator dataset in the shape the flags ask for.

    Raises
    ------
    UsageError
        Inconsistent flags (exit 2).
    DataReadError, MissingColumnError, EmptyDataError, SingleClassError, InputError
        With a sentence naming the file, the column and, where one is at fault, the row (exit 3).
    """
    cfg = config.crowd
    shape = crowd_shape(cfg)
    if shape is None:
        raise UsageError("not a multi-annotator input")
    # The readers' common start: the same formats, encodings and input hash as single labels.
    path, fmt, frame, sha256 = load_frame(path, encoding=config.input.encoding)
    name = path.name or str(path)
    if frame.height == 0:
        raise EmptyDataError(f"{name} has no rows")
    inp = config.input
    require_columns(
        frame,
        [
            (cfg.item_col, "--item-col"),
            (cfg.annotator_col, "--annotator-col"),
            (cfg.annotations_col, "--annotations-col"),
            (cfg.annotators_col, "--annotators-col"),
            (cfg.reference_col, "--reference-col"),
            (inp.id_col if shape != "long" else None, "--id-col"),
            (inp.embedding_col if cfg.items is None else None, "--embedding-col"),
            *(
                (c, "--label-col")
                for c in (cfg.label_cols if shape == "slots" else (inp.label_col,))
                if shape != "lists"
            ),
        ],
        name,
    )
    if shape == "long":
        parts = _read_long(frame, config, name)
    elif shape == "lists":
        parts = _read_lists(frame, config, name)
    else:
        parts = _read_slots(frame, config, name)
    item_codes, annotator_values, label_values, answer_rows, row_items, item_ids = parts
    if len(label_values) == 0:
        raise EmptyDataError(f"{name} holds no answers (every label is null)")
    kinds = {type(v).__name__ for v in label_values}
    if len(kinds) > 1:
        raise InputError(f"the labels in {name} mix types ({', '.join(sorted(kinds))}); use one type for every answer")
    codec = LabelCodec.fit(label_values)
    if codec.n_classes < 2:
        raise SingleClassError(f"every answer in {name} is {codec.values[0]!r}; an audit needs at least two classes")
    if len(item_ids) < MIN_ROWS:
        raise EmptyDataError(f"{name} has {len(item_ids)} item(s); an audit needs at least {MIN_ROWS}")
    names = sorted({str(a) for a in annotator_values})
    index = {a: i for i, a in enumerate(names)}
    annotator = np.fromiter((index[str(a)] for a in annotator_values), dtype=np.int64, count=len(annotator_values))
    answers = Answers(item_codes, annotator, _codes(label_values, codec), len(item_ids), len(names), codec.n_classes)
    # Annotators are judged against each other (on shared items, or through similar items): one
    # annotator has no one to be compared with, and the model would trade its answers for the
    # neighbours' consensus (it overruled half of one annotator's answers, and called it a pass).
    if len(names) < 2:
        raise InputError(
            f"{name} has one annotator ({names[0]!r}): a multi-annotator audit compares annotators with "
            "each other. Audit one label per item as single labels (without --item-col and --annotator-col)"
        )

    reference = np.full(len(item_ids), -1, dtype=np.int64)
    if cfg.reference_col is not None:
        ref_values = _per_item(frame, cfg.reference_col, "--reference-col", row_items, len(item_ids), name, item_ids)
        known = [i for i, v in enumerate(ref_values) if v is not None]
        stray = sorted({repr(ref_values[i]) for i in known if _norm(ref_values[i]) not in set(codec.values)})
        if stray:
            raise InputError(
                f"column '{cfg.reference_col}' (--reference-col) in {name} holds {', '.join(stray[:5])}, which no "
                f"annotator answered (labels are {', '.join(map(repr, codec.values[:10]))})"
            )
        if known:
            reference[known] = codec.encode([_norm(ref_values[i]) for i in known])

    texts, embeddings, n_empty = _item_features(frame, config, row_items, len(item_ids), name, item_ids)
    features = cfg.use_texts and (texts is not None or embeddings is not None)
    if not features and np.bincount(item_codes, minlength=len(item_ids)).max() < 2:
        raise InputError(
            f"{name} has no item answered twice and no item texts or vectors: nothing relates one "
            "annotator's answers to another's. Give the items' texts (--text-col, --items) or audit the "
            "answers as single labels"
        )
    return CrowdTable(
        path,
        fmt,
        frame,
        shape,
        answers,
        codec,
        item_ids,
        names,
        texts,
        embeddings,
        reference,
        answer_rows,
        row_items,
        n_empty,
        sha256,
        parquet_parts(path, fmt),
    )


def _norm(value: Any) -> Any:
    """A label as the codec keys it: a Python scalar, with 1.0 read as 1."""
    value = as_scalar(value)
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _read_long(frame: pl.DataFrame, config: ScanConfig, name: str):
    cfg = config.crowd
    labels = _label_series(frame, config.input.label_col, "--label-col", name)
    items = frame.get_column(cfg.item_col)
    workers = frame.get_column(cfg.annotator_col)
    for series, flag in ((items, "--item-col"), (workers, "--annotator-col")):
        nulls = series.is_null()
        if bool(nulls.any()):
            raise InputError(f"column '{series.name}' ({flag}) in {name} is empty at row {int(nulls.arg_true()[0])}")
    null_labels = labels.is_null()
    if bool(null_labels.any()) and not config.input.drop_unlabelled:
        raise InputError(
            f"column '{labels.name}' (--label-col) in {name} has no answer at row {int(null_labels.arg_true()[0])}; "
            "pass --drop-unlabelled to skip rows without an answer"
        )
    item_ids = items.unique(maintain_order=True).to_list()  # items in order of first appearance
    code_of = pl.DataFrame({cfg.item_col: pl.Series(item_ids, dtype=items.dtype), "__item": np.arange(len(item_ids))})
    row_items = frame.select(cfg.item_col).join(code_of, on=cfg.item_col, how="left", maintain_order="left")
    row_items = row_items.get_column("__item").to_numpy().astype(np.int64)
    pair = frame.select(pl.col(cfg.item_col), pl.col(cfg.annotator_col)).is_duplicated() & ~null_labels
    if bool(pair.any()):
        row = int(pair.arg_true()[1] if int(pair.sum()) > 1 else pair.arg_true()[0])
        raise InputError(
            f"{name} has two answers from annotator {workers[row]!r} for item {items[row]!r} (row {row}); "
            "keep one answer per annotator and item"
        )
    keep = ~null_labels.to_numpy()
    rows = np.flatnonzero(keep)
    return (
        row_items[keep],
        workers.filter(~null_labels).to_list(),
        [_norm(v) for v in labels.filter(~null_labels).to_list()],
        rows,
        row_items,
        item_ids,
    )


def _read_lists(frame: pl.DataFrame, config: ScanConfig, name: str):
    cfg = config.crowd
    column = cfg.annotations_col
    series = frame.get_column(column)
    if not isinstance(series.dtype, pl.List):
        raise InputError(
            f"column '{column}' (--annotations-col) in {name} must hold lists of labels; found {series.dtype}"
        )
    inner = series.dtype.inner
    if inner.is_nested():
        raise InputError(f"column '{column}' (--annotations-col) in {name} must hold lists of scalar labels")
    if cfg.annotators_col is not None:
        workers = frame.get_column(cfg.annotators_col)
        if not isinstance(workers.dtype, pl.List):
            raise InputError(
                f"column '{cfg.annotators_col}' (--annotators-col) in {name} must hold lists of annotators"
            )
        lengths = series.list.len().fill_null(0).to_numpy()
        worker_lengths = workers.list.len().fill_null(0).to_numpy()
        bad = np.flatnonzero(worker_lengths != lengths)
        if bad.size:
            row = int(bad[0])
            raise InputError(
                f"row {row} of {name} has {lengths[row]} answer(s) in '{column}' but {worker_lengths[row]} "
                f"annotator(s) in '{cfg.annotators_col}'; the lists must pair up"
            )
    columns = {"__row": np.arange(frame.height), "__label": series}
    if cfg.annotators_col is not None:
        columns["__annotator"] = frame.get_column(cfg.annotators_col)
    # Empty and null lists explode to one null entry, dropped with the other missing answers.
    exploded = pl.DataFrame(columns).explode([c for c in columns if c != "__row"])
    labels = _label_series(exploded, "__label", "--annotations-col", name).alias(column)
    present = ~labels.is_null().to_numpy()
    exploded = exploded.filter(pl.Series(present))
    rows = exploded.get_column("__row").to_numpy().astype(np.int64)
    if cfg.annotators_col is not None:
        workers = exploded.get_column("__annotator")
        if bool(workers.is_null().any()):
            row = int(rows[int(workers.is_null().arg_true()[0])])
            raise InputError(f"row {row} of {name} has an answer without an annotator in '{cfg.annotators_col}'")
        dup = pl.DataFrame({"r": rows, "w": workers.cast(pl.String)}).is_duplicated()
        if bool(dup.any()):
            row = int(rows[int(dup.arg_true()[0])])
            raise InputError(f"row {row} of {name} lists the same annotator twice; keep one answer per annotator")
        worker_values = workers.to_list()
    else:
        worker_values = [ANONYMOUS] * len(rows)
    item_ids = _row_ids(frame, config, name)
    return (
        rows,
        worker_values,
        [_norm(v) for v in labels.filter(pl.Series(present)).to_list()],
        rows,
        np.arange(frame.height, dtype=np.int64),
        item_ids,
    )


def _read_slots(frame: pl.DataFrame, config: ScanConfig, name: str):
    columns = config.crowd.label_cols
    series = [_label_series(frame, c, "--label-col", name) for c in columns]
    kinds = {_scalar_type(s.dtype) for s in series} - {"null"}
    if len(kinds) > 1:
        detail = ", ".join(f"'{s.name}' {_scalar_type(s.dtype)}" for s in series)
        raise InputError(f"the --label-col columns of {name} hold different label types ({detail}); use one type")
    values, rows, workers = [], [], []
    for s in series:
        present = ~s.is_null().to_numpy()
        rows.append(np.flatnonzero(present))
        values.extend(_norm(v) for v in s.filter(pl.Series(present)).to_list())
        workers.extend([s.name] * int(present.sum()))
    rows = np.concatenate(rows)
    return rows, workers, values, rows, np.arange(frame.height, dtype=np.int64), _row_ids(frame, config, name)


def _row_ids(frame: pl.DataFrame, config: ScanConfig, name: str) -> list[Any]:
    id_col = config.input.id_col
    if id_col is None:
        return list(range(frame.height))
    return unique_ids(frame, id_col, name).to_list()


def _per_item(
    frame: pl.DataFrame, column: str, flag: str, row_items: np.ndarray, n_items: int, name: str, item_ids: list
) -> list[Any]:
    """One value per item from a per-row column; rows of one item must agree (nulls aside)."""
    series = frame.get_column(column)
    if series.dtype.is_float():
        series = series.fill_nan(None)
    known = pl.DataFrame({"item": row_items, "value": series}).with_row_index("row").drop_nulls("value")
    spread = known.group_by("item").agg(pl.col("value").n_unique().alias("n"), pl.col("row")).filter(pl.col("n") > 1)
    if spread.height:
        first = spread.sort("item").row(0, named=True)
        rows = known.filter(pl.col("item") == first["item"]).unique("value", keep="first", maintain_order=True)
        (r0, v0), (r1, v1) = rows.select("row", "value").rows()[:2]
        raise InputError(
            f"item {item_ids[first['item']]!r} has two different values in '{column}' ({flag}) of {name}: "
            f"{v0!r} at row {r0} and {v1!r} at row {r1}"
        )
    firsts = known.unique("item", keep="first")
    out: list[Any] = [None] * n_items
    for item, value in zip(firsts.get_column("item").to_list(), firsts.get_column("value").to_list(), strict=True):
        out[item] = value
    return out


def _item_features(
    frame: pl.DataFrame,
    config: ScanConfig,
    row_items: np.ndarray,
    n_items: int,
    name: str,
    item_ids: list[Any],
) -> tuple[list[str] | None, np.ndarray | None, int]:
    """Texts and vectors per item (None when the input has neither)."""
    cfg, inp = config.crowd, config.input
    if cfg.items is not None:
        return _items_file(Path(cfg.items), config, item_ids)
    present = tuple(c for c in inp.text_cols if c in frame.columns)
    embeddings = None
    if inp.embedding_col is not None:
        vectors = _embedding_matrix(frame, inp.embedding_col, name)
        first_row = np.full(n_items, -1, dtype=np.int64)
        first_row[row_items[::-1]] = np.arange(len(row_items))[::-1]
        embeddings = vectors[first_row]
    if not present:
        return None, embeddings, 0
    joined = _join_texts(frame, present)
    if len(row_items) == n_items and np.array_equal(row_items, np.arange(n_items)):
        texts = joined.to_list()
    else:
        check = pl.DataFrame({"item": row_items, "text": joined})
        spread = check.group_by("item").agg(pl.col("text").n_unique().alias("n")).filter(pl.col("n") > 1)
        if spread.height:
            item = int(spread.get_column("item").min())
            rows = np.flatnonzero(row_items == item)[:2].tolist()
            raise InputError(
                f"item {item_ids[item]!r} has different texts at rows {rows[0]} and {rows[1]} of {name}; "
                "an item's text must be the same on each of its answers (or give them with --items)"
            )
        first = check.with_row_index("__row").group_by("item").agg(pl.col("text").first()).sort("item")
        texts = first.get_column("text").to_list()
    n_empty = sum(1 for t in texts if not t.strip())
    return texts, embeddings, n_empty


def _items_file(path: Path, config: ScanConfig, item_ids: list[Any]) -> tuple[list[str] | None, np.ndarray | None, int]:
    """Texts (and vectors) from ``--items FILE``, joined on the item column."""
    cfg, inp = config.crowd, config.input
    if not path.exists():
        raise InputError(f"--items {path} does not exist")
    frame = read_frame(path, replace(detect_format(path), encoding=inp.encoding))
    name = path.name
    require_columns(frame, [(cfg.item_col, "--item-col"), (inp.embedding_col, "--embedding-col")], name)
    present = tuple(c for c in inp.text_cols if c in frame.columns)
    if not present and inp.embedding_col is None:
        raise InputError(
            f"--items {name} has none of the text columns ({', '.join(inp.text_cols)}) and no --embedding-col; "
            f"columns are: {', '.join(frame.columns)}"
        )
    ids = frame.get_column(cfg.item_col)
    if bool(ids.is_duplicated().any()):
        raise InputError(
            f"column '{cfg.item_col}' in --items {name} is not unique: "
            f"{ids[int(ids.is_duplicated().arg_true()[0])]!r} appears more than once"
        )
    position = {v: i for i, v in enumerate(ids.to_list())}
    missing = [v for v in item_ids if v not in position]
    if missing:
        raise InputError(f"--items {name} has no row for item {missing[0]!r} ({len(missing)} item(s) missing)")
    take = np.array([position[v] for v in item_ids], dtype=np.int64)
    texts = _join_texts(frame, present).gather(take).to_list() if present else None
    vectors = _embedding_matrix(frame, inp.embedding_col, name)[take] if inp.embedding_col else None
    n_empty = sum(1 for t in texts if not t.strip()) if texts else 0
    return texts, vectors, n_empty
