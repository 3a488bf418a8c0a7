"""LabelCodec: the user's label values <-> integer codes 0..K-1.

Engine code only ever sees ``labels`` (int codes, shape (N,)); reports show ``label_values`` as
the user wrote them. Later label kinds (multi-annotator lists, preference pairs, ordinal ratings)
plug in as adapters that produce the same codes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class LabelCodec:
    """A fixed, ordered set of label values.

    Attributes
    ----------
    values : tuple
        The distinct label values, in report order (sorted), as Python scalars. Code i is values[i].
    """

    values: tuple[Any, ...]

    @classmethod
    def fit(cls, label_values: np.ndarray | list) -> LabelCodec:
        """The codec of the distinct values in ``label_values`` (no nulls), sorted.

        Mixed types sort by their string form, so ``[1, "1"]`` is stable rather than an error.
        """
        distinct = set(as_scalar(v) for v in label_values)
        try:
            ordered = sorted(distinct)
        except TypeError:
            ordered = sorted(distinct, key=lambda v: (type(v).__name__, str(v)))
        return cls(tuple(ordered))

    @property
    def n_classes(self) -> int:
        return len(self.values)

    def encode(self, label_values: np.ndarray | list) -> np.ndarray:
        """Codes of ``label_values``, shape (N,), dtype int64."""
        index = {v: i for i, v in enumerate(self.values)}
        return np.fromiter((index[as_scalar(v)] for v in label_values), dtype=np.int64, count=len(label_values))

    def decode(self, labels: np.ndarray) -> list[Any]:
        """The user's values for codes ``labels``."""
        return [self.values[i] for i in labels]

    def names(self) -> list[str]:
        """Display names of the classes, in code order."""
        return [str(v) for v in self.values]


def as_scalar(value: Any) -> Any:
    # numpy scalars -> Python scalars, so 3 and np.int64(3) are one class and JSON can hold them.
    return value.item() if isinstance(value, np.generic) else value
