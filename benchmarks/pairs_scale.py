"""100,000 synthetic preference pairs (384-d, 200 topics, 20 % reversed) through the pair audit, after embedding.

    PYTHONPATH=. python -m benchmarks.pairs_scale            # one run; writes the pairs section of SCALE.md

Prints and records wall seconds, stage seconds, the estimated reversal rate, flag precision/recall,
the neighbour search's recall@k and peak memory. Target (issue: pairs and ratings): ≤ 2 minutes
after embedding on 2 CPU cores.
"""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path

import numpy as np
import polars as pl

from credaudit.config import merge
from credaudit.pairs_run import audit_pairs

N_PAIRS = 100_000


def make_pairs(n_pairs: int = N_PAIRS, dim: int = 384, seed: int = 0):
    rng = np.random.default_rng(seed)
    topics = rng.normal(size=(200, dim)).astype(np.float32)
    quality = rng.normal(size=(200, dim)).astype(np.float32)
    topic = rng.integers(0, 200, n_pairs)
    base = topics[topic] + 0.5 * rng.normal(size=(n_pairs, dim)).astype(np.float32)
    good = base + 0.6 * quality[topic]
    bad = base - 0.6 * quality[topic]
    reversed_ = rng.random(n_pairs) < 0.2
    chosen = np.where(reversed_[:, None], bad, good)
    rejected = np.where(reversed_[:, None], good, bad)
    return chosen, rejected, reversed_


def main() -> None:
    from benchmarks.encoders import write_section
    from benchmarks.run import _machine

    chosen, rejected, reversed_ = make_pairs()
    frame = pl.DataFrame(
        {"chosen": np.arange(N_PAIRS).astype(str), "rejected": (np.arange(N_PAIRS) + N_PAIRS).astype(str)}
    )
    start = time.perf_counter()
    result = audit_pairs(
        frame,
        merge({"pairs": {"chosen_col": "chosen", "rejected_col": "rejected"}}),
        chosen_embeddings=chosen,
        rejected_embeddings=rejected,
    )
    seconds = time.perf_counter() - start
    flags = result.issues["is_reversed"].to_numpy()
    tp = int((flags & reversed_).sum())
    rate = result.report.noise["noise_rate"]
    record = {
        "seconds": seconds,
        "stage_seconds": result.report.run["stage_seconds"],
        "rate": rate,
        "true_rate": float(reversed_.mean()),
        "precision": tp / max(int(flags.sum()), 1),
        "recall": tp / int(reversed_.sum()),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "graph": result.report.run["graph"],
    }
    print(json.dumps(record), flush=True)
    stages = ", ".join(f"{k} {v:.1f}" for k, v in record["stage_seconds"].items())
    write_section(
        Path(__file__).resolve().parent / "SCALE.md",
        "pairs-100000",
        "## 100,000 preference pairs × 384 dims, after embedding\n\n"
        f"`PYTHONPATH=. python -m benchmarks.pairs_scale` on {_machine()}: synthetic pairs on 200 topics, 20 % "
        f"reversed (see the script), one run. **{seconds:.1f} s**, peak RSS {record['peak_rss_mb']:.0f} MB; "
        f"stages (s): {stages}. Reversal rate {rate['estimate']:.3f} [{rate['low']:.3f}, {rate['high']:.3f}] "
        f"(true {record['true_rate']:.3f}); flags precision {record['precision']:.3f}, recall "
        f"{record['recall']:.3f}; neighbour search {record['graph']['method']}, recall@k "
        f"{record['graph']['recall_at_k']:.3f} over the 200,000 direction rows. Target: ≤ 2 minutes.\n",
    )


if __name__ == "__main__":
    main()
