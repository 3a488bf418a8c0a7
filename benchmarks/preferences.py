"""Ratings on an ordered scale and preference pairs: credaudit against its peers on the same embeddings.

    python -m benchmarks.preferences            # writes the "Ratings and preference pairs" section of RESULTS.md

Ratings. SST-5 (sentences rated 1-5, MiniLM vectors from ../shared/data/sst5/) and a synthetic set
of 10,000 rows whose five ratings lie along a curve in a 64-d feature space (features that do carry
the rating). Ordinal noise is injected at 20 % and 40 % (seed 0): a moved rating goes ±1 step with
probability 0.8 and ±2 with 0.2 (reflected at the ends). Methods: credaudit ``--ordinal``, credaudit
with the scale as nominal classes, cleanlab Datalab features-only, and the plain k-NN vote.
Metrics: flag F1; mean absolute error of the curated score vs the true rating (against the raw
noisy rating's); estimated vs true noise rate; T error as mean row total variation and as the
error of the implied mean move in scale units (ratings.expected_step_error).

Pairs. Pairs whose preferred side is known, with reversals injected at 10 / 20 / 30 %:
- SST-5: two sentences with different ratings, the more positive one chosen;
- MD-Agreement: a tweet all annotators found not offensive vs one most found offensive (agreement
  >= 0.8 both), the non-offensive one chosen (a harmlessness preference);
with credaudit's pair audit and a plain baseline, the *mean direction* (flip score = minus the
cosine of the pair's direction with the mean direction of all pairs). Metrics: flip F1 / AUROC,
estimated reversal rate vs the truth. HH-RLHF harmless-base test (2,312 real pairs, no truth):
the whole CLI with the MiniLM encoder, the estimated reversal rate and its interval.
"""

from __future__ import annotations

import argparse
import gzip
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from benchmarks.data import data_dir
from benchmarks.encoders import write_section
from benchmarks.methods import run_datalab, run_vote
from benchmarks.run import _machine

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def ordinal_noise(true: np.ndarray, rate: float, seed: int, low: int, high: int) -> np.ndarray:
    """Move a ``rate`` share of ratings: ±1 with probability 0.8, ±2 with 0.2, reflected inside [low, high]."""
    rng = np.random.default_rng(seed)
    n = len(true)
    pick = rng.random(n) < rate
    move = np.where(rng.random(n) < 0.8, 1, 2) * np.where(rng.random(n) < 0.5, -1, 1)
    moved = true + move
    moved = np.where((moved < low) | (moved > high), true - move, moved)
    return np.where(pick, moved, true)


def load_sst5() -> tuple[np.ndarray, np.ndarray, list[str]]:
    folder = data_dir() / "sst5"
    frame = pl.read_parquet(folder / "sst5.parquet")
    x = np.load(folder / "sst5.minilm_l6_v2.f16.npy").astype(np.float32)
    return x, frame.get_column("label").to_numpy(), frame.get_column("text").to_list()


