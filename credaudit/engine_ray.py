"""The Ray engine: ``credaudit scan DATA --engine ray [--ray-address ADDR]``.

An optional extra (``pip install "credaudit[ray]"``). It runs the same block functions as the
local engine (credaudit/engine.py), spread over a Ray cluster:

- embedding: Ray Data batch inference over an actor pool; each actor builds the encoder once and
  encodes whole chunks of texts (the chunks the local engine uses, so the vectors are the same);
  one actor per GPU where the cluster has GPUs;
- the vectors: kept in the object store as blocks of rows. The distinct texts' vectors are held
  there too, in float16 (the cached ones put block by block as they are read from the cache,
  the fresh ones as the actors' chunks come back and are written to the cache), and tasks make
  the blocks of unit float32 row vectors from them (``take_blocks``): each block stays on the
  node that made it, and the driver holds references, never the vectors;
- what each task reads: only the blocks it names (``engine.map``'s ``reads``), so a node fetches
  those, not every block (``run.engine.blocks_read`` in report.json counts them per stage). On a
  cluster of more than one node (``engine.ray_arrange``), rows also move so that the blocks a
  task reads are few: the embedding's row blocks are a shuffle of the held blocks (each split by
  destination, each destination assembled from its pieces; in two rounds where one round's
  pieces would be small enough for Ray to pass them through the driver, :func:`shuffle_rounds`),
  and the search first stores the rows by k-means list (``arrange``, the same shuffle; lists
  numbered so that probed lists are near each other). On one node every task reads the one
  object store in place, so nothing moves;
- neighbour search: one Ray task per block of k-means lists, sent the blocks holding its lists
  and their probed lists (the exact search of small inputs: one per block of rows, sent every
  block); the k-means sample (one task per block holding sample rows) and the rows' list
  assignment (one per block) are tasks too; only the sample and the list numbers come back. Each
  search task's output is a block of the graph (its rows' neighbours and similarities), which
  stays in the object store: the graph is never gathered on the driver, and every later stage
  reads it block by block (a task its own block of it);
- recall check, the rows the search left short and a detection round's short rows: exact
  searches of those few rows (their vectors taken first), one task per block, merged on the
  driver;
- hygiene: class centroids are sums per block (map, then reduce), each block's distance to them
  and a reference's nearest rows (leakage) are tasks, each sent its own block;
- consensus counts: each block of the graph's triple tightness is a task sent the blocks of
  vectors holding its rows' two nearest neighbours (found by a first map over the graph); one
  Ray task per block of the graph counts its label triples, and the driver adds the counts (map,
  then reduce; noise.consensus_counts). Only the K x K fit runs on the driver. The k-NN label
  agreement of the trust check is a map and a sum the same way;
- detection: one Ray task per block of the graph scores its rows from their neighbours, once per
  propagation step (detect.score_label_errors). The beliefs (N x K) stay in the object store as
  each step's task outputs (``map_rows``), laid out as the graph, and a task of the next step is
  sent its block of the graph and the blocks of beliefs holding its rows' neighbours (which the
  first step names); the last step returns per-row values (score, suggestion and its
  confidence), never the beliefs. A round's graph restricted to its subsample is made block by
  block of the graph in the object store too (its few short rows searched exactly, and only
  their blocks made anew, ``replace_rows``). The per-class choice of flags, which needs every
  row's score, is made on the driver;
- hygiene's outlier distances and near-duplicate candidates are read from the graph's blocks by
  tasks (each block's candidate pairs come back; their words are compared on the driver, which
  holds the texts), and the review queue fetches the flagged rows' neighbours only.

Ray retries a task whose worker died (``max_retries``) and restarts an encoder actor that died
(Ray Data), so a lost worker costs a block, not the run; outputs are still written only at the
end, as one set.

What still runs on the driver: the reading of the input (a parquet input's ``--embedding-col``
column is read block by block, each block put as it is read, and never held whole; a CSV or JSONL
one is read whole and put from there) and the embedding cache (each chunk of fresh vectors passes
through it to be written there); the per-row scores, suggestions and every row's flags come back
to it (never an N x K array, never the graph). ``select`` reads the vectors where they are (its
coverage k-means trains on a sample taken from the blocks, and rows are assigned block by
block), but gathers the graph for its greedy choice, as the crowd adapter does for its annotator
model's EM (both run on the driver); the crowd and pair adapters keep their vectors on the
cluster too (the pair directions are made by maps and a take over blocks). See
benchmarks/SCALE.md for what this means for sizing a cluster.
"""

