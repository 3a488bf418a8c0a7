"""Where the audit's block work runs: in this process (``local``) or on a Ray cluster (``ray``).

The stages are plain functions over arrays; an engine only decides where their blocks run and
where the embeddings are kept:

- ``map(fn, items, *shared, rows=, reads=)``: ``fn(item, *shared, *rows.shared(...))`` for every
  item, results in item order. ``shared`` are the read-only values every block reads (the search
  plan, the labels), put in place once with ``share``; ``rows`` are the blocks of an array of
  rows (the vectors, the neighbour graph, detection's beliefs), or of several (a tuple, read with
  :func:`read_many`), of which each task is sent only those ``reads(item)`` names (the others are
  None), so that on a cluster a node fetches the blocks its tasks read, not every block.
- ``place(array)``: an array on the driver as :class:`Rows`, consecutive row blocks held where the
  engine keeps them: locally one block, the array itself; on Ray one object-store object per
  block of at most :data:`BLOCK_ROWS` rows (:func:`row_blocks`), put one block at a time. A block
  function reads them with :func:`read_rows`; ``gather(rows)`` is the whole array on the driver,
  for the few callers that need it (the CUDA search, ``select``).
- ``map_rows(fn, blocks, *shared, dim=, rows=, reads=, order=)``: like ``map`` over consecutive
  ranges (of row numbers, or of stored positions of a layout ``order``), for block functions
  that make new rows: each returns (its rows' (B, dim) array, a small value). The arrays stay
  where the engine keeps rows, as :class:`Rows` (locally one array in row order; on Ray each
  task's output, in the object store of the node that ran it), and only the small values come
  back. The neighbour graph is made this way by the search's tasks, a detection round's graph
  from it, and detection's beliefs pass from one propagation step to the next: never through
  the driver. ``replace_rows`` writes a few rows anew (the rows a search left short).
- ``take_blocks(rows, index, fn)``: new rows whose row i is row ``index[i]`` of ``rows``, ``fn``
  applied to each new block; on a cluster of several nodes a shuffle (each block split by
  destination, each destination block assembled from its pieces), so that no task reads every
  block. The blocks stay where they were made
  (locally one array; on Ray the tasks' outputs, in the object store of the node that ran each
  task). The embedding makes the row vectors from the distinct texts' vectors this way, so they
  never pass through the driver.
- ``arrange(rows, order)``: store the rows anew in another order (``take_blocks``' shuffle). The
  neighbour search lays the rows out by k-means list, so that a block of lists reads the few
  blocks holding its lists and their probed lists, and the stages after it read a block's
  neighbours from nearby blocks. Rows keep their row numbers; only the storage moves. Locally a
  no-op (every block is at hand), and on Ray only on a cluster of several nodes
  (``engine.ray_arrange``).
- ``encode(encoder, factory, chunks)``: the encoder over chunks of texts, vectors in chunk order.
  Locally the ``encoder`` already built; on Ray a pool of actors that each build one with
  ``factory`` once (GPUs where the cluster has them), which round the vectors to float16 (what
  the embedding keeps) before sending them back.

The per-row stages run as blocks of rows too: those that read vectors over blocks of stored rows,
each sent its own block (:func:`map_stored`) or the blocks of its rows' neighbours; the consensus
statistics are counted per block and summed (noise.py, map then reduce), and detection scores each
block of rows from its neighbours (detect.py), one map per propagation step, the beliefs kept as
blocks between steps (``map_rows``). A row's result never
depends on which block it is in, so neither the block size nor the layout changes a per-row result;
sums over rows (the outliers' class centroids) are added in float64, where the order moves them by
float64 rounding only.

The same function runs the same block either way, so the engines give the same graph (and
therefore the same flags) for the same input, seed and config. The local engine runs a stage's
blocks on a few threads side by side (``engine.threads``; one BLAS thread each), which changes
where a block runs, never what it computes.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from threadpoolctl import threadpool_limits

# Rows per block of the per-row stages: large enough that each block is a few vectorised array
# operations, small enough that a 1,000,000-row audit gives every Ray worker several blocks.
BLOCK_ROWS = 65_536


def row_blocks(n_rows: int, block_rows: int | None = None) -> list[tuple[int, int]]:
    """Consecutive [start, stop) row ranges covering ``n_rows`` rows: the fewest ranges of at most
    ``block_rows`` rows (default :data:`BLOCK_ROWS`), their sizes differing by at most one.

    Equal ranges, not full ones and a short last one: a map's tasks then take equal time, so that
    100,000 rows on two workers are two tasks of 50,000 rows, not 65,536 and 34,464."""
    size = max(1, block_rows or BLOCK_ROWS)
    n_parts = -(-n_rows // size)
    bounds = [part * n_rows // n_parts for part in range(n_parts + 1)] if n_parts else []
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def block_offsets(sizes: Iterable[int]) -> np.ndarray:
    """(P + 1,) int64 offsets of consecutive blocks of ``sizes`` rows: block p holds rows
    offsets[p]:offsets[p + 1]."""
    return np.concatenate([[0], np.cumsum(np.asarray(list(sizes), dtype=np.int64))]).astype(np.int64)


@dataclass(eq=False)
class Rows:
    """An (N, d) array held as consecutive blocks where an engine keeps them.

    The blocks hold the rows in *stored order*: row numbers unless an engine has arranged them
    (:meth:`Engine.arrange`; the Ray engine lays the rows out by k-means list for the neighbour
    search, so that each task reads only the few blocks holding its lists and their neighbours).
    Readers address rows by row number either way; only which blocks a task needs changes.

    Attributes
    ----------
    parts : tuple
        The blocks, first stored rows first: arrays (local engine) or object-store references (Ray).
    offsets : ndarray of shape (P + 1,), int64
        Block p holds stored positions offsets[p]:offsets[p + 1].
    dim : int
        d.
    order : ndarray of shape (N,), int64, or None
        Stored position s holds row order[s]; None: row s (row order).
    position : ndarray of shape (N,), int64, or None
        Row r's stored position (the inverse of ``order``); None with ``order``.
    layout : object, optional
        What block functions receive for the layout (the first of :meth:`shared`): None means
        ``offsets``; an arranged array's engine puts (offsets, order, position) there once.
    """

    parts: tuple[Any, ...]
    offsets: np.ndarray
    dim: int
    order: np.ndarray | None = None
    position: np.ndarray | None = None
    layout: Any = None

    @property
    def n_rows(self) -> int:
        return int(self.offsets[-1])

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n_rows, self.dim)

    def __len__(self) -> int:
        return self.n_rows

    def shared(self, parts: Iterable[int] | None = None) -> tuple[Any, ...]:
        """The trailing arguments of an engine map whose block function reads these rows
        (``fn(item, ..., layout, *parts)``, read with :func:`read_rows`): every block, or only the
        blocks ``parts`` (the others None, so a task fetches only what it reads)."""
        layout = self.offsets if self.layout is None else self.layout
        if parts is None:
            return (layout, *self.parts)
        wanted = set(int(p) for p in parts)
        return (layout, *(part if p in wanted else None for p, part in enumerate(self.parts)))

    def locate(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Where rows ``rows`` (row numbers) are kept: their stored positions and their blocks,
        both of ``rows``' shape, int64."""
        rows = np.asarray(rows, dtype=np.int64)
        stored = rows if self.position is None else self.position[rows]
        return stored, np.searchsorted(self.offsets, stored, side="right") - 1

    def parts_of(self, rows: np.ndarray) -> np.ndarray:
        """The blocks holding rows ``rows`` (row numbers, any shape), sorted."""
        part = self.locate(np.asarray(rows, dtype=np.int64).ravel())[1]
        return np.flatnonzero(np.bincount(part, minlength=len(self.parts)))

    def numbers(self, start: int, stop: int) -> np.ndarray:
        """Row numbers of stored positions [start, stop)."""
        return np.arange(start, stop, dtype=np.int64) if self.order is None else self.order[start:stop]

    def relayout(
        self, parts: tuple[Any, ...], offsets: np.ndarray, order: np.ndarray, share: Callable[[Any], Any]
    ) -> None:
        """The same rows, stored anew (for :meth:`Engine.arrange`): every holder of this array sees
        the new blocks, and the old ones are released. ``share`` puts the layout where the block
        functions read it (the engine's ``share``)."""
        if len(order) != self.n_rows or (len(order) and np.bincount(order, minlength=len(order)).max() != 1):
            raise ValueError(f"a layout's order must hold each of the {self.n_rows} rows once")
        position = np.empty_like(order)
        position[order] = np.arange(len(order), dtype=np.int64)
        self.parts, self.offsets, self.order, self.position = parts, offsets, order, position
        self.layout = share((offsets, order, position))


