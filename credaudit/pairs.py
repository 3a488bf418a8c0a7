"""Preference pairs (``--chosen-col C --rejected-col R [--prompt-col P]``): the label adapter.

A pair says "chosen is better than rejected". Its *preference direction* is the unit vector
d = (e(chosen) - e(rejected)) / ‖·‖ of the two responses' embeddings. Each pair becomes two rows
for the single-label engine: d labelled ``as given`` (code 0) and -d labelled ``reversed`` (code 1).
A correct pair's d points the way similar correct pairs point, so its neighbours (among all
directions and their reverses) carry its label; a reversed pair's d points the other way, so both
of its rows are label errors. The engine's consensus fit of the 2×2 T on these rows estimates the
share of reversed pairs (T is symmetric by construction), and its detection scores every row. The
two rows of a pair are mirror images (the reverse of each neighbour of d is a neighbour of -d,
with the opposite label), so the pair's ``flip_score`` is the mean of their error scores.

Row order never matters: the engine sees the pairs sorted by their content, and the
results are mapped back to the input order (subsample rounds and the approximate search depend on
row positions, so this is what makes a shuffled input give identical results).

HH-RLHF-style transcripts: when no prompt column is given and chosen and rejected share a prefix
that ends in an assistant turn marker, the shared conversation is the prompt and the differing
tails are the responses (:func:`split_shared_prefix`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from credaudit.engine import Engine, Rows, read_rows, row_blocks
from credaudit.errors import EmptyDataError, InputError
from credaudit.io import (
    MIN_ROWS,
    DataFormat,
    Parts,
    _embedding_matrix,
    load_frame,
    parquet_parts,
    require_columns,
    unique_ids,
)
from credaudit.neighbors import normalize_rows

AS_GIVEN, REVERSED = 0, 1
DIRECTION_NAMES = ["as given", "reversed"]
# Turn markers after which a transcript's final response starts (HH-RLHF: "\n\nAssistant:").
TURN_MARKERS = ("\n\nAssistant:", "\nAssistant:", "Assistant:", "\n\nassistant:", "<|assistant|>")
# What Python's str.strip() strips (str.isspace): polars' strip_chars() alone strips Unicode White_Space,
# which leaves out the separators \x1c-\x1f. The prompts and responses are cut as str.strip() cut them.
PY_WHITESPACE = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000"
)


@dataclass(frozen=True)
class PairTable:
    """A validated set of preference pairs.

    Attributes
    ----------
    path : Path
    format : DataFormat
    frame : polars.DataFrame
        The input as read (the cleaned copy is built from it).
    prompts : polars.Series of str or None, length P
    chosen, rejected : polars.Series of str or None, length P
        The responses compared (the tails, when the prompt came from a shared prefix): the frame's
        own columns (Arrow), not a Python copy of every text.
    chosen_vectors, rejected_vectors : ndarray of shape (P, d) or None
        From ``--chosen-embedding-col`` / ``--rejected-embedding-col`` or the Python API.
    row_ids : polars.Series (the ``--id-col`` column) or range, length P
    prompt_source : str
        ``column``, ``shared_prefix`` or ``none``.
    sha256 : str
    parts : Parts or None
        For a directory of parquet files: which file each pair came from.
    identical : ndarray of shape (P,), bool, or None
        Pairs whose two responses are the same text (after stripping whitespace): no preference to
        audit, so they stay out of the directions' audit and their action is ``drop``. None: no
        texts to compare (vectors given).
    """

    path: Path
    format: DataFormat
    frame: pl.DataFrame
    prompts: pl.Series | None
    chosen: pl.Series | None
    rejected: pl.Series | None
    chosen_vectors: np.ndarray | None
    rejected_vectors: np.ndarray | None
    row_ids: pl.Series | range
    prompt_source: str
    sha256: str
    parts: Parts | None = None
    identical: np.ndarray | None = None

    @property
    def n_pairs(self) -> int:
        return len(self.row_ids)


def _shared_prefix_length(a: str, b: str) -> int:
    """Length of the longest common prefix of ``a`` and ``b``.

    Bisection over slice comparisons (each one in C): transcripts run to thousands of characters,
    and a character-by-character loop in Python cost seconds per 100,000 pairs.
    """
    low, high = 0, min(len(a), len(b))
    while low < high:
        mid = (low + high + 1) // 2
        if a[:mid] == b[:mid]:
            low = mid
        else:
            high = mid - 1
    return low


def _last_turn_end(text: str, stop: int) -> int:
    """Where the last turn marker inside ``text[:stop]`` ends (0: none there)."""
    starts = [text.rfind(m, 0, stop) for m in TURN_MARKERS]
    return max((start + len(m) for start, m in zip(starts, TURN_MARKERS, strict=True) if start >= 0), default=0)


def split_shared_prefix(chosen: pl.Series, rejected: pl.Series) -> tuple[pl.Series, pl.Series, pl.Series] | None:
    """Split whole transcripts into the shared conversation and the two final responses.

    Returns (prompts, chosen_tails, rejected_tails) when at least half of the pairs share a prefix
    that contains a turn marker (:data:`TURN_MARKERS`); each pair is cut right after the last
    marker inside its shared prefix (a pair without one keeps its texts whole, prompt ""). None
    when the texts are not transcripts.

    Only the cut is found per pair (polars has no common-prefix expression); the pieces are cut
    and stripped as columns.
    """
    pairs = zip(chosen.to_list(), rejected.to_list(), strict=True)  # Python strings only while cutting
    cut = pl.Series([_last_turn_end(c, _shared_prefix_length(c, r)) for c, r in pairs], dtype=pl.Int64)
    if int((cut > 0).sum()) * 2 < max(len(chosen), 1):
        return None
    split = cut > 0

    def tail(texts: pl.Series) -> pl.Series:
        return (
            pl.select(pl.when(split).then(texts.str.slice(cut).str.strip_chars(PY_WHITESPACE)).otherwise(texts))
            .to_series()
            .alias(texts.name)
        )

    prompts = pl.select(
        pl.when(split).then(chosen.str.slice(0, cut).str.strip_chars(PY_WHITESPACE)).otherwise(pl.lit(""))
    ).to_series()
    return prompts.alias("prompt"), tail(chosen), tail(rejected)


def read_pairs(
    data: str | Path | pl.DataFrame,
    *,
    chosen_col: str,
    rejected_col: str,
    prompt_col: str | None = None,
    id_col: str | None = None,
    chosen_embedding_col: str | None = None,
    rejected_embedding_col: str | None = None,
    precomputed: bool = False,
    encoding: str = "utf-8",
) -> PairTable:
    """Read and validate a pair file (every problem is an :class:`InputError` naming the row).

    ``precomputed``: vectors come from the Python API, so the text columns may be absent.
    ``encoding``: of a CSV or JSONL file (``--encoding``).
    """
    path, fmt, frame, sha = load_frame(data, encoding=encoding)
    name = path.name
    vectors_given = precomputed or (chosen_embedding_col is not None and rejected_embedding_col is not None)
    if (chosen_embedding_col is None) != (rejected_embedding_col is None):
        raise InputError("--chosen-embedding-col and --rejected-embedding-col go together")
    wanted = [(id_col, "--id-col"), (prompt_col, "--prompt-col")]
    wanted += [(chosen_embedding_col, "--chosen-embedding-col"), (rejected_embedding_col, "--rejected-embedding-col")]
    if not vectors_given:
        wanted += [(chosen_col, "--chosen-col"), (rejected_col, "--rejected-col")]
    require_columns(frame, wanted, name)
    if frame.height < MIN_ROWS:
        raise EmptyDataError(f"{name} has {frame.height} pairs; an audit needs at least {MIN_ROWS}")
    row_ids = unique_ids(frame, id_col, name) if id_col else range(frame.height)

    def texts(column: str | None, flag: str) -> pl.Series | None:
        if column is None or column not in frame.columns:
            return None
        series = frame.get_column(column)
        if series.dtype != pl.String:
            raise InputError(f"{name}: column '{column}' ({flag}) must hold text; it holds {series.dtype}")
        nulls = series.is_null().arg_true()
        if len(nulls):
            raise InputError(f"{name}: row {row_ids[int(nulls[0])]!r} has no value in column '{column}' ({flag})")
        return series

    chosen = texts(chosen_col, "--chosen-col")
    rejected = texts(rejected_col, "--rejected-col")
    prompts = texts(prompt_col, "--prompt-col")
    prompt_source = "column" if prompts is not None else "none"
    identical = None
    if chosen is not None and rejected is not None:
        identical = (chosen.str.strip_chars(PY_WHITESPACE) == rejected.str.strip_chars(PY_WHITESPACE)).to_numpy()
        if identical.all():
            raise InputError(
                f"{name}: every pair has the same text as chosen and rejected; a pair must compare two "
                "different responses"
            )
        if prompts is None:
            split = split_shared_prefix(chosen, rejected)
            if split is not None:
                prompts, chosen, rejected = split
                prompt_source = "shared_prefix"
    chosen_vectors = rejected_vectors = None
    if chosen_embedding_col is not None:
        chosen_vectors = _embedding_matrix(frame, chosen_embedding_col, name, "--chosen-embedding-col")
        rejected_vectors = _embedding_matrix(frame, rejected_embedding_col, name, "--rejected-embedding-col")
        if chosen_vectors.shape != rejected_vectors.shape:
            raise InputError(f"{name}: chosen and rejected vectors differ in shape")
    return PairTable(
        path=path,
        format=fmt,
        frame=frame,
        prompts=prompts,
        chosen=chosen,
        rejected=rejected,
        chosen_vectors=chosen_vectors,
        rejected_vectors=rejected_vectors,
        row_ids=row_ids,
        prompt_source=prompt_source,
        sha256=sha,
        parts=parquet_parts(path, fmt),
        identical=identical if identical is not None and identical.any() else None,
    )


def preference_directions(chosen: np.ndarray, rejected: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit preference directions, the two responses' similarity and each pair's topic.

    Parameters
    ----------
    chosen, rejected : ndarray of shape (P, d)
        Embeddings of the two responses (any scale).

    Returns
    -------
    directions : ndarray of shape (P, d), dtype float32
        (ĉ - r̂) / ‖ĉ - r̂‖ of the unit vectors; zero where the two coincide.
    similarity : ndarray of shape (P,)
        cos(chosen, rejected): near 1 when the responses are (nearly) the same.
    topics : ndarray of shape (P, d), dtype float32
        (ĉ + r̂) / ‖ĉ + r̂‖: what the pair is about, whichever side is preferred.
    """
    c = normalize_rows(chosen)
    r = normalize_rows(rejected)
    similarity = np.einsum("ij,ij->i", c, r)
    diff = c - r
    norm = np.linalg.norm(diff, axis=1, keepdims=True)
    return (diff / np.maximum(norm, 1e-12)).astype(np.float32), similarity, normalize_rows(c + r)


