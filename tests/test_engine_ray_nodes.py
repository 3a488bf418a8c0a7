"""The Ray engine on a local cluster of two nodes, each with its own object store (what
``engine.ray_arrange = "auto"`` moves rows for), started inside the test run."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from credaudit import audit
from credaudit.config import merge
from tests.conftest import make_noisy, small_blocks

# CI installs the extra (.ci/run): there a missing Ray is a failure, not a skip.
ray = pytest.importorskip("ray") if not os.environ.get("CI") else __import__("ray")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", autouse=True)
def two_nodes():
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": 200 * 2**20})
    cluster.add_node(num_cpus=1, object_store_memory=200 * 2**20)
    ray.init(
        address=cluster.address,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}},
    )
    yield
    ray.shutdown()
    cluster.shutdown()


def test_on_two_nodes_auto_moves_the_rows_by_list_and_keeps_the_flags(monkeypatch):
    small_blocks(monkeypatch, 1000)
    x, labels = make_noisy(3000, seed=13)
    frame = pl.DataFrame({"label": labels})
    local = audit(frame, merge({"graph": {"index": "ivf"}}), embeddings=x)
    distributed = audit(frame, merge({"engine": {"name": "ray"}, "graph": {"index": "ivf"}}), embeddings=x)
    engine = distributed.report.run["engine"]
    assert engine["nodes"] == 2 and engine["arrange"] == "auto"
    assert distributed.vectors.order is not None  # moved: two object stores
    np.testing.assert_array_equal(distributed.graph.gathered(distributed.engine)[0], local.graph.indices)
    np.testing.assert_array_equal(distributed.detection.is_label_error, local.detection.is_label_error)
    assert distributed.report.noise == local.report.noise
    assert local.detection.is_label_error.sum() > 100
    reads = engine["blocks_read"]["search_lists"]
    assert reads["mean_sent"] < reads["mean_held"]