from __future__ import annotations

import logging
import os
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from credaudit.engine import (
    ReadLog,
    ReadsArg,
    Rows,
    RowsArg,
    assemble_block,
    block_offsets,
    gather_parts,
    read_rows,
    row_blocks,
    shuffle_plan,
    split_block,
    staged_shuffle,
)
from credaudit.errors import ResourceError, UsageError

# A shuffle goes in two rounds (engine.staged_shuffle) where one round's pieces (a piece per source
# and destination block) would be smaller than Ray's inline limit, max_direct_call_object_size
# (100 KiB by default): Ray returns such an object to its owner, this process, and sends it on from
# there, so every row would pass through the driver's memory (measured: a one-round shuffle of
# 1,000,000 x 384 rows in blocks of 4,096, 25 KB pieces, took the driver's private memory up by
# 2.1 GB; two rounds, 0.13 GB). Small shuffles (below SHUFFLE_DRIVER_BYTES in all) stay in one
# round, which is faster on one node. Rows are counted at 2 bytes a value, the smallest a shuffle
# moves (the embedding's float16 vectors; its blocks do not say their type): with the default
# blocks of 65,536 rows and 384 dimensions, two rounds from about 32M rows (shuffle_rounds).
INLINE_BYTES = 100 * 1024
SHUFFLE_DRIVER_BYTES = 2**30


def shuffle_rounds(n_sources: int, n_rows: int, dim: int) -> int:
    """1 or 2: the rounds of a shuffle of ``n_rows`` rows of ``dim`` values from ``n_sources``
    blocks into blocks of :data:`~credaudit.engine.BLOCK_ROWS` (see :data:`INLINE_BYTES`)."""
    row_bytes = 2 * dim  # float16: a float32 row's pieces are only larger
    piece_bytes = row_bytes * n_rows / max(n_sources, 1) / max(len(row_blocks(n_rows)), 1)
    return 2 if piece_bytes < INLINE_BYTES and row_bytes * n_rows > SHUFFLE_DRIVER_BYTES else 1


def _same(value: Any) -> Any:
    return value


def _split_nonempty(take: tuple[np.ndarray, np.ndarray], part: np.ndarray) -> np.ndarray | list[np.ndarray]:
    """A shuffle's map task: the source block's non-empty pieces, one object each (a task with one
    return stores what it returns as that one object, not a list of one)."""
    pieces = [piece for piece in split_block(take, part) if len(piece)]
    return pieces[0] if len(pieces) == 1 else pieces


def _take_block(index: np.ndarray, fn: Callable[[np.ndarray], np.ndarray] | None, layout: Any, *parts: Any):
    """Rows ``index`` of the blocks sent, ``fn`` applied (a task of ``take_blocks`` without a shuffle)."""
    block = read_rows(layout, *parts)[index]
    return block if fn is None else fn(block)


def _replaced(local: np.ndarray, values: np.ndarray, block: np.ndarray) -> np.ndarray:
    """``block`` with its rows ``local`` replaced by ``values`` (a task of ``replace_rows``)."""
    out = block.copy()
    out[local] = values
    return out


def _sized_take(
    index: np.ndarray, fn: Callable[[np.ndarray], np.ndarray] | None, layout: Any, *parts: Any
) -> tuple[np.ndarray, int]:
    block = _take_block(index, fn, layout, *parts)
    return block, len(block)


