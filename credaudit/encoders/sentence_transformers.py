"""Encoders backed by a local sentence-transformers model directory."""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from credaudit.encoders.base import resolve_device
from credaudit.errors import EncoderLoadError, ResourceError
from credaudit.progress import NullProgress, Progress

# Files whose bytes decide the vectors; README and git attributes do not.
_MODEL_FILE_SUFFIXES = (".json", ".safetensors", ".bin", ".txt", ".model")


PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@functools.cache  # the CPU does not change while we run; /proc/cpuinfo is read once
def cpu_has_fast_bf16() -> bool:
    """Whether this CPU multiplies bf16 matrices natively (AVX-512 BF16 or AMX), where bf16 runs ~2x fp32.

    Without them torch emulates bf16 and it is slower than fp32, so ``auto`` keeps fp32.
    """
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as handle:
            for line in handle:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:  # not Linux: no cheap way to tell, and fp32 is always right
        pass
    return False


def resolve_precision(precision: str, device: str) -> str:
    """``auto`` -> fp16 on CUDA, bf16 on CPUs with native bf16, else fp32.

    Raises
    ------
    EncoderLoadError
        fp16 asked for on the CPU (no fast kernels; bf16 or fp32 are the CPU choices).
    """
    if precision not in PRECISIONS:
        raise EncoderLoadError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        if device.startswith("cuda"):
            return "fp16"
        return "bf16" if cpu_has_fast_bf16() else "fp32"
    if precision == "fp16" and not device.startswith("cuda"):
        raise EncoderLoadError("--precision fp16 needs --device cuda; on the CPU use bf16 or fp32")
    return precision


def is_model_dir(path: Path) -> bool:
    """Whether ``path`` looks like a sentence-transformers (or plain transformers) model directory."""
    return path.is_dir() and ((path / "modules.json").is_file() or (path / "config.json").is_file())


def model_fingerprint(model_dir: Path) -> str:
    """sha256 over the model's files (names and bytes), so edited weights never reuse old vectors."""
    digest = hashlib.sha256()
    for file in sorted(model_dir.rglob("*")):
        if file.is_file() and file.suffix in _MODEL_FILE_SUFFIXES:
            digest.update(str(file.relative_to(model_dir)).encode() + b"\0")
            with file.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 22), b""):
                    digest.update(block)
    return digest.hexdigest()


class SentenceTransformerEncoder:
    """A sentence-transformers model loaded from a local directory, never from the network.

    Parameters
    ----------
    model_dir : Path
        The model directory (``modules.json`` and weights).
    name : str
        Shown in reports.
    source : str
        Where the weights came from, in words.
    device : str
        ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
    batch_size : int, optional
        Texts per forward pass; default 64 on CPU, 256 on CUDA.
    precision : str
        ``auto``, ``fp32``, ``bf16`` or ``fp16`` (see :func:`resolve_precision`). bf16 on the CPU runs
        under autocast (layer norms and softmax stay fp32); fp16 on CUDA casts the weights.

    Raises
    ------
    EncoderLoadError
        ``model_dir`` is not a model directory.
    """

    def __init__(
        self,
        model_dir: Path,
        *,
        name: str,
        source: str,
        device: str = "auto",
        batch_size: int | None = None,
        precision: str = "auto",
    ) -> None:
        model_dir = Path(model_dir)
        if not is_model_dir(model_dir):
            raise EncoderLoadError(
                f"{model_dir} is not a sentence-transformers model directory (no modules.json or config.json)"
            )
        self.model_dir = model_dir
        self.name = name
        self.source = source
        self.device = resolve_device(device)
        self.precision = resolve_precision(precision, self.device)
        self.batch_size = batch_size or (256 if self.device.startswith("cuda") else 64)
        self._model = None
        self._fingerprint: str | None = None

    @property
    def model(self):
        if self._model is None:
            self._model = self._load()
        return self._model

    def _load(self):
        # Local files only: the hub is never contacted, whatever the environment says.
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
        try:
            import torch
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as hf_logging

            # The library's own progress bars and notices would interleave with ours on stderr.
            hf_logging.disable_progress_bar()
            hf_logging.set_verbosity_error()

            if self.device.startswith("cuda") and not torch.cuda.is_available():
                raise EncoderLoadError(f"--device {self.device} was asked for, but torch sees no CUDA GPU")
            model = SentenceTransformer(
                str(self.model_dir), device=self.device, local_files_only=True, trust_remote_code=False
            )
        except EncoderLoadError:
            raise
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise EncoderLoadError(
                f"cannot load the model in {self.model_dir}: {str(exc).splitlines()[0][:200]}"
            ) from None
        if self.precision == "fp16":
            model.half()  # tensor cores on CUDA; the cache stores float16 anyway
        elif self.precision == "bf16" and self.device.startswith("cuda"):
            model.to(torch.bfloat16)
        model.eval()
        return model

    @property
    def dimension(self) -> int:
        config = self.model_dir / "config.json"
        if config.is_file() and (self.model_dir / "modules.json").is_file():
            import json

            pooling = self.model_dir / "1_Pooling" / "config.json"
            if pooling.is_file():
                return int(json.loads(pooling.read_text())["word_embedding_dimension"])
        return int(self.model.get_sentence_embedding_dimension())

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            # Precision is part of the key: bf16 vectors differ from fp32 ones in the third decimal.
            self._fingerprint = hashlib.sha256(
                f"sentence-transformers|{model_fingerprint(self.model_dir)}|{self.precision}|normalized".encode()
            ).hexdigest()[:32]
        return self._fingerprint

    def encode(self, texts: Sequence[str], *, progress: Progress | None = None) -> np.ndarray:
        progress = progress or NullProgress()
        model = self.model
        import torch

        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        # Length-sorted chunks: similar lengths share a padded batch, so less padding is computed.
        order = np.argsort([len(t) for t in texts], kind="stable")
        chunk = self.batch_size * 8
        # bf16 on the CPU: autocast runs the matrix products in bf16 and keeps norms and softmax in fp32.
        autocast = torch.autocast(
            "cpu", dtype=torch.bfloat16, enabled=self.precision == "bf16" and self.device == "cpu"
        )
        try:
            with torch.inference_mode(), autocast:
                for start in range(0, len(texts), chunk):
                    rows = order[start : start + chunk]
                    out[rows] = model.encode(
                        [texts[i] for i in rows],
                        batch_size=self.batch_size,
                        normalize_embeddings=True,
                        convert_to_numpy=True,
                        show_progress_bar=False,
                    ).astype(np.float32)
                    progress.advance(len(rows))
        except torch.cuda.OutOfMemoryError:
            raise ResourceError(
                f"the GPU ran out of memory embedding with batch size {self.batch_size}; pass a smaller --batch-size"
            ) from None
        return out
