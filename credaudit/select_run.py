"""``credaudit select``: audit the data, then choose a budget of curated, diverse items.

The wiring only: the audit is the kind's own (single labels and ratings: ``pipeline.audit``; pairs:
``pairs_run.audit_pairs``); each item's quality comes from that audit, the neighbour graph gives
the diversity, and ``selection.select_diverse`` chooses. Outputs, written as one set into
``--out`` (default ``./credaudit-out/<data stem>-select/``): ``selected.<ext>`` (the chosen rows of
the input, input order, schema unchanged), ``selection.parquet`` (every row's quality, tier and
rank), ``report.json`` and ``report.md``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from credaudit import __version__
from credaudit.config import ScanConfig
from credaudit.crowd import crowd_shape
from credaudit.engine import Engine, Rows
from credaudit.errors import UsageError
from credaudit.hygiene import dedupe_mask
from credaudit.io import (
    DataFormat,
    ParquetSource,
    Parts,
    check_out_dir,
    detect_format,
    input_rows,
    out_dir_for,
    rows_output,
    write_outputs,
    write_text,
)
from credaudit.pipeline import StageTimes, audit, knn_graph
from credaudit.progress import NullProgress, Progress
from credaudit.selection import (
    cluster_coverage,
    label_quality,
    pair_quality,
    rating_quality,
    resolve_budget,
    select_diverse,
)

SELECTION_SCHEMA_VERSION = 1

_METHOD = (
    "Each item's quality comes from the audit: for single labels the credibility of its label "
    "(1 - error score), for ratings the curated expected rating on [0, 1] (where the estimate is "
    "untrusted, the given rating shrunk toward the mean by its error score), for pairs 1 - flip score. "
    "Items are chosen greedily by quality (weighted slightly toward the long tail: items far from their "
    "neighbours count a little more); an item close to a chosen one loses value, down to "
    "(1 - diversity) of its quality for a near-copy (no loss when it is no closer than a typical "
    "neighbour), so parts of the data not yet represented win over more of the same. "
    "Lower tiers are used up first (rows flagged as label errors, unclear or reversed pairs come last)."
)


@dataclass(frozen=True)
class SelectionResult:
    """A finished selection.

    Attributes
    ----------
    frame : polars.DataFrame
        The input rows (one per item; for pairs, one per pair); without a vector column left in
        its files (``source``).
    format : DataFormat
        The input's format (``selected.<ext>`` is written in it).
    selection : polars.DataFrame
        One row per item, input order: ``row_id``, ``quality``, ``tier``, ``selected``, ``rank``
        (0 = chosen first; null when not chosen).
    report : dict
        report.json.
    config : ScanConfig
    parts : Parts or None
        For a directory of parquet files: which file each row came from.
    source : ParquetSource or None
        The input's files, where its vector column was left in them (io.Table.source).
    """

    frame: pl.DataFrame
    format: DataFormat
    selection: pl.DataFrame
    report: dict[str, Any]
    config: ScanConfig
    parts: Parts | None = None
    source: ParquetSource | None = None

    def selected(self) -> pl.DataFrame:
        """The chosen rows of the input, in input order."""
        return _selected(input_rows(self.frame, self.source, self._chosen())).collect()

    def _chosen(self) -> pl.DataFrame:
        return pl.DataFrame([self.selection.get_column("selected").alias("__credaudit_selected")])


def _selected(rows: pl.LazyFrame) -> pl.LazyFrame:
    return rows.filter(pl.col("__credaudit_selected")).drop("__credaudit_selected")


def select_out_dir(config: ScanConfig, data: Path) -> Path:
    """``--out`` or ``./credaudit-out/<data stem>-select/``."""
    return out_dir_for(config.output.out, data, "-select")


def output_names(fmt: DataFormat) -> list[str]:
    return [fmt.parts_name("selected"), "selection.parquet", "report.json", "report.md"]


@dataclass(frozen=True)
class _Audited:
    """What the selection needs from a kind's audit."""

    kind: str
    frame: pl.DataFrame
    format: DataFormat
    path: str
    sha256: str
    row_ids: Sequence[Any]
    quality: np.ndarray
    tiers: np.ndarray
    tier_names: list[str]
    groups: np.ndarray
    group_title: str
    vectors: np.ndarray | Rows
    engine: Engine  # the audit's, which keeps ``vectors``
    indices: np.ndarray
    similarities: np.ndarray
    noise: dict[str, Any]
    parts: Parts | None
    source: ParquetSource | None = None


