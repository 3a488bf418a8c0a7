"""``credaudit scan --chosen-col C --rejected-col R``: wires the pair adapter (pairs.py) to the engine.

read pairs -> embed both responses -> preference directions -> the single-label audit of the
directions and their reverses (pipeline.audit: graph, 2×2 T with intervals, detection rounds) ->
one row per pair -> outputs. Nothing of the estimation or detection is repeated here.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from credaudit.config import ScanConfig
from credaudit.engine import Engine, Rows, row_blocks
from credaudit.errors import InputError, UsageError
from credaudit.gates import evaluate_gates, verdict
from credaudit.io import Table, detect_format, frame_output, write_text
from credaudit.pairs import (
    DIRECTION_NAMES,
    PairTable,
    canonical_order,
    pair_actions,
    pair_labels,
    pair_rows,
    read_pairs,
)
from credaudit.pipeline import (
    AuditResult,
    StageTimes,
    audit,
    config_engine,
    output_names,
    prepare_outputs,
    row_vectors,
    score_histogram,
    write_output_set,
)
from credaudit.progress import NullProgress, Progress
from credaudit.report.format import excerpt
from credaudit.report.model import AuditReport
from credaudit.review import rank_flagged


@dataclass(frozen=True)
class PairsResult:
    """A finished pair audit.

    Attributes
    ----------
    table : PairTable
    config : ScanConfig
    issues : polars.DataFrame
        One row per input pair, in input order: ``row_id``, ``flip_score``, ``is_reversed``,
        ``action``, ``response_similarity``, ``neighbour_agreement``.
    report : AuditReport
    content : Rows of shape (P, d), float32
        Each pair's topic: the unit mean of its two unit response vectors, in input order (what
        ``credaudit select`` spreads its choice over), where the run's engine keeps them.
    engine : Engine
        The engine the audit ran on (it keeps ``content``).
    """

    table: PairTable
    config: ScanConfig
    issues: pl.DataFrame
    report: AuditReport
    content: Rows
    engine: Engine

    def cleaned(self) -> pl.DataFrame:
        """The input with reversed pairs handled per ``--clean``.

        - ``relabel``: reversed pairs swapped (chosen <-> rejected), unclear pairs dropped;
        - ``drop``: reversed and unclear pairs dropped;
        - ``flag``: every pair kept, with ``credaudit_flip_score``, ``credaudit_is_reversed``,
          ``credaudit_action`` added.

        With an untrustworthy estimate nothing is swapped or dropped unless ``--force-clean``.
        """
        return self._cleaned()[0]

    def _cleaned(self) -> tuple[pl.DataFrame, np.ndarray]:
        """(the cleaned frame, which input pairs it keeps)."""
        frame = self.table.frame
        action = self.issues.get_column("action")
        if self.config.output.clean == "flag":
            flagged = frame.with_columns(
                self.issues.get_column("flip_score").alias("credaudit_flip_score"),
                self.issues.get_column("is_reversed").alias("credaudit_is_reversed"),
                action.alias("credaudit_action"),
            )
            return flagged, np.ones(frame.height, dtype=bool)
        plan = cleaning_plan(self.config, action.to_numpy(), bool(self.report.noise["trustworthy"]))
        if plan.swap.any():
            cfg = self.config.pairs
            swap = pl.Series(plan.swap)
            frame = frame.with_columns(
                pl.when(swap).then(pl.col(cfg.rejected_col)).otherwise(pl.col(cfg.chosen_col)).alias(cfg.chosen_col),
                pl.when(swap).then(pl.col(cfg.chosen_col)).otherwise(pl.col(cfg.rejected_col)).alias(cfg.rejected_col),
            )
        return frame.filter(pl.Series(plan.keep)), plan.keep


@dataclass(frozen=True)
class PairCleaning:
    """What ``--clean`` does to the pairs: the cleaned file and the report's ``cleaning`` section
    both follow it.

    Attributes
    ----------
    keep : ndarray of shape (P,), dtype bool
        Pairs the cleaned file holds.
    swap : ndarray of shape (P,), dtype bool
        Pairs it holds with chosen and rejected exchanged (a subset of ``keep``).
    held_back : int
        Pairs that would have been swapped or dropped had the estimate been trustworthy.
    """

    keep: np.ndarray
    swap: np.ndarray
    held_back: int


def cleaning_plan(config: ScanConfig, actions: np.ndarray, trusted: bool) -> PairCleaning:
    """Apply ``--clean`` (and ``--force-clean``) to the per-pair ``actions`` (keep / swap / drop).

    - ``flag``: every pair kept as it is;
    - ``relabel``: ``swap`` pairs exchanged, ``drop`` pairs dropped;
    - ``drop``: every pair not ``keep`` dropped;
    - with an untrustworthy estimate nothing is swapped or dropped unless ``--force-clean``.
    """
    mode = config.output.clean
    every = np.ones(len(actions), dtype=bool)
    none = np.zeros(len(actions), dtype=bool)
    if mode not in ("flag", "relabel", "drop"):
        raise UsageError(f"--clean {mode} does not apply to preference pairs; use drop, relabel or flag")
    if mode == "flag":
        return PairCleaning(every, none, 0)
    if not trusted and not config.output.force_clean:
        return PairCleaning(every, none, int((actions != "keep").sum()))
    if mode == "relabel":
        return PairCleaning(actions != "drop", actions == "swap", 0)
    return PairCleaning(actions == "keep", none, 0)


def _vectors(
    table: PairTable,
    config: ScanConfig,
    chosen: np.ndarray | None,
    rejected: np.ndarray | None,
    engine: Engine,
    progress: Progress,
) -> tuple[Rows, np.ndarray, dict[str, Any]]:
    """The responses' vectors where ``engine`` keeps them (chosen rows 0..P-1, then rejected), the
    engine's order of the pairs (:func:`canonical_order`) and what made the vectors."""
    if chosen is not None or rejected is not None:
        if chosen is None or rejected is None or np.shape(chosen) != np.shape(rejected):
            raise InputError("chosen and rejected embeddings must both be given, with the same shape")
        if len(chosen) != table.n_pairs:
            raise InputError(f"embeddings have {len(chosen)} rows; the data has {table.n_pairs} pairs")
        vectors, order = _placed(engine, np.asarray(chosen), np.asarray(rejected), table)
        return vectors, order, {"name": "precomputed", "source": "audit_pairs() arrays"}
    if table.chosen_vectors is not None:
        vectors, order = _placed(engine, table.chosen_vectors, table.rejected_vectors, table)
        return vectors, order, {"name": "precomputed", "source": "embedding columns"}
    # One embedding pass over both responses (the feature stage of pipeline.py, cache included).
    texts = pl.concat([table.chosen, table.rejected])
    n = table.n_pairs
    both = Table(
        path=table.path,
        format=table.format,
        frame=pl.DataFrame(),
        texts=texts,
        label_values=pl.Series(np.repeat(np.array([0, 1]), n)),
        row_ids=range(2 * n),
        embeddings=None,
        n_empty_texts=int((texts.str.strip_chars() == "").sum()),
        n_dropped_unlabelled=0,
        sha256=table.sha256,
        text_cols=(config.pairs.chosen_col, config.pairs.rejected_col),
    )
    vectors, summary = row_vectors(both, both.label_values.to_numpy(), config, progress, engine)
    return engine.place(vectors), canonical_order(table, None, None), summary


