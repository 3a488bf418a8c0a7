"""LabelCodec: the user's label values <-> integer codes 0..K-1.

Engine code only ever sees ``labels`` (int codes, shape (N,)); reports show ``label_values`` as
the user wrote them. Later label kinds (multi-annotator lists, preference pairs, ordinal ratings)
plug in as adapters that produce the same codes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl


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
    def fit(cls, label_values: pl.Series | np.ndarray | list) -> LabelCodec:
        """The codec of the distinct values in ``label_values`` (no nulls), sorted.

        Mixed types sort by their string form, so ``[1, "1"]`` is stable rather than an error.
        """
        distinct = set(distinct_values(label_values))
        try:
            ordered = sorted(distinct)
        except TypeError:
            ordered = sorted(distinct, key=lambda v: (type(v).__name__, str(v)))
        return cls(tuple(ordered))

    @property
    def n_classes(self) -> int:
        return len(self.values)

    def encode(self, label_values: pl.Series | np.ndarray | list) -> np.ndarray:
        """Codes of ``label_values``, shape (N,), dtype int64 (a KeyError for a value not in the codec)."""
        index = {v: i for i, v in enumerate(self.values)}
        if isinstance(label_values, pl.Series):
            # Each distinct value coded once, then a vectorised replace: no Python loop over the rows.
            distinct = label_values.unique()
            codes = pl.Series([index[v] for v in distinct.to_list()], dtype=pl.Int64)
            return label_values.replace_strict(distinct, codes, return_dtype=pl.Int64).to_numpy()
        return np.fromiter((index[as_scalar(v)] for v in label_values), dtype=np.int64, count=len(label_values))

    def decode(self, labels: np.ndarray) -> list[Any]:
        """The user's values for codes ``labels``."""
        return [self.values[i] for i in labels]

    def names(self) -> list[str]:
        """Display names of the classes, in code order."""
        return [str(v) for v in self.values]


def distinct_values(label_values: pl.Series | np.ndarray | list) -> list[Any]:
    """The distinct values of ``label_values`` as Python scalars, in no particular order (a column
    is reduced by polars, without a Python loop over its rows)."""
    if isinstance(label_values, pl.Series):
        return label_values.unique().to_list()
    return list({as_scalar(v) for v in label_values})


def as_scalar(value: Any) -> Any:
    # numpy scalars -> Python scalars, so 3 and np.int64(3) are one class and JSON can hold them.
    return value.item() if isinstance(value, np.generic) else value
