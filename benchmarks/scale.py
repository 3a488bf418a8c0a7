"""Time the post-embedding audit on synthetic clustered embeddings (100,000 to 2,000,000 rows × 384 dims).

    python -m benchmarks.scale                 # 3 runs of credaudit, median reported
    python -m benchmarks.scale --runs 5 --peers  # also cleanlab Datalab's features-only label check
    python -m benchmarks.scale --rows 1000000 --runs 1 --engine both  # 1M rows, local and Ray engines
    python -m benchmarks.scale --engine both --exact-check  # 100k rows, and one exact-search run (F1 delta)
    python -m benchmarks.scale --rows 100000 --classes 200 --runs 1
    python -m benchmarks.scale --embed 1000000  # embedding throughput of the static encoder on CPU
    python -m benchmarks.scale --texts 1000000 --engine both  # the whole scan of a text file (below)
    python -m benchmarks.scale --column 1000000 --engine both  # the whole scan of a file with a vector column

The data are synthetic embeddings (seeded): 20 classes (or --classes), each a mixture of 5 Gaussian
sub-topics in 384 dimensions, L2-normalised, with 20 % symmetric label noise. Each run is a fresh
process, so its peak RSS (libraries included) is its own; a Ray run (a local 2-worker cluster,
``ray.init(num_cpus=2)``) reports the peak PSS of its whole process tree. Results go to
benchmarks/SCALE.md.

``--texts N``: what ``credaudit scan texts.parquet --encoder static`` does with N short texts (5-15
words from a 5,000-word vocabulary, 20 random labels, a fresh embedding cache): read, embed
(cache written), every stage, and every output written. The labels carry no signal, so only the
times and memory mean anything; it is the check that reading, the cache, hygiene on texts and
the outputs hold at that size, where the runs above start from vectors.

``--column N``: ``credaudit scan data.parquet --embedding-col emb --id-col id`` of the same synthetic
data written to a parquet file (an id, the noisy label, the true label and the 384-d vector per
row): reading the vectors from the file, every stage, and every output, the cleaned copy (which
carries the vectors) included. The file is written once, before the runs; each run is a fresh
process.
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


def _tree_pss_mb(root: int) -> float:
    """Proportional set size (MB) of ``root`` and all its descendants (Ray's raylet, workers, object
    store): shared pages are split between the processes that map them, so nothing is counted twice."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    tree, frontier = {root}, [root]
    while frontier:
        pid = frontier.pop()
        for child, parent in parents.items():
            if parent == pid and child not in tree:
                tree.add(child)
                frontier.append(child)
    total = 0.0
    for pid in tree:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += float(line.split()[1]) / 1024
        except OSError:
            continue
    return total


def _own_memory_mb() -> float:
    """This process's private memory (RssAnon, MB): what the driver itself holds. Its RSS would also
    count the object-store pages it wrote (``ray.put``) or read, which are the object store's."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return float(line.split()[1]) / 1024
    return 0.0


class _PeakSampler:
    """Samples the process tree's PSS every ``every`` seconds in a thread; ``peak`` is the largest."""

    def __init__(self, every: float = 1.0) -> None:
        import os
        import threading

        self.peak = 0.0
        self.driver_peak = 0.0
        self._stop = threading.Event()
        self._root = os.getpid()
        self._every = every
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _tree_pss_mb(self._root))
            self.driver_peak = max(self.driver_peak, _own_memory_mb())
            self._stop.wait(self._every)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return max(self.peak, _tree_pss_mb(self._root))