def _placed(engine: Engine, chosen: np.ndarray, rejected: np.ndarray, table: PairTable) -> tuple[Rows, np.ndarray]:
    """Vectors given whole in this process: placed block by block, and the pairs' order (read from
    the vectors when the pairs have no texts)."""
    blocks = (v[a:b] for v in (chosen, rejected) for a, b in row_blocks(len(v)))
    return engine.place_blocks(blocks, 2 * len(chosen)), canonical_order(table, chosen, rejected)


def audit_pairs(
    data: str | Path | pl.DataFrame,
    config: ScanConfig,
    *,
    chosen_embeddings: np.ndarray | None = None,
    rejected_embeddings: np.ndarray | None = None,
    progress: Progress | None = None,
) -> PairsResult:
    """Audit preference pairs (nothing written).

    Parameters
    ----------
    data : path or polars.DataFrame
    config : ScanConfig
        ``config.pairs`` names the columns.
    chosen_embeddings, rejected_embeddings : ndarray of shape (P, d), optional
        Precomputed vectors of the two responses (the encoder is then not used).
    progress : Progress, optional
    """
    progress = progress or NullProgress()
    cfg = config.pairs
    times = StageTimes()
    started = time.perf_counter()
    with times.stage("read"):
        table = read_pairs(
            data,
            chosen_col=cfg.chosen_col,
            rejected_col=cfg.rejected_col,
            prompt_col=cfg.prompt_col,
            id_col=config.input.id_col,
            chosen_embedding_col=cfg.chosen_embedding_col,
            rejected_embedding_col=cfg.rejected_embedding_col,
            precomputed=chosen_embeddings is not None,
            encoding=config.input.encoding,
        )
    engine = config_engine(config)
    with times.stage("embed"):
        vectors, order, encoder = _vectors(table, config, chosen_embeddings, rejected_embeddings, engine, progress)
        if table.identical is not None:
            order = order[~table.identical[order]]  # no preference to audit (dropped below)
        rows, similarity, content = pair_rows(engine, vectors, order)
        del vectors

    # The directions' audit: the engine's own defaults, with the neighbour count of the pair config
    # (preference is a broad, nearly global direction: measured on SST-5 pairs, AUROC 0.78 at k = 10,
    # 0.83 at k = 50) and no text hygiene (directions have no texts).
    engine_config = dataclasses.replace(
        config,
        input=dataclasses.replace(config.input, id_col=None, embedding_col=None),
        detect=dataclasses.replace(config.detect, k=cfg.k),
        hygiene=dataclasses.replace(config.hygiene, reference=()),
        ratings=dataclasses.replace(config.ratings, ordinal=False, label_order=()),
    )
    labels = pair_labels(len(order))
    directions = audit(
        pl.DataFrame({"label": labels}), engine_config, embeddings=rows, progress=progress, engine=engine
    )
    for stage, seconds in directions.report.run["stage_seconds"].items():
        if stage not in ("read", "embed", "total"):
            times.seconds[stage] = seconds

    n = len(order)
    det = directions.detection
    # Pairs of identical responses were not audited: no score, never reversed, dropped (their
    # responses' similarity is 1).
    flip = np.full(table.n_pairs, np.nan)
    reversed_ = np.zeros(table.n_pairs, dtype=bool)
    # Both rows of a pair are mirror images; a row can still miss a round the other was in.
    flip[order] = (det.error_score[:n] + det.error_score[n:]) / 2.0
    reversed_[order] = det.is_label_error[:n] | det.is_label_error[n:]
    agreement = np.full(table.n_pairs, np.nan)
    agreement[order] = det.neighbour_agreement[:n]
    actions = pair_actions(
        flip, reversed_, similarity, same_threshold=cfg.same_threshold, unclear_score=cfg.unclear_score
    )
    issues = pl.DataFrame(
        {
            "row_id": table.row_ids,
            "flip_score": np.round(flip, 4),
            "is_reversed": reversed_,
            "action": pl.Series(actions.tolist(), dtype=pl.String),
            "response_similarity": np.round(similarity.astype(np.float64), 4),
            "neighbour_agreement": agreement,
        }
    )
    times.seconds["total"] = round(time.perf_counter() - started, 4)
    report = _report(table, config, directions, issues, encoder, times)
    return PairsResult(table, config, issues, report, content, engine)


