"""Planted outliers, near-duplicates and train/test leakage: credaudit against cleanlab Datalab.

    python -m benchmarks.hygiene            # writes the "Data hygiene" part of RESULTS.md

Every case starts from a clean set of ``../shared/data`` with its all-MiniLM-L6-v2 embeddings and
plants rows whose truth is known (seed 0):

- **outliers, scattered**: 2 % of the rows are SMS messages (sms_spam) given random labels of the
  base set: off-task rows with few close neighbours;
- **outliers, clustered**: 120 Hausa news headlines (hausa) given random labels: a block of
  off-task rows that are each other's neighbours (a k-NN distance alone misses them);
- **near-duplicates**: 3 % of the rows are copied with one small edit (drop a word, swap two
  adjacent words, change the case, add or remove punctuation) and appended, embedded with the
  same encoder. Real sets already hold near-duplicates (banking77 has many), so the truth is
  defined on the texts, not on the plant: two rows are near-duplicates when their lower-cased,
  punctuation-free word sequences are equal or one word deletion, insertion or adjacent swap
  apart (the planted edits; a substituted word often changes a short question's meaning).
  Candidate pairs are each row's 20 nearest neighbours (exact search) and the planted pairs. A
  row is a true near-duplicate when it has such a partner; scored per row.
- **leakage**: banking77's train split is scanned with its test split as ``--reference``; 150 test
  rows are copied into train with one small edit each. The two splits already share many
  paraphrases, so the train rows kept are those with no test row at cosine 0.8 or more: the planted
  copies are then the only leaks, and precision and recall are measured against them.

Both tools see the same embeddings and labels. credaudit runs the whole audit (``audit()`` with
the embeddings, defaults otherwise); its hygiene seconds are the ``hygiene`` stage. Datalab runs
``find_issues(features=X, issue_types={"outlier": {}, "near_duplicate": {}})`` (its defaults) and is
timed as a whole. Datalab has no leakage check between two files; the leakage rows compare
credaudit with itself only.
"""

from __future__ import annotations

import argparse
import re
import time
from collections import Counter
from pathlib import Path

import numpy as np
import polars as pl

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data"


def _load(folder: str, stem: str) -> tuple[pl.DataFrame, np.ndarray]:
    frame = pl.read_parquet(DATA / folder / f"{stem}.parquet")
    vectors = np.load(DATA / folder / f"{stem}.minilm_l6_v2.f16.npy").astype(np.float32)
    return frame, vectors


def _embed(texts: list[str]) -> np.ndarray:
    """MiniLM vectors of new texts, through credaudit's own encoder and cache."""
    from credaudit.encoders.cache import EmbeddingCache, default_cache_dir
    from credaudit.encoders.registry import get_encoder
    from credaudit.features import embed_texts

    encoder = get_encoder("minilm", device="cpu", batch_size=64, precision="auto")
    cache = EmbeddingCache(default_cache_dir(), encoder.fingerprint, encoder.dimension)
    return embed_texts(texts, encoder, cache=cache).vectors


def edit(text: str, rng: np.random.Generator) -> str:
    """One small edit: drop a word, swap two adjacent words, change the case, or change punctuation."""
    words = text.split()
    op = int(rng.integers(4))
    if op == 0 and len(words) > 3:
        del words[int(rng.integers(len(words)))]
        return " ".join(words)
    if op == 1 and len(words) > 2:
        i = int(rng.integers(len(words) - 1))
        words[i], words[i + 1] = words[i + 1], words[i]
        return " ".join(words)
    if op == 2:
        changed = text.upper() if rng.random() < 0.5 else text.lower()
        if changed != text:
            return changed
    stripped = re.sub(r"[?.!,]", "", text)
    return stripped if stripped != text else text + "?"


def _tokens(text: str) -> tuple[str, ...]:
    return tuple(re.sub(r"[^\w\s]", " ", text.lower()).split())


