"""Several labels per item: credaudit's consensus and annotator quality next to crowd-kit's aggregators.

    pip install -e ".[bench]"        # crowd-kit 1.4.2 among the peers
    python -m benchmarks.crowd       # writes the "Crowd and multi-annotator labels" part of RESULTS.md

Cases:

- **RTE** (Snow et al. 2008): 800 sentence pairs, 10 MTurk answers each from 164 workers, expert gold;
  with and without the items' MiniLM vectors (``rte_snow2008.minilm_l6_v2.f16.npy``);
- **CIFAR-10N**: 50,000 images, three human answers each (``random_label1..3``, the slot as annotator),
  clean labels as truth, no features; T̂ is compared with the true T of (clean, answer) pairs;
- **simulated crowds** on real texts with known gold (``benchmarks/crowd_data.py``): ag_news (30
  workers) and banking77 (40 workers), 3,000 items, 3 answers per item from workers with a long-tail
  load, honest workers whose errors go to similar classes and grow on hard items, spammers, biased
  workers and copiers of a cheap nearest-centroid model whose label is known for 25 % of items.

Per case: consensus accuracy against gold; for the simulated crowds, each annotator's estimated
accuracy against their real accuracy (mean absolute error, Spearman ρ, and the share of 95 %
intervals that hold it), copy-detection AUROC (copiers vs honest workers, by credaudit's copy z-score),
whether any spammer is ranked above a good worker, and suspects found; T error as mean row total
variation; wall time of the estimator (credaudit with its 50 bootstrap resamples, i.e. everything it
reports). The full CLI scan of CIFAR-10N is timed separately, in a fresh process, with its peak memory.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.crowd_data import Crowd, load_cifar10n, load_rte, simulate_crowd, simulated_settings, true_transition
from benchmarks.crowd_peers import METHODS, accuracy, run_crowdkit
from credaudit.annotators import Answers, estimate_crowd
from credaudit.config import CrowdConfig
from credaudit.crowd_run import judge_annotators
from credaudit.neighbors import build_knn_graph

HERE = Path(__file__).resolve().parent
CIFAR = HERE.parent.parent / "shared" / "data" / "cifar_n_labels" / "cifar10n_labels.parquet"


def run_credaudit(crowd: Crowd, *, texts: bool, seed: int = 0) -> dict:
    """credaudit's estimator on a crowd (the code ``scan`` runs), with or without the items' vectors."""
    answers = Answers(crowd.item, crowd.annotator, crowd.label, crowd.n_items, crowd.n_workers, crowd.n_classes)
    cfg = CrowdConfig()
    started = time.perf_counter()
    graph = build_knn_graph(crowd.embeddings, k=10, seed=seed) if texts else None
    est = estimate_crowd(
        answers,
        neighbor_indices=None if graph is None else graph.indices,
        neighbor_similarities=None if graph is None else graph.similarities,
        shrinkage=cfg.shrinkage,
        n_bootstrap=cfg.n_bootstrap,
        seed=seed,
    )
    _, z, _, _, reasons = judge_annotators(est, answers, crowd.reference, cfg)
    return {
        "consensus": est.fit.posterior.argmax(axis=1),
        "confidence": est.fit.posterior.max(axis=1),
        "worker_accuracy": est.accuracy,
        "low": est.accuracy_low,
        "high": est.accuracy_high,
        "copy_z": z,
        "suspect": reasons,
        "pooled": est.fit.pooled,
        "consensus_t": est.consensus_transition,
        "noise_rate": est.noise_rate,
        "neighbor_weight": est.fit.neighbor_weight,
        "seconds": time.perf_counter() - started,
    }


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    from scipy.stats import spearmanr

    ok = np.isfinite(x) & np.isfinite(y)
    return float(spearmanr(x[ok], y[ok]).statistic)


def _tv(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).sum(axis=1).mean() / 2)


def _ece(confidence: np.ndarray, right: np.ndarray) -> float:
    bins = np.clip((confidence * 10).astype(int), 0, 9)
    return float(
        sum(
            abs(right[bins == b].mean() - confidence[bins == b].mean()) * (bins == b).mean()
            for b in range(10)
            if (bins == b).any()
        )
    )


def worker_metrics(crowd: Crowd, estimate: np.ndarray | None, low=None, high=None) -> dict:
    """Annotator-accuracy error against the truth (workers with at least 5 answers, and all)."""
    if estimate is None:
        return {}
    n = np.bincount(crowd.annotator, minlength=crowd.n_workers)
    truth = crowd.true_accuracy
    out = {}
    for tag, mask in (("", n >= 5), ("_all", n >= 1)):
        ok = mask & np.isfinite(truth) & np.isfinite(estimate)
        out[f"mae{tag}"] = float(np.abs(estimate[ok] - truth[ok]).mean())
        out[f"spearman{tag}"] = _spearman(estimate[ok], truth[ok])
        if low is not None:
            out[f"coverage{tag}"] = float(((low[ok] <= truth[ok]) & (truth[ok] <= high[ok])).mean())
    kinds = crowd.worker_kind
    good, spam = (kinds == "good") & (n >= 1), (kinds == "spammer") & (n >= 1)
    if good.any() and spam.any():
        out["spammer_above_good"] = bool(np.nanmax(estimate[spam]) > np.nanmin(estimate[good]))
    return out


def evaluate(crowd: Crowd, peers=METHODS, params: dict | None = None) -> list[dict]:
    """One row per method on one crowd: credaudit's variants, then the crowd-kit ``peers``."""
    rows = []
    true_t = true_transition(crowd)
    variants = [("credaudit (answers only)", False)]
    if crowd.embeddings is not None:
        variants.append(("credaudit (+ texts)", True))
    for name, texts in variants:
        r = run_credaudit(crowd, texts=texts)
        row = {
            "case": crowd.name,
            "method": name,
            "accuracy": accuracy(r["consensus"], crowd.gold),
            "ece": _ece(r["confidence"], r["consensus"] == crowd.gold),
            "t_tv": _tv(r["pooled"], true_t),
            "hoc_t_tv": None if r["consensus_t"] is None else _tv(r["consensus_t"], true_t),
            "noise_rate": r["noise_rate"],
            "true_noise_rate": float(1 - np.mean(crowd.label == crowd.gold[crowd.item])),
            "seconds": r["seconds"],
            "neighbor_weight": r["neighbor_weight"],
            **worker_metrics(crowd, r["worker_accuracy"], r["low"], r["high"]),
        }
        kinds = crowd.worker_kind
        if (kinds == "copier").any() and (crowd.reference >= 0).any():
            from sklearn.metrics import roc_auc_score

            honest = np.isin(kinds, ("good", "poor"))
            pick = (honest | (kinds == "copier")) & np.isfinite(r["copy_z"])
            row["copy_auroc"] = float(roc_auc_score(kinds[pick] == "copier", r["copy_z"][pick]))
        if (kinds != "unknown").any():
            found = np.array([s is not None for s in r["suspect"]])
            bad = np.isin(kinds, ("spammer", "biased", "copier"))
            row["suspects"] = f"{int((found & bad).sum())}/{int(bad.sum())} bad, {int((found & ~bad).sum())} honest"
        rows.append(row)
    if peers:
        for method, result in run_crowdkit(crowd, methods=peers, params=params).items():
            rows.append(
                {
                    "case": crowd.name,
                    "method": method,
                    "accuracy": accuracy(result["consensus"], crowd.gold),
                    "seconds": result["seconds"],
                    **worker_metrics(crowd, result["worker_accuracy"]),
                }
            )
    return rows