# What an engine map reads besides its shared values (one array of rows, a tuple of them, or
# none), and which blocks of each a task is sent (:meth:`ReadLog.arguments`).
RowsArg = Rows | tuple[Rows, ...] | None
ReadsArg = Callable[[Any], Any] | None


def stored_blocks(rows: Rows, block_rows: int | None = None) -> list[tuple[int, int]]:
    """[start, stop) ranges of stored positions covering ``rows``, each inside one block and of at
    most ``block_rows`` rows (default :data:`BLOCK_ROWS`): the items of a per-row stage, each read
    from its own block (:func:`map_stored`)."""
    return [
        (int(first) + a, int(first) + b)
        for first, last in zip(rows.offsets[:-1], rows.offsets[1:], strict=True)
        for a, b in row_blocks(int(last - first), block_rows)
    ]


def map_stored(
    engine: Engine,
    fn: Callable[..., Any],
    rows: Rows,
    *shared: Any,
    block_rows: int | None = None,
    reads: ReadsArg = None,
    also: tuple[Rows, ...] = (),
    spanning: bool = False,
) -> Iterator[tuple[np.ndarray, Any]]:
    """``fn((start, stop), *shared, layout, *parts)`` for every range of :func:`stored_blocks`, each
    task sent only its own block (or the blocks ``reads(range)`` names); yields (the range's row
    numbers, ``fn``'s result) in stored order. Block functions read their rows with
    ``read_rows(...).stored(start, stop)``.

    ``spanning``: ranges of at most ``block_rows`` stored rows (:func:`row_blocks`) across
    ``rows``' blocks instead, each task sent the blocks its range overlaps (:func:`range_parts`):
    for arrays made in small blocks (the neighbour graph, one block per few k-means lists), so
    that a stage is a few full-sized tasks.

    ``also``: more arrays the block function reads after ``rows`` (:func:`read_many`); ``reads``
    then names the blocks of each, ``rows`` first (a tuple; None for every block)."""
    if also and reads is None:
        raise ValueError("map_stored over several arrays needs reads naming the blocks of each")
    blocks = row_blocks(rows.n_rows, block_rows) if spanning else stored_blocks(rows, block_rows)
    reads = reads or (range_parts(rows) if spanning else own_parts(rows))
    results = engine.map(fn, blocks, *shared, rows=(rows, *also) if also else rows, reads=reads)
    for (start, stop), result in zip(blocks, results, strict=True):
        yield rows.numbers(start, stop), result


