"""Per-stage seconds and peak memory of one in-process audit of the synthetic scale data.

    python -m benchmarks.stage_times --rows 1000000

For comparing two commits on the same machine in the same hour (run it from each checkout, one
after the other): benchmarks/scale.py runs each audit in a fresh process and takes medians, but
machines drift between sessions by more than a small change moves. The peak memory is the
report's (the process's peak RSS, the benchmark's own copy of the 1.5 GB of vectors included).
"""

from __future__ import annotations

import argparse
import json

import polars as pl

from benchmarks.scale import make_data
from credaudit.config import ScanConfig
from credaudit.pipeline import audit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=300_000)
    args = parser.parse_args()
    x, _, observed = make_data(args.rows, seed=0)
    result = audit(pl.DataFrame({"label": observed}), ScanConfig(), embeddings=x)
    run = result.report.run
    record = {"rows": args.rows, "stage_seconds": run["stage_seconds"], "peak_memory_mb": run.get("peak_memory_mb")}
    print(json.dumps(record))


if __name__ == "__main__":
    main()
