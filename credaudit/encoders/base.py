"""The encoder interface every feature source implements."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from credaudit.progress import Progress


@runtime_checkable
class Encoder(Protocol):
    """Turns texts into L2-normalised float32 vectors.

    Attributes
    ----------
    name : str
        Registry name or model path, shown in reports.
    source : str
        Where the weights come from (a package, a directory), shown by ``credaudit encoders``.
    dimension : int
        d, the vector length.
    fingerprint : str
        Changes whenever the vectors for the same text could change (weights, settings); the
        embedding cache is keyed by it.
    device : str
        Where it runs (``cpu``, ``cuda:0``).
    """

    name: str
    source: str
    dimension: int
    fingerprint: str
    device: str

    def encode(self, texts: Sequence[str], *, progress: Progress | None = None) -> np.ndarray:
        """Embed ``texts``.

        Returns
        -------
        ndarray of shape (len(texts), dimension), dtype float32
            Unit L2 rows (an all-zero row is allowed for an empty text).
        """
        ...


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` if torch sees a GPU, else ``cpu``; other values unchanged."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