def one_run(
    method: str, n_rows: int = 100_000, *, n_classes: int = 20, engine: str = "local", index: str = "auto"
) -> dict:
    import resource

    x, true, observed = make_data(n_rows, n_classes=n_classes)
    errors = observed != true
    sampler = None
    if engine == "ray":
        import ray

        # A local 2-worker cluster on this machine's 2 cores (started before the clock).
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        sampler = _PeakSampler()
    start = time.perf_counter()
    if method == "credaudit":
        import polars as pl

        from credaudit import audit
        from credaudit.config import merge

        config = merge({"engine": {"name": engine}, "graph": {"index": index}})
        result = audit(pl.DataFrame({"label": observed}), config, embeddings=x)
        flags = result.detection.is_label_error
        extra = {
            "stage_seconds": result.report.run["stage_seconds"],
            "graph": result.graph.method,
            "recall_at_10": result.report.run["graph"]["recall_at_k"],
            "noise_rate_est": result.noise.noise_rate.estimate,
            "engine": engine,
        }
    else:
        from cleanlab import Datalab

        lab = Datalab(data={"label": observed}, label_name="label", verbosity=0)
        lab.find_issues(features=x, issue_types={"label": {}})
        flags = lab.get_issues("label")["is_label_issue"].to_numpy()
        extra = {}
    seconds = time.perf_counter() - start
    tp = int((flags & errors).sum())
    precision = tp / max(flags.sum(), 1)
    recall = tp / errors.sum()
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "method": method,
        "seconds": seconds,
        # With Ray: the whole process tree (driver, raylet, workers, object store), by PSS.
        "peak_rss_mb": max(own, sampler.stop()) if sampler else own,
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / max(precision + recall, 1e-12),
        "noise_rate_true": float(errors.mean()),
        **extra,
    }


def synthetic_texts(n_texts: int, seed: int = 0) -> list[str]:
    """``n_texts`` texts of 5-15 words drawn from a 5,000-word vocabulary."""
    rng = np.random.default_rng(seed)
    vocabulary = np.array([f"w{i}" for i in range(5_000)])
    lengths = rng.integers(5, 16, n_texts)
    words = vocabulary[rng.integers(0, len(vocabulary), int(lengths.sum()))]
    return [" ".join(chunk) for chunk in np.split(words, np.cumsum(lengths)[:-1])]


def text_scan(n_texts: int, engine: str = "local", arrange: str = "auto") -> dict:
    """One ``credaudit scan`` of a parquet file of synthetic texts, static encoder, fresh cache."""
    import shutil
    import tempfile

    import polars as pl

    from credaudit.config import merge
    from credaudit.pipeline import scan

    work = Path(tempfile.mkdtemp(prefix="credaudit-texts-"))
    data = work / "texts.parquet"
    labels = np.random.default_rng(1).integers(0, 20, n_texts)
    pl.DataFrame({"text": synthetic_texts(n_texts), "label": labels}).write_parquet(data)
    sampler = None
    if engine == "ray":
        import ray

        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        sampler = _PeakSampler()
    config = merge(
        {
            "encoder": {"name": "static", "cache_dir": str(work / "cache")},
            "engine": {"name": engine, "ray_arrange": arrange},
            "output": {"out": str(work / "out")},
        }
    )
    start = time.perf_counter()
    try:
        result, written = scan(data, config)
    finally:
        seconds = time.perf_counter() - start
        shutil.rmtree(work, ignore_errors=True)  # the file, its cache and the outputs: ~1 GB at 1M
    return {"texts": n_texts, **_scan_record(engine, seconds, sampler, result, written)}


def _scan_record(engine: str, seconds: float, sampler, result, written) -> dict:
    """What a whole-scan run reports: time, peak memory, stage times, recall and the outputs."""
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "engine": engine,
        "seconds": seconds,
        "peak_rss_mb": max(own, sampler.stop()) if sampler else own,
        # The driver's own memory, sampled: what the driver's node needs besides the object store.
        "driver_peak_mb": sampler.driver_peak if sampler else None,
        "stage_seconds": result.report.run["stage_seconds"],
        "recall_at_10": result.report.run["graph"]["recall_at_k"],
        "outputs": sorted(p.name for p in written),
        # Ray: per stage, the blocks of vectors each task was sent, of how many (report.json).
        "blocks_read": result.report.run["engine"].get("blocks_read"),
    }


