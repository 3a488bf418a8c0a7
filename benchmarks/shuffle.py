"""The Ray engine's shuffle in one round and in two, on a local Ray cluster (one node, 2 CPUs).

    PYTHONPATH=. python -m benchmarks.shuffle                         # 1,000,000 x 384, blocks of 4,096
    PYTHONPATH=. python -m benchmarks.shuffle --rows 500000 --runs 3

Moves N random float32 rows into a random order (``RayEngine.arrange``, the shuffle the search's
list layout and the embedding's row blocks use), once with every piece made in one round and once
in two rounds (``engine.staged_shuffle``), each run in a fresh process, alternating. Small blocks
stand in for a large input: with blocks of 4,096 rows, 1,000,000 rows make 245 blocks and
one-round pieces of 25 KB, below Ray's 100 KiB inline limit, as blocks of 65,536 rows make at
about 64M rows (of 384-d float32 vectors). Prints and records (the shuffle section of SCALE.md)
the seconds and the growth of the driver's private memory (RssAnon, sampled every 10 ms) during
the shuffle.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def one_run(rounds: int, n_rows: int, dim: int, block_rows: int) -> dict:
    """One shuffle in this process: its seconds and the driver's private memory growth (MB)."""
    import ray

    import credaudit.engine
    import credaudit.engine_ray
    from benchmarks.scale import _own_memory_mb
    from credaudit.engine_ray import RayEngine

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    credaudit.engine.BLOCK_ROWS = block_rows
    # One round always, or two rounds wherever the pieces are under the inline limit.
    credaudit.engine_ray.SHUFFLE_DRIVER_BYTES = 0 if rounds == 2 else float("inf")
    x = np.random.default_rng(0).normal(size=(n_rows, dim)).astype(np.float32)
    order = np.random.default_rng(1).permutation(n_rows)
    engine = RayEngine(arrange="always")
    rows = engine.place(x)
    n_blocks = len(rows.parts)
    assert credaudit.engine_ray.shuffle_rounds(n_blocks, n_rows, dim) == rounds
    base = _own_memory_mb()
    peak, done = [base], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _own_memory_mb())
            time.sleep(0.01)

    sampler = threading.Thread(target=sample)
    sampler.start()
    start = time.perf_counter()
    engine.arrange(rows, order)
    ray.wait(list(rows.parts), num_returns=len(rows.parts))
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    same = bool(np.array_equal(engine.gather(rows), x))
    ray.shutdown()
    return {"seconds": seconds, "driver_mb": round(peak[0] - base), "blocks": n_blocks, "same_rows": same}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--block-rows", type=int, default=4_096)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_run(args.one, args.rows, args.dim, args.block_rows)))
        return
    from benchmarks.encoders import write_section
    from benchmarks.run import _machine

    results: dict[int, list[dict]] = {1: [], 2: []}
    for _ in range(args.runs):
        for rounds in (1, 2):
            command = [sys.executable, "-m", "benchmarks.shuffle", "--one", str(rounds), "--rows", str(args.rows)]
            command += ["--dim", str(args.dim), "--block-rows", str(args.block_rows)]
            out = subprocess.run(command, cwd=HERE.parent, capture_output=True, text=True, check=True).stdout
            record = json.loads(out.strip().splitlines()[-1])
            if not record["same_rows"]:
                raise SystemExit(f"the {rounds}-round shuffle did not keep the rows")
            results[rounds].append(record)
            print(f"{rounds} round(s): {record['seconds']:.2f} s, driver +{record['driver_mb']} MB", flush=True)
    blocks = results[1][0]["blocks"]
    piece_kb = 4 * args.dim * args.rows / blocks / blocks / 1024
    lines = [
        f"## The Ray shuffle in one round and in two: {args.rows:,} × {args.dim} rows in blocks of {args.block_rows:,}",
        "",
        f"`PYTHONPATH=. python -m benchmarks.shuffle --rows {args.rows} --block-rows {args.block_rows} "
        f"--runs {args.runs}` on {_machine()}: `RayEngine.arrange` of random float32 rows into a random order "
        f"on a local Ray cluster (one node, 2 CPUs), each run a fresh process, alternating. {blocks} blocks, so "
        f"one round makes up to {blocks * blocks:,} pieces of about {piece_kb:.0f} KB. Driver memory: the "
        "growth of its private memory (RssAnon, sampled every 10 ms) during the shuffle.",
        "",
        "| rounds | seconds, median (runs) | driver memory growth, MB (runs) |",
        "|---|---|---|",
    ]
    for rounds, runs in results.items():
        seconds = ", ".join(f"{r['seconds']:.1f}" for r in runs)
        memory = ", ".join(f"{r['driver_mb']:,}" for r in runs)
        median = statistics.median(r["seconds"] for r in runs)
        lines.append(f"| {rounds} | {median:.1f} ({seconds}) | {memory} |")
    write_section(HERE / "SCALE.md", "shuffle", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