def pair_rows(engine: Engine, vectors: Rows, order: np.ndarray) -> tuple[Rows, np.ndarray, Rows]:
    """The engine's rows of a pair audit, made where ``engine`` keeps the responses' vectors.

    Every step is a map over blocks of rows, so on Ray the vectors never come to this process.

    Parameters
    ----------
    engine : Engine
    vectors : Rows of shape (2P, d)
        The chosen responses' vectors (rows 0..P-1), then the rejected ones' (rows P..2P-1), any scale.
    order : ndarray of shape (n,), int64
        The pairs the engine is to see, in the order it is to see them (:func:`canonical_order`,
        without the pairs of identical responses): n <= P.

    Returns
    -------
    rows : Rows of shape (2n, d), unit float32 rows
        Row i is the preference direction of pair ``order[i]`` (code ``AS_GIVEN``), row n + i the
        same direction reversed (code ``REVERSED``): the labels of :func:`pair_labels`.
    similarity : ndarray of shape (P,)
        cos(chosen, rejected) of each pair, in input order.
    topics : Rows of shape (P, d)
        Each pair's topic (:func:`preference_directions`), in input order.
    """
    n_pairs, n = vectors.n_rows // 2, len(order)
    pairs = row_blocks(n_pairs)

    def reads(block: tuple[int, int]) -> np.ndarray:  # a block of pairs: its chosen and its rejected rows
        a, b = block
        return vectors.parts_of(np.r_[a:b, n_pairs + a : n_pairs + b])

    directions, similarity = engine.map_rows(
        _pair_block, pairs, n_pairs, "directions", dim=vectors.dim, rows=vectors, reads=reads
    )
    topics, _ = engine.map_rows(_pair_block, pairs, n_pairs, "topics", dim=vectors.dim, rows=vectors, reads=reads)
    # Into the engine's order (where the engine moves rows between nodes, a shuffle), then each
    # block of directions twice: as given, and reversed, each task reading its own block.
    ordered = engine.take_blocks(directions, order)
    del directions
    audited = row_blocks(n)
    halves = audited + [(n + a, n + b) for a, b in audited]
    rows, _ = engine.map_rows(
        _mirror_block,
        halves,
        n,
        dim=vectors.dim,
        rows=ordered,
        reads=lambda block: ordered.parts_of(np.arange(block[0], block[1]) % n),
    )
    return rows, np.concatenate(similarity), topics