def embed_throughput(n_texts: int, encoder: str = "static", seed: int = 0) -> dict:
    """Encode ``n_texts`` short synthetic texts (5-15 words from a 5,000-word vocabulary) without the cache."""
    import resource

    from credaudit.features import embed_texts
    from credaudit.pipeline import build_encoder

    texts = synthetic_texts(n_texts, seed)
    enc = build_encoder(encoder, "cpu", None, "auto")
    enc.encode(texts[:1000])  # load and warm up outside the clock
    start = time.perf_counter()
    result = embed_texts(texts, enc, cache=None)
    seconds = time.perf_counter() - start
    return {
        "encoder": encoder,
        "texts": n_texts,
        "unique": result.n_unique,
        "seconds": seconds,
        "texts_per_second": n_texts / seconds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def column_scan(data: str, engine: str = "local", arrange: str = "auto") -> dict:
    """One ``credaudit scan --embedding-col emb`` of ``data`` (written by :func:`_column_scans`)."""
    import shutil
    import tempfile

    from credaudit.config import merge
    from credaudit.pipeline import scan

    sampler = None
    if engine == "ray":
        import ray

        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        sampler = _PeakSampler()
    out = Path(tempfile.mkdtemp(prefix="credaudit-column-out-"))
    config = merge(
        {
            "input": {"embedding_col": "emb", "id_col": "id"},
            "engine": {"name": engine, "ray_arrange": arrange},
            "output": {"out": str(out)},
        }
    )
    start = time.perf_counter()
    try:
        result, written = scan(Path(data), config)
    finally:
        seconds = time.perf_counter() - start
        shutil.rmtree(out, ignore_errors=True)
    errors = result.table.frame.get_column("truth").to_numpy() != result.labels
    flags = result.detection.is_label_error
    tp = int((flags & errors).sum())
    precision, recall = tp / max(flags.sum(), 1), tp / max(errors.sum(), 1)
    return {
        "rows": result.table.n_rows,
        "f1": 2 * precision * recall / max(precision + recall, 1e-12),
        **_scan_record(engine, seconds, sampler, result, written),
    }


def _column_scans(args) -> None:
    """``--column N``: write the file once, one run per engine in a fresh process, then the SCALE.md section."""
    if args.one == "column":
        print(json.dumps(column_scan(args.data, args.engine, args.ray_arrange)))
        return
    import shutil
    import tempfile

    import pyarrow as pa
    import pyarrow.parquet as pq

    from benchmarks.encoders import write_section
    from benchmarks.run import _machine

    work = Path(tempfile.mkdtemp(prefix="credaudit-column-"))
    data = work / "data.parquet"
    x, true, observed = make_data(args.column)
    dim = x.shape[1]
    offsets = pa.array(np.arange(0, len(x) * dim + 1, dim, dtype=np.int32))
    table = pa.table(
        {
            "id": np.arange(len(x)),
            "label": observed,
            "truth": true,  # read back only by the benchmark, for precision and recall
            "emb": pa.ListArray.from_arrays(offsets, pa.array(x.astype(np.float32).ravel())),
        }
    )
    pq.write_table(table, data, row_group_size=65_536)
    del x, table
    engines = ["local", "ray"] if args.engine == "both" else [args.engine]
    lines = [
        f"## The whole scan of {args.column:,} rows with 384-d vectors in a column",
        "",
        f"`python -m benchmarks.scale --column {args.column} --runs {args.runs} --engine {args.engine}"
        f"{_arrange_flag(args)}` on "
        f"{_machine()}: `credaudit scan data.parquet --embedding-col emb --id-col id` of the synthetic data "
        f"above ({data.stat().st_size / 2**30:.1f} GB of parquet), every output written, the cleaned copy with "
        "its vectors included. Wall seconds include reading and writing. Peak memory: the process's peak RSS; "
        "with Ray, the peak PSS of the whole process tree, and the driver's own peak (RssAnon, sampled each "
        "second).",
        "",
        "| engine | wall seconds | peak memory (MB) | Ray driver's own peak (MB) | recall@10 | F1 "
        "| stage medians (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    notes = []
    try:
        for engine in engines:
            command = [sys.executable, "-m", "benchmarks.scale", "--column", str(args.column), "--one", "column"]
            command += ["--ray-arrange", args.ray_arrange]
            runs = _scan_runs(f"column {engine}", [*command, "--engine", engine, "--data", str(data)], args.runs)
            lines.append(_scan_row(engine, runs, [("recall_at_10", ".3f"), ("f1", ".4f")]))
            if engine == "ray":
                notes = ["", _blocks_read(runs)]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    lines += notes
    write_section(HERE / "SCALE.md", f"column-{args.column}{_arrange_key(args)}", "\n".join(lines) + "\n")


def _scan_runs(label: str, command: list[str], n_runs: int) -> list[dict]:
    """``n_runs`` whole-scan runs of ``command``, each a fresh process printing its record last."""
    runs = []
    for _ in range(n_runs):
        done = subprocess.run(command, cwd=HERE.parent, capture_output=True, text=True, check=True)
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"{label}: {runs[-1]['seconds']:.1f}s, peak {runs[-1]['peak_rss_mb']:.0f} MB", flush=True)
    return runs


def _arrange_flag(args) -> str:
    return "" if args.ray_arrange == "auto" else f" --ray-arrange {args.ray_arrange}"


def _arrange_key(args) -> str:
    """A section of its own for a run with another ``engine.ray_arrange`` than the default."""
    return "" if args.ray_arrange == "auto" else f"-arrange-{args.ray_arrange}"


def _blocks_read(runs: list[dict]) -> str:
    """A sentence for SCALE.md: the blocks of vectors a Ray task of each stage was sent (first run:
    the plan does not depend on timing)."""
    reads = runs[0]["blocks_read"]
    parts = [
        f"{name} {r['mean_sent']:g} of {r['mean_held']:g} ({r['tasks']} task{'s' if r['tasks'] > 1 else ''})"
        for name, r in reads.items()
    ]
    return (
        "Blocks of vectors each Ray task was sent, mean per task of the blocks the vectors were held in "
        "(`run.engine.blocks_read` in report.json; a node fetches only these): " + "; ".join(parts) + "."
    )


def _scan_row(engine: str, runs: list[dict], extra: list[tuple[str, str]] = ()) -> str:
    """A whole-scan table row: wall seconds (median, then each run), peak memory, the Ray driver's own
    peak, the medians of ``extra`` (record key, format), and the stage medians."""
    med = lambda key: statistics.median(r[key] for r in runs)  # noqa: E731
    stages = {k: statistics.median(r["stage_seconds"][k] for r in runs) for k in runs[0]["stage_seconds"]}
    all_runs = ", ".join(f"{r['seconds']:.1f}" for r in runs)
    cells = [
        f"{engine} (median of {len(runs)})",
        f"{med('seconds'):.1f} ({all_runs})",
        f"{med('peak_rss_mb'):.0f}",
        f"{med('driver_peak_mb'):.0f}" if engine == "ray" else "-",
        *(format(med(key), spec) for key, spec in extra),
        ", ".join(f"{k} {v:.1f}" for k, v in stages.items()),
    ]
    return "| " + " | ".join(cells) + " |"


def _text_scans(args) -> None:
    """``--texts N``: one run (or --one-texts, in this process) per engine, then the SCALE.md section."""
    if args.one == "texts":
        print(json.dumps(text_scan(args.texts, args.engine, args.ray_arrange)))
        return
    from benchmarks.encoders import write_section
    from benchmarks.run import _machine

    engines = ["local", "ray"] if args.engine == "both" else [args.engine]
    lines = [
        f"## The whole scan of {args.texts:,} short texts, `static` encoder",
        "",
        f"`python -m benchmarks.scale --texts {args.texts} --runs {args.runs} --engine {args.engine}"
        f"{_arrange_flag(args)}` on "
        f"{_machine()}: `credaudit scan` of a parquet file of synthetic texts (5-15 words from a 5,000-word "
        "vocabulary, random labels), a fresh embedding cache, every output written. Labels carry no "
        "signal: times and memory only. Wall seconds include writing the outputs. Peak memory: the process's "
        "peak RSS; with Ray, the peak PSS of the whole process tree, and the driver's own memory "
        "(its peak private memory, RssAnon, sampled each second: the object-store pages it wrote or "
        "read are the object store's).",
        "",
        "| engine | wall seconds | peak memory (MB) | Ray driver's own peak (MB) | stage medians (s) |",
        "|---|---|---|---|---|",
    ]
    notes = []
    for engine in engines:
        command = [sys.executable, "-m", "benchmarks.scale", "--texts", str(args.texts), "--one", "texts"]
        command += ["--ray-arrange", args.ray_arrange]
        runs = _scan_runs(f"texts {engine}", [*command, "--engine", engine], args.runs)
        lines.append(_scan_row(engine, runs))
        if engine == "ray":
            notes = ["", _blocks_read(runs)]
    lines += notes
    write_section(HERE / "SCALE.md", f"texts-{args.texts}{_arrange_key(args)}", "\n".join(lines) + "\n")


def _run_one(method: str, args, engine: str = "local", index: str = "auto", timeout: float | None = None) -> dict:
    """One run in a fresh process; ``{"timed_out": timeout}`` where it ran past ``timeout`` seconds."""
    command = [sys.executable, "-m", "benchmarks.scale", "--one", method, "--rows", str(args.rows)]
    command += ["--classes", str(args.classes), "--engine", engine, "--index", index]
    try:
        out = subprocess.run(
            command, cwd=HERE.parent, capture_output=True, text=True, check=True, timeout=timeout
        ).stdout
    except subprocess.TimeoutExpired:
        print(f"{method} {engine} {index}: stopped after {timeout:.0f}s", flush=True)
        return {"timed_out": timeout}
    record = json.loads(out.strip().splitlines()[-1])
    print(f"{method} {engine} {index}: {record['seconds']:.1f}s, peak {record['peak_rss_mb']:.0f} MB", flush=True)
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--peers", action="store_true", help="also time cleanlab Datalab once")
    parser.add_argument(
        "--peer-timeout", type=float, default=1800, help="stop Datalab after this many seconds (default 30 minutes)"
    )
    parser.add_argument("--rows", type=int, default=100_000, help="rows of synthetic data (default 100,000)")
    parser.add_argument("--classes", type=int, default=20, help="classes (default 20)")
    parser.add_argument(
        "--engine", choices=("local", "ray", "both"), default="local", help="ray: a local 2-worker Ray cluster"
    )
    parser.add_argument("--exact-check", action="store_true", help="also one run with the exact search (F1 delta)")
    parser.add_argument("--embed", type=int, help="instead: embedding throughput of the static encoder on N texts")
    parser.add_argument("--texts", type=int, help="instead: the whole scan of a file of N short texts (static)")
    parser.add_argument("--column", type=int, help="instead: the whole scan of N rows with vectors in a column")
    parser.add_argument(
        "--ray-arrange",
        default="auto",
        choices=("auto", "always", "never"),
        help="engine.ray_arrange for the Ray scans (always: shuffle by k-means list, as on a multi-node cluster)",
    )
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--index", default="auto", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.embed:
        from benchmarks.encoders import write_section
        from benchmarks.run import _machine

        record = embed_throughput(args.embed)
        print(json.dumps(record), flush=True)
        write_section(
            HERE / "SCALE.md",
            f"embed-{args.embed}",
            f"## Embedding throughput, {args.embed:,} short texts, `static` encoder on CPU\n\n"
            f"`python -m benchmarks.scale --embed {args.embed}` on {_machine()}: synthetic texts of 5-15 words "
            f"from a 5,000-word vocabulary ({record['unique']:,} distinct), no cache, one run: "
            f"**{record['seconds']:.1f} s, {record['texts_per_second']:,.0f} texts/s**, peak RSS "
            f"{record['peak_rss_mb']:.0f} MB.\n",
        )
        return
    if args.texts:
        _text_scans(args)
        return
    if args.column:
        _column_scans(args)
        return
    if args.one:
        print(json.dumps(one_run(args.one, args.rows, n_classes=args.classes, engine=args.engine, index=args.index)))
        return
    from benchmarks.run import _machine

    engines = ["local", "ray"] if args.engine == "both" else [args.engine]
    runs = {engine: [_run_one("credaudit", args, engine) for _ in range(args.runs)] for engine in engines}
    exact = _run_one("credaudit", args, "local", "exact") if args.exact_check else None
    peers = _run_one("datalab", args, timeout=args.peer_timeout) if args.peers else None

    flags = f" --classes {args.classes}" + (f" --engine {args.engine}" if args.engine != "local" else "")
    flags += " --exact-check" if args.exact_check else ""
    flags += " --peers" if args.peers else ""
    lines = [
        f"## {args.rows:,} rows × 384 dims × {args.classes} classes, after embedding",
        "",
        f"`python -m benchmarks.scale --rows {args.rows} --runs {args.runs}{flags}` on {_machine()}. "
        "Synthetic embeddings (see `benchmarks/scale.py`), 20 % symmetric noise. Each run is a fresh process. "
        "Peak memory: the process's peak RSS; with Ray, the peak PSS of the whole process tree (driver, "
        "raylet, workers, object store).",
        "",
        "| | wall seconds | peak memory (MB) | recall@10 | precision | recall | F1 |",
        "|---|---|---|---|---|---|---|",
    ]
    for engine, ours in runs.items():
        med = lambda key, ours=ours: statistics.median(r[key] for r in ours)  # noqa: E731
        all_runs = ", ".join(f"{r['seconds']:.1f}" for r in ours)
        name = "credaudit" if engine == "local" else "credaudit --engine ray (local 2-worker cluster)"
        lines.append(
            f"| {name} (median of {len(ours)}) | {med('seconds'):.1f} ({all_runs}) | {med('peak_rss_mb'):.0f} | "
            f"{med('recall_at_10'):.3f} | {med('precision'):.3f} | {med('recall'):.3f} | {med('f1'):.4f} |"
        )
    if exact is not None:
        lines.append(
            f"| credaudit, exact search (1 run) | {exact['seconds']:.1f} | {exact['peak_rss_mb']:.0f} | 1.000 | "
            f"{exact['precision']:.3f} | {exact['recall']:.3f} | {exact['f1']:.4f} |"
        )
    if peers is not None and "timed_out" in peers:
        lines.append(
            f"| cleanlab Datalab, features only (1 run) | did not finish in {peers['timed_out'] / 60:.0f} minutes "
            "(stopped) | - | - | - | - | - |"
        )
    elif peers is not None:
        lines.append(
            f"| cleanlab Datalab, features only (1 run) | {peers['seconds']:.1f} | {peers['peak_rss_mb']:.0f} | - | "
            f"{peers['precision']:.3f} | {peers['recall']:.3f} | {peers['f1']:.4f} |"
        )
    for engine, ours in runs.items():
        stages = {k: statistics.median(r["stage_seconds"][k] for r in ours) for k in ours[0]["stage_seconds"]}
        lines += [
            "",
            f"{engine} engine, stage medians (s): " + ", ".join(f"{k} {v:.1f}" for k, v in stages.items()),
            f"neighbour search: {ours[0]['graph']}; estimated noise rate {ours[0]['noise_rate_est']:.3f} "
            f"(true {ours[0]['noise_rate_true']:.3f}).",
        ]
    lines += [
        "",
        "Targets on 2 CPU cores: 100,000 rows ≤ 20 s and ≤ 2 GB peak; 1,000,000 rows ≤ 5 minutes and ≤ 6 GB, "
        "recall@10 ≥ 0.95, F1 within 0.01 of the exact search; Ray within 1.5× of the local engine.",
    ]
    from benchmarks.encoders import write_section

    path = HERE / "SCALE.md"
    if not path.exists():
        path.write_text("# Scale: the audit after embedding, on synthetic clustered embeddings\n")
    name = f"scale-{args.rows}" + ("" if args.classes == 20 else f"-{args.classes}")
    write_section(path, name, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
