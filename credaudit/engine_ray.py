"""The Ray engine: ``credaudit scan DATA --engine ray [--ray-address ADDR]``.

An optional extra (``pip install "credaudit[ray]"``). It runs the same block functions as the
local engine (credaudit/engine.py), spread over a Ray cluster:

- embedding: Ray Data batch inference over an actor pool; each actor builds the encoder once and
  encodes whole chunks of texts (the chunks the local engine uses, so the vectors are the same);
  one actor per GPU where the cluster has GPUs;
- neighbour search: one Ray task per block of k-means lists (or of rows, for the exact search),
  reading the embeddings from the object store (shared memory on each node, no copy per task);
- consensus counts: one Ray task per block of rows counts its label triples, and the driver
  adds the counts (map, then reduce; noise.consensus_counts). Only the K x K fit runs on the driver;
- detection: one Ray task per block of rows scores its rows from their neighbours, once per
  propagation step (detect.score_label_errors); the per-class choice of flags, which needs every
  row's score, is made on the driver.

Ray retries a task whose worker died (``max_retries``) and restarts an encoder actor that died
(Ray Data), so a lost worker costs a block, not the run; outputs are still written only at the
end, as one set.

What still runs on the driver: the embeddings are gathered there once, to be put in the object
store (an array is put once, however many stages share it; the driver then reads that copy,
``hold``, instead of keeping its own), and the finished graph (N x k) and the per-row scores come
back to it. That bounds this engine to data whose vectors fit in one node's object store (see
benchmarks/SCALE.md).
"""

from __future__ import annotations

import logging
import os
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from credaudit.errors import UsageError


def _same(value: Any) -> Any:
    return value


class _EncodeActor:
    """A Ray Data actor: builds the encoder once, then encodes one chunk of texts per batch."""

    def __init__(self, factory: Callable[[], Any]) -> None:
        self.encoder = factory()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        texts = [str(t) for t in batch["texts"][0]]
        vectors = np.asarray(self.encoder.encode(texts), dtype=np.float32)
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
    """

    name = "ray"

    def __init__(self, address: str | None = None, actors: int = 0) -> None:
        try:
            import ray
        except ImportError:
            raise UsageError('--engine ray needs the Ray extra: pip install "credaudit[ray]"') from None
        self._ray = ray
        self.address = address
        self.actors = actors
        self._quiet()
        if not ray.is_initialized():
            # Ray's own logs would interleave with credaudit's progress lines and reports (set
            # these variables to see them).
            os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
            os.environ.setdefault("RAY_DEDUP_LOGS", "1")
            ray.init(
                address=address or None,
                include_dashboard=False,
                log_to_driver=False,
                logging_level=logging.ERROR,
            )
        self._quiet()
        self._remote: dict[Callable[..., Any], Any] = {}
        self._shared: dict[int, tuple[weakref.ref, Any]] = {}

    @staticmethod
    def _quiet() -> None:
        # Ray Data configures its loggers when first imported; INFO lines per dataset otherwise.
        for name in ("ray", "ray.data"):
            logging.getLogger(name).setLevel(logging.ERROR)

    def share(self, value: Any) -> Any:
        """An object-store reference to ``value``. An array already shared (and still alive) is not
        put again: the embeddings are read by the search, the consensus counts and detection, and
        each extra copy would cost the object store N × d floats."""
        if not isinstance(value, np.ndarray):
            return self._ray.put(value)
        key = id(value)
        held = self._shared.get(key)
        if held is not None and held[0]() is value:
            return held[1]
        ref = self._ray.put(value)
        self._remember(value, ref)
        return ref

    def hold(self, array: np.ndarray) -> np.ndarray:
        """A read-only view of ``array``'s object-store copy (zero-copy on this node), to be read
        instead of ``array``: once the caller drops ``array``, the driver's node holds the vectors
        once (1.5 GB per million 384-d rows), not twice. Sharing the view puts nothing again."""
        ref = self.share(array)
        view = self._ray.get(ref)
        self._remember(view, ref)
        return view

    def _remember(self, array: np.ndarray, ref: Any) -> None:
        key = id(array)
        self._shared[key] = (weakref.ref(array), ref)
        # Drop the reference (and so the object-store copy) when the array goes.
        weakref.finalize(array, self._shared.pop, key, None)

    def map(self, fn: Callable[..., Any], items: Iterable[Any], *shared: Any) -> Iterator[Any]:
        remote = self._remote.get(fn)
        if remote is None:
            remote = self._remote[fn] = self._ray.remote(num_cpus=1, max_retries=3)(fn)
        refs = [remote.remote(item, *shared) for item in items]
        for ref in refs:
            yield self._ray.get(ref)

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
            "nodes": sum(1 for node in self._ray.nodes() if node.get("Alive")),
            "cpus": resources.get("CPU", 0),
            "gpus": resources.get("GPU", 0),
        }