def synthetic_ratings(n_rows: int = 10_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    dim = 64
    base = np.cumsum(rng.normal(size=(5, dim)), axis=0) * 0.6
    topics = rng.normal(size=(20, dim)) * 0.8
    true = rng.integers(1, 6, n_rows)
    x = base[true - 1] + topics[rng.integers(0, 20, n_rows)] + rng.normal(size=(n_rows, dim))
    return x.astype(np.float32), true


def f1(flags: np.ndarray, truth: np.ndarray) -> float:
    tp = float((flags & truth).sum())
    if tp == 0:
        return 0.0
    precision, recall = tp / flags.sum(), tp / truth.sum()
    return 2 * precision * recall / (precision + recall)


def true_t(true: np.ndarray, noisy: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    t = np.zeros((n, n))
    np.add.at(t, (true, noisy), 1.0)
    prior = t.sum(axis=1) / len(true)
    return t / np.maximum(t.sum(axis=1, keepdims=True), 1), prior


def rating_case(name: str, x: np.ndarray, true: np.ndarray, rate: float, seed: int = 0) -> list[dict]:
    from credaudit import audit
    from credaudit.config import merge
    from credaudit.ratings import expected_step_error

    noisy = ordinal_noise(true, rate, seed, 1, 5)
    truth = noisy != true
    scale = np.arange(1.0, 6.0)
    t_true, p_true = true_t(true - 1, noisy - 1, 5)
    step_true = expected_step_error(t_true, p_true, scale)
    raw_mae = float(np.abs(noisy - true).mean())
    rows = []
    for method, settings in (("credaudit --ordinal", {"ratings": {"ordinal": True}}), ("credaudit nominal", {})):
        start = time.perf_counter()
        result = audit(pl.DataFrame({"label": noisy}), merge({"seed": seed, **settings}), embeddings=x)
        seconds = time.perf_counter() - start
        t = result.noise.transition_matrix
        row = {
            "case": name,
            "rate": rate,
            "method": method,
            "f1": f1(result.detection.is_label_error, truth),
            "flags": int(result.detection.is_label_error.sum()),
            "noise_est": result.noise.noise_rate.estimate,
            "noise_true": float(truth.mean()),
            "trusted": bool(result.report.noise["trustworthy"]),
            "t_tv": float(np.abs(t - t_true).sum(axis=1).mean() / 2),
            "step_err": abs(expected_step_error(t, result.noise.clean_prior, scale) - step_true),
            "raw_mae": raw_mae,
            "seconds": seconds,
        }
        if "curated_score" in result.issues.columns:
            row["curated_mae"] = float(np.abs(result.issues.get_column("curated_score").to_numpy() - true).mean())
        rows.append(row)
    for method, run in (("Datalab", run_datalab), ("k-NN vote", run_vote)):
        out = run(x, noisy - 1, seed)
        row = {"case": name, "rate": rate, "method": method, "f1": f1(out["flags"], truth)}
        row.update(flags=int(out["flags"].sum()), noise_true=float(truth.mean()), raw_mae=raw_mae)
        if out.get("noise_rate") is not None:
            row["noise_est"] = float(out["noise_rate"])
        if out.get("t") is not None:
            row["t_tv"] = float(np.abs(out["t"] - t_true).sum(axis=1).mean() / 2)
        rows.append(row)
    return rows


def sst5_pairs(x: np.ndarray, ratings: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(better, worse) row indices: random pairs of sentences with different ratings."""
    rng = np.random.default_rng(seed)
    a, b = rng.permutation(len(ratings)), rng.permutation(len(ratings))
    keep = ratings[a] != ratings[b]
    a, b = a[keep], b[keep]
    better = np.where(ratings[a] > ratings[b], a, b)
    worse = np.where(ratings[a] > ratings[b], b, a)
    return better, worse


def md_pairs(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(vectors, better, worse): a clearly non-offensive tweet preferred to a clearly offensive one."""
    folder = data_dir() / "md_agreement"
    frame = pl.read_parquet(folder / "md-agreement.parquet")
    x = np.load(folder / "md-agreement.minilm_l6_v2.f16.npy").astype(np.float32)
    clear = frame.get_column("agreement").to_numpy() >= 0.8
    label = frame.get_column("true_label").to_numpy()
    rng = np.random.default_rng(seed)
    good = rng.permutation(np.flatnonzero(clear & (label == 0)))
    bad = rng.permutation(np.flatnonzero(clear & (label == 1)))
    # Each offensive tweet is used about twice, each harmless one at most once.
    n = min(len(good), 2 * len(bad))
    return x, good[:n], np.concatenate([bad, bad])[:n]


def pair_case(name: str, x: np.ndarray, better: np.ndarray, worse: np.ndarray, rate: float, seed: int = 0) -> dict:
    from sklearn.metrics import roc_auc_score

    from credaudit.config import merge
    from credaudit.pairs_run import audit_pairs

    rng = np.random.default_rng(seed + 1)
    reversed_ = rng.random(len(better)) < rate
    chosen = np.where(reversed_, worse, better)
    rejected = np.where(reversed_, better, worse)
    frame = pl.DataFrame({"chosen": chosen.astype(str), "rejected": rejected.astype(str)})
    config = merge({"seed": seed, "pairs": {"chosen_col": "chosen", "rejected_col": "rejected"}})
    start = time.perf_counter()
    result = audit_pairs(frame, config, chosen_embeddings=x[chosen], rejected_embeddings=x[rejected])
    seconds = time.perf_counter() - start
    issues = result.issues
    flip = issues.get_column("flip_score").to_numpy()
    flags = issues.get_column("is_reversed").to_numpy()
    d = x[chosen] / np.linalg.norm(x[chosen], axis=1, keepdims=True)
    d = d - x[rejected] / np.linalg.norm(x[rejected], axis=1, keepdims=True)
    d /= np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12)
    mean_dir = -(d @ d.mean(axis=0))
    budget = int(round(reversed_.mean() * len(flip)))  # the oracle budget: the true number of reversals
    oracle = np.zeros(len(flip), dtype=bool)
    oracle[np.argsort(-mean_dir)[:budget]] = True
    rate_est = result.report.noise["noise_rate"]
    return {
        "case": name,
        "rate": rate,
        "pairs": len(flip),
        "true_rate": float(reversed_.mean()),
        "est_rate": rate_est["estimate"],
        "low": rate_est["low"],
        "high": rate_est["high"],
        "trusted": bool(result.report.noise["trustworthy"]),
        "f1": f1(flags, reversed_),
        "auroc": float(roc_auc_score(reversed_, flip)),
        "flags": int(flags.sum()),
        "mean_dir_auroc": float(roc_auc_score(reversed_, mean_dir)),
        "mean_dir_f1_oracle": f1(oracle, reversed_),
        "seconds": seconds,
    }


def hh_rlhf(workdir: Path) -> dict:
    """The real HH-RLHF harmless test pairs through the CLI (MiniLM, texts embedded), fresh process."""
    source = data_dir() / "hh_rlhf" / "hh_rlhf_harmless-base_test.jsonl.gz"
    rows = [json.loads(line) for line in gzip.open(source, "rt")]
    path = workdir / "hh.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = workdir / "hh-out"
    start = time.perf_counter()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "credaudit",
            "scan",
            str(path),
            "--chosen-col",
            "chosen",
            "--rejected-col",
            "rejected",
            "--out",
            str(out),
            "--format",
            "json",
            "--clean",
            "flag",
        ],
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - start
    if proc.returncode not in (0, 1):
        raise RuntimeError(proc.stderr)
    report = json.loads((out / "report.json").read_text())
    issues = pl.read_parquet(out / "issues.parquet")
    return {
        "pairs": report["run"]["input"]["pairs"],
        "prompt_source": report["run"]["input"]["prompt_source"],
        "rate": report["noise"]["noise_rate"],
        "trusted": report["noise"]["trustworthy"],
        "flags": int(issues.get_column("is_reversed").sum()),
        "actions": report["detection"]["actions"],
        "seconds": seconds,
        "stage_seconds": report["run"]["stage_seconds"],
    }


def _f(v, digits: int = 3) -> str:
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    return f"{v:.{digits}f}"


def render(ratings: list[dict], pairs: list[dict], hh: dict | None) -> str:
    lines = [
        "## Ratings and preference pairs",
        "",
        f"`python -m benchmarks.preferences` on {_machine()}. Same embeddings for every method; seed 0.",
        "",
        "### Ratings: injected ordinal noise (±1 step with p 0.8, ±2 with 0.2)",
        "",
        "| set | noise | method | flag F1 | flags | noise rate est / true | trusted | T row TV | mean-move error "
        "(scale units) | MAE raw → curated |",
        "|---|---:|---|---:|---:|---|---|---:|---:|---|",
    ]
    for r in ratings:
        mae = f"{r['raw_mae']:.3f} → {r['curated_mae']:.3f}" if "curated_mae" in r else f"{r['raw_mae']:.3f} (raw)"
        lines.append(
            f"| {r['case']} | {r['rate']:.0%} | {r['method']} | {r['f1']:.3f} | {r['flags']:,} | "
            f"{_f(r.get('noise_est'))} / {r['noise_true']:.3f} | {_f(r.get('trusted'))} | {_f(r.get('t_tv'))} | "
            f"{_f(r.get('step_err'))} | {mae} |"
        )
    lines += [
        "",
        "### Preference pairs: injected reversals",
        "",
        "| set | pairs | reversed (true) | estimated [95 % interval] | trusted | flip F1 | flip AUROC | flagged | "
        "mean-direction AUROC | mean-direction F1 (oracle budget) | seconds |",
        "|---|---:|---:|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for p in pairs:
        lines.append(
            f"| {p['case']} | {p['pairs']:,} | {p['true_rate']:.3f} | {p['est_rate']:.3f} [{p['low']:.3f}, "
            f"{p['high']:.3f}] | {_f(p['trusted'])} | {p['f1']:.3f} | {p['auroc']:.3f} | {p['flags']:,} | "
            f"{p['mean_dir_auroc']:.3f} | {p['mean_dir_f1_oracle']:.3f} | {p['seconds']:.1f} |"
        )
    if hh is not None:
        rate = hh["rate"]
        lines += [
            "",
            f"**HH-RLHF harmless-base test** ({hh['pairs']:,} real pairs, no truth; prompt from "
            f"{hh['prompt_source'].replace('_', ' ')}; MiniLM, whole CLI in {hh['seconds']:.0f} s): estimated "
            f"reversal rate {rate['estimate']:.3f} [{rate['low']:.3f}, {rate['high']:.3f}], trusted: "
            f"{_f(hh['trusted'])}; {hh['flags']:,} pairs flagged; actions {hh['actions']}.",
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-hh", action="store_true", help="skip the HH-RLHF run (it embeds ~4,600 texts)")
    args = parser.parse_args()
    x, ratings, _ = load_sst5()
    sx, strue = synthetic_ratings()
    rating_rows = []
    for rate in (0.2, 0.4):
        rating_rows += rating_case("SST-5 (MiniLM)", x, ratings, rate)
        rating_rows += rating_case("synthetic ordered clusters", sx, strue, rate)
        print(json.dumps(rating_rows[-8:], default=float), flush=True)
    better, worse = sst5_pairs(x, ratings)
    mx, mgood, mbad = md_pairs()
    pair_rows = []
    for rate in (0.1, 0.2, 0.3):
        pair_rows.append(pair_case("SST-5, more positive chosen", x, better, worse, rate))
        pair_rows.append(pair_case("MD-Agreement, non-offensive chosen", mx, mgood, mbad, rate))
        print(json.dumps(pair_rows[-2:], default=float), flush=True)
    hh = None
    if not args.no_hh:
        with tempfile.TemporaryDirectory() as tmp:
            hh = hh_rlhf(Path(tmp))
        print(json.dumps(hh, default=float), flush=True)
    write_section(RESULTS, "preferences", render(rating_rows, pair_rows, hh))


if __name__ == "__main__":
    main()
