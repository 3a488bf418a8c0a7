"""Selection (``credaudit select``): purity and coverage of a budget, against random and top-by-raw-score.

    python -m benchmarks.selection            # writes the "Selection" section of RESULTS.md

Sets (the injected sets of benchmarks.preferences and one single-label set), budget 10 % of the items:
- ratings: SST-5 (MiniLM) and the synthetic ordered clusters, ordinal noise at 20 % and 40 %;
  purity = share of the selected items whose TRUE rating is the top of the scale (5); also their
  mean true rating;
- pairs: SST-5 pairs (more positive sentence chosen), 20 % reversed; purity = share not reversed;
- single labels: banking77 with 20 % symmetric noise; purity = share whose label is right.

Coverage: the items are grouped by k-means (faiss, seed 0, on the items' unit vectors; for pairs
the mean of the two responses); coverage = share of clusters with a selected item, for 50 clusters
and for budget/4 clusters (finer: there a random draw no longer covers nearly everything).

Methods: random (mean of 5 seeds); top-by-raw-score (ratings: the given noisy rating; pairs: the
mean-direction score, i.e. the cosine of the pair's direction with the mean direction of all
pairs; single labels: the share of the 10 nearest neighbours that carry the row's label), ties
broken at random; credaudit select at diversity 0 (quality only), 0.5 (the default) and 1.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import faiss
import numpy as np
import polars as pl

from benchmarks.encoders import write_section
from benchmarks.preferences import load_sst5, ordinal_noise, sst5_pairs, synthetic_ratings

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
BUDGET = 0.1
DIVERSITIES = (0.0, 0.5, 1.0)


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def clusters_of(x: np.ndarray, n_clusters: int = 50, seed: int = 0) -> np.ndarray:
    km = faiss.Kmeans(x.shape[1], n_clusters, niter=25, seed=seed + 7, spherical=True, verbose=False)
    km.cp.min_points_per_centroid = 1
    km.train(_unit(x))
    return km.index.search(_unit(x), 1)[1][:, 0]


def _top(score: np.ndarray, budget: int, seed: int) -> np.ndarray:
    tie = np.random.default_rng(seed).random(score.size)
    chosen = np.zeros(score.size, dtype=bool)
    chosen[np.lexsort((tie, -score))[:budget]] = True
    return chosen


def _metrics(chosen: np.ndarray, good: np.ndarray, clusters: tuple, extra: np.ndarray | None) -> dict:
    coarse, fine = clusters
    row = {
        "purity": float(good[chosen].mean()),
        "coverage": float(np.unique(coarse[chosen]).size / np.unique(coarse).size),
        "fine_coverage": float(np.unique(fine[chosen]).size / np.unique(fine).size),
    }
    if extra is not None:
        row["mean_true"] = float(extra[chosen].mean())
    return row


def evaluate(
    name: str,
    run_select,
    n: int,
    good: np.ndarray,
    raw_score: np.ndarray,
    vectors: np.ndarray,
    extra: np.ndarray | None = None,
) -> list[dict]:
    """Every method on one set: ``run_select(diversity) -> (chosen mask, seconds)``."""
    budget = int(round(BUDGET * n))
    # 50 clusters (coarse: a 10 % random draw covers nearly all) and budget/4 clusters (fine).
    clusters = (clusters_of(vectors), clusters_of(vectors, max(50, budget // 4)))
    rows = []
    randoms = []
    for seed in range(5):
        chosen = np.zeros(n, dtype=bool)
        chosen[np.random.default_rng(100 + seed).choice(n, budget, replace=False)] = True
        randoms.append(_metrics(chosen, good, clusters, extra))
    rows.append({"method": "random (mean of 5)", **{k: float(np.mean([r[k] for r in randoms])) for k in randoms[0]}})
    rows.append({"method": "top by raw score", **_metrics(_top(raw_score, budget, 0), good, clusters, extra)})
    for diversity in DIVERSITIES:
        chosen, seconds = run_select(diversity)
        assert chosen.sum() == budget, (chosen.sum(), budget)
        rows.append(
            {
                "method": f"credaudit select, diversity {diversity:g}",
                **_metrics(chosen, good, clusters, extra),
                "seconds": seconds,
            }
        )
    for row in rows:
        row["case"] = name
        row["items"] = n
        row["budget"] = budget
        row["base_rate"] = float(good.mean())
    print(json.dumps(rows, default=float), flush=True)
    return rows


def _select(frame: pl.DataFrame, settings: dict, diversity: float, **arrays) -> tuple[np.ndarray, float]:
    from credaudit.config import merge
    from credaudit.select_run import select

    config = merge({**settings, "select": {"budget": BUDGET, "diversity": diversity}})
    start = time.perf_counter()
    result = select(frame, config, **arrays)
    return result.selection.get_column("selected").to_numpy(), time.perf_counter() - start


def ratings_case(name: str, x: np.ndarray, true: np.ndarray, rate: float) -> list[dict]:
    noisy = ordinal_noise(true, rate, 0, 1, 5)
    frame = pl.DataFrame({"label": noisy})
    settings = {"ratings": {"ordinal": True}}
    return evaluate(
        f"{name}, {rate:.0%} ordinal noise",
        lambda d: _select(frame, settings, d, embeddings=x),
        len(true),
        true == 5,
        noisy.astype(np.float64),
        x,
        extra=true.astype(np.float64),
    )


def pairs_case(x: np.ndarray, ratings: np.ndarray, rate: float) -> list[dict]:
    better, worse = sst5_pairs(x, ratings)
    rng = np.random.default_rng(1)
    reversed_ = rng.random(len(better)) < rate
    chosen = np.where(reversed_, worse, better)
    rejected = np.where(reversed_, better, worse)
    frame = pl.DataFrame({"chosen": chosen.astype(str), "rejected": rejected.astype(str)})
    settings = {"pairs": {"chosen_col": "chosen", "rejected_col": "rejected"}}
    d = _unit(_unit(x[chosen]) - _unit(x[rejected]))
    mean_direction = d @ d.mean(axis=0)
    content = _unit(_unit(x[chosen]) + _unit(x[rejected]))
    return evaluate(
        f"SST-5 pairs, {rate:.0%} reversed",
        lambda dv: _select(frame, settings, dv, pair_embeddings=(x[chosen], x[rejected])),
        len(better),
        ~reversed_,
        mean_direction,
        content,
    )


def single_label_case(rate: float) -> list[dict]:
    from benchmarks.data import load_clean
    from benchmarks.inject import inject
    from credaudit.neighbors import search_neighbors

    bench = load_clean("banking77")
    x, true = bench.embeddings, bench.labels
    noisy = inject(x, true, "symmetric", rate, 0)
    ux = _unit(x)
    _, idx = search_neighbors(ux, ux, 11)
    vote_share = (noisy[idx[:, 1:]] == noisy[:, None]).mean(axis=1)
    frame = pl.DataFrame({"label": noisy})
    return evaluate(
        f"banking77, {rate:.0%} symmetric noise",
        lambda d: _select(frame, {}, d, embeddings=x),
        len(true),
        noisy == true,
        vote_share,
        x,
    )


def render(rows: list[dict]) -> str:
    lines = [
        "## Selection (`credaudit select`)",
        "",
        "`PYTHONPATH=. python -m benchmarks.selection` (Intel Xeon, 2 cores). Budget: 10 % of the items. "
        "Purity: share of the selected items that are truly good (ratings: true rating 5; pairs: not "
        "reversed; single labels: label right). Coverage: share of 50 k-means clusters of the items' "
        "vectors holding a selected item (fine: budget/4 clusters). Top by raw score: the given rating / "
        "the mean-direction score / the 10-NN label share. Seconds: the whole `select` (audit included) "
        "after embedding.",
        "",
        "| set | items | base rate | method | purity | coverage | fine coverage | mean true rating | seconds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        mean_true = f"{r['mean_true']:.2f}" if "mean_true" in r else "-"
        seconds = f"{r['seconds']:.1f}" if "seconds" in r else "-"
        lines.append(
            f"| {r['case']} | {r['items']:,} | {r['base_rate']:.3f} | {r['method']} | {r['purity']:.3f} | "
            f"{r['coverage']:.3f} | {r['fine_coverage']:.3f} | {mean_true} | {seconds} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args()
    x, ratings, _ = load_sst5()
    sx, strue = synthetic_ratings()
    rows = []
    for rate in (0.2, 0.4):
        rows += ratings_case("SST-5 (MiniLM)", x, ratings, rate)
        rows += ratings_case("synthetic ordered clusters", sx, strue, rate)
    rows += pairs_case(x, ratings, 0.2)
    rows += single_label_case(0.2)
    if not args.no_write:
        write_section(RESULTS, "selection", render(rows))


if __name__ == "__main__":
    main()
