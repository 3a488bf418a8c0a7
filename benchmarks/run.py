"""Run the benchmark and write benchmarks/RESULTS.md.

    python -m benchmarks.run                      # everything (about an hour on 2 CPU cores)
    python -m benchmarks.run --quick              # a few settings, credaudit and every peer
    python -m benchmarks.run --datasets ag_news --methods credaudit
    python -m benchmarks.run --report-only        # rebuild RESULTS.md from benchmarks/results/

Each (dataset, noise setting, method) runs in a fresh subprocess, so its peak memory (max RSS,
libraries included) is its own. Results are stored as JSON in benchmarks/results/ and reused
unless --force. Peers need the ``bench`` extra: ``pip install -e ".[bench]"``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.data import BINARY, CLEAN, LONG_TAIL, REAL_LOADERS, load_clean
from benchmarks.inject import KINDS, inject, transition_matrix
from benchmarks.metrics import calibration, detection_scores, noise_scores, precision_at

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
RATES = (0.1, 0.2, 0.4)
REAL = tuple(REAL_LOADERS)
METHOD_NAMES = ("credaudit", "vote", "datalab", "cl_lr")
# Settings beyond the kinds x rates grid: imbalance (noise only into or only out of the majority
# class, a long-tailed set) and low rates, so that tuning on one noise recipe cannot hide another.
EXTRA = (
    ("sms_spam", "to_majority", 0.05),
    ("sms_spam", "to_majority", 0.2),
    ("sms_spam", "majority_only", 0.05),
    ("sms_spam", "majority_only", 0.1),
    ("ag_news_lt", "none", 0.0),
    ("ag_news_lt", "to_majority", 0.05),
    ("ag_news_lt", "symmetric", 0.1),
    ("ag_news_lt", "pairflip", 0.2),
    ("ag_news_lt", "instance", 0.2),
    ("banking77", "symmetric", 0.05),
    ("20news", "pairflip", 0.05),
)


def settings(datasets, kinds, rates, *, extra: bool = True) -> list[tuple[str, str, float]]:
    out = []
    for name in datasets:
        if name in CLEAN:
            out.append((name, "none", 0.0))
            out += [
                (name, kind, rate) for kind in kinds for rate in rates if not (kind == "pairflip" and name in BINARY)
            ]
        elif name in REAL_LOADERS:
            out.append((name, "real", 0.0))
    if extra:
        out += [s for s in EXTRA if s[0] in datasets]
    return out


def task_id(dataset: str, kind: str, rate: float, method: str, seed: int) -> str:
    return f"{dataset}__{kind}__{rate:.2f}__{method}__s{seed}"


def run_one(dataset: str, kind: str, rate: float, method: str, seed: int) -> dict:
    """One task, in this process: returns the JSON-able record."""
    from benchmarks.methods import METHODS

    if dataset in CLEAN or dataset in LONG_TAIL:
        bench = load_clean(dataset)
        labels = inject(bench.embeddings, bench.true_labels, kind, rate, seed) if kind != "none" else bench.labels
        truth = bench.true_labels
        is_error = labels != truth
    else:
        bench = REAL_LOADERS[dataset]()
        labels, truth = bench.labels, bench.true_labels
        is_error = labels != truth if truth is not None else bench.is_error
    result = METHODS[method](bench.embeddings, labels, seed)
    flags = np.asarray(result["flags"], dtype=bool)
    record = {
        "dataset": dataset,
        "kind": kind,
        "rate": rate,
        "method": method,
        "seed": seed,
        "rows": len(labels),
        "classes": len(bench.class_names),
        "seconds": result["seconds"],
        **detection_scores(flags, np.asarray(result["scores"], dtype=float), is_error),
    }
    n_classes = len(bench.class_names)
    true_t = transition_matrix(truth, labels, n_classes) if truth is not None else None
    # IMDB: only verified errors are known, so there is no true noise rate to compare with.
    true_rate = float(is_error.mean()) if truth is not None else None
    record.update(noise_scores(result.get("noise_rate"), result.get("t"), true_rate, true_t))
    if "noise_interval" in result:
        record["noise_interval"] = result["noise_interval"]
        record["stage_seconds"] = result["stage_seconds"]
        record["warnings"] = result["warnings"]
        record["trustworthy"] = result["trustworthy"]
        if true_rate is not None:
            low, high = result["noise_interval"]
            record["interval_covers"] = bool(low <= true_rate <= high)
    if truth is not None and "suggested" in result:
        record["calibration"] = calibration(
            flags, np.asarray(result["suggested"]), np.asarray(result["confidence"]), truth
        )
    if truth is None:
        record.update(precision_at(np.asarray(result["scores"], dtype=float), is_error))
        checked = bench.extra["checked"]
        record["checked_rows"] = int(checked.sum())
        record["among_checked"] = detection_scores(
            flags[checked], np.asarray(result["scores"])[checked], is_error[checked]
        )
    return record


def run_task(dataset, kind, rate, method, seed, timeout) -> dict:
    """Run one task in a subprocess; add its peak RSS."""
    task = {"dataset": dataset, "kind": kind, "rate": rate, "method": method, "seed": seed}
    args = json.dumps([dataset, kind, rate, method, seed])
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.run", "--one", args],
        cwd=HERE.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    start = time.monotonic()
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return {**task, "error": f"timed out after {timeout}s"}
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        lines_err = err.strip().splitlines() or ["no output"]
        # The exception line ("ValueError: ..."), not the last line of a multi-line message.
        raised = [line for line in lines_err if re.match(r"^[A-Za-z_.]*(Error|Exception)\b", line)]
        last = raised[-1] if raised else lines_err[-1]
        return {**task, "error": last[:300], "wall_seconds": time.monotonic() - start}
    record = json.loads(lines[-1])
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default=",".join([*CLEAN, *LONG_TAIL, *REAL]))
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--rates", default=",".join(map(str, RATES)))
    parser.add_argument("--methods", default=",".join(METHOD_NAMES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--quick", action="store_true", help="ag_news and sms_spam at 20 %% noise, md_agreement, rte and hausa"
    )
    parser.add_argument("--force", action="store_true", help="rerun tasks that already have a result")
    parser.add_argument("--timeout", type=int, default=1800)
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.one:
        import resource

        record = run_one(*json.loads(args.one))
        record["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        print(json.dumps(record, default=_json_default))
        return

    if not args.report_only:
        datasets = ["ag_news", "sms_spam", "md_agreement", "rte", "hausa"] if args.quick else args.datasets.split(",")
        rates = [0.2] if args.quick else [float(r) for r in args.rates.split(",")]
        RESULTS.mkdir(exist_ok=True)
        tasks = [
            (d, k, r, m)
            for d, k, r in settings(datasets, args.kinds.split(","), rates)
            for m in args.methods.split(",")
        ]
        for i, (dataset, kind, rate, method) in enumerate(tasks, 1):
            path = RESULTS / f"{task_id(dataset, kind, rate, method, args.seed)}.json"
            if path.exists() and not args.force:
                continue
            record = run_task(dataset, kind, rate, method, args.seed, args.timeout)
            path.write_text(json.dumps(record, indent=1, default=_json_default))
            summary = record.get("error") or f"F1 {record['f1']:.3f} in {record['seconds']:.1f}s"
            print(f"[{i}/{len(tasks)}] {dataset} {kind} {rate} {method}: {summary}", flush=True)

    from benchmarks.report import write_results

    write_results(sorted(RESULTS.glob("*.json")), HERE / "RESULTS.md", machine=_machine())


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} CPU cores, Python {platform.python_version()}, {platform.system()}"


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(type(value))


if __name__ == "__main__":
    main()
