"""100,000 synthetic preference pairs (384-d, 200 topics, 20 % reversed) through the pair audit, after embedding.

    PYTHONPATH=. python -m benchmarks.pairs_scale                          # 3 runs, local engine
    PYTHONPATH=. python -m benchmarks.pairs_scale --runs 3 --engine both   # and on a local 2-worker Ray cluster

Each run is a fresh process. Prints and records (the pairs section of SCALE.md) the median wall
seconds, stage seconds, the estimated reversal rate, flag precision/recall, the neighbour search's
recall@k and peak memory (with Ray, the peak PSS of the whole process tree, as in scale.py).
Target (issue: pairs and ratings): ≤ 2 minutes after embedding on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
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


def one_run(engine: str) -> dict:
    from benchmarks.scale import _PeakSampler

    chosen, rejected, reversed_ = make_pairs()
    frame = pl.DataFrame(
        {"chosen": np.arange(N_PAIRS).astype(str), "rejected": (np.arange(N_PAIRS) + N_PAIRS).astype(str)}
    )
    sampler = None
    if engine == "ray":
        import ray

        # A local 2-worker cluster on this machine's 2 cores (started before the clock).
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        sampler = _PeakSampler()
    start = time.perf_counter()
    result = audit_pairs(
        frame,
        merge({"engine": {"name": engine}, "pairs": {"chosen_col": "chosen", "rejected_col": "rejected"}}),
        chosen_embeddings=chosen,
        rejected_embeddings=rejected,
    )
    seconds = time.perf_counter() - start
    flags = result.issues["is_reversed"].to_numpy()
    tp = int((flags & reversed_).sum())
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "engine": engine,
        "seconds": seconds,
        "stage_seconds": result.report.run["stage_seconds"],
        "rate": result.report.noise["noise_rate"],
        "true_rate": float(reversed_.mean()),
        "precision": tp / max(int(flags.sum()), 1),
        "recall": tp / int(reversed_.sum()),
        "peak_mb": max(own, sampler.stop()) if sampler else own,
        "graph": result.report.run["graph"],
    }


def main() -> None:
    from benchmarks.encoders import write_section
    from benchmarks.run import _machine

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--engine", choices=["local", "ray", "both"], default="local")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_run(args.one)), flush=True)
        return
    engines = ["local", "ray"] if args.engine == "both" else [args.engine]
    rows, stage_lines = [], []
    for engine in engines:
        runs = []
        for _ in range(args.runs):
            command = [sys.executable, "-m", "benchmarks.pairs_scale", "--one", engine]
            done = subprocess.run(command, cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True)
            if done.returncode:
                raise SystemExit(done.stderr)
            runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(json.dumps(runs[-1]), flush=True)
        first = runs[0]
        rate = first["rate"]
        seconds = [r["seconds"] for r in runs]
        name = "local engine" if engine == "local" else "--engine ray (local 2-worker cluster)"
        rows.append(
            f"| {name} | {statistics.median(seconds):.1f} ({', '.join(f'{t:.1f}' for t in seconds)}) | "
            f"{max(r['peak_mb'] for r in runs):.0f} | {rate['estimate']:.3f} [{rate['low']:.3f}, {rate['high']:.3f}] | "
            f"{first['precision']:.3f} | {first['recall']:.3f} | {first['graph']['recall_at_k']:.3f} |"
        )
        stages = {k: statistics.median(r["stage_seconds"][k] for r in runs) for k in first["stage_seconds"]}
        stage_lines.append(f"{name}, stage medians (s): " + ", ".join(f"{k} {v:.1f}" for k, v in stages.items()))
    write_section(
        Path(__file__).resolve().parent / "SCALE.md",
        "pairs-100000",
        "## 100,000 preference pairs × 384 dims, after embedding\n\n"
        f"`PYTHONPATH=. python -m benchmarks.pairs_scale --runs {args.runs} --engine {args.engine}` on {_machine()}: "
        f"synthetic pairs on 200 topics, 20 % reversed (true rate {first['true_rate']:.3f}; see the script), "
        "each run a fresh process; the audit sees 200,000 direction rows. Peak memory: the process's peak RSS; "
        "with Ray, the peak PSS of the whole process tree.\n\n"
        "| engine | wall seconds, median (runs) | peak memory (MB) | reversal rate [interval] | precision | recall "
        "| recall@k |\n|---|---|---|---|---|---|---|\n"
        + "\n".join(rows)
        + "\n\n"
        + "\n\n".join(stage_lines)
        + "\n\nTarget: ≤ 2 minutes.\n",
    )


if __name__ == "__main__":
    main()
