"""Where the audit's block work runs: in this process (``local``) or on a Ray cluster (``ray``).

The stages are plain functions over arrays; an engine only decides where their blocks run and
where the embeddings are kept:

- ``map(fn, items, *shared)``: ``fn(item, *shared)`` for every item, results in item order. The
  neighbour search uses it (one item = a block of rows or of k-means lists); ``shared`` are the
  read-only values every block reads (the search plan, the labels), put in place once with
  ``share``, and the embeddings' blocks (``*rows.shared()``, below). An item may itself be a
  shared value (a block's own data read by several maps).
- ``place(array)``: an array on the driver as :class:`Rows`, consecutive row blocks held where the
  engine keeps them: locally one block, the array itself; on Ray one object-store object per
  :data:`BLOCK_ROWS` rows, put one block at a time. A block function reads them with
  :func:`read_rows` from the ``*rows.shared()`` arguments of its map; ``gather(rows)`` is the
  whole array on the driver, for the few callers that need it (the CUDA search, ``select``).
- ``map_rows(fn, items, sizes, dim, *shared)``: like ``map``, but each result is a block of rows
  and the blocks stay where they were made, as :class:`Rows` (locally one array; on Ray the
  tasks' outputs, in the object store of the node that ran each task). The embedding makes the
  row vectors this way, so they never pass through the driver.
- ``encode(encoder, factory, chunks)``: the encoder over chunks of texts, vectors in chunk order.
  Locally the ``encoder`` already built; on Ray a pool of actors that each build one with
  ``factory`` once (GPUs where the cluster has them), which round the vectors to float16 (what
  the embedding keeps) before sending them back.

The per-row stages after the graph run as blocks of rows too (:func:`row_blocks`): the consensus
statistics are counted per block and summed (noise.py, map then reduce), and detection scores each
block of rows from its neighbours (detect.py), one map per propagation step. A row's result never
depends on which block it is in, so the block size changes no result.

The same function runs the same block either way, so the engines give the same graph (and
therefore the same flags) for the same input, seed and config.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

# Rows per block of the per-row stages: large enough that each block is a few vectorised array
# operations, small enough that a 1,000,000-row audit gives every Ray worker several blocks.
BLOCK_ROWS = 65_536


def row_blocks(n_rows: int, block_rows: int | None = None) -> list[tuple[int, int]]:
    """Consecutive [start, stop) row ranges of at most ``block_rows`` rows (default
    :data:`BLOCK_ROWS`) covering ``n_rows`` rows."""
    size = max(1, block_rows or BLOCK_ROWS)
    return [(start, min(start + size, n_rows)) for start in range(0, n_rows, size)]


def block_offsets(sizes: Iterable[int]) -> np.ndarray:
    """(P + 1,) int64 offsets of consecutive blocks of ``sizes`` rows: block p holds rows
    offsets[p]:offsets[p + 1]."""
    return np.concatenate([[0], np.cumsum(np.asarray(list(sizes), dtype=np.int64))]).astype(np.int64)


@dataclass(frozen=True, eq=False)
class Rows:
    """An (N, d) array held as consecutive row blocks where an engine keeps them.

    Attributes
    ----------
    parts : tuple
        The blocks, first rows first: arrays (local engine) or object-store references (Ray).
    offsets : ndarray of shape (P + 1,), int64
        Block p holds rows offsets[p]:offsets[p + 1].
    dim : int
        d.
    """

    parts: tuple[Any, ...]
    offsets: np.ndarray
    dim: int

    @property
    def n_rows(self) -> int:
        return int(self.offsets[-1])

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n_rows, self.dim)

    def __len__(self) -> int:
        return self.n_rows

    def shared(self) -> tuple[Any, ...]:
        """The trailing arguments of an engine map whose block function reads these rows
        (``fn(item, ..., offsets, *parts)``, read with :func:`read_rows`)."""
        return (self.offsets, *self.parts)


class RowReader:
    """Read access to the rows of :class:`Rows` inside a block function: ``reader[start:stop]``
    and ``reader[index_array]`` as on the (N, d) array (a view where one block holds the rows)."""

    def __init__(self, offsets: np.ndarray, parts: tuple[np.ndarray, ...]) -> None:
        self.offsets = offsets
        self.parts = parts
        self.dim = parts[0].shape[1] if parts else 0
        self.dtype = parts[0].dtype if parts else np.float32

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.offsets[-1]), self.dim)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, index: Any) -> np.ndarray:
        if len(self.parts) == 1:
            return self.parts[0][index]
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step != 1 or stop <= start:
                return self[np.arange(start, stop, step)]
            first = int(np.searchsorted(self.offsets, start, side="right")) - 1
            if stop <= self.offsets[first + 1]:
                return self.parts[first][start - self.offsets[first] : stop - self.offsets[first]]
            return self[np.arange(start, stop)]
        index = np.asarray(index)
        flat = index.ravel()
        part = np.searchsorted(self.offsets, flat, side="right") - 1
        out = np.empty((flat.size, self.dim), dtype=self.dtype)
        # One fancy index per block the rows fall in (a few dozen blocks per million rows).
        for p in np.unique(part):
            mine = part == p
            out[mine] = self.parts[p][flat[mine] - self.offsets[p]]
        return out.reshape(*index.shape, self.dim)


def read_rows(offsets: np.ndarray, *parts: np.ndarray) -> RowReader:
    """The rows of a :class:`Rows` inside a block function, from its ``shared()`` arguments."""
    return RowReader(offsets, parts)


def take_rows(engine: Engine, rows: Rows, index: np.ndarray) -> np.ndarray:
    """Rows ``index`` of ``rows`` on the driver, as one engine block: for samples and a few rows,
    never for all of them."""
    return next(iter(engine.map(_take, [np.asarray(index, dtype=np.int64)], *rows.shared())))


def _take(index: np.ndarray, offsets: np.ndarray, *parts: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(read_rows(offsets, *parts)[index])


class Engine(Protocol):
    name: str

    def share(self, value: Any) -> Any: ...

    def place(self, array: np.ndarray | Rows) -> Rows: ...

    def gather(self, rows: np.ndarray | Rows) -> np.ndarray: ...

    def map(self, fn: Callable[..., Any], items: Iterable[Any], *shared: Any) -> Iterator[Any]: ...

    def map_rows(
        self, fn: Callable[..., np.ndarray], items: Iterable[Any], sizes: list[int], dim: int, *shared: Any
    ) -> Rows: ...

    def encode(
        self, encoder: Any, factory: Callable[[], Any] | None, chunks: Iterable[list[str]]
    ) -> Iterator[np.ndarray]: ...

    def describe(self) -> dict[str, Any]: ...


class LocalEngine:
    """Everything in this process, one block after another (each block uses every core)."""

    name = "local"

    def share(self, value: Any) -> Any:
        return value

    def place(self, array: np.ndarray | Rows) -> Rows:
        if isinstance(array, Rows):
            return array
        return Rows((array,), np.array([0, len(array)], dtype=np.int64), array.shape[1])

    def gather(self, rows: np.ndarray | Rows) -> np.ndarray:
        if isinstance(rows, Rows):
            return rows.parts[0] if len(rows.parts) == 1 else np.concatenate(rows.parts)
        return rows

    def map(self, fn: Callable[..., Any], items: Iterable[Any], *shared: Any) -> Iterator[Any]:
        for item in items:
            yield fn(item, *shared)

    def map_rows(
        self, fn: Callable[..., np.ndarray], items: Iterable[Any], sizes: list[int], dim: int, *shared: Any
    ) -> Rows:
        # One array, filled block by block: never the blocks and the whole at once.
        offsets = block_offsets(sizes)
        out = np.empty((int(offsets[-1]), dim), dtype=np.float32)
        for p, item in enumerate(items):
            out[offsets[p] : offsets[p + 1]] = fn(item, *shared)
        return self.place(out)

    def encode(
        self, encoder: Any, factory: Callable[[], Any] | None, chunks: Iterable[list[str]]
    ) -> Iterator[np.ndarray]:
        for texts in chunks:
            yield encoder.encode(texts)

    def describe(self) -> dict[str, Any]:
        return {"name": "local"}


LOCAL = LocalEngine()


def engine_for(name: str, *, ray_address: str | None = None, ray_actors: int = 0) -> Engine:
    """The engine a config names: ``local`` or ``ray`` (connects to ``ray_address``, or starts a
    local Ray instance on this machine's cores)."""
    if name == "ray":
        from credaudit.engine_ray import RayEngine

        return RayEngine(address=ray_address, actors=ray_actors)
    return LOCAL