def _pair_block(
    item: tuple[int, int], n_pairs: int, what: str, layout: Any, *parts: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Pairs [a, b): their directions and similarities, or their topics (a block of :func:`pair_rows`)."""
    a, b = item
    reader = read_rows(layout, *parts)
    directions, similarity, topics = preference_directions(reader[a:b], reader[n_pairs + a : n_pairs + b])
    return (topics, None) if what == "topics" else (directions, similarity)


def _mirror_block(
    item: tuple[int, int], n_pairs: int, layout: Any, *parts: np.ndarray | None
) -> tuple[np.ndarray, None]:
    """Rows [start, stop) of :func:`pair_rows`: ordered directions as given, or reversed past P."""
    start, stop = item
    reader = read_rows(layout, *parts)
    if start < n_pairs:
        return normalize_rows(reader[start:stop]), None
    return normalize_rows(-reader[start - n_pairs : stop - n_pairs]), None


def pair_labels(n_pairs: int) -> np.ndarray:
    """The codes of :func:`pair_rows`' rows: (2P,) int64, ``AS_GIVEN`` then ``REVERSED``."""
    return np.concatenate([np.full(n_pairs, AS_GIVEN), np.full(n_pairs, REVERSED)]).astype(np.int64)


def canonical_order(table: PairTable, chosen: np.ndarray | None, rejected: np.ndarray | None) -> np.ndarray:
    """A permutation of the pairs that does not depend on their input order.

    Pairs are sorted by their content (prompt, chosen, rejected texts when there are any, else the
    vectors' bytes: ``chosen`` and ``rejected``, (P, d), read only for pairs without texts), with
    input position only breaking ties between identical pairs (whose results are then identical).
    """
    if table.chosen is not None and table.rejected is not None:
        keys = pl.DataFrame(
            {
                "prompt": table.prompts if table.prompts is not None else pl.repeat("", table.n_pairs, eager=True),
                "chosen": table.chosen,
                "rejected": table.rejected,
            }
        ).with_row_index("position")
        ordered = keys.sort(["prompt", "chosen", "rejected", "position"]).get_column("position")
        return ordered.to_numpy().astype(np.int64)
    both = np.ascontiguousarray(np.concatenate([chosen, rejected], axis=1))
    rows = both.view(np.dtype((np.void, both.dtype.itemsize * both.shape[1]))).ravel()
    return np.argsort(rows, kind="stable").astype(np.int64)


def pair_actions(
    flip_score: np.ndarray,
    is_reversed: np.ndarray,
    similarity: np.ndarray,
    *,
    same_threshold: float,
    unclear_score: float,
) -> np.ndarray:
    """``swap`` / ``drop`` / ``keep`` per pair.

    - ``swap``: the pair is flagged as reversed;
    - ``drop``: no clear preference either way: the two responses are near-identical
      (cos ≥ ``same_threshold``), or the neighbours are split (``flip_score`` ≥ ``unclear_score``
      without a flag);
    - ``keep``: otherwise.

    Returns
    -------
    ndarray of shape (P,), dtype object (str)
    """
    unclear = (similarity >= same_threshold) | (flip_score >= unclear_score)
    return np.where(is_reversed, "swap", np.where(unclear, "drop", "keep")).astype(object)
