"""``static``: static token embeddings distilled from the default model (model2vec).

Distilled once from the locally installed all-MiniLM-L6-v2 weights (about 30 s on 2 idle CPU
cores, measured in benchmarks/RESULTS.md; no network) and cached; encoding is then a table lookup
and a mean, ~100x faster than the transformer. The price is context: a static model cannot tell
"not good" from "good" as well.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from credaudit.errors import EncoderLoadError
from credaudit.progress import NullProgress, Progress

PCA_DIMS = 256


class StaticEncoder:
    """model2vec static embeddings distilled from a local sentence-transformers model.

    Parameters
    ----------
    base_dir : Path
        The sentence-transformers model to distil.
    store : Path
        Where distilled models are kept (under the embedding cache directory).
    """

    def __init__(self, base_dir: Path, store: Path, *, name: str = "static", batch_size: int | None = None) -> None:
        from credaudit.encoders.sentence_transformers import model_fingerprint

        self.base_dir = Path(base_dir)
        self.name = name
        self.device = "cpu"
        self.dimension = PCA_DIMS
        self.precision = "fp32"
        self.batch_size = batch_size or 1024
        base = model_fingerprint(self.base_dir)
        self.model_dir = Path(store) / f"m2v-{base[:16]}-pca{PCA_DIMS}"
        self.source = f"model2vec, distilled from {self.base_dir} into {self.model_dir}"
        self.fingerprint = hashlib.sha256(f"model2vec|{base}|pca{PCA_DIMS}|l2".encode()).hexdigest()[:32]
        self._model = None

    @property
    def is_distilled(self) -> bool:
        return (self.model_dir / "config.json").is_file()

    def _load(self):
        try:
            from model2vec import StaticModel
        except ImportError:
            raise EncoderLoadError(
                "the static encoder needs model2vec; run `pip install 'model2vec[distill]'`"
            ) from None
        if not self.is_distilled:
            self._distill()
        os.environ["HF_HUB_OFFLINE"] = "1"
        return StaticModel.from_pretrained(str(self.model_dir))

    def _distill(self) -> None:
        try:
            from model2vec.distill import distill
        except ImportError:
            raise EncoderLoadError(
                "distilling needs model2vec's extra; run `pip install 'model2vec[distill]'`"
            ) from None
        os.environ["HF_HUB_OFFLINE"] = "1"
        self.model_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".m2v-", dir=self.model_dir.parent))
        try:
            # model2vec's tqdm bars ("Encoding tokens", thousands of redraws) would flood stderr and CI
            # logs. TQDM_DISABLE cannot help here: tqdm reads it once, when first imported, which
            # transformers has already done; the bars write to sys.stderr at creation, so divert it.
            with contextlib.redirect_stderr(io.StringIO()):
                model = distill(model_name=str(self.base_dir), pca_dims=PCA_DIMS, device="cpu")
            model.save_pretrained(str(staging))
            try:
                staging.rename(self.model_dir)  # atomic: a concurrent distillation may have won
            except OSError:
                if not self.is_distilled:
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def encode(self, texts: Sequence[str], *, progress: Progress | None = None) -> np.ndarray:
        progress = progress or NullProgress()
        if self._model is None:
            self._model = self._load()
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for start in range(0, len(texts), self.batch_size):
            vectors = np.asarray(self._model.encode(list(texts[start : start + self.batch_size])), dtype=np.float32)
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            out[start : start + len(vectors)] = np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)
            progress.advance(len(vectors))
        return out
