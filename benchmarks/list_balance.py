"""How unequal the approximate search's k-means lists are, and what that costs per row.

    python -m benchmarks.list_balance --rows 1000000
    python -m benchmarks.list_balance --rows 2000000

On the synthetic scale data (benchmarks/scale.py), with the search's own lists and probes
(credaudit.neighbors.ivf_lists, default settings): list sizes, and the candidates each row is
compared with (the rows of its list's probed lists). With equal lists that would be
16 × 512 = 8,192; the search's time is proportional to it. ``recall_at_10``: for 1,000 sampled
rows, the share of their 10 exact nearest neighbours found among those candidates (what the
search's recall check reports, without building the whole graph).

    python -m benchmarks.list_balance --rows 1000000 --probe-by rows   # probes counted in rows
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from benchmarks.scale import make_data
from credaudit.config import GraphConfig
from credaudit.neighbors import ivf_lists, search_neighbors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--probe-by", choices=("lists", "rows"), default="lists")
    parser.add_argument("--max-probes", type=int, default=GraphConfig().ivf_max_probes)
    args = parser.parse_args()
    x, _, _ = make_data(args.rows, seed=0)
    cfg = GraphConfig()
    started = time.perf_counter()
    home, probes = ivf_lists(
        x, probe_share=cfg.ivf_probe_share, max_probes=args.max_probes, seed=0, probe_by=args.probe_by
    )
    seconds = time.perf_counter() - started
    sizes = np.bincount(home, minlength=len(probes))
    # per list: the rows its block is compared with (-1 pads a list's probes when counted in rows)
    candidates = np.where(probes >= 0, sizes[probes], 0).sum(axis=1)
    record = {
        "rows": args.rows,
        "probe_by": args.probe_by,
        "max_probes": args.max_probes,
        "lists": len(probes),
        "kmeans_and_assign_seconds": round(seconds, 1),
        "list_rows_mean": round(float(sizes.mean()), 1),
        "list_rows_p99": float(np.percentile(sizes, 99)),
        "list_rows_max": int(sizes.max()),
        "candidates_per_row": round(float((sizes * candidates).sum()) / args.rows),
        "recall_at_10": round(_sample_recall(x, home, probes, k=10, n_sample=1000), 4),
    }
    print(json.dumps(record))


def _sample_recall(x: np.ndarray, home: np.ndarray, probes: np.ndarray, *, k: int, n_sample: int) -> float:
    """Share of sampled rows' k exact neighbours (itself excluded) among their probed lists' rows."""
    rows = np.sort(np.random.default_rng(1).choice(len(x), size=n_sample, replace=False))
    exact_sims, _ = search_neighbors(x, x[rows], k + 1)
    kth = exact_sims[:, k : k + 1]  # the (k+1)-th hit: the k-th after the row itself
    by_list = np.argsort(home, kind="stable")
    start = np.r_[0, np.cumsum(np.bincount(home, minlength=len(probes)))]
    found = []
    for row, cut in zip(rows, kth[:, 0], strict=True):
        lists = [j for j in probes[home[row]] if j >= 0]
        cand = np.concatenate([by_list[start[j] : start[j + 1]] for j in lists])
        cand = cand[cand != row]
        sims = np.sort(x[cand] @ x[row])[::-1][:k]
        found.append(float((sims >= cut - 1e-6).mean()))
    return float(np.mean(found))


if __name__ == "__main__":
    main()
