"""A deterministic stand-in encoder, so tests of the text path need no model weights."""

from __future__ import annotations

import hashlib

import numpy as np


class BagOfWordsEncoder:
    """Hashes words into a 32-d bag of words; counts how many texts it embedded."""

    name = "bag-of-words"
    source = "tests"
    dimension = 32
    device = "cpu"

    def __init__(self, fingerprint: str = "bow-v1") -> None:
        self.fingerprint = fingerprint
        self.calls: list[int] = []

    def encode(self, texts, *, progress=None) -> np.ndarray:
        self.calls.append(len(texts))
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in text.lower().split():
                out[row, int(hashlib.md5(word.encode()).hexdigest(), 16) % self.dimension] += 1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return np.divide(out, norms, out=out, where=norms > 0)

    @property
    def embedded(self) -> int:
        return sum(self.calls)


class DiesOnceEncoder(BagOfWordsEncoder):
    """A bag of words whose process dies (``os._exit``) the first time any copy of it encodes:
    a Ray encoder actor lost mid-run. A marker file in ``marker_dir`` records that it died."""

    def __init__(self, marker_dir: str) -> None:
        super().__init__()
        self.marker_dir = marker_dir

    def encode(self, texts, *, progress=None) -> np.ndarray:
        import os
        from pathlib import Path

        marker = Path(self.marker_dir) / "died"
        if not marker.exists():
            marker.touch()
            os._exit(1)
        return super().encode(texts, progress=progress)
