"""Time the post-embedding audit at 100,000 rows × 384 dims × 20 classes.

    python -m benchmarks.scale                 # 3 runs of credaudit, median reported
    python -m benchmarks.scale --runs 5 --peers  # also cleanlab Datalab's features-only label check

The data are synthetic embeddings (seeded): 20 classes, each a mixture of 5 Gaussian sub-topics in
384 dimensions, L2-normalised, with 20 % symmetric label noise. Each run is a fresh process, so
its peak RSS (libraries included) is its own. Results go to benchmarks/SCALE.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def make_data(n_rows: int = 100_000, dim: int = 384, n_classes: int = 20, noise: float = 0.2, seed: int = 0):
    """(embeddings (N, d) float32, true labels, observed labels)."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_classes, dim))
    topics = centers[:, None, :] + 0.6 * rng.normal(size=(n_classes, 5, dim))
    true = rng.integers(0, n_classes, n_rows)
    topic = rng.integers(0, 5, n_rows)
    # In row chunks, so 1,000,000 rows never hold an (N, d) float64 array; the draws are the same
    # sequence as one (N, d) call, so the data do not depend on the chunk size.
    x = np.empty((n_rows, dim), dtype=np.float32)
    for start in range(0, n_rows, 50_000):
        stop = min(start + 50_000, n_rows)
        chunk = topics[true[start:stop], topic[start:stop]] + 1.2 * rng.normal(size=(stop - start, dim))
        x[start:stop] = chunk / np.linalg.norm(chunk, axis=1, keepdims=True)
    flip = rng.random(n_rows) < noise
    observed = true.copy()
    observed[flip] = (true[flip] + rng.integers(1, n_classes, flip.sum())) % n_classes
    return x, true, observed


def one_run(method: str, n_rows: int = 100_000) -> dict:
    import resource

    x, true, observed = make_data(n_rows)
    errors = observed != true
    start = time.perf_counter()
    if method == "credaudit":
        import polars as pl

        from credaudit import ScanConfig, audit

        result = audit(pl.DataFrame({"label": observed}), ScanConfig(), embeddings=x)
        flags = result.detection.is_label_error
        extra = {
            "stage_seconds": result.report.run["stage_seconds"],
            "graph": result.graph.method,
            "noise_rate_est": result.noise.noise_rate.estimate,
        }
    else:
        from cleanlab import Datalab

        lab = Datalab(data={"label": observed}, label_name="label", verbosity=0)
        lab.find_issues(features=x, issue_types={"label": {}})
        flags = lab.get_issues("label")["is_label_issue"].to_numpy()
        extra = {}
    seconds = time.perf_counter() - start
    tp = int((flags & errors).sum())
    return {
        "method": method,
        "seconds": seconds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "precision": tp / max(flags.sum(), 1),
        "recall": tp / errors.sum(),
        "noise_rate_true": float(errors.mean()),
        **extra,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--peers", action="store_true", help="also time cleanlab Datalab once")
    parser.add_argument("--rows", type=int, default=100_000, help="rows of synthetic data (default 100,000)")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_run(args.one, args.rows)))
        return
    from benchmarks.run import _machine

    runs = {"credaudit": [], "datalab": []}
    plan = ["credaudit"] * args.runs + (["datalab"] if args.peers else [])
    for method in plan:
        out = subprocess.run(
            [sys.executable, "-m", "benchmarks.scale", "--one", method, "--rows", str(args.rows)],
            cwd=HERE.parent,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        record = json.loads(out.strip().splitlines()[-1])
        runs[method].append(record)
        print(f"{method}: {record['seconds']:.1f}s, peak {record['peak_rss_mb']:.0f} MB", flush=True)

    ours = runs["credaudit"]
    lines = [
        f"## {args.rows:,} rows × 384 dims × 20 classes, after embedding",
        "",
        f"`python -m benchmarks.scale --rows {args.rows} --runs {args.runs}{' --peers' if args.peers else ''}` on "
        f"{_machine()}. "
        "Synthetic embeddings (see `benchmarks/scale.py`), 20 % symmetric noise. Each run is a fresh process.",
        "",
        "| | wall seconds | peak RSS (MB) | precision | recall |",
        "|---|---|---|---|---|",
    ]
    if ours:
        med = lambda key: statistics.median(r[key] for r in ours)  # noqa: E731
        all_runs = ", ".join(f"{r['seconds']:.1f}" for r in ours)
        lines.append(
            f"| credaudit (median of {len(ours)}) | {med('seconds'):.1f} "
            f"({all_runs}) | {med('peak_rss_mb'):.0f} | "
            f"{med('precision'):.3f} | {med('recall'):.3f} |"
        )
    for r in runs["datalab"]:
        lines.append(
            f"| cleanlab Datalab, features only (1 run) | {r['seconds']:.1f} | {r['peak_rss_mb']:.0f} | "
            f"{r['precision']:.3f} | {r['recall']:.3f} |"
        )
    if ours:
        stages = {k: statistics.median(r["stage_seconds"][k] for r in ours) for k in ours[0]["stage_seconds"]}
        lines += [
            "",
            "credaudit stage medians (s): " + ", ".join(f"{k} {v:.1f}" for k, v in stages.items()),
            f"neighbour search: {ours[0]['graph']}; estimated noise rate {ours[0]['noise_rate_est']:.3f} "
            f"(true {ours[0]['noise_rate_true']:.3f}).",
            "",
            "Targets on 2 CPU cores: 100,000 rows ≤ 20 s and ≤ 2 GB peak; 1,000,000 rows ≤ 5 minutes and ≤ 6 GB.",
        ]
    from benchmarks.encoders import write_section

    path = HERE / "SCALE.md"
    if not path.exists():
        path.write_text("# Scale: the audit after embedding, on synthetic clustered embeddings\n")
    write_section(path, f"scale-{args.rows}", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