def _audit_rows(data, config: ScanConfig, embeddings, progress: Progress) -> _Audited:
    """Single labels and ratings: the engine's audit, its graph and per-row quality."""
    result = audit(data, config, embeddings=embeddings, progress=progress)
    det = result.detection
    labels = result.labels
    names = np.array(result.codec.names(), dtype=object)
    if result.report.ratings is not None:
        scale = np.array([p["value"] for p in result.report.ratings["scale"]], dtype=np.float64)
        quality = rating_quality(
            scale[labels],
            result.issues.get_column("curated_score").to_numpy(),
            det.error_score,
            result.trust.trusted_classes[labels],
            scale,
        )
        kind, title = "ratings", "given rating"
    else:
        quality = label_quality(det.error_score)
        kind, title = "single_label", "class"
    k = min(config.select.k, result.graph.k)
    # The greedy choice runs here, over the whole graph (on Ray gathered from its blocks).
    indices, similarities = result.graph.gathered(result.engine)
    table = result.table
    return _Audited(
        kind=kind,
        frame=table.frame,
        format=table.format,
        path=str(table.path),
        sha256=table.sha256,
        row_ids=table.row_ids,
        quality=quality,
        # A near-duplicate group (hygiene: same words, cosine above the threshold) counts once
        # before the budget takes its other members; rows flagged as label errors come last.
        tiers=np.where(
            det.is_label_error, 2, dedupe_mask(result.hygiene.duplicate_groups, avoid=det.is_label_error)
        ).astype(np.int64),
        tier_names=["credible", "near-duplicate of a kept row", "flagged as a label error"],
        groups=names[labels],
        group_title=title,
        vectors=result.vectors,  # where the engine keeps them (on Ray, the object store)
        indices=indices[:, :k],
        similarities=similarities[:, :k],
        noise=_noise(result.report.noise),
        parts=table.parts,
        source=table.source,
        engine=result.engine,
    )


def _audit_pairs(data, config: ScanConfig, vectors, progress: Progress) -> _Audited:
    """Preference pairs: the pair audit; diversity over each pair's topic vector."""
    from credaudit.pairs_run import audit_pairs

    chosen, rejected = vectors if vectors is not None else (None, None)
    result = audit_pairs(data, config, chosen_embeddings=chosen, rejected_embeddings=rejected, progress=progress)
    actions = result.issues.get_column("action").to_numpy()
    order = {"keep": 0, "drop": 1, "swap": 2}
    graph = knn_graph(
        result.content,
        config,
        k=min(config.select.k, result.table.n_pairs - 1),
        engine=result.engine,
        progress=progress,
    )
    indices, similarities = graph.gathered(result.engine)
    table = result.table
    return _Audited(
        kind="preference_pairs",
        frame=table.frame,
        format=table.format,
        path=str(table.path),
        sha256=table.sha256,
        row_ids=table.row_ids,
        quality=pair_quality(result.issues.get_column("flip_score").to_numpy()),
        tiers=result.issues.get_column("action").replace_strict(order, return_dtype=pl.Int64).to_numpy(),
        tier_names=["keep (clear preference)", "drop (no clear preference)", "swap (probably reversed)"],
        groups=actions.astype(object),
        group_title="pair action",
        vectors=result.content,
        engine=result.engine,
        indices=indices,
        similarities=similarities,
        noise=_noise(result.report.noise),
        parts=table.parts,
    )


def _noise(noise: dict[str, Any]) -> dict[str, Any]:
    """The audit's noise rate ({estimate, low, high}) and whether it is trusted."""
    return {"noise_rate": noise["noise_rate"], "trustworthy": noise["trustworthy"]}


