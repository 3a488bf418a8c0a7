"""Shared fixtures: seeds, synthetic clusterable data, tiny files in every format."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import polars as pl
import pytest

# Tests must never reach the network, and should not pick up a user's cache.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"


def pytest_report_header(config):
    return f"credaudit test seeds: {SEEDS}"


SEEDS = [0, 1, 2]


@pytest.fixture(params=SEEDS)
def seed(request) -> int:
    """Tests taking ``seed`` must pass for every seed in a small range."""
    return request.param


@pytest.fixture
def rng(seed) -> np.random.Generator:
    return np.random.default_rng(seed)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("CREDAUDIT_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.delenv("CI", raising=False)


def symmetric_t(n_classes: int, rate: float) -> np.ndarray:
    """T with 1 - rate on the diagonal and the rest spread evenly."""
    t = np.full((n_classes, n_classes), rate / (n_classes - 1))
    np.fill_diagonal(t, 1.0 - rate)
    return t


def flip_labels(true_labels: np.ndarray, t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Draw an observed label for each row from row ``true_labels[i]`` of T."""
    cumulative = t.cumsum(axis=1)[true_labels]
    draws = (rng.random(len(true_labels))[:, None] > cumulative).sum(axis=1)
    return np.minimum(draws, t.shape[0] - 1)


def make_clusterable(
    n_rows: int, n_classes: int, t: np.ndarray | None, seed: int, *, dim: int = 16, spread: float = 0.15
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Well-separated Gaussian clusters, one per class, and labels drawn through T.

    Returns
    -------
    embeddings : (N, dim) float32, unit rows
    true_labels : (N,) int64, balanced classes
    observed : (N,) int64, drawn from T (equal to true_labels when t is None)
    """
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_classes, dim))
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    true_labels = np.arange(n_rows) % n_classes
    rng.shuffle(true_labels)
    x = centers[true_labels] + spread * rng.normal(size=(n_rows, dim)) / np.sqrt(dim)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    observed = true_labels.copy() if t is None else flip_labels(true_labels, t, rng)
    return x.astype(np.float32), true_labels.astype(np.int64), observed.astype(np.int64)


@pytest.fixture
def small_frame() -> pl.DataFrame:
    """60 rows, 3 classes, texts, string labels, ids and 8-d embeddings in clusters."""
    x, true, _ = make_clusterable(60, 3, None, seed=7, dim=8)
    names = np.array(["billing", "delivery", "refund"])
    return pl.DataFrame(
        {
            "id": [f"r{i:03d}" for i in range(60)],
            "text": [f"message {i} about {names[c]}" for i, c in enumerate(true)],
            "label": names[true].tolist(),
            "emb": x.tolist(),
        }
    )


def write_table(frame: pl.DataFrame, path: Path) -> Path:
    """Write ``frame`` in the format named by ``path``'s extension."""
    name = path.name
    if name.endswith(".parquet"):
        frame.write_parquet(path)
    elif name.endswith((".jsonl", ".ndjson", ".jsonl.gz")):
        import gzip
        import io

        buffer = io.BytesIO()
        frame.write_ndjson(buffer)
        data = buffer.getvalue()
        path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    elif name.endswith(".csv"):
        frame.write_csv(path)
    else:
        raise ValueError(name)
    return path


def make_imbalanced_weak(
    n_rows: int, seed: int, *, minority_share: float = 0.12, separation: float = 1.0, noise: float = 0.05
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An imbalanced binary set whose features barely separate the classes (weak clusterability).

    Two overlapping Gaussians (16-d, means ``separation`` apart on one axis): k-NN label
    agreement sits near its chance level Σ p̃². Each label flips with probability ``noise``.

    Returns
    -------
    embeddings : (N, 17) float32, unit rows
    true_labels : (N,) int64, 1 = the minority class
    observed : (N,) int64
    """
    rng = np.random.default_rng(seed)
    true_labels = (rng.random(n_rows) < minority_share).astype(np.int64)
    x = rng.normal(size=(n_rows, 16))
    x[:, 0] += separation * true_labels
    # A constant coordinate keeps every row off the origin, so cosine similarity tracks distance.
    x = np.concatenate([x, np.full((n_rows, 1), 3.0)], axis=1)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    flip = rng.random(n_rows) < noise
    observed = np.where(flip, 1 - true_labels, true_labels)
    return x.astype(np.float32), true_labels, observed.astype(np.int64)


def small_blocks(monkeypatch, block_rows: int) -> None:
    """Engine blocks of ``block_rows`` rows, and k-means lists of 60 rows searched 4 at a time,
    so that on a few thousand rows every stage runs as several blocks (and a block of lists reads
    some of the blocks, not all)."""
    monkeypatch.setattr("credaudit.engine.BLOCK_ROWS", block_rows)
    monkeypatch.setattr("credaudit.neighbors._LIST_ROWS", 60)
    monkeypatch.setattr("credaudit.neighbors._LISTS_PER_BLOCK", 4)


def make_noisy(n_rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Six clusterable classes in 24 dimensions, 20 % of the labels flipped to another class:
    (vectors (N, 24), observed labels) for the engine and layout tests."""
    x, true, _ = make_clusterable(n_rows, 6, None, seed, dim=24, spread=0.6)
    rng = np.random.default_rng(seed)
    flip = rng.random(n_rows) < 0.2
    return x, np.where(flip, (true + rng.integers(1, 6, n_rows)) % 6, true)


@pytest.fixture
def engines_made(monkeypatch):
    """How many engines a run makes (each stage must run on the run's one engine, which keeps its rows)."""
    import credaudit.pipeline

    made = []
    real = credaudit.pipeline.engine_for

    def counting(*args, **kwargs):
        made.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(credaudit.pipeline, "engine_for", counting)
    return made
