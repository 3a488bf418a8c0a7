"""``credaudit embed``: compute and cache embeddings as a batch pre-step, optionally exporting them."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from credaudit.config import ScanConfig
from credaudit.encoders.base import resolve_device
from credaudit.encoders.cache import EmbeddingCache, default_cache_dir
from credaudit.encoders.registry import get_encoder
from credaudit.errors import UsageError
from credaudit.features import embed_texts
from credaudit.io import atomic_write_file, check_out_file, read_texts
from credaudit.progress import Progress


@dataclass(frozen=True)
class EmbedSummary:
    """What ``credaudit embed`` did."""

    rows: int
    unique_texts: int
    cached: int
    embedded: int
    seconds: float
    encoder: str
    device: str
    output: Path | None

    def describe(self) -> str:
        where = f"; wrote {self.output}" if self.output else ""
        return (
            f"{self.rows:,} rows ({self.unique_texts:,} distinct texts): {self.cached:,} from the cache, "
            f"{self.embedded:,} embedded with {self.encoder} on {self.device} in {self.seconds:.1f}s{where}"
        )


def embed_file(
    data: str | Path, config: ScanConfig, *, output: Path | None = None, progress: Progress | None = None
) -> EmbedSummary:
    """Embed the text columns of ``data`` through the cache (which is always used here).

    Parameters
    ----------
    output : Path, optional
        ``.npy`` (N × d float32) or ``.parquet`` (``row_id`` and an ``embedding`` array column).

    Raises
    ------
    UsageError
        ``output`` has another extension.
    OutputWriteError
        ``output`` is the input, or cannot be written.
    """
    if config.encoder.name == "auto":
        raise UsageError("--encoder auto chooses with the labels, which `embed` does not read; name an encoder")
    if output is not None and output.suffix not in (".npy", ".parquet"):
        raise UsageError(f"--output {output} must end in .npy or .parquet")
    if output is not None:
        # Before any work: never over the input (a parquet input and a .parquet output can be one file).
        check_out_file(output, Path(data), flag="--output")
    started = time.perf_counter()
    texts, ids = read_texts(
        data, text_cols=config.input.text_cols, id_col=config.input.id_col, encoding=config.input.encoding
    )
    encoder = get_encoder(
        config.encoder.name,
        device=resolve_device(config.encoder.device),
        batch_size=config.encoder.batch_size,
        precision=config.encoder.precision,
    )
    root = Path(config.encoder.cache_dir) if config.encoder.cache_dir else default_cache_dir()
    cache = EmbeddingCache(root, encoder.fingerprint, encoder.dimension)
    result = embed_texts(texts, encoder, cache=cache, progress=progress)
    if output is not None:
        vectors = result.vectors
        if output.suffix == ".npy":
            atomic_write_file(output, lambda path: _save_npy(path, vectors))
        else:
            frame = pl.DataFrame({"row_id": ids, "embedding": vectors})
            atomic_write_file(output, lambda path: frame.write_parquet(path))
    return EmbedSummary(
        len(texts),
        result.n_unique,
        result.n_cached,
        result.n_embedded,
        time.perf_counter() - started,
        encoder.name,
        encoder.device,
        output,
    )


def _save_npy(path: Path, array: np.ndarray) -> None:
    # Through a handle: np.save(str) would append ".npy" to the temporary name.
    with path.open("wb") as handle:
        np.save(handle, array)
