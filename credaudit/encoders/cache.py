"""Content-addressed, memory-mapped float16 embedding cache.

Layout: ``<root>/<encoder fingerprint>/<shard>.vecs.npy`` (M × d float16) and
``<shard>.keys.npy`` (M × 2 uint64: the 128-bit BLAKE2b hash of each text, sorted). A shard is
written once, under a temporary name, and renamed into place (vectors first, keys last: a keys
file marks a complete shard). Hence:

- a run killed mid-way loses at most the shard it was writing; every renamed shard is whole;
- two scans at once each write their own shards and never touch another's files;
- readers memory-map shards, so a large cache costs no RAM until rows are read.

Stored vectors are float16 (cosine to float32 >= 0.9999). Freshly computed vectors are rounded
the same way before use, so a scan gives identical results whether its vectors came from the
cache or not. A size limit evicts the least recently used shards. Beyond ``MAX_SHARDS`` shards the
smaller ones are merged into one, copied block by block between memory maps, so neither a merge
nor a lookup ever holds the cache's vectors in memory.
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from credaudit.engine import block_offsets, read_rows, row_blocks

MAX_SHARDS = 32


def text_keys(texts: Sequence[str]) -> np.ndarray:
    """128-bit BLAKE2b of each text's UTF-8 bytes, shape (N, 2), dtype uint64."""
    digests = b"".join(hashlib.blake2b(t.encode("utf-8"), digest_size=16).digest() for t in texts)
    return np.frombuffer(digests, dtype="<u8").reshape(len(texts), 2).copy()