def own_parts(rows: Rows) -> Callable[[tuple[int, int]], list[int]]:
    """``reads`` for a map over :func:`stored_blocks` of ``rows``: each range's own block."""
    return lambda block: [int(np.searchsorted(rows.offsets, block[0], side="right")) - 1]


def range_parts(rows: Rows) -> Callable[[tuple[int, int]], list[int]]:
    """``reads`` for a map over ranges [start, stop) of ``rows``' stored positions that may span
    several of its blocks (``row_blocks(rows.n_rows, ...)``): the blocks each range overlaps."""

    def reads(block: tuple[int, int]) -> list[int]:
        first = int(np.searchsorted(rows.offsets, block[0], side="right")) - 1
        last = int(np.searchsorted(rows.offsets, block[1] - 1, side="right")) - 1
        return list(range(first, last + 1))

    return reads


class RowReader:
    """Read access to the rows of :class:`Rows` inside a block function: ``reader[start:stop]``
    and ``reader[index_array]`` by row number as on the (N, d) array (a view where one block holds
    the rows), ``reader.stored(start, stop)`` by stored position. A block the task was not sent
    (None) raises :class:`LookupError` when read."""

    def __init__(self, layout: Any, parts: tuple[np.ndarray | None, ...]) -> None:
        if isinstance(layout, tuple):
            self.offsets, self.order, self.position = layout
        else:
            self.offsets, self.order, self.position = layout, None, None
        self.parts = parts
        present = [part for part in parts if part is not None]
        self.dim = present[0].shape[1] if present else 0
        self.dtype = present[0].dtype if present else np.float32

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.offsets[-1]), self.dim)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def _part(self, p: int) -> np.ndarray:
        part = self.parts[p]
        if part is None:
            raise LookupError(f"block {p} of the vectors was not sent to this task (its engine map's reads)")
        return part

    def numbers(self, start: int, stop: int) -> np.ndarray:
        """Row numbers of stored positions [start, stop)."""
        return np.arange(start, stop, dtype=np.int64) if self.order is None else self.order[start:stop]

    def whole(self) -> np.ndarray | None:
        """The (N, d) array itself when one block holds every row in row order (the local
        engine's default), else None: a reader of many scattered rows can then index it in place
        instead of gathering a copy."""
        if len(self.parts) == 1 and self.order is None and self.parts[0] is not None:
            return self.parts[0]
        return None

    def stored(self, start: int, stop: int) -> np.ndarray:
        """Stored positions [start, stop): a view where one block holds them."""
        if stop <= start:
            return np.zeros((0, self.dim), dtype=self.dtype)
        first = int(np.searchsorted(self.offsets, start, side="right")) - 1
        if stop <= self.offsets[first + 1]:
            return self._part(first)[start - self.offsets[first] : stop - self.offsets[first]]
        return self._read(np.arange(start, stop))

    def __getitem__(self, index: Any) -> np.ndarray:
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if self.order is None and step == 1:
                return self.stored(start, stop)
            index = np.arange(start, stop, step)
        index = np.asarray(index)
        stored = index if self.position is None else self.position[index]
        if len(self.parts) == 1:
            return self._part(0)[stored]
        return self._read(stored)

    def _read(self, stored: np.ndarray) -> np.ndarray:
        flat = stored.ravel()
        part = np.searchsorted(self.offsets, flat, side="right") - 1
        out = np.empty((flat.size, self.dim), dtype=self.dtype)
        # One fancy index per block the rows fall in (a few dozen blocks per million rows), the rows
        # grouped by block: slices where they come sorted (detection's steps read their rows'
        # neighbours as a sorted index), else one stable argsort; never a mask pass per block.
        # numpy sorts 16-bit keys stably by radix: the same order, 12x faster than on int64 keys
        # (2,000,000 rows in 16 blocks: 6 ms against 74 ms).
        by = None
        if flat.size >= 2 and not (part[1:] >= part[:-1]).all():
            keys = part.astype(np.int16) if len(self.parts) <= np.iinfo(np.int16).max else part
            by = np.argsort(keys, kind="stable")
        bounds = np.searchsorted(part if by is None else part[by], np.arange(len(self.parts) + 1))
        for p in np.flatnonzero(np.diff(bounds)):
            mine = slice(bounds[p], bounds[p + 1]) if by is None else by[bounds[p] : bounds[p + 1]]
            out[mine] = self._part(p)[flat[mine] - self.offsets[p]]
        return out.reshape(*stored.shape, self.dim)