def _report(
    table: PairTable, config: ScanConfig, engine: AuditResult, issues: pl.DataFrame, encoder: dict, times: StageTimes
) -> AuditReport:
    """The engine's report, restated per pair: input, classes, detection, gates."""
    base = engine.report
    n = table.n_pairs
    flip = issues.get_column("flip_score").to_numpy()
    reversed_ = issues.get_column("is_reversed").to_numpy()
    actions = issues.get_column("action")
    cfg = config.pairs
    run = {
        **base.run,
        "kind": "preference_pairs",
        "input": {
            "path": str(table.path),
            "sha256": table.sha256,
            "format": table.format.kind + (".gz" if table.format.gzip else ""),
            "rows": n,
            "pairs": n,
            "identical_pairs": 0 if table.identical is None else int(table.identical.sum()),
            "prompt_source": table.prompt_source,
            "columns_used": {
                "chosen": cfg.chosen_col,
                "rejected": cfg.rejected_col,
                "prompt": cfg.prompt_col,
                "id": config.input.id_col,
            },
        },
        "encoder": {**base.run["encoder"], **{k: v for k, v in encoder.items() if k in base.run["encoder"]}},
        "config": {**base.run["config"], "pairs": dataclasses.asdict(cfg)},
        "stage_seconds": times.seconds,
    }
    classes = [{**c, "count": n} for c in base.classes]
    for c, name in zip(classes, DIRECTION_NAMES, strict=True):
        c["label"] = c["name"] = name
    noise = dict(base.noise)
    noise["transition_matrix"] = {**noise["transition_matrix"], "labels": DIRECTION_NAMES}
    noise["per_class"] = [{**row, "label": name} for row, name in zip(noise["per_class"], DIRECTION_NAMES, strict=True)]
    noise["reversal_rate"] = noise["noise_rate"]
    detection = {
        **{k: base.detection[k] for k in ("method", "fallback", "k", "rounds", "propagation_steps")},
        "flagged": int(reversed_.sum()),
        "flagged_rate": float(reversed_.mean()),
        "actions": {a: int((actions == a).sum()) for a in ("keep", "swap", "drop")},
        "error_score_histogram": score_histogram(flip, reversed_),
        "flagged_per_class": [{"label": "reversed", "flagged": int(reversed_.sum())}],
        "top_flagged": [
            {k: v for k, v in row.items() if k != "neighbour_agreement"}
            for row in flagged_pairs(table, issues, config.output.top_rows, config.output.excerpt_chars)
        ],
        "cleaning": _cleaning_summary(config, actions, bool(base.noise["trustworthy"])),
    }
    checks = evaluate_gates(
        config.gates, engine.noise, int(reversed_.sum()), n, None, trusted=bool(base.noise["trustworthy"])
    )
    report = dataclasses.replace(
        base,
        run=run,
        classes=classes,
        noise=noise,
        detection=detection,
        hygiene=None,
        checks=[c.to_dict() for c in checks],
        verdict=verdict(
            checks, strict=config.gates.strict, warnings=any(f["severity"] == "warning" for f in base.findings)
        ),
    )
    return report