def default_cache_dir() -> Path:
    """``$CREDAUDIT_CACHE_DIR``, else ``$XDG_CACHE_HOME/credaudit``, else ``~/.cache/credaudit``."""
    if os.environ.get("CREDAUDIT_CACHE_DIR"):
        return Path(os.environ["CREDAUDIT_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "credaudit"


@dataclass
class _Shard:
    keys_path: Path
    keys: np.ndarray  # (M, 2) uint64, sorted by column 0 then 1
    vectors: np.ndarray  # (M, d) float16, memory-mapped, row-aligned with keys


class EmbeddingCache:
    """The cache of one encoder (one fingerprint).

    Parameters
    ----------
    root : Path
        The cache directory shared by all encoders.
    fingerprint : str
        The encoder's fingerprint; its vectors live in ``root / fingerprint``.
    dimension : int
        d.
    max_bytes : int, optional
        Size limit of this encoder's cache; least recently used shards are evicted beyond it.
    """

    def __init__(self, root: Path, fingerprint: str, dimension: int, *, max_bytes: int | None = None) -> None:
        self.dir = Path(root) / fingerprint
        self.dimension = dimension
        self.max_bytes = max_bytes

    def _shards(self) -> list[_Shard]:
        shards = []
        if not self.dir.is_dir():
            return shards
        for keys_path in sorted(self.dir.glob("*.keys.npy")):
            vecs_path = keys_path.with_name(keys_path.name.replace(".keys.npy", ".vecs.npy"))
            try:
                keys = np.load(keys_path)
                vectors = np.load(vecs_path, mmap_mode="r")
            except (OSError, ValueError):
                continue  # evicted or compacted away by another process meanwhile
            if vectors.shape != (len(keys), self.dimension) or keys.shape[1:] != (2,):
                continue
            shards.append(_Shard(keys_path, keys, vectors))
        return shards

    def lookup(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Find cached vectors.

        Parameters
        ----------
        keys : ndarray of shape (N, 2), dtype uint64
            From :func:`text_keys`.

        Returns
        -------
        found : ndarray of shape (N,), dtype bool
        vectors : ndarray of shape (N, d), dtype float16
            Rows where ``found`` is False are zero.
        """
        found = np.zeros(len(keys), dtype=bool)
        vectors = np.zeros((len(keys), self.dimension), dtype=np.float16)
        for shard in self._shards():
            todo = np.flatnonzero(~found)
            if not todo.size:
                break
            position = _search(shard.keys, keys[todo])
            hit = position >= 0
            if hit.any():
                rows = position[hit]
                order = np.argsort(rows)  # sequential reads from the memory map
                vectors[todo[hit][order]] = shard.vectors[rows[order]]
                found[todo[hit]] = True
                _touch(shard.keys_path)
        return found, vectors

    def add(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        """Store ``vectors`` (N, d) under ``keys`` (N, 2) as one new shard; then evict/compact."""
        if not len(keys):
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        keys, unique = np.unique(keys, axis=0, return_index=True)
        self._write_shard(keys, [np.asarray(vectors, dtype=np.float16)[unique]])
        self._maintain()

    def _write_shard(self, keys: np.ndarray, blocks: Iterable[np.ndarray]) -> Path:
        """Write a shard of ``keys`` (M, 2) whose vectors are ``blocks``, consecutive row blocks (M rows
        in all), written one at a time through a memory map."""
        # Sortable name: creation time first, so eviction and listing see the oldest first.
        shard = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
        final_vecs = self.dir / f"{shard}.vecs.npy"
        final_keys = self.dir / f"{shard}.keys.npy"
        tmp = self.dir / f".{final_vecs.name}.{uuid.uuid4().hex[:8]}.tmp"
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(len(keys), self.dimension))
        start = 0
        for block in blocks:
            out[start : start + len(block)] = block
            start += len(block)
        out.flush()
        del out
        _sync_and_rename(tmp, final_vecs)
        tmp = self.dir / f".{final_keys.name}.{uuid.uuid4().hex[:8]}.tmp"
        with tmp.open("wb") as handle:
            np.save(handle, keys)
        _sync_and_rename(tmp, final_keys)
        return final_keys

    def _maintain(self) -> None:
        shards = self._shards()
        if len(shards) > MAX_SHARDS:
            # Merge the smaller shards into one, leaving MAX_SHARDS // 2: a large shard made by an
            # earlier merge is rewritten only once the small ones outgrow it, so a long run writes
            # each vector a few times, not once per merge.
            shards.sort(key=lambda shard: len(shard.keys))
            self._merge(shards[: len(shards) - MAX_SHARDS // 2 + 1])
        if self.max_bytes is not None:
            self.evict(self.max_bytes)

    def _merge(self, shards: list[_Shard]) -> None:
        """One shard with the distinct keys of ``shards``, then ``shards`` removed. The vectors are
        copied block by block from the memory maps: never all of them in memory."""
        keys, first = np.unique(np.concatenate([s.keys for s in shards]), axis=0, return_index=True)
        rows = read_rows(block_offsets(len(s.keys) for s in shards), *(s.vectors for s in shards))
        self._write_shard(keys, (rows[first[start:stop]] for start, stop in row_blocks(len(first))))
        for shard in shards:
            _remove_shard(shard.keys_path)

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.dir.glob("*.npy")) if self.dir.is_dir() else 0

    def evict(self, max_bytes: int) -> None:
        """Delete least recently used shards until the cache is at most ``max_bytes``."""
        if not self.dir.is_dir():
            return
        entries = []
        for keys_path in self.dir.glob("*.keys.npy"):
            vecs_path = keys_path.with_name(keys_path.name.replace(".keys.npy", ".vecs.npy"))
            try:
                size = keys_path.stat().st_size + (vecs_path.stat().st_size if vecs_path.exists() else 0)
                entries.append((keys_path.stat().st_mtime, keys_path, size))
            except FileNotFoundError:
                continue
        total = sum(size for _, _, size in entries)
        for _, keys_path, size in sorted(entries):
            if total <= max_bytes:
                break
            _remove_shard(keys_path)
            total -= size


def _search(sorted_keys: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Row of each query in ``sorted_keys`` (lexicographically sorted (M, 2)), or -1."""
    if not len(sorted_keys):
        return np.full(len(queries), -1)
    first = sorted_keys[:, 0]
    lo = np.searchsorted(first, queries[:, 0], side="left")
    hi = np.searchsorted(first, queries[:, 0], side="right")
    result = np.full(len(queries), -1, dtype=np.int64)
    single = (hi - lo) == 1
    match = single & (sorted_keys[np.minimum(lo, len(first) - 1), 1] == queries[:, 1])
    result[match] = lo[match]
    # A shared first word is a 1-in-2^64 event per pair; resolve it exactly, row by row.
    for i in np.flatnonzero((hi - lo) > 1):
        rows = np.arange(lo[i], hi[i])
        same = rows[sorted_keys[rows, 1] == queries[i, 1]]
        if same.size:
            result[i] = same[0]
    return result


def _sync_and_rename(tmp: Path, final: Path) -> None:
    with tmp.open("rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, final)


def _touch(path: Path) -> None:
    try:
        os.utime(path)
    except OSError:
        pass


def _remove_shard(keys_path: Path) -> None:
    vecs_path = keys_path.with_name(keys_path.name.replace(".keys.npy", ".vecs.npy"))
    for path in (keys_path, vecs_path):  # keys first: the shard stops being visible at once
        try:
            path.unlink()
        except FileNotFoundError:
            pass