def unique_rows(index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(index, return_inverse=True)`` for row numbers (>= 0): (the distinct rows in
    increasing order, each entry's position among them, shaped as ``index``).

    Row numbers below 2³² are sorted by two stable radix passes over 16-bit halves, which numpy
    runs in linear time: 3x faster than ``np.unique``'s comparison sort on 210,000 row numbers
    (a detection step's chunk at K = 20), with the same result.
    """
    flat = np.asarray(index, dtype=np.int64).ravel()
    if flat.size == 0 or flat.max() >= 1 << 32:
        unique, inverse = np.unique(flat, return_inverse=True)
        return unique, inverse.reshape(np.shape(index))
    order = np.argsort((flat & 0xFFFF).astype(np.uint16), kind="stable")
    order = order[np.argsort((flat[order] >> 16).astype(np.uint16), kind="stable")]
    ranked = flat[order]
    first = np.empty(ranked.size, dtype=bool)
    first[0] = True
    np.not_equal(ranked[1:], ranked[:-1], out=first[1:])
    inverse = np.empty(ranked.size, dtype=np.int64)
    inverse[order] = np.cumsum(first) - 1
    return ranked[first], inverse.reshape(np.shape(index))


def _same(block: np.ndarray) -> np.ndarray:
    return block


def read_rows(layout: Any, *parts: np.ndarray | None) -> RowReader:
    """The rows of a :class:`Rows` inside a block function, from its ``shared()`` arguments."""
    return RowReader(layout, parts)


def read_many(*args: Any) -> list[RowReader]:
    """The arrays of a map over several :class:`Rows` (``rows=(a, b, ...)``) inside a block
    function, from their ``shared()`` arguments one after another: each starts with its layout,
    which says how many blocks follow."""
    readers, at = [], 0
    while at < len(args):
        layout = args[at]
        n_parts = len(layout[0] if isinstance(layout, tuple) else layout) - 1
        readers.append(RowReader(layout, args[at + 1 : at + 1 + n_parts]))
        at += 1 + n_parts
    return readers


def take_rows(engine: Engine, rows: Rows, index: np.ndarray, dtype: Any = np.float32) -> np.ndarray:
    """Rows ``index`` (Q,) of ``rows`` on the driver, (Q, d) of ``dtype`` (the rows' own type):
    for samples and a few rows, never for all of them."""
    index = np.asarray(index, dtype=np.int64)
    # One task per block holding some of the rows, each sent its own block: a sample spread over
    # every block (the k-means training rows) is not fetched whole by one task.
    part = rows.locate(index)[1]
    by_part = np.argsort(part, kind="stable")
    cuts = np.flatnonzero(np.diff(part[by_part])) + 1
    items = [mine for mine in np.split(by_part, cuts) if mine.size]
    out = np.empty((len(index), rows.dim), dtype=dtype)
    found = engine.map(_take, [index[mine] for mine in items], rows=rows, reads=rows.parts_of)
    for mine, block in zip(items, found, strict=True):
        out[mine] = block
    return out


def _take(index: np.ndarray, layout: Any, *parts: np.ndarray | None) -> np.ndarray:
    return np.ascontiguousarray(read_rows(layout, *parts)[index])


def shuffle_plan(
    rows: Rows, index: np.ndarray, block_rows: int | None = None, offsets: np.ndarray | None = None
) -> tuple[list, list, np.ndarray]:
    """How to make new blocks whose row i is ``rows``' row ``index[i]`` with one pass over the blocks
    (split each source block by destination, then assemble each destination block), so that no task
    reads more than its own share: the engines' ``take_blocks`` (and ``arrange``).

    The new blocks are :func:`row_blocks` of at most ``block_rows`` rows (default
    :data:`BLOCK_ROWS`), or the blocks of ``offsets`` where given (the first round of :func:`staged_shuffle`).

    Returns
    -------
    takes : list of (ndarray, ndarray), one per source block p
        The source block's local rows to send, in destination order, and where they split by
        destination block (P_dest - 1 cut points).
    sources : list of ndarray, one per destination block q
        For each of its rows, the source block it comes from.
    offsets : ndarray of shape (P_dest + 1,)
        The destination blocks' offsets.
    """
    index = np.asarray(index, dtype=np.int64)
    if offsets is None:
        offsets = block_offsets(b - a for a, b in row_blocks(len(index), block_rows))
    bounds = list(zip(offsets[:-1].tolist(), offsets[1:].tolist(), strict=True))
    stored, source = rows.locate(index)
    by_source = np.argsort(source, kind="stable")  # destination order within each source block
    starts = np.searchsorted(source[by_source], np.arange(len(rows.parts) + 1))
    takes = []
    for p in range(len(rows.parts)):
        mine = by_source[starts[p] : starts[p + 1]]
        takes.append((stored[mine] - rows.offsets[p], np.searchsorted(mine, offsets[1:-1])))
    sources = [source[a:b] for a, b in bounds]
    return takes, sources, offsets


def staged_shuffle(
    rows: Rows, index: np.ndarray, block_rows: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The shuffle of :func:`shuffle_plan` in two rounds, for many blocks.

    One round splits each of P source blocks into a piece per destination block: P x Q pieces, each
    an object on Ray (2.3 million for 100M rows in blocks of 65,536). Two rounds go through
    intermediate blocks instead: the sources in ⌈√P⌉ runs of consecutive blocks, the destinations
    in ⌈√Q⌉ runs, and intermediate block (run c, run g) holds the rows going from run c to run g
    (cut at ``block_rows`` rows). A source then splits into at most about √Q pieces and an
    intermediate block into at most about √Q: about P·√Q + √P·Q pieces in all (120,000 at 100M),
    for moving every row twice.

    Returns
    -------
    first : ndarray of shape (len(index),), int64
        The first round's take: intermediate row j is ``rows``' row ``first[j]``.
    first_offsets : ndarray, int64
        The intermediate blocks (:func:`shuffle_plan`'s ``offsets``).
    second : ndarray of shape (len(index),), int64
        The second round's take: new row i is intermediate row ``second[i]``, in the blocks of
        :func:`row_blocks`; so new row i is ``rows``' row ``index[i]``.
    """
    index = np.asarray(index, dtype=np.int64)
    n = len(index)
    if n == 0:
        return index, np.zeros(1, dtype=np.int64), index
    size = max(1, block_rows or BLOCK_ROWS)
    final = block_offsets(b - a for a, b in row_blocks(n, size))  # the second round's blocks
    n_sources, n_dest = max(len(rows.parts), 1), len(final) - 1
    runs_in, runs_out = int(np.ceil(np.sqrt(n_sources))), int(np.ceil(np.sqrt(n_dest)))
    source = rows.locate(index)[1]
    dest = np.repeat(np.arange(n_dest, dtype=np.int64), np.diff(final))
    route = (source * runs_in // n_sources) * runs_out + dest * runs_out // n_dest
    order = np.argsort(route, kind="stable")  # intermediate row j is new row order[j]
    routed = route[order]
    starts = np.flatnonzero(np.r_[True, routed[1:] != routed[:-1]])
    ends = np.r_[starts[1:], n]
    offsets = np.unique(
        np.concatenate([np.arange(a, b, size) for a, b in zip(starts, ends, strict=True)] + [np.array([n])])
    ).astype(np.int64)
    second = np.empty(n, dtype=np.int64)
    second[order] = np.arange(n, dtype=np.int64)
    return index[order], offsets, second


def split_block(take: tuple[np.ndarray, np.ndarray], part: np.ndarray) -> list[np.ndarray]:
    """One source block's rows for each destination block (a map task of a shuffle)."""
    rows, cuts = take
    return np.split(part[rows], cuts)


def assemble_block(
    source: np.ndarray, present: list[int], fn: Callable[[np.ndarray], np.ndarray] | None, *pieces: np.ndarray
) -> np.ndarray:
    """One destination block from its pieces (a reduce task of a shuffle): the rows from source
    block ``present[j]`` are ``pieces[j]``, in the block's order; then ``fn`` of it, if given."""
    dim = pieces[0].shape[1] if pieces else 0
    out = np.empty((len(source), dim), dtype=pieces[0].dtype if pieces else np.float32)
    if pieces:
        # ``present`` is sorted and each piece is in the block's order, so the rows sorted by
        # source (stably) are the pieces one after another: one pass, whatever the source count.
        out[np.argsort(source, kind="stable")] = np.concatenate(pieces)
    return out if fn is None else fn(out)


class Engine(Protocol):
    name: str
    # Whether ``map_rows`` keeps one block per range (Ray; the local engine with ``block_rows``)
    # rather than one array, so that a later map's tasks should be sent only the blocks they read.
    keeps_blocks: bool

    def share(self, value: Any) -> Any: ...

    def place(self, array: np.ndarray | Rows) -> Rows: ...

    def place_blocks(self, blocks: Iterable[np.ndarray], n_rows: int) -> Rows: ...

    def map_rows(
        self,
        fn: Callable[..., tuple[np.ndarray, Any]],
        blocks: list[tuple[int, ...]],
        *shared: Any,
        dim: int,
        rows: RowsArg = None,
        reads: ReadsArg = None,
        order: np.ndarray | None = None,
        done: Callable[[], None] | None = None,
    ) -> tuple[Rows, list[Any]]: ...

    def gather(self, rows: np.ndarray | Rows) -> np.ndarray: ...

    def map(
        self,
        fn: Callable[..., Any],
        items: Iterable[Any],
        *shared: Any,
        rows: RowsArg = None,
        reads: ReadsArg = None,
    ) -> Iterator[Any]: ...

    def take_blocks(
        self, rows: Rows, index: np.ndarray, fn: Callable[[np.ndarray], np.ndarray] | None = None
    ) -> Rows: ...

    def replace_rows(self, rows: Rows, numbers: np.ndarray, values: np.ndarray) -> None: ...

    def arrange(self, rows: Rows, order: np.ndarray) -> None: ...

    def encode(
        self, encoder: Any, factory: Callable[[], Any] | None, chunks: Iterable[list[str]]
    ) -> Iterator[np.ndarray]: ...

    def describe(self) -> dict[str, Any]: ...


class ReadLog:
    """How many blocks of the vectors each block function's tasks were sent, against how many the
    vectors had: ``counts[name] = [tasks, blocks sent, blocks held]``, summed over tasks (a
    function reading several arrays: ``name`` for the first, ``name#i`` for array i). What a node
    fetches on a cluster; benchmarks/scale.py reports it."""

    def __init__(self) -> None:
        self.counts: dict[str, list[int]] = {}

    def arguments(self, fn: Callable[..., Any], item: Any, rows: RowsArg, reads: ReadsArg) -> tuple[Any, ...]:
        """The trailing ``rows`` arguments of ``fn``'s task for ``item`` (only its ``reads``),
        counted: each array's ``shared(...)`` in turn, for :func:`read_many` to split.

        ``rows`` is one :class:`Rows` or a tuple of them; ``reads(item)`` names the blocks of each
        (one list, or a tuple of lists with None for "every block"); no ``reads``: every block."""
        if rows is None:
            return ()
        many = isinstance(rows, tuple)
        arrays = rows if many else (rows,)
        # One block (the local engine's default): nothing to choose, so ``reads`` is not computed.
        wanted = None if reads is None or all(len(r.parts) == 1 for r in arrays) else reads(item)
        if not many:
            wanted = (wanted,)
        elif wanted is None:
            wanted = (None,) * len(arrays)
        name = getattr(fn, "__name__", str(fn))
        args: tuple[Any, ...] = ()
        for i, (array, parts) in enumerate(zip(arrays, wanted, strict=True)):
            own = array.shared(None if len(array.parts) == 1 else parts)
            count = self.counts.setdefault(name if i == 0 else f"{name}#{i}", [0, 0, 0])
            count[0] += 1
            count[1] += sum(part is not None for part in own[1:])
            count[2] += len(array.parts)
            args += own
        return args

    def summary(self) -> dict[str, dict[str, float]]:
        """Per block function: its tasks, and the blocks of vectors one task was sent on average,
        of how many (the report's ``run.engine.blocks_read``)."""
        return {
            name.lstrip("_"): {"tasks": tasks, "mean_sent": round(sent / tasks, 2), "mean_held": round(held / tasks, 2)}
            for name, (tasks, sent, held) in self.counts.items()
        }


def gather_parts(rows: Rows, parts: Iterable[np.ndarray]) -> np.ndarray:
    """The (N, d) array in row order from ``rows``' blocks (``parts``: the blocks themselves)."""
    parts = list(parts)
    if rows.order is None:
        return parts[0] if len(parts) == 1 else np.concatenate(parts) if parts else np.zeros((0, rows.dim), np.float32)
    out = np.empty((rows.n_rows, rows.dim), dtype=parts[0].dtype)
    for p, part in enumerate(parts):
        out[rows.numbers(int(rows.offsets[p]), int(rows.offsets[p + 1]))] = part
    return out


# The local engine's threads by default: each holds a block's temporaries (a block of the search's
# candidate similarities, detection's (B, K) beliefs), so many cores do not mean as many threads.
_DEFAULT_THREADS = 8


def usable_cores() -> int:
    """The cores this process may use (its CPU affinity, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class LocalEngine:
    """Everything in this process: a stage's blocks one after another, or ``threads`` at a time.

    Parameters
    ----------
    threads : int
        Blocks of a stage run side by side on this many threads (``map`` and ``map_rows``), each
        with one BLAS thread, at most ``threads`` + 1 blocks' results held at once; results come
        back in block order, the same whatever the number. 1: one block after another, each
        product using every core through BLAS. Much of a block's work is numpy and scipy outside
        BLAS (detection's sparse neighbour sums, the search's partial sorts), which one thread
        runs on one core; numpy and scipy release the GIL there.
    block_rows : int, optional
        Hold placed arrays as blocks of this many rows and really arrange them, as the Ray engine
        does (the tests use it to run every stage over arranged blocks, each task sent only the
        blocks it reads). Default: one block, never rearranged: in one process every block is at
        hand, and an arranged copy would cost a second array (1.5 GB per million 384-d rows).
    """

    name = "local"

    def __init__(self, block_rows: int | None = None, threads: int = 1) -> None:
        self.block_rows = block_rows
        self.threads = max(1, threads)
        self.reads = ReadLog()

    @property
    def keeps_blocks(self) -> bool:
        """With ``block_rows``, ``map_rows`` keeps one block per range (as Ray does), not one array."""
        return self.block_rows is not None

    def share(self, value: Any) -> Any:
        return value

    def place(self, array: np.ndarray | Rows) -> Rows:
        if isinstance(array, Rows):
            return array
        if self.block_rows is None:
            return Rows((array,), np.array([0, len(array)], dtype=np.int64), array.shape[1])
        bounds = row_blocks(len(array), self.block_rows)
        return Rows(tuple(array[a:b] for a, b in bounds), block_offsets(b - a for a, b in bounds), array.shape[1])

    def place_blocks(self, blocks: Iterable[np.ndarray], n_rows: int, *, order: np.ndarray | None = None) -> Rows:
        """Blocks of (n, d) rows in row order, ``n_rows`` in all, placed as :meth:`place`
        places one array (of the blocks' dtype): copied into it as they come, so that only one
        block is held twice. ``order``: the blocks come in this order of rows instead (block
        rows s.. are rows ``order[s..]``), and are written into row order."""
        out, start = None, 0
        for block in blocks:
            if out is None:
                out = np.empty((n_rows, block.shape[1]), dtype=block.dtype)
            if start + len(block) > n_rows:
                raise ValueError(f"the blocks hold more than the {n_rows} rows announced")
            if order is None:
                out[start : start + len(block)] = block
            else:
                out[order[start : start + len(block)]] = block
            start += len(block)
        if out is None or start != n_rows:
            raise ValueError(f"the blocks hold {start} rows, not the {n_rows} announced")
        return self.place(out)

    def gather(self, rows: np.ndarray | Rows) -> np.ndarray:
        if isinstance(rows, Rows):
            return gather_parts(rows, rows.parts)
        return rows

    def map(
        self,
        fn: Callable[..., Any],
        items: Iterable[Any],
        *shared: Any,
        rows: RowsArg = None,
        reads: ReadsArg = None,
    ) -> Iterator[Any]:
        calls = ((item, self.reads.arguments(fn, item, rows, reads)) for item in items)
        if self.threads == 1:
            for item, arguments in calls:
                yield fn(item, *shared, *arguments)
            return
        # One BLAS thread per block: blocks side by side use the cores instead, and BLAS threads
        # idle between small products would spin against the other blocks.
        with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(self.threads) as pool:
            running: deque = deque()
            for item, arguments in calls:
                running.append(pool.submit(fn, item, *shared, *arguments))
                if len(running) > self.threads:
                    yield running.popleft().result()
            while running:
                yield running.popleft().result()

    def map_rows(
        self,
        fn: Callable[..., tuple[np.ndarray, Any]],
        blocks: list[tuple[int, ...]],
        *shared: Any,
        dim: int,
        rows: RowsArg = None,
        reads: ReadsArg = None,
        order: np.ndarray | None = None,
        done: Callable[[], None] | None = None,
    ) -> tuple[Rows, list[Any]]:
        """``fn(block, *shared, *rows' arguments)`` for the consecutive ranges ``blocks`` (each
        item begins with its (start, stop); together they cover 0..N in order), each returning (an
        (stop - start, ``dim``) array, a small value): the arrays placed as they come, and the
        small values in order.

        ``order``: the ranges are of stored positions, position s holding row ``order[s]`` (a
        layout's, :meth:`Rows.relayout`); default: row numbers. By default the arrays are written
        into one (N, dim) array in row order; with ``block_rows`` they are kept as made, one block
        per range, laid out by ``order``, as the Ray engine keeps them. ``done()`` is called as
        each block is made (progress)."""
        small = []

        def made() -> Iterator[np.ndarray]:
            for part, value in self.map(fn, blocks, *shared, rows=rows, reads=reads):
                small.append(value)
                if done is not None:
                    done()
                yield part

        if self.block_rows is None:
            return self.place_blocks(made(), blocks[-1][1] if blocks else 0, order=order), small
        placed = Rows(tuple(made()), block_offsets(b[1] - b[0] for b in blocks), dim)
        if order is not None:
            placed.relayout(placed.parts, placed.offsets, np.asarray(order, dtype=np.int64), self.share)
        return placed, small

    def take_blocks(self, rows: Rows, index: np.ndarray, fn: Callable[[np.ndarray], np.ndarray] | None = None) -> Rows:
        """New rows whose row i is ``rows``' row ``index[i]`` (repeats allowed), ``fn`` applied to
        each block of at most :data:`BLOCK_ROWS` rows (:func:`row_blocks`) as it is made (keeping
        its width; default: the block as it is). By default one
        array, filled block by block (never the blocks and the whole at once); with ``block_rows``,
        blocks made by the shuffle the Ray engine runs, in this process."""
        index = np.asarray(index, dtype=np.int64)
        fn = fn or _same
        if self.block_rows is None:
            reader = read_rows(*rows.shared())
            out = None
            for start, stop in row_blocks(len(index)):
                block = fn(reader[index[start:stop]])
                if out is None:
                    out = np.empty((len(index), block.shape[1]), dtype=block.dtype)
                out[start:stop] = block
            return self.place(out if out is not None else fn(np.zeros((0, rows.dim), dtype=np.float32)))
        takes, sources, offsets = shuffle_plan(rows, index, self.block_rows)
        pieces = [split_block(take, part) for take, part in zip(takes, rows.parts, strict=True)]
        parts = []
        for q, source in enumerate(sources):
            present = [int(p) for p in np.unique(source)]
            parts.append(assemble_block(source, present, fn, *(pieces[p][q] for p in present)))
        return Rows(tuple(parts), offsets, rows.dim)

    def replace_rows(self, rows: Rows, numbers: np.ndarray, values: np.ndarray) -> None:
        """Write ``values[i]`` over row ``numbers[i]`` of ``rows``, which the caller made (a map's
        new rows: the search's and the detection rounds' few short rows, searched again), in
        place."""
        stored, part = rows.locate(np.asarray(numbers, dtype=np.int64))
        for p in np.unique(part):
            mine = part == p
            rows.parts[p][stored[mine] - rows.offsets[p]] = values[mine]

    def arrange(self, rows: Rows, order: np.ndarray) -> None:
        """Store ``rows`` anew so that stored position s holds row ``order[s]`` (with ``block_rows``
        set; by default a no-op, see the class)."""
        if self.block_rows is None:
            return
        order = np.asarray(order, dtype=np.int64)
        arranged = self.take_blocks(rows, order)
        rows.relayout(arranged.parts, arranged.offsets, order, self.share)

    def encode(
        self, encoder: Any, factory: Callable[[], Any] | None, chunks: Iterable[list[str]]
    ) -> Iterator[np.ndarray]:
        for texts in chunks:
            yield encoder.encode(texts)

    def describe(self) -> dict[str, Any]:
        return {"name": "local", "threads": self.threads}


LOCAL = LocalEngine()


def engine_for(
    name: str, *, ray_address: str | None = None, ray_actors: int = 0, ray_arrange: str = "auto", threads: int = 0
) -> Engine:
    """The engine a config names: ``local`` (``threads`` blocks side by side; 0: one per usable
    core) or ``ray`` (connects to ``ray_address``, or starts a local Ray instance on this
    machine's cores)."""
    if name == "ray":
        from credaudit.engine_ray import RayEngine

        return RayEngine(address=ray_address, actors=ray_actors, arrange=ray_arrange)
    return LocalEngine(threads=threads or min(usable_cores(), _DEFAULT_THREADS))
