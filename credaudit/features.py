"""Features: texts -> L2-normalised embeddings, through the cache.

Identical texts are embedded once. Vectors are rounded to float16 (the cache's storage type)
whether they were just computed or read back, so a scan's results do not depend on the cache.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from credaudit import engine as engines
from credaudit.encoders.base import Encoder
from credaudit.encoders.cache import EmbeddingCache, text_keys
from credaudit.engine import LOCAL, Engine, Rows, block_offsets, row_blocks
from credaudit.neighbors import normalize_rows
from credaudit.progress import NullProgress, Progress

# Texts embedded between two cache writes: a killed run loses at most this much work.
CHUNK_TEXTS = 4096


@dataclass(frozen=True)
class Embeddings:
    """Row-aligned vectors and where they came from.

    Attributes
    ----------
    vectors : ndarray of shape (N, d), dtype float32, or Rows
        Unit L2 rows (zero rows stay zero), float16-rounded. Embedded on an engine other than the
        local one, :class:`~credaudit.engine.Rows` held where that engine keeps them.
    n_unique : int
        Distinct texts among the N.
    n_cached : int
        Distinct texts read from the cache.
    n_embedded : int
        Distinct texts the encoder ran on.
    """

    vectors: np.ndarray | Rows
    n_unique: int
    n_cached: int
    n_embedded: int


def distinct_texts(texts: Sequence[str] | pl.Series) -> tuple[list[str], np.ndarray]:
    """The distinct texts, in code-point order, and each text's position among them, (N,) int64.

    Found by polars, so that N texts need not become a numpy array of Python objects (whose sort
    took 1.4 s at a million texts, against 0.7 s).
    """
    series = texts if isinstance(texts, pl.Series) else pl.Series(texts, dtype=pl.String)
    # Both sort strings by their UTF-8 bytes, which is code-point order, as Python compares them.
    inverse = (series.rank("dense") - 1).to_numpy().astype(np.int64)
    return series.unique().sort().to_list(), inverse


def embed_texts(
    texts: Sequence[str] | pl.Series,
    encoder: Encoder,
    *,
    cache: EmbeddingCache | None = None,
    progress: Progress | None = None,
    engine: Engine | None = None,
    factory: Callable[[], Encoder] | None = None,
) -> Embeddings:
    """Embed every text, reusing cached vectors and caching new ones chunk by chunk.

    Parameters
    ----------
    texts : sequence of str or polars.Series, length N
    encoder : Encoder
    cache : EmbeddingCache, optional
        None disables caching.
    progress : Progress, optional
        Advanced once per text embedded (cached texts count at once).
    engine : Engine, optional
        Where the chunks are encoded and the vectors are kept (credaudit/engine.py); default:
        ``encoder`` in this process. The distinct texts' float16 vectors (the cache's rows) are
        held on the engine in blocks as they are read from the cache or come back encoded, and
        the engine takes them into blocks of rows, each made unit float32 where it is made
        (``take_blocks``; a shuffle on a cluster of several nodes). On Ray both live in the
        object store: this process holds one chunk of fresh vectors at a time (to write it to
        the cache), never all of them.
    factory : callable, optional
        Builds the encoder where the engine encodes (e.g. in each Ray actor); default there: a copy
        of ``encoder``. ``encoder`` still gives the dimension and the cache key.

    Returns
    -------
    Embeddings
    """
    progress = progress or NullProgress()
    engine = engine or LOCAL
    unique_texts, inverse = distinct_texts(texts)
    if getattr(encoder, "whole_corpus", False):
        # Fitted on the corpus itself (TF-IDF): one call with every text, nothing cached per text.
        progress.start("embedding", total=len(unique_texts))
        vectors = encoder.encode(unique_texts, progress=progress).astype(np.float16)
        progress.finish()
        return Embeddings(normalize_rows(vectors[inverse].astype(np.float32)), len(unique_texts), 0, len(unique_texts))
    keys = text_keys(unique_texts)
    held = _Held(engine, len(unique_texts), encoder.dimension)
    found = np.zeros(len(unique_texts), dtype=bool)
    if cache is not None:
        for start, stop in row_blocks(len(unique_texts)):
            hit, vectors = cache.lookup(keys[start:stop])
            found[start:stop] = hit
            held.add(np.flatnonzero(hit) + start, vectors[hit])
    missing = np.flatnonzero(~found)
    progress.start("embedding", total=len(texts))
    progress.advance(int(len(texts) - np.isin(inverse, missing).sum()))
    # Length-sorted so each chunk holds texts of similar length (less padding in the encoder).
    missing = missing[np.argsort([len(unique_texts[i]) for i in missing], kind="stable")]
    multiplicity = np.bincount(inverse, minlength=len(unique_texts))
    chunks = [missing[start : start + CHUNK_TEXTS] for start in range(0, len(missing), CHUNK_TEXTS)]
    chunk_texts = ([unique_texts[i] for i in rows] for rows in chunks)
    for rows, fresh in zip(chunks, engine.encode(encoder, factory, chunk_texts), strict=True):
        fresh = np.asarray(fresh).astype(np.float16, copy=False)
        if cache is not None:
            cache.add(keys[rows], fresh)
        held.add(rows, fresh)
        progress.advance(int(multiplicity[rows].sum()))
    progress.finish()
    unique = held.rows()
    # Each row's vector is its distinct text's, made unit float32 per block of rows (a row's
    # vector does not depend on its block); on a cluster of several nodes a shuffle of the held
    # blocks into row order, so that no task reads every held block.
    rows = engine.take_blocks(unique, held.position[inverse], _unit_vectors)
    return Embeddings(
        # Locally the one array (callers without an engine get what they always got).
        vectors=rows.parts[0] if engine.name == "local" and len(rows.parts) == 1 else rows,
        n_unique=len(unique_texts),
        n_cached=int(found.sum()),
        n_embedded=len(missing),
    )


class _Held:
    """The distinct texts' float16 vectors, held on the engine in blocks of at least
    :data:`~credaudit.engine.BLOCK_ROWS` rows as they come (cache reads, encoded chunks).

    ``position[u]`` is distinct text u's row in the held blocks, first block first.
    """

    def __init__(self, engine: Engine, n_unique: int, dim: int) -> None:
        self.engine = engine
        self.dim = dim
        self.position = np.full(n_unique, -1, dtype=np.int64)
        self.parts: list = []
        self.sizes: list[int] = []
        self._pending: list[tuple[np.ndarray, np.ndarray]] = []
        self._n_pending = 0

    def add(self, rows: np.ndarray, vectors: np.ndarray) -> None:
        """Distinct texts ``rows`` (n,) have ``vectors`` (n, d) float16."""
        if len(rows):
            self._pending.append((rows, vectors))
            self._n_pending += len(rows)
        if self._n_pending >= engines.BLOCK_ROWS:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        rows = np.concatenate([r for r, _ in self._pending])
        self.position[rows] = sum(self.sizes) + np.arange(len(rows))
        self.parts.append(self.engine.share(np.concatenate([v for _, v in self._pending])))
        self.sizes.append(len(rows))
        self._pending, self._n_pending = [], 0

    def rows(self) -> Rows:
        self._flush()
        return Rows(tuple(self.parts), block_offsets(self.sizes), self.dim)


def _unit_vectors(block: np.ndarray) -> np.ndarray:
    """Unit float32 vectors of one block of rows' float16 vectors."""
    return normalize_rows(block.astype(np.float32), in_place=True)