def near_identical(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    """Equal, or one word deleted or inserted, or two adjacent words swapped (the planted edits).

    A substituted word is not counted: in a short question it often changes the meaning
    ("lost my card" / "lost my phone").
    """
    if a == b:
        return True
    if abs(len(a) - len(b)) > 1:
        return False
    difference = (Counter(a) - Counter(b)) + (Counter(b) - Counter(a))
    if sum(difference.values()) > 1:
        return False
    if len(a) == len(b):
        diffs = [i for i in range(len(a)) if a[i] != b[i]]
        i, j = diffs if len(diffs) == 2 else (0, 0)
        return len(diffs) == 2 and j == i + 1 and a[i] == b[j] and a[j] == b[i]
    short, long_ = (a, b) if len(a) < len(b) else (b, a)
    return any(long_[:i] + long_[i + 1 :] == short for i in range(len(long_)))


def text_truth(texts: list[str], vectors: np.ndarray, extra_pairs: list[tuple[int, int]]) -> np.ndarray:
    """Rows with a text-defined near-duplicate among their 20 nearest neighbours or the planted pairs."""
    import faiss

    tokens = [_tokens(t) for t in texts]
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    _, neighbours = index.search(vectors, 21)
    truth = np.zeros(len(texts), dtype=bool)
    pairs = {(min(i, int(j)), max(i, int(j))) for i in range(len(texts)) for j in neighbours[i] if j >= 0 and j != i}
    pairs |= {(min(a, b), max(a, b)) for a, b in extra_pairs}
    for a, b in pairs:
        if near_identical(tokens[a], tokens[b]):
            truth[a] = truth[b] = True
    return truth


def outlier_case(base: str, kind: str, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    folder, stem = {"banking77": ("banking77", "banking77"), "ag_news": ("ag_news", "ag_news_test")}[base]
    frame, x = _load(folder, stem)
    labels = frame["label"].to_numpy()
    if kind == "sms 2%":
        other, ox = _load("sms_spam", "sms_spam")
        m = int(round(0.02 * len(frame)))
    else:
        other, ox = _load("hausa", "hausa_newsclass")
        m = 120
    pick = rng.choice(len(other), m, replace=False)
    planted_labels = rng.choice(np.unique(labels), m)
    texts = frame["text"].to_list() + other["text"].gather(pick).to_list()
    return {
        "name": f"{base} + {m} {'SMS' if kind.startswith('sms') else 'Hausa'} rows",
        "kind": "outlier",
        "texts": texts,
        "labels": np.concatenate([labels, planted_labels]),
        "x": np.vstack([x, ox[pick]]),
        "truth": np.r_[np.zeros(len(frame), bool), np.ones(m, bool)],
    }


def duplicate_case(base: str, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    folder, stem = {"banking77": ("banking77", "banking77"), "ag_news": ("ag_news", "ag_news_test")}[base]
    frame, x = _load(folder, stem)
    texts = frame["text"].to_list()
    m = int(round(0.03 * len(texts)))
    source = rng.choice(len(texts), m, replace=False)
    edited = [edit(texts[i], rng) for i in source]
    all_texts = texts + edited
    vectors = np.vstack([x, _embed(edited)])
    pairs = [(int(i), len(texts) + j) for j, i in enumerate(source)]
    return {
        "name": f"{base} + {m} edited copies",
        "kind": "near_duplicate",
        "texts": all_texts,
        "labels": np.concatenate([frame["label"].to_numpy(), frame["label"].to_numpy()[source]]),
        "x": vectors,
        "truth": text_truth(all_texts, vectors, pairs),
    }


def leakage_case(seed: int = 0) -> dict:
    import faiss

    rng = np.random.default_rng(seed)
    frame, x = _load("banking77", "banking77")
    train = (frame["split"] == "train").to_numpy()
    test_rows = np.flatnonzero(~train)
    # The splits already share paraphrases; keep only train rows with no test row closer than 0.8,
    # so the planted copies are the only leaks and precision is measured against a known truth.
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x[test_rows])
    nearest_sim, _ = index.search(x, 1)
    train &= nearest_sim[:, 0] < 0.8
    source = rng.choice(test_rows, 150, replace=False)
    texts = frame["text"].to_list()
    edited = [edit(texts[i], rng) for i in source]
    train_texts = [texts[i] for i in np.flatnonzero(train)] + edited
    train_x = np.vstack([x[train], _embed(edited)])
    test_texts = [texts[i] for i in test_rows]
    truth = np.r_[np.zeros(int(train.sum()), bool), np.ones(len(edited), bool)]
    labels = np.concatenate([frame["label"].to_numpy()[train], frame["label"].to_numpy()[source]])
    return {
        "name": f"banking77 train ({int(train.sum()):,} rows without a close test row) + 150 edited test rows",
        "kind": "leakage",
        "texts": train_texts,
        "labels": labels,
        "x": train_x,
        "reference_texts": test_texts,
        "reference_x": x[test_rows],
        "truth": truth,
    }


def scores(flags: np.ndarray, truth: np.ndarray) -> dict:
    tp = int((flags & truth).sum())
    precision = tp / max(int(flags.sum()), 1)
    recall = tp / max(int(truth.sum()), 1)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"flagged": int(flags.sum()), "precision": precision, "recall": recall, "f1": f1}


def run_credaudit(case: dict, tmp: Path) -> dict:
    from credaudit import ScanConfig, audit
    from credaudit.config import merge

    frame = pl.DataFrame({"text": case["texts"], "label": case["labels"].tolist()})
    config = ScanConfig()
    if case["kind"] == "leakage":
        reference = tmp / "reference.parquet"
        pl.DataFrame({"text": case["reference_texts"], "emb": case["reference_x"].tolist()}).write_parquet(reference)
        config = merge({"hygiene": {"reference": [str(reference)], "reference_embedding_col": "emb"}})
    start = time.perf_counter()
    result = audit(frame, config, embeddings=case["x"])
    total = time.perf_counter() - start
    issues = result.issues
    stage = result.report.run["stage_seconds"]
    after_embedding = stage["total"] - stage.get("embed", 0.0) - stage.get("read", 0.0)
    column = {"outlier": "is_outlier", "near_duplicate": "duplicate_group", "leakage": "leaked_from"}[case["kind"]]
    values = issues[column]
    flags = values.to_numpy() if values.dtype == pl.Boolean else values.is_not_null().to_numpy()
    return {
        **scores(flags, case["truth"]),
        "seconds": stage.get("hygiene", 0.0),
        "share_of_scan": stage.get("hygiene", 0.0) / max(after_embedding, 1e-9),
        "total": total,
    }


def run_datalab(case: dict) -> dict | None:
    if case["kind"] == "leakage":
        return None
    from cleanlab import Datalab

    start = time.perf_counter()
    lab = Datalab(data={"label": case["labels"]}, label_name="label", verbosity=0)
    lab.find_issues(features=case["x"], issue_types={"outlier": {}, "near_duplicate": {}})
    seconds = time.perf_counter() - start
    issues = lab.get_issues()
    column = "is_outlier_issue" if case["kind"] == "outlier" else "is_near_duplicate_issue"
    return {**scores(issues[column].to_numpy(), case["truth"]), "seconds": seconds}


def clean_rates() -> list[tuple[str, int, int, float]]:
    """Outlier flags on the clean sets as they are (no plant): (set, rows, flagged, share)."""
    from credaudit import ScanConfig, audit

    rows = []
    for name, folder, stem in (
        ("banking77", "banking77", "banking77"),
        ("ag_news", "ag_news", "ag_news_test"),
        ("20news", "20news_train", "20news_train"),
        ("sms_spam", "sms_spam", "sms_spam"),
    ):
        frame, x = _load(folder, stem)
        result = audit(frame.select("text", "label"), ScanConfig(), embeddings=x)
        flagged = int(result.issues["is_outlier"].sum())
        rows.append((name, frame.height, flagged, flagged / frame.height))
        print(f"clean {name}: {flagged} outliers of {frame.height}", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args()
    import tempfile

    from benchmarks.encoders import write_section
    from benchmarks.run import _machine

    cases = [
        outlier_case("banking77", "sms 2%"),
        outlier_case("banking77", "hausa"),
        outlier_case("ag_news", "sms 2%"),
        outlier_case("ag_news", "hausa"),
        duplicate_case("banking77"),
        duplicate_case("ag_news"),
        leakage_case(),
    ]
    lines = [
        "## Data hygiene: planted outliers, near-duplicates and leakage",
        "",
        f"Generated by `python -m benchmarks.hygiene` on {_machine()}. Cases, truth and settings: the docstring "
        "of `benchmarks/hygiene.py`. P / R / F1 per row; seconds: credaudit's `hygiene` stage (and its share of "
        "the scan after embedding), Datalab's `find_issues` for both checks together.",
        "",
        "| case | truth rows | credaudit F1 (P/R) | flagged | seconds (share of scan) | Datalab F1 (P/R) | flagged "
        "| seconds | bar |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for case in cases:
            ours = run_credaudit(case, Path(tmp))
            theirs = run_datalab(case)
            if case["kind"] == "leakage":
                bar = ours["precision"] >= 0.95 and ours["recall"] >= 0.95
            else:
                bar = ours["f1"] >= 0.6 and (theirs is None or ours["f1"] >= theirs["f1"])
            peer = (
                f"{theirs['f1']:.3f} ({theirs['precision']:.2f}/{theirs['recall']:.2f}) | {theirs['flagged']} | "
                f"{theirs['seconds']:.1f}"
                if theirs
                else "— (no such check) | — | —"
            )
            line = (
                f"| {case['name']} ({case['kind'].replace('_', '-')}) | {int(case['truth'].sum())} | "
                f"{ours['f1']:.3f} ({ours['precision']:.2f}/{ours['recall']:.2f}) | {ours['flagged']} | "
                f"{ours['seconds']:.2f} ({ours['share_of_scan']:.1%}) | {peer} | {'✓' if bar else '✗'} |"
            )
            print(line, flush=True)
            lines.append(line)
    clean = clean_rates()
    lines += [
        "",
        "Outlier flags on the clean sets as they are (no plant; default threshold): "
        + "; ".join(f"{name} {flagged} of {rows:,} ({share:.2%})" for name, rows, flagged, share in clean)
        + ". *bar*: F1 ≥ 0.6 and ≥ Datalab's; for leakage, precision and recall ≥ 0.95.",
    ]
    if not args.no_write:
        write_section(HERE / "RESULTS.md", "hygiene", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