def flagged_pairs(table: PairTable, issues: pl.DataFrame, limit: int, chars: int) -> list[dict[str, Any]]:
    """The ``limit`` reversed pairs a reviewer should see first (highest flip score), in the report's row shape."""
    flip = issues.get_column("flip_score").to_numpy()
    agreement = issues.get_column("neighbour_agreement").to_numpy()
    # Pairs have no subsample-round flag rate: ties on the flip score go to the weaker agreement.
    top = rank_flagged(issues.get_column("is_reversed").to_numpy(), flip, agreement, np.zeros(len(flip)))[:limit]

    def pair_text(i: int) -> str | None:
        if table.chosen is None:
            return None
        return f"chosen: {excerpt(table.chosen[i], chars // 2)} | rejected: {excerpt(table.rejected[i], chars // 2)}"

    return [
        {
            "row_id": table.row_ids[int(i)],
            "given_label": "as given",
            "suggested_label": "swap",
            "suggestion_confidence": round(float(flip[i]), 4),
            "error_score": round(float(flip[i]), 4),
            "neighbour_agreement": float(agreement[i]),
            "excerpt": pair_text(int(i)),
        }
        for i in top
    ]


def _cleaning_summary(config: ScanConfig, actions: pl.Series, trusted: bool) -> dict[str, Any]:
    """The report's ``cleaning`` section, in the single-label shape (relabelled = swapped pairs)."""
    plan = cleaning_plan(config, actions.to_numpy(), trusted)
    summary = {
        "mode": config.output.clean,
        "dropped": int((~plan.keep).sum()),
        "relabelled": int(plan.swap.sum()),
        "held_back": plan.held_back,
        "reasons": [],
        "per_class": [],
    }
    if plan.held_back:
        summary["reasons"] = ["the noise estimate is untrustworthy, so no pair was swapped or dropped (--force-clean)"]
    return summary


