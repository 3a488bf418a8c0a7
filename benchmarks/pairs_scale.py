"""100,000 synthetic preference pairs (384-d, 200 topics, 20 % reversed) through the pair audit, after embedding.

    PYTHONPATH=. python -m benchmarks.pairs_scale

Prints wall seconds, stage seconds, the estimated reversal rate, flag precision/recall and peak memory.
"""

import resource
import time

import numpy as np
import polars as pl

from credaudit.config import merge
from credaudit.pairs_run import audit_pairs

rng = np.random.default_rng(0)
P = 100_000
d = 384
topics = rng.normal(size=(200, d)).astype(np.float32)
q = rng.normal(size=(200, d)).astype(np.float32)
t = rng.integers(0, 200, P)
base = topics[t] + 0.5 * rng.normal(size=(P, d)).astype(np.float32)
good = base + 0.6 * q[t]
bad = base - 0.6 * q[t]
rev = rng.random(P) < 0.2
c = np.where(rev[:, None], bad, good)
r = np.where(rev[:, None], good, bad)
del base, good, bad
frame = pl.DataFrame({"chosen": np.arange(P).astype(str), "rejected": (np.arange(P) + P).astype(str)})
s = time.perf_counter()
res = audit_pairs(
    frame,
    merge({"pairs": {"chosen_col": "chosen", "rejected_col": "rejected"}}),
    chosen_embeddings=c,
    rejected_embeddings=r,
)
e = time.perf_counter() - s
f = res.issues["is_reversed"].to_numpy()
tp = (f & rev).sum()
print(
    "seconds",
    round(e, 1),
    "stages",
    res.report.run["stage_seconds"],
    "rate",
    res.report.noise["noise_rate"],
    "P",
    tp / max(f.sum(), 1),
    "R",
    tp / rev.sum(),
    "peakMB",
    resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "recall",
    res.report.run["graph"],
)
