"""Where the audit's block work runs: in this process (``local``) or on a Ray cluster (``ray``).

The stages are plain functions over arrays; an engine only decides where their blocks run. Two
kinds of work are distributed:

- ``map(fn, items, *shared)``: ``fn(item, *shared)`` for every item, results in item order. The
  neighbour search uses it (one item = a block of rows or of k-means lists); ``shared`` are the
  large read-only arrays every block reads (the embeddings), put in place once with ``share``.
  An item may itself be a shared value (a block's own data read by several maps).
- ``hold(array)``: the array the rest of the run should read, held where the engine shares it
  from: locally the array itself; on Ray a read-only view of its one object-store copy, so the
  driver's node does not hold the vectors twice (its own copy and the object store's).
- ``encode(encoder, factory, chunks)``: the encoder over chunks of texts, vectors in chunk order.
  Locally the ``encoder`` already built; on Ray a pool of actors that each build one with
  ``factory`` once (GPUs where the cluster has them).

The per-row stages after the graph run as blocks of rows too (:func:`row_blocks`): the consensus
statistics are counted per block and summed (noise.py, map then reduce), and detection scores each
block of rows from its neighbours (detect.py), one map per propagation step. A row's result never
depends on which block it is in, so the block size changes no result.

The same function runs the same block either way, so the engines give the same graph (and
therefore the same flags) for the same input, seed and config.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
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


class Engine(Protocol):
    name: str

    def share(self, value: Any) -> Any: ...

    def hold(self, array: np.ndarray) -> np.ndarray: ...

    def map(self, fn: Callable[..., Any], items: Iterable[Any], *shared: Any) -> Iterator[Any]: ...

    def encode(
        self, encoder: Any, factory: Callable[[], Any] | None, chunks: Iterable[list[str]]
    ) -> Iterator[np.ndarray]: ...

    def describe(self) -> dict[str, Any]: ...


class LocalEngine:
    """Everything in this process, one block after another (each block uses every core)."""

    name = "local"

    def share(self, value: Any) -> Any:
        return value

    def hold(self, array: np.ndarray) -> np.ndarray:
        return array

    def map(self, fn: Callable[..., Any], items: Iterable[Any], *shared: Any) -> Iterator[Any]:
        for item in items:
            yield fn(item, *shared)

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
