"""Features: texts -> L2-normalised embeddings, through the cache.

Identical texts are embedded once. Vectors are rounded to float16 (the cache's storage type)
whether they were just computed or read back, so a scan's results do not depend on the cache.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from credaudit.encoders.base import Encoder
from credaudit.encoders.cache import EmbeddingCache, text_keys
from credaudit.engine import LOCAL, Engine, Rows, row_blocks
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


def embed_texts(
    texts: Sequence[str],
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
    texts : sequence of str, length N
    encoder : Encoder
    cache : EmbeddingCache, optional
        None disables caching.
    progress : Progress, optional
        Advanced once per text embedded (cached texts count at once).
    engine : Engine, optional
        Where the chunks are encoded and the row vectors are kept (credaudit/engine.py); default:
        ``encoder`` in this process. This process holds the distinct texts' float16 vectors (the
        cache's rows) while it embeds; the row-aligned float32 vectors are made block by block
        and placed on the engine as each block is made (on Ray: the object store).
    factory : callable, optional
        Builds the encoder where the engine encodes (e.g. in each Ray actor); default there: a copy
        of ``encoder``. ``encoder`` still gives the dimension and the cache key.

    Returns
    -------
    Embeddings
    """
    progress = progress or NullProgress()
    unique_texts, inverse = np.unique(np.asarray(texts, dtype=object), return_inverse=True)
    unique_texts = unique_texts.tolist()
    if getattr(encoder, "whole_corpus", False):
        # Fitted on the corpus itself (TF-IDF): one call with every text, nothing cached per text.
        progress.start("embedding", total=len(unique_texts))
        vectors = encoder.encode(unique_texts, progress=progress).astype(np.float16)
        progress.finish()
        return Embeddings(normalize_rows(vectors[inverse].astype(np.float32)), len(unique_texts), 0, len(unique_texts))
    keys = text_keys(unique_texts)
    if cache is not None:
        found, vectors = cache.lookup(keys)
    else:
        found = np.zeros(len(unique_texts), dtype=bool)
        vectors = np.zeros((len(unique_texts), encoder.dimension), dtype=np.float16)
    missing = np.flatnonzero(~found)
    progress.start("embedding", total=len(texts))
    progress.advance(int(len(texts) - np.isin(inverse, missing).sum()))
    # Length-sorted so each chunk holds texts of similar length (less padding in the encoder).
    missing = missing[np.argsort([len(unique_texts[i]) for i in missing], kind="stable")]
    multiplicity = np.bincount(inverse, minlength=len(unique_texts))
    chunks = [missing[start : start + CHUNK_TEXTS] for start in range(0, len(missing), CHUNK_TEXTS)]
    chunk_texts = ([unique_texts[i] for i in rows] for rows in chunks)
    encoded = (engine or LOCAL).encode(encoder, factory, chunk_texts)
    for rows, fresh in zip(chunks, encoded, strict=True):
        fresh = np.asarray(fresh).astype(np.float16)
        vectors[rows] = fresh
        if cache is not None:
            cache.add(keys[rows], fresh)
        progress.advance(int(multiplicity[rows].sum()))
    progress.finish()
    engine = engine or LOCAL
    rows = engine.place_blocks(_row_vectors(vectors, inverse), len(inverse), vectors.shape[1])
    return Embeddings(
        # Locally the one array (callers without an engine get what they always got).
        vectors=rows.parts[0] if engine.name == "local" else rows,
        n_unique=len(unique_texts),
        n_cached=int(found.sum()),
        n_embedded=len(missing),
    )


def _row_vectors(unique: np.ndarray, inverse: np.ndarray):
    """Row-aligned unit float32 vectors, one engine block of rows at a time (the same blocks on
    every engine, so the vectors do not depend on where they are kept)."""
    for start, stop in row_blocks(len(inverse)):
        yield normalize_rows(unique[inverse[start:stop]].astype(np.float32), in_place=True)
