"""Encoders compared: speed, memory, fidelity to fp32, the detection quality each gives, what
``--encoder auto`` picks, and what the embedding cache saves.

    python -m benchmarks.encoders                 # ~20-30 minutes on 2 CPU cores
    python -m benchmarks.encoders --runs 5        # more timing runs
    python -m benchmarks.encoders --int8-imdb     # also embed all 25,000 IMDB reviews with minilm-int8 (long)

Writes benchmarks/ENCODERS.md and the "Encoders" section of benchmarks/RESULTS.md.

Throughput: every encoder embeds the same texts in a fresh process (its peak RSS is its own,
libraries and weights included), ``--runs`` times; the median texts/s is reported. Short texts
are the first 1,000 banking77 queries (~12 words), long ones the first 200 IMDB reviews (~230
words; the transformer truncates at 256 tokens). The baseline ``st-fp32`` is plain
sentence-transformers as its documentation shows it: ``SentenceTransformer(dir).encode(texts,
normalize_embeddings=True)``, fp32, default batch size. Cosine is row-wise to the baseline's vectors.
The static model's one-off distillation is timed apart; tfidf's time is its fit on those texts.

Detection: ``credaudit.audit`` with default settings on each encoder's vectors of IMDB (human-verified
errors; only items some detector had flagged were verified) and banking77 with 20 % symmetric noise
injected (seed 0; symmetric noise does not depend on any encoder's geometry). ``minilm`` uses the
shared ``*.minilm_l6_v2.f16.npy`` files (the same model in fp32, stored as float16).

Auto: ``choose_encoder`` (what ``--encoder auto`` runs) on the same data and sample, with the vectors
computed above; its pick is compared with the encoder of best detection AUROC.

Cache: a scan of 2,000 banking77 rows with an empty cache, then the same scan again; the embed stage
times are compared.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SPEED_ENCODERS = ("st-fp32", "minilm", "minilm-bf16", "minilm-int8", "static", "tfidf")
QUALITY_ENCODERS = ("minilm", "minilm-int8", "static", "tfidf")
SHORT_N, LONG_N = 1000, 200
SECTION = "encoders"


def _texts(kind: str) -> list[str]:
    import polars as pl

    from benchmarks.data import data_dir

    if kind == "short":
        return pl.read_parquet(data_dir() / "banking77/banking77.parquet")["text"].to_list()[:SHORT_N]
    return pl.read_parquet(data_dir() / "imdb/imdb_test.parquet")["text"].to_list()[:LONG_N]


def _build(name: str):
    from credaudit.encoders.registry import get_encoder

    if name == "minilm-bf16":
        return get_encoder("minilm", device="cpu", precision="bf16")
    if name == "minilm":
        return get_encoder("minilm", device="cpu")
    return get_encoder(name, device="cpu")


def speed_worker(name: str, kind: str, out: Path) -> dict:
    """Embed one text set with one encoder in this (fresh) process."""
    import resource

    texts = _texts(kind)
    if name == "st-fp32":
        import torch
        from sentence_transformers import SentenceTransformer

        from credaudit.encoders.registry import _minilm_dir

        os.environ["HF_HUB_OFFLINE"] = "1"
        model = SentenceTransformer(str(_minilm_dir()), device="cpu")
        model.encode(texts[:8])  # warm-up, as for every encoder
        start = time.perf_counter()
        with torch.inference_mode():
            vectors = model.encode(texts, normalize_embeddings=True)
        seconds = time.perf_counter() - start
        precision = "fp32"
    else:
        encoder = _build(name)
        if name == "static":
            start = time.perf_counter()
            was_distilled = encoder.is_distilled
            encoder.encode(texts[:8])
            distill = None if was_distilled else time.perf_counter() - start
        elif name != "tfidf":
            encoder.encode(texts[:8])
        start = time.perf_counter()
        vectors = encoder.encode(texts)
        seconds = time.perf_counter() - start
        precision = getattr(encoder, "precision", "")
    np.save(out, np.asarray(vectors, dtype=np.float32))
    record = {
        "encoder": name,
        "texts": kind,
        "n": len(texts),
        "seconds": seconds,
        "texts_per_s": len(texts) / seconds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "precision": precision,
    }
    if name == "static":
        record["distill_seconds"] = distill
    return record


def run_speed(runs: int, workdir: Path) -> list[dict]:
    records = []
    for kind in ("short", "long"):
        for name in SPEED_ENCODERS:
            n_runs = 1 if name == "minilm-bf16" else runs  # slow without native bf16: its cosine is the point
            for run in range(n_runs):
                out = workdir / f"{name}-{kind}.npy"
                proc = subprocess.run(
                    [sys.executable, "-m", "benchmarks.encoders", "--speed-worker", name, kind, str(out)],
                    cwd=HERE.parent,
                    capture_output=True,
                    text=True,
                )
                if proc.returncode != 0:
                    tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
                    records.append({"encoder": name, "texts": kind, "error": tail})
                    print(f"{name} {kind}: failed: {tail}", flush=True)
                    break
                record = json.loads(proc.stdout.strip().splitlines()[-1])
                record["run"] = run
                records.append(record)
                print(f"{name} {kind} run {run}: {record['texts_per_s']:.1f} texts/s", flush=True)
    for kind in ("short", "long"):
        base = np.load(workdir / f"st-fp32-{kind}.npy")
        for r in records:
            if r["texts"] == kind and "error" not in r and r["encoder"] not in ("st-fp32", "static", "tfidf"):
                cos = (np.load(workdir / f"{r['encoder']}-{kind}.npy") * base).sum(axis=1)
                r["cosine_mean"], r["cosine_min"] = float(cos.mean()), float(cos.min())
    return records


def _features(name: str, dataset: str, texts: list[str], shared: np.ndarray) -> tuple[np.ndarray, float]:
    if name == "minilm":
        return shared, 0.0
    encoder = _build(name)
    start = time.perf_counter()
    vectors = encoder.encode(texts)
    return vectors, time.perf_counter() - start


def run_quality(int8_imdb: bool) -> tuple[list[dict], list[dict]]:
    import polars as pl

    from benchmarks.data import data_dir, load_clean, load_imdb
    from benchmarks.inject import inject
    from benchmarks.methods import run_credaudit
    from benchmarks.metrics import detection_scores
    from credaudit.config import ScanConfig
    from credaudit.encoders.auto import CANDIDATES as AUTO_CANDIDATES
    from credaudit.encoders.auto import choose_encoder

    imdb = load_imdb()
    bank = load_clean("banking77")
    noisy = inject(bank.embeddings, bank.labels, "symmetric", 0.2, 0)
    sets = {
        "imdb (real, verified errors)": (
            pl.read_parquet(data_dir() / "imdb/imdb_test.parquet")["text"].to_list(),
            imdb.labels,
            imdb.is_error,
            imdb.embeddings,
        ),
        "banking77 (20 % symmetric)": (
            pl.read_parquet(data_dir() / "banking77/banking77.parquet")["text"].to_list(),
            noisy,
            noisy != bank.labels,
            bank.embeddings,
        ),
    }
    quality, autos = [], []
    for dataset, (texts, labels, is_error, shared) in sets.items():
        vectors = {}
        for name in QUALITY_ENCODERS:
            if name == "minilm-int8" and dataset.startswith("imdb") and not int8_imdb:
                quality.append({"dataset": dataset, "encoder": name, "skipped": "not run (pass --int8-imdb)"})
                continue
            x, seconds = _features(name, dataset, texts, shared)
            vectors[name] = x
            result = run_credaudit(x, labels, 0)
            scores = detection_scores(result["flags"], result["scores"], is_error)
            quality.append({"dataset": dataset, "encoder": name, "embed_seconds": seconds, **scores})
            print(f"{dataset} {name}: F1 {scores['f1']:.3f} AUROC {scores['auroc']:.3f}", flush=True)
        config = ScanConfig()
        chosen, candidates = choose_encoder(
            texts,
            labels,
            lambda name: _Named(name),
            lambda enc, _all_texts, vectors=vectors: vectors[enc.name],
            sample_size=config.encoder.auto_sample,
            seed=config.seed,
            candidates=AUTO_CANDIDATES,
        )
        measured = [q for q in quality if q["dataset"] == dataset and "auroc" in q and q["encoder"] in vectors]
        best = max((q for q in measured if q["encoder"] in AUTO_CANDIDATES), key=lambda q: q["auroc"])
        autos.append(
            {
                "dataset": dataset,
                "picked": chosen.name,
                "best_auroc_encoder": best["encoder"],
                "agreement": {c.name: c.knn_label_agreement for c in candidates},
            }
        )
    return quality, autos


class _Named:
    """A stand-in encoder for ``choose_encoder``: the vectors were computed already."""

    whole_corpus = True  # hands choose_encoder the whole matrix; it takes the sample rows itself

    def __init__(self, name: str) -> None:
        self.name = name


def run_cache(workdir: Path) -> dict:
    import polars as pl

    from benchmarks.data import data_dir
    from credaudit.config import merge
    from credaudit.pipeline import audit

    frame = pl.read_parquet(data_dir() / "banking77/banking77.parquet").head(2000).select("text", "label_name")
    config = merge({"input": {"label_col": "label_name"}, "encoder": {"cache_dir": str(workdir / "cache")}})
    first = audit(frame, config).report.run["stage_seconds"]["embed"]
    second_result = audit(frame, config)
    second = second_result.report.run["stage_seconds"]["embed"]
    return {
        "rows": frame.height,
        "first_embed_seconds": first,
        "second_embed_seconds": second,
        "share": second / first,
        "cached_texts": second_result.report.run["encoder"]["cached_texts"],
    }


def _median(records: list[dict], key: str) -> float | None:
    values = [r[key] for r in records if key in r and r[key] is not None]
    return statistics.median(values) if values else None


def render(speed: list[dict], quality: list[dict], autos: list[dict], cache: dict, *, runs: int, machine: str) -> str:
    from benchmarks.report import _commit

    lines = [
        f"Generated by `python -m benchmarks.encoders --runs {runs}` (commit {_commit()}) on {machine}. "
        "Method: the docstring of `benchmarks/encoders.py`.",
        "",
        f"### Throughput (median of {runs} fresh processes; minilm-bf16 one run)",
        "",
        "| encoder | precision | short texts/s | × st-fp32 | long texts/s | × st-fp32 | peak RSS MB (short / long) "
        "| cosine to fp32 mean / min (short; long) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    by = {
        (r["encoder"], r["texts"]): [x for x in speed if x["encoder"] == r["encoder"] and x["texts"] == r["texts"]]
        for r in speed
    }
    base = {kind: _median(by.get(("st-fp32", kind), []), "texts_per_s") for kind in ("short", "long")}
    for name in SPEED_ENCODERS:
        cells = [name]
        short, long_ = by.get((name, "short"), []), by.get((name, "long"), [])
        errors = [r["error"] for r in short + long_ if "error" in r]
        if errors:
            lines.append(f"| {name} | failed: {errors[0]} | | | | | | |")
            continue
        cells.append(next((r.get("precision", "") for r in short), ""))
        for recs, kind in ((short, "short"), (long_, "long")):
            tps = _median(recs, "texts_per_s")
            cells += [f"{tps:,.1f}" if tps else "–", f"{tps / base[kind]:.2f}×" if tps and base[kind] else "–"]
        mems = [_median(short, "peak_rss_mb"), _median(long_, "peak_rss_mb")]
        cells.append(" / ".join(f"{m:.0f}" if m else "–" for m in mems))
        cos = []
        for recs in (short, long_):
            mean, low = _median(recs, "cosine_mean"), _median(recs, "cosine_min")
            cos.append(f"{mean:.4f} / {low:.4f}" if mean is not None else "–")
        cells.append("; ".join(cos) if name != "st-fp32" else "1 (the reference)")
        lines.append("| " + " | ".join(cells) + " |")
    distill = [r.get("distill_seconds") for r in speed if r["encoder"] == "static" and r.get("distill_seconds")]
    lines += [
        "",
        "static: one-off distillation from the local weights "
        + (f"took {distill[0]:.0f} s in this run" if distill else "was already cached in this run")
        + "; tfidf: texts/s is its whole fit (vocabulary + SVD) on the texts, and its vectors are not comparable "
        "to the transformer's (no cosine).",
        "",
        "### Detection quality per encoder (credaudit defaults on each encoder's vectors)",
        "",
        "| data | encoder | precision | recall | F1 | AUROC | AP | embedding s (full set) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for q in quality:
        if "skipped" in q:
            lines.append(f"| {q['dataset']} | {q['encoder']} | {q['skipped']} | | | | | |")
            continue
        emb = "shared file" if q["encoder"] == "minilm" else f"{q['embed_seconds']:.0f}"
        lines.append(
            f"| {q['dataset']} | {q['encoder']} | {q['precision']:.3f} | {q['recall']:.3f} | {q['f1']:.3f} | "
            f"{q['auroc']:.3f} | {q['ap']:.3f} | {emb} |"
        )
    lines += [
        "",
        "IMDB: only items some detector had flagged were shown to people, so unverified errors count as "
        "clean: precision is a lower bound, recall is recall of the verified set.",
        "",
        "### `--encoder auto`",
        "",
        "| data | k-NN label agreement on the 1,000-row sample | picked | best AUROC above |",
        "|---|---|---|---|",
    ]
    for a in autos:
        agree = ", ".join(f"{k} {v:.3f}" for k, v in a["agreement"].items() if v is not None)
        ok = "✓" if a["picked"] == a["best_auroc_encoder"] else "✗"
        lines.append(f"| {a['dataset']} | {agree} | {a['picked']} | {a['best_auroc_encoder']} {ok} |")
    lines += [
        "",
        "### Embedding cache",
        "",
        f"A scan of {cache['rows']:,} banking77 rows: embed stage {cache['first_embed_seconds']:.1f} s with an empty "
        f"cache, {cache['second_embed_seconds']:.2f} s the second time ({cache['cached_texts']:,} texts from the "
        f"cache): {100 * cache['share']:.1f} % of the first.",
        "",
    ]
    return "\n".join(lines)


def write_section(path: Path, name: str, body: str) -> None:
    """Replace (or append) the block between ``<!-- name:start -->`` and ``<!-- name:end -->`` in path."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{body.rstrip()}\n{end}\n"
    text = path.read_text() if path.exists() else ""
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + block + rest.split(end, 1)[1].lstrip("\n")
    else:
        text = text.rstrip("\n") + "\n\n" + block
    path.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--int8-imdb", action="store_true", help="embed all IMDB reviews with minilm-int8 too")
    parser.add_argument("--speed-worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.speed_worker:
        name, kind, out = args.speed_worker
        print(json.dumps(speed_worker(name, kind, Path(out))))
        return
    from benchmarks.run import _machine

    with tempfile.TemporaryDirectory(prefix="credaudit-enc-bench-") as tmp:
        workdir = Path(tmp)
        os.environ.setdefault("CREDAUDIT_CACHE_DIR", str(Path.home() / ".cache" / "credaudit"))
        speed = run_speed(args.runs, workdir)
        quality, autos = run_quality(args.int8_imdb)
        cache = run_cache(workdir)
    raw = {"speed": speed, "quality": quality, "auto": autos, "cache": cache, "machine": _machine()}
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "encoders.json").write_text(json.dumps(raw, indent=1, default=float))
    body = "## Encoders\n\n" + render(speed, quality, autos, cache, runs=args.runs, machine=_machine())
    (HERE / "ENCODERS.md").write_text("# " + body[3:])
    write_section(HERE / "RESULTS.md", SECTION, body)
    print(body)


if __name__ == "__main__":
    main()