def cli_scan_cifar(runs: int) -> dict:
    """The whole ``credaudit scan`` of CIFAR-10N (three label columns) in fresh processes: median seconds, peak MB."""
    times, peaks = [], []
    with tempfile.TemporaryDirectory(prefix="credaudit-crowd-") as tmp:
        for i in range(runs):
            code = (
                "import resource, sys, time; from credaudit.cli import main; t = time.perf_counter()\n"
                "try:\n    main()\nexcept SystemExit:\n    pass\n"
                "print('SECONDS', time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
            )
            args = [
                sys.executable,
                "-c",
                code,
                "scan",
                str(CIFAR),
                "--label-col",
                "random_label1",
                "--label-col",
                "random_label2",
                "--label-col",
                "random_label3",
                "--id-col",
                "train_idx",
                "--out",
                f"{tmp}/out{i}",
                "--format",
                "quiet",
            ]
            out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
            line = next(x for x in out.splitlines() if x.startswith("SECONDS"))
            _, seconds, rss_kb = line.split()
            times.append(float(seconds))
            peaks.append(int(rss_kb) / 1024)
    return {"seconds": float(np.median(times)), "runs": times, "peak_mb": max(peaks)}


def _f(x, digits=3) -> str:
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "—"
    if isinstance(x, bool):
        return "yes" if x else "no"
    return f"{x:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    parser.add_argument("--runs", type=int, default=3, help="CLI runs on CIFAR-10N for the median time")
    args = parser.parse_args()
    from benchmarks.encoders import write_section
    from benchmarks.run import _machine

    crowds = [load_rte(), load_cifar10n()] + [simulate_crowd(**kw) for _, kw in simulated_settings()]
    rows = []
    for crowd in crowds:
        # GLAD and MACE cost grows with answers and classes: GLAD ~11 s per EM step at K = 77, MACE's 10
        # restarts ~160 s there (one restart instead); neither on CIFAR-10N's 150,000 answers.
        peers, params = METHODS, None
        if crowd.n_classes > 20:
            peers, params = ("MajorityVote", "DawidSkene", "OneCoinDawidSkene", "MACE"), {"MACE": {"n_restarts": 1}}
        if crowd.n_items > 5000:
            peers = ("MajorityVote", "DawidSkene", "OneCoinDawidSkene")
        for row in evaluate(crowd, peers, params):
            rows.append(row)
            print({k: v for k, v in row.items()}, flush=True)
    scan = cli_scan_cifar(args.runs)
    print("cifar scan", scan, flush=True)

    lines = [
        "## Crowd and multi-annotator labels",
        "",
        f"Generated by `python -m benchmarks.crowd` on {_machine()} (crowd-kit 1.4.2 as the peers; GLAD and MACE not "
        "run on CIFAR-10N's 150,000 answers, GLAD not on the 77-class crowd, MACE there with one restart). "
        "Setup: the docstring of `benchmarks/crowd.py`. *acc*: consensus "
        "accuracy against gold; *ECE*: expected calibration error of credaudit's consensus confidence (10 bins); "
        "annotator columns over workers with ≥ 5 answers: *MAE* / *ρ* of the estimated vs the real accuracy, *cov.*: "
        "95 % intervals holding it; *spam>good*: a spammer ranked above a good worker; *copy AUROC*: copiers vs "
        "honest workers by copy z-score; *T TV*: mean row total variation of the pooled T̂ vs the true T; time: the "
        "estimator alone (credaudit: with its 50 bootstrap resamples).",
        "",
        "| case | method | acc | ECE | annot. MAE | ρ | cov. | spam>good | copy AUROC | suspects found | T TV "
        "| answers wrong: est. [95 %] / true | s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        noise = r.get("noise_rate")
        noise_text = (
            "—" if noise is None else (f"{noise[0]:.3f} [{noise[1]:.3f}, {noise[2]:.3f}] / {r['true_noise_rate']:.3f}")
        )
        lines.append(
            f"| {r['case']} | {r['method']} | {_f(r['accuracy'], 4)} | {_f(r.get('ece'))} | {_f(r.get('mae'))} | "
            f"{_f(r.get('spearman'), 2)} | {_f(r.get('coverage'), 2)} | {_f(r.get('spammer_above_good'))} | "
            f"{_f(r.get('copy_auroc'))} | {r.get('suspects', '—')} | {_f(r.get('t_tv'))} | {noise_text} | "
            f"{r['seconds']:.2f} |"
        )
    lines += [
        "",
        f"Whole `credaudit scan` of CIFAR-10N (`--label-col random_label1 --label-col random_label2 --label-col "
        f"random_label3 --id-col train_idx`: reading, 50 bootstrap resamples, every output), fresh process: "
        f"median {scan['seconds']:.1f} s of {len(scan['runs'])} runs ({', '.join(f'{t:.1f}' for t in scan['runs'])}), "
        f"peak RSS {scan['peak_mb']:.0f} MB.",
    ]
    print("\n".join(lines))
    if not args.no_write:
        write_section(HERE / "RESULTS.md", "crowd", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