def select(
    data: str | Path | pl.DataFrame,
    config: ScanConfig,
    *,
    embeddings: np.ndarray | None = None,
    pair_embeddings: tuple[np.ndarray, np.ndarray] | None = None,
    progress: Progress | None = None,
) -> SelectionResult:
    """Audit ``data`` and choose ``config.select.budget`` items (nothing written).

    Parameters
    ----------
    data : path or polars.DataFrame
        Single labels, ratings (``config.ratings``) or preference pairs (``config.pairs``).
    config : ScanConfig
        ``config.select`` holds the budget, the diversity and the neighbour count.
    embeddings : ndarray of shape (N, d), optional
        Precomputed row vectors (single labels and ratings).
    pair_embeddings : (chosen, rejected), each an ndarray of shape (P, d), optional
        Precomputed response vectors (preference pairs).
    progress : Progress, optional

    Raises
    ------
    UsageError
        No budget, a budget that is neither a count nor a share below 1, or a crowd-shaped input.
    """
    progress = progress or NullProgress()
    cfg = config.select
    if cfg.budget is None:
        raise UsageError("credaudit select needs --budget: a count of items (e.g. 1000) or a share (e.g. 0.1)")
    if isinstance(cfg.budget, float) and not cfg.budget.is_integer() and cfg.budget >= 1:
        raise UsageError(f"--budget must be a count (int) or a share below 1 (float); got {cfg.budget}")
    if crowd_shape(config.crowd):
        raise UsageError("credaudit select does not take several labels per item yet; aggregate them with scan first")
    times = StageTimes()
    started = time.perf_counter()
    from credaudit.pairs_run import pairs_shape

    with times.stage("audit"):
        if pairs_shape(config):
            audited = _audit_pairs(data, config, pair_embeddings, progress)
        else:
            audited = _audit_rows(data, config, embeddings, progress)
    n = audited.quality.size
    budget = resolve_budget(cfg.budget, n)
    with times.stage("select"):
        order = select_diverse(
            audited.quality,
            audited.indices,
            audited.similarities,
            budget,
            cfg.diversity,
            tiers=audited.tiers,
            long_tail=cfg.long_tail,
        )
        chosen = np.zeros(n, dtype=bool)
        chosen[order] = True
        rank = np.full(n, -1, dtype=np.int64)
        rank[order] = np.arange(order.size)
    with times.stage("coverage"):
        # At least ten rows per cluster and no more clusters than chosen items, else "covered"
        # says little.
        clusters = max(2, min(cfg.clusters, budget, n // 10))
        coverage = cluster_coverage(
            audited.vectors, chosen, n_clusters=clusters, seed=config.seed, engine=audited.engine
        )
    times.seconds["total"] = round(time.perf_counter() - started, 4)
    selection = pl.DataFrame(
        {
            "row_id": audited.row_ids,
            "quality": np.round(audited.quality, 4),
            "tier": audited.tiers,
            "selected": chosen,
            "rank": pl.Series(rank).replace(-1, None),
        }
    )
    report = _report(audited, config, budget, chosen, coverage, times)
    return SelectionResult(audited.frame, audited.format, selection, report, config, audited.parts, audited.source)


def _report(
    audited: _Audited,
    config: ScanConfig,
    budget: int,
    chosen: np.ndarray,
    coverage: dict[str, Any],
    times: StageTimes,
) -> dict[str, Any]:
    q = audited.quality
    groups = []
    for name in sorted(set(audited.groups.tolist()), key=str):
        member = audited.groups == name
        picked = member & chosen
        groups.append(
            {
                "group": str(name),
                "items": int(member.sum()),
                "selected": int(picked.sum()),
                "share_selected": float(picked.sum() / member.sum()),
                "mean_quality": float(q[member].mean()),
                "mean_quality_selected": float(q[picked].mean()) if picked.any() else None,
            }
        )
    tiers = [
        {"tier": name, "items": int((audited.tiers == t).sum()), "selected": int((chosen & (audited.tiers == t)).sum())}
        for t, name in enumerate(audited.tier_names)
    ]
    cfg = config.select
    return {
        "schema_version": SELECTION_SCHEMA_VERSION,
        "tool_version": __version__,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "run": {
            "command": "select",
            "kind": audited.kind,
            "input": {"path": audited.path, "sha256": audited.sha256, "items": int(q.size)},
            "seed": config.seed,
            "stage_seconds": times.seconds,
        },
        "settings": {"budget": cfg.budget, "diversity": cfg.diversity, "long_tail": cfg.long_tail, "k": cfg.k},
        "audit": audited.noise,
        "selected": {
            "items": int(chosen.sum()),
            "budget": budget,
            "mean_quality": float(q[chosen].mean()) if chosen.any() else None,
            "mean_quality_all": float(q.mean()),
            "tiers": tiers,
        },
        "coverage": coverage,
        "group_title": audited.group_title,
        "groups": groups,
        "method": _METHOD,
    }


def write_selection_outputs(result: SelectionResult, out_dir: Path) -> list[Path]:
    """selected.<ext>, selection.parquet, report.json and report.md, as one atomic set."""
    from credaudit.report.json import render_json_data
    from credaudit.report.selection import render_selection_markdown

    chosen = result.selection.get_column("selected").to_numpy()
    selected_name, write_selected = rows_output(
        "selected", result.frame, result.source, result.format, result.parts, result._chosen(), _selected, chosen
    )
    writers = {
        selected_name: write_selected,
        "selection.parquet": lambda p: result.selection.write_parquet(p),
        "report.json": write_text(render_json_data(result.report)),
        "report.md": write_text(render_selection_markdown(result.report)),
    }
    return write_outputs(out_dir, writers, replace_previous=True)


def select_file(
    data: str | Path, config: ScanConfig, *, progress: Progress | None = None
) -> tuple[SelectionResult, list[Path]]:
    """Select from a file and write the outputs (locations checked before any work)."""
    path = Path(data)
    out = select_out_dir(config, path)
    check_out_dir(out, path, output_names(detect_format(path)))
    result = select(path, config, progress=progress)
    return result, write_selection_outputs(result, out)
