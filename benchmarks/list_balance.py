"""How unequal the approximate search's k-means lists are, and what that costs per row.

    python -m benchmarks.list_balance --rows 1000000
    python -m benchmarks.list_balance --rows 2000000

On the synthetic scale data (benchmarks/scale.py), with the search's own lists and probes
(credaudit.neighbors.ivf_lists, default settings): list sizes, and the candidates each row is
compared with (the rows of its list's probed lists). With equal lists that would be
16 × 512 = 8,192; the search's time is proportional to it.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from benchmarks.scale import make_data
from credaudit.config import GraphConfig
from credaudit.neighbors import ivf_lists


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    x, _, _ = make_data(args.rows, seed=0)
    cfg = GraphConfig()
    started = time.perf_counter()
    home, probes = ivf_lists(x, probe_share=cfg.ivf_probe_share, max_probes=cfg.ivf_max_probes, seed=0)
    seconds = time.perf_counter() - started
    sizes = np.bincount(home, minlength=len(probes))
    candidates = sizes[probes].sum(axis=1)  # per list: the rows its block is compared with
    record = {
        "rows": args.rows,
        "lists": len(probes),
        "kmeans_and_assign_seconds": round(seconds, 1),
        "list_rows_mean": round(float(sizes.mean()), 1),
        "list_rows_p99": float(np.percentile(sizes, 99)),
        "list_rows_max": int(sizes.max()),
        "candidates_per_row": round(float((sizes * candidates).sum()) / args.rows),
    }
    print(json.dumps(record))


if __name__ == "__main__":
    main()