def _sized_block(
    source: np.ndarray, present: list[int], fn: Callable[[np.ndarray], np.ndarray] | None, *pieces: np.ndarray
) -> tuple[np.ndarray, int]:
    """A shuffle's destination block (engine.assemble_block) and its row count (a second, small
    return the driver reads)."""
    block = assemble_block(source, present, fn, *pieces)
    return block, len(block)


class _EncodeActor:
    """A Ray Data actor: builds the encoder once, then encodes one chunk of texts per batch."""

    def __init__(self, factory: Callable[[], Any]) -> None:
        self.encoder = factory()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        texts = [str(t) for t in batch["texts"][0]]
        # Rounded to float16 here, as features.embed_texts rounds every vector (the cache's type):
        # half the bytes back to the driver, and one rounding from the encoder's own dtype, as on
        # the local engine.
        vectors = np.asarray(self.encoder.encode(texts)).astype(np.float16)
        return {"chunk": batch["chunk"], "vectors": vectors[None, ...]}


class RayEngine:
    """Block work as Ray tasks and actors.

    Parameters
    ----------
    address : str, optional
        A running cluster (``ray://host:10001`` or ``auto``). Default: a Ray instance started on
        this machine (or the one this process already joined).
    actors : int
        Encoder actors; 0 = one per GPU, or one per 4 CPUs on a CPU-only cluster.
    arrange : {"auto", "always", "never"}
        Whether rows move between blocks so that a node fetches only the blocks its tasks read:
        :meth:`arrange` stores the rows by k-means list for the search, and :meth:`take_blocks`
        shuffles. ``auto``: when the cluster has more than one node. On one node every task reads
        the one object store in place, so a shuffle would buy nothing and cost a second copy of
        the vectors while it runs (measured at 1,000,000 x 384: the same time, 1.6 GB more at
        the peak).
    """

    name = "ray"
    keeps_blocks = True  # map_rows' outputs stay in the object store, one block per task

    def __init__(self, address: str | None = None, actors: int = 0, arrange: str = "auto") -> None:
        try:
            import ray
        except ImportError:
            raise UsageError('--engine ray needs the Ray extra: pip install "credaudit[ray]"') from None
        self._ray = ray
        self.address = address
        self.actors = actors
        self.arrange_rows = arrange
        self._quiet()
        if not ray.is_initialized():
            # Ray's own logs would interleave with credaudit's progress lines and reports. Its
            # backend's are left at Ray's default: setting RAY_BACKEND_LOG_LEVEL prints a line
            # saying so on stderr, while the default prints nothing there.
            os.environ.setdefault("RAY_DEDUP_LOGS", "1")
            try:
                ray.init(
                    address=address or None,
                    include_dashboard=False,
                    log_to_driver=False,
                    logging_level=logging.ERROR,
                )
            except (ConnectionError, RuntimeError, ValueError, ImportError) as exc:
                # An unreachable or malformed address: one sentence naming it (exit 3), not an
                # internal error with Ray's own advice.
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
                where = f"the Ray cluster at --ray-address {address}" if address else "a local Ray instance"
                raise ResourceError(f"cannot start or reach {where}: {first}") from None
        self._quiet()
        self._remote: dict[tuple[Callable[..., Any], int], Any] = {}
        self._shared: dict[int, tuple[weakref.ref, Any]] = {}
        self._placed: dict[int, tuple[weakref.ref, Any]] = {}
        self.reads = ReadLog()

    @staticmethod
    def _quiet() -> None:
        # Ray Data configures its loggers when first imported; INFO lines per dataset otherwise.
        for name in ("ray", "ray.data"):
            logging.getLogger(name).setLevel(logging.ERROR)

    def share(self, value: Any) -> Any:
        """An object-store reference to ``value``. An array already shared (and still alive) is not
        put again: the search plan and the labels are read by several maps, and each extra copy
        would cost the object store its size again."""
        if not isinstance(value, np.ndarray):
            return self._ray.put(value)
        return self._once(self._shared, value, self._ray.put)

    def place(self, array: np.ndarray | Rows) -> Rows:
        """``array`` as object-store blocks of at most :data:`~credaudit.engine.BLOCK_ROWS` rows (once per
        array while it lives: every stage reads the same blocks)."""
        if isinstance(array, Rows):
            return array

        def put_blocks(array: np.ndarray) -> Rows:
            bounds = row_blocks(len(array))
            # Vectors become float32; a structured array (the neighbour graph) keeps its type.
            dtype = None if array.dtype.names else np.float32
            parts = tuple(self._ray.put(np.ascontiguousarray(array[a:b], dtype=dtype)) for a, b in bounds)
            return Rows(parts, block_offsets(b - a for a, b in bounds), array.shape[1])

        return self._once(self._placed, array, put_blocks)

    def place_blocks(self, blocks: Iterable[np.ndarray], n_rows: int) -> Rows:
        """Blocks of (n, d) vectors in row order, ``n_rows`` in all, put as they come: this
        process holds one block at a time (a vector column read from its files block by block)."""
        parts, sizes, dim = [], [], 0
        for block in blocks:
            parts.append(self._ray.put(np.ascontiguousarray(block, dtype=np.float32)))
            sizes.append(len(block))
            dim = block.shape[1]
        if sum(sizes) != n_rows:
            raise ValueError(f"the blocks hold {sum(sizes)} rows, not the {n_rows} announced")
        return Rows(tuple(parts), block_offsets(sizes), dim)

    def gather(self, rows: np.ndarray | Rows) -> np.ndarray:
        """The whole array on the driver (N x d): only for callers that need it in one piece."""
        if not isinstance(rows, Rows):
            return rows
        return gather_parts(rows, self._ray.get(list(rows.parts)))

    @staticmethod
    def _once(table: dict[int, tuple[weakref.ref, Any]], array: np.ndarray, put: Callable[[np.ndarray], Any]) -> Any:
        """``put(array)``, made once while ``array`` lives: the result is kept in ``table`` by the
        array's identity and dropped (and with it the object-store copy) when the array goes."""
        key = id(array)
        held = table.get(key)
        if held is not None and held[0]() is array:
            return held[1]
        value = put(array)
        table[key] = (weakref.ref(array), value)
        weakref.finalize(array, table.pop, key, None)
        return value

    def _task(self, fn: Callable[..., Any], num_returns: int = 1) -> Any:
        """``fn`` as a Ray task (made once per function)."""
        remote = self._remote.get((fn, num_returns))
        if remote is None:
            remote = self._ray.remote(num_cpus=1, max_retries=3, num_returns=num_returns)(fn)
            self._remote[(fn, num_returns)] = remote
        return remote

    def map(
        self,
        fn: Callable[..., Any],
        items: Iterable[Any],
        *shared: Any,
        rows: RowsArg = None,
        reads: ReadsArg = None,
    ) -> Iterator[Any]:
        remote = self._task(fn)
        refs = [remote.remote(item, *shared, *self.reads.arguments(fn, item, rows, reads)) for item in items]
        for ref in refs:
            yield self._ray.get(ref)

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
        """``fn`` as one task per range of ``blocks`` (each item begins with its (start, stop)),
        each returning (its rows' array, a small value): the arrays stay in the object store where
        their tasks ran (the driver holds references), laid out by ``order`` where the ranges are
        of stored positions (:meth:`~credaudit.engine.Rows.relayout`), and the small values come
        back (``done()`` called for each, in order: progress). Returns once every task has run (a
        failed task raises here)."""
        remote = self._task(fn, num_returns=2)
        parts, small = [], []
        for item in blocks:
            part, value = remote.remote(item, *shared, *self.reads.arguments(fn, item, rows, reads))
            parts.append(part)
            small.append(value)
        made = Rows(tuple(parts), block_offsets(b[1] - b[0] for b in blocks), dim)
        values = []
        for ref in small:
            values.append(self._ray.get(ref))
            if done is not None:
                done()
        if order is not None:
            made.relayout(made.parts, made.offsets, np.asarray(order, dtype=np.int64), self.share)
        return made, values

    def take_blocks(self, rows: Rows, index: np.ndarray, fn: Callable[[np.ndarray], np.ndarray] | None = None) -> Rows:
        """New rows whose row i is ``rows``' row ``index[i]`` (repeats allowed), in blocks of
        at most :data:`~credaudit.engine.BLOCK_ROWS` rows, ``fn`` applied to each (keeping its width). The
        new blocks stay in the object store where they were made (the driver holds references).
        Returns once every block is made (a failed task raises here).

        Where the engine moves rows between nodes (its ``arrange`` setting): a shuffle in two
        rounds of tasks. Each source block's task splits its rows by destination block (one object
        per destination), and each destination block's task assembles its rows from those pieces,
        so every task reads its own block or its own pieces. Otherwise one task per new block,
        sent the source blocks holding its rows (on one node they are read in place)."""
        index = np.asarray(index, dtype=np.int64)
        if self._moves_rows():
            return self._shuffle(rows, index, fn, release=False)
        bounds = row_blocks(len(index))
        items = [index[a:b] for a, b in bounds]
        made = self._task(_sized_take, num_returns=2)
        parts, counts = [], []
        for item in items:
            block, count = made.remote(item, fn, *self.reads.arguments(_take_block, item, rows, rows.parts_of))
            parts.append(block)
            counts.append(count)
        self._check_sizes(counts, block_offsets(b - a for a, b in bounds))
        return Rows(tuple(parts), block_offsets(b - a for a, b in bounds), rows.dim)

    def replace_rows(self, rows: Rows, numbers: np.ndarray, values: np.ndarray) -> None:
        """Write ``values[i]`` over row ``numbers[i]`` of ``rows`` (a map's new rows, which the
        caller made): each block holding some of them is made anew by a task, in the object store,
        and ``rows`` holds the new blocks."""
        stored, part = rows.locate(np.asarray(numbers, dtype=np.int64))
        parts = list(rows.parts)
        remote = self._task(_replaced)
        for p in np.unique(part):
            mine = part == p
            parts[p] = remote.remote(stored[mine] - rows.offsets[p], values[mine], rows.parts[p])
        rows.parts = tuple(parts)

    def _moves_rows(self) -> bool:
        """Whether to move rows between blocks so that each node fetches only what its tasks read:
        the ``arrange`` setting (``auto``: on a cluster of more than one node)."""
        if self.arrange_rows != "auto":
            return self.arrange_rows == "always"
        return self._working_nodes() > 1

    def _working_nodes(self) -> int:
        """Alive nodes that can run tasks (a head node started with no CPUs, as autoscaled
        clusters often have, does not count)."""
        resources = [node.get("Resources", {}) for node in self._ray.nodes() if node.get("Alive")]
        return sum(1 for held in resources if held.get("CPU", 0) or held.get("GPU", 0))

    def _check_sizes(self, counts: list[Any], offsets: np.ndarray) -> None:
        made = self._ray.get(counts)  # small values; raises a task's error
        expected = [int(b - a) for a, b in zip(offsets[:-1], offsets[1:], strict=True)]
        if made != expected:
            raise ValueError(f"blocks of {made} rows were made; expected {expected}")

    def arrange(self, rows: Rows, order: np.ndarray) -> None:
        """Store ``rows`` anew so that stored position s holds row ``order[s]`` (the shuffle of
        :meth:`take_blocks`), where the engine's ``arrange`` setting says so.

        The object store holds at most about two copies of the vectors meanwhile: the old blocks
        are released once every split is made (``rows`` holds no blocks until it is re-laid out;
        a failed shuffle fails the run), and each destination's pieces once its assembly is under
        way."""
        if not self._moves_rows():
            return
        order = np.asarray(order, dtype=np.int64)
        arranged = self._shuffle(rows, order, None, release=True)
        rows.relayout(arranged.parts, arranged.offsets, order, self._ray.put)

    def _shuffle(
        self, rows: Rows, index: np.ndarray, fn: Callable[[np.ndarray], np.ndarray] | None, *, release: bool
    ) -> Rows:
        """The shuffle of ``take_blocks``: in one round, or in two (:func:`~credaudit.engine.staged_shuffle`)
        where one round's pieces would pass through this process (:data:`INLINE_BYTES`)."""
        if shuffle_rounds(len(rows.parts), len(index), rows.dim) == 1:
            return self._shuffle_round(rows, index, fn, release=release)
        first, offsets, second = staged_shuffle(rows, index)
        middle = self._shuffle_round(rows, first, None, release=release, offsets=offsets)
        return self._shuffle_round(middle, second, fn, release=True)

    def _shuffle_round(
        self,
        rows: Rows,
        index: np.ndarray,
        fn: Callable[[np.ndarray], np.ndarray] | None,
        *,
        release: bool,
        offsets: np.ndarray | None = None,
    ) -> Rows:
        takes, sources, offsets = shuffle_plan(rows, index, offsets=offsets)
        if not sources:
            return Rows((), offsets, rows.dim)
        split = self._task(_split_nonempty)
        # pieces[p][q]: source block p's rows for destination block q; only non-empty pieces are made.
        pieces: list[dict[int, Any]] = []
        take, part = None, None
        for take, part in zip(takes, rows.parts, strict=True):
            local, cuts = take
            fed = np.flatnonzero(np.diff(np.r_[0, cuts, len(local)])).tolist()
            made = split.options(num_returns=len(fed)).remote(take, part) if fed else []
            pieces.append(dict(zip(fed, [made] if len(fed) == 1 else made, strict=True)))
        del take, part  # the loop's last source block, released with the others below
        if release:
            made = [piece for source in pieces for piece in source.values()]
            if made:
                self._ray.wait(made, num_returns=len(made), fetch_local=False)
            del made
            rows.parts = ()
        assemble = self._task(_sized_block, num_returns=2)
        parts, counts = [], []
        for q, source in enumerate(sources):
            present = [int(p) for p in np.unique(source)]
            # The task holds its pieces until it has run.
            block, count = assemble.remote(source, present, fn, *(pieces[p].pop(q) for p in present))
            parts.append(block)
            counts.append(count)
        self._check_sizes(counts, offsets)
        return Rows(tuple(parts), offsets, rows.dim)

    def encode(
        self, encoder: Any, factory: Callable[[], Any] | None, chunks: Iterable[list[str]]
    ) -> Iterator[np.ndarray]:
        """Vectors of each chunk, in order; each actor builds its encoder with ``factory`` (default: a
        copy of ``encoder``)."""
        import functools

        import ray.data

        factory = factory or functools.partial(_same, encoder)
        self._quiet()
        rows = [{"chunk": i, "texts": list(texts)} for i, texts in enumerate(chunks)]
        if not rows:
            return
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True  # vectors come back in chunk order
        context.enable_progress_bars = False
        resources = self._ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        cpus = max(1, int(resources.get("CPU", 1)))
        size = self.actors or (gpus if gpus else max(1, cpus // 4))
        size = min(size, len(rows))
        per_actor = {"num_gpus": 1} if gpus else {"num_cpus": max(1, cpus // size)}
        dataset = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
            _EncodeActor,
            fn_constructor_args=(factory,),
            batch_size=1,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=size),
            **per_actor,
        )
        for row in dataset.iter_rows():
            yield np.asarray(row["vectors"])

    def describe(self) -> dict[str, Any]:
        resources = self._ray.cluster_resources()
        return {
            "name": "ray",
            "address": self.address or "local",
            "nodes": self._working_nodes(),
            "cpus": resources.get("CPU", 0),
            "gpus": resources.get("GPU", 0),
            "arrange": self.arrange_rows,
            # What a node fetches: each stage's tasks and the blocks of vectors each was sent.
            "blocks_read": self.reads.summary(),
        }