def pairs_shape(config: ScanConfig) -> str | None:
    """``pairs`` when the pair flags are set (both, and with nothing of another kind), else None.

    Raises
    ------
    UsageError
        Half a pair of flags, or pair flags mixed with another kind's or with single-label-only options.
    """
    cfg = config.pairs
    if cfg.chosen_col is None and cfg.rejected_col is None and cfg.chosen_embedding_col is None:
        return None
    if cfg.chosen_col is None or cfg.rejected_col is None:
        raise UsageError("preference pairs need both --chosen-col and --rejected-col")
    if cfg.chosen_col == cfg.rejected_col:
        raise UsageError(f"--chosen-col and --rejected-col both name '{cfg.chosen_col}'; a pair compares two columns")
    crowd = config.crowd
    mixed = [
        flag
        for flag, value in (
            ("--item-col", crowd.item_col),
            ("--annotations-col", crowd.annotations_col),
            ("--label-col (repeated)", crowd.label_cols),
            ("--ordinal / --label-order", config.ratings.ordinal or config.ratings.label_order),
            ("--review", config.output.review),
            ("--baseline", config.gates.baseline),
            ("--reference", config.hygiene.reference),
            ("--embedding-col", config.input.embedding_col),
        )
        if value
    ]
    if mixed:
        raise UsageError(f"{mixed[0]} does not apply to preference pairs (--chosen-col / --rejected-col)")
    if config.output.clean == "dedupe":
        raise UsageError("--clean dedupe does not apply to preference pairs; use drop, relabel or flag")
    return "pairs"


def scan_pairs(
    data: str | Path, config: ScanConfig, *, progress: Progress | None = None
) -> tuple[PairsResult, list[Path]]:
    """Audit a pair file and write every output (locations checked before any work, written after)."""
    path = Path(data)
    out = prepare_outputs(config, path, output_names(detect_format(path), html=config.output.html))
    result = audit_pairs(path, config, progress=progress)
    return result, write_pairs_outputs(result, out)


def write_pairs_outputs(result: PairsResult, out_dir: Path) -> list[Path]:
    """cleaned.<ext>, issues.parquet, report.json, report.md (and report.html), as one set."""
    from credaudit.report.json import render_json
    from credaudit.report.markdown import render_markdown

    fmt = result.table.format
    cleaned_name, write_cleaned = frame_output("cleaned", *result._cleaned(), fmt, result.table.parts)
    writers = {
        cleaned_name: write_cleaned,
        "issues.parquet": lambda p: result.issues.write_parquet(p),
        "report.json": write_text(render_json(result.report)),
        "report.md": write_text(render_markdown(result.report)),
    }
    if result.config.output.html:
        from credaudit.report.html import render_html

        output = result.config.output
        rows = flagged_pairs(result.table, result.issues, output.html_rows, 300)
        writers["report.html"] = write_text(render_html(result.report, rows))
    return write_output_set(out_dir, writers, result.report, result.config)
