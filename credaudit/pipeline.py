"""The audit pipeline: read -> features -> neighbour graph -> noise estimate -> detection -> outputs.

Each stage is a plain function in its own module; this module only wires them, times them and
assembles the result. It never touches a terminal: progress goes through the ``Progress`` protocol.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import resource
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from credaudit import __version__
from credaudit.baseline import compare_reports, load_report
from credaudit.cleaning import CleaningPlan, plan_cleaning
from credaudit.config import InputConfig, ScanConfig
from credaudit.detect import Detection, detect_label_errors, stored_neighbours
from credaudit.encoders.base import Encoder, resolve_device
from credaudit.engine import LOCAL, Engine, Rows, engine_for, take_rows
from credaudit.errors import DataReadError, InputError, UsageError
from credaudit.findings import (
    Finding,
    find_conflicting_duplicates,
    find_empty_texts,
    find_estimate_warnings,
)
from credaudit.gates import CheckResult, evaluate_gates, verdict
from credaudit.hygiene import (
    Outliers,
    dedupe_mask,
    duplicate_summary,
    near_duplicate_groups,
    outlier_summary,
    score_outliers,
)
from credaudit.io import (
    DataFormat,
    Reference,
    Table,
    atomic_write_file,
    check_out_dir,
    check_out_file,
    default_out_dir,
    detect_format,
    out_dir_for,
    read_frame,
    read_reference,
    read_table,
    require_columns,
    write_frame,
    write_outputs,
    write_text,
)
from credaudit.labels import LabelCodec
from credaudit.leakage import Leakage, find_leakage, leakage_summary
from credaudit.neighbors import GRAPH_DTYPE, NeighborGraph, build_knn_graph, estimate_recall, normalize_rows
from credaudit.noise import NoiseEstimate, consensus_counts, estimate_noise
from credaudit.progress import NullProgress, Progress
from credaudit.ratings import jump_cost, rating_codec, rating_distribution
from credaudit.report.format import excerpt
from credaudit.report.json import render_json
from credaudit.report.markdown import render_markdown
from credaudit.report.model import T_ORIENTATION, AuditReport
from credaudit.review import (
    REVIEW_FORMATS,
    apply_decisions,
    label_studio_config,
    label_studio_tasks,
    neighbour_label_summary,
    rank_flagged,
    read_review,
    review_config_path,
    review_frame,
    write_review_csv,
)
from credaudit.trust import TrustAssessment, assess_trust, knn_label_agreement, widen_untrusted


@dataclass
class StageTimes:
    """Wall seconds per stage, in pipeline order."""

    seconds: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def stage(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - start, 4)


@dataclass(frozen=True)
class EncoderSummary:
    name: str
    source: str
    dimension: int
    device: str
    fingerprint: str | None
    n_cached: int
    n_embedded: int
    auto_candidates: list[dict] | None = None
    precision: str = "n/a"


@dataclass(frozen=True)
class AuditResult:
    """Everything an audit produced.

    Attributes
    ----------
    report : AuditReport
        The credibility report (``report.to_dict()`` is report.json).
    issues : polars.DataFrame
        One row per audited row: row_id, given_label, suggested_label, suggestion_confidence,
        error_score, flag_rate, is_label_error, neighbour_agreement.
    table : Table
        The validated input.
    codec : LabelCodec
        Label values <-> codes.
    labels : ndarray of shape (N,), dtype int64
        Each row's label code (``codec.encode`` of the table's labels).
    vectors : Rows
        The unit vectors, where the run's engine keeps them (:attr:`embeddings` gathers them).
    graph : NeighborGraph
        Held where ``engine`` keeps rows (on Ray, object-store blocks): ``graph.gathered(engine)``
        gives its arrays here.
    noise : NoiseEstimate
    detection : Detection
    findings : list of Finding
    checks : list of CheckResult
    config : ScanConfig
    hygiene : Hygiene
    trust : TrustAssessment
        Whether the estimate (and each class's row of T) can be trusted.
    engine : Engine
        The engine the audit ran on (it keeps :attr:`vectors`).
    """

    report: AuditReport
    issues: pl.DataFrame
    table: Table
    codec: LabelCodec
    labels: np.ndarray
    vectors: Rows
    graph: NeighborGraph
    noise: NoiseEstimate
    detection: Detection
    findings: list[Finding]
    checks: list[CheckResult]
    config: ScanConfig
    hygiene: Hygiene
    trust: TrustAssessment
    engine: Engine

    @property
    def verdict(self) -> str:
        return self.report.verdict

    @property
    def embeddings(self) -> np.ndarray:
        """The unit vectors, shape (N, d) float32, in one array here (on Ray: fetched from the
        object store into this process)."""
        return self.engine.gather(self.vectors)

    def cleaning_plan(self, mode: str | None = None, min_confidence: float | None = None) -> CleaningPlan:
        """Which flagged rows the cleaned data drops or relabels, after the guards (cleaning.py)."""
        return _cleaning_plan(
            self.config,
            self.labels,
            self.detection,
            n_classes=self.codec.n_classes,
            trusted=bool(self.report.noise["trustworthy"]),
            duplicate_groups=self.hygiene.duplicate_groups,
            mode=mode,
            min_confidence=min_confidence,
        )

    def cleaned(self, mode: str | None = None, min_confidence: float | None = None) -> pl.DataFrame:
        """The input, cleaned.

        Parameters
        ----------
        mode : {"drop", "relabel", "dedupe", "flag"}, optional
            ``drop`` flagged rows; ``relabel`` flagged rows whose suggestion confidence is at
            least ``min_confidence`` (dropping the other flagged rows); ``dedupe`` keeps the first
            row of each near-duplicate group and changes no label; ``flag`` keeps every row and
            adds ``credaudit_*`` columns. Default: the config's ``output.clean``. ``drop`` and
            ``relabel`` are guarded (:meth:`cleaning_plan`).
        min_confidence : float, optional
            Default: the config's ``output.min_confidence``.
        """
        extras, transform, _ = self._cleaned(mode, min_confidence)
        return transform(self.table.rows(extras)).collect()

    def _cleaned(
        self, mode: str | None = None, min_confidence: float | None = None
    ) -> tuple[pl.DataFrame, Callable[[pl.LazyFrame], pl.LazyFrame], np.ndarray]:
        """(columns to put beside the input's, one value per row; the plan that makes the cleaned
        rows of the input's with them; which input rows it keeps), for :meth:`Table.output`.

        A plan, so that a parquet output streams it to disk (io.rows_output) instead of copying
        the input's kept rows first: with a vector column that copy is the largest object of a scan.
        """
        mode = mode or self.config.output.clean
        suggested = self.issues.get_column("suggested_label")
        if mode in ("drop", "relabel", "dedupe"):
            plan = self.cleaning_plan(mode, min_confidence)
            keep = pl.Series("__credaudit_keep", ~plan.drop)
            if mode in ("drop", "dedupe"):
                extras = pl.DataFrame([keep])
                relabel = None
            else:
                relabelled = pl.Series("__credaudit_relabel", plan.relabel)
                extras = pl.DataFrame([keep, relabelled, suggested.alias("__credaudit_to")])
                label_col = self.config.input.label_col
                relabel = (
                    pl.when(pl.col("__credaudit_relabel"))
                    .then(pl.col("__credaudit_to"))
                    .otherwise(pl.col(label_col))
                    .alias(label_col)
                )

            def transform(rows: pl.LazyFrame) -> pl.LazyFrame:
                if relabel is not None:
                    rows = rows.with_columns(relabel)
                return rows.filter(pl.col(keep.name)).drop(extras.columns)

            return extras, transform, ~plan.drop
        if mode == "flag":
            # Beside the input under private names, then named: an input that already has
            # credaudit_* columns (an earlier run's flagged copy) has them replaced where they stand.
            extras = pl.DataFrame(
                [
                    pl.Series("__credaudit_is_label_error", self.detection.is_label_error),
                    suggested.alias("__credaudit_suggested_label"),
                    self.issues.get_column("suggestion_confidence").alias("__credaudit_suggestion_confidence"),
                    self.issues.get_column("error_score").alias("__credaudit_error_score"),
                ]
            )

            def named(rows: pl.LazyFrame) -> pl.LazyFrame:
                return rows.with_columns(pl.col(c).alias(c[2:]) for c in extras.columns).drop(extras.columns)

            return extras, named, np.ones(self.table.n_rows, dtype=bool)
        raise ValueError(f"mode must be drop, relabel, dedupe or flag; got {mode!r}")


def audit(
    data: str | Path | pl.DataFrame,
    config: ScanConfig | None = None,
    *,
    embeddings: np.ndarray | Rows | None = None,
    encoder: Encoder | None = None,
    progress: Progress | None = None,
    engine: Engine | None = None,
) -> AuditResult:
    """Audit a labelled dataset.

    Parameters
    ----------
    data : path or polars.DataFrame
        A .parquet / .jsonl / .ndjson (optionally .gz) / .csv file, a directory of parquet files,
        or a DataFrame.
    config : ScanConfig, optional
        Defaults to ``ScanConfig()``.
    embeddings : ndarray of shape (N, d), optional
        Precomputed vectors, row-aligned with the data (the Python-API equivalent of
        ``--embedding-col``); the encoder is then not used. Or :class:`~credaudit.engine.Rows` of
        unit vectors already placed on the run's engine (adapters' rows, used as they are).
    encoder : Encoder, optional
        An encoder instance to use instead of ``config.encoder.name``.
    progress : Progress, optional
        Receives stage progress; nothing is printed otherwise.
    engine : Engine, optional
        The engine to run on (an adapter passes its own, which holds its rows); default: the one
        ``config.engine`` names.

    Returns
    -------
    AuditResult

    Raises
    ------
    CredauditError
        Any input, encoder or resource problem, with a one-line message.
    """
    config = config or ScanConfig()
    progress = progress or NullProgress()
    times = StageTimes()
    started = time.perf_counter()
    # Read the baseline first: a bad --baseline should fail in a second, not after the embedding.
    baseline = load_report(config.gates.baseline) if config.gates.baseline else None

    with times.stage("read"):
        table = _read(data, config.input, precomputed=embeddings is not None)
        rating = config.ratings.ordinal or bool(config.ratings.label_order)
        scale = None
        if rating:
            codec, scale = rating_codec(
                table.label_values,
                label_order=config.ratings.label_order or None,
                column=config.input.label_col,
                row_ids=table.row_ids,
            )
        else:
            codec = LabelCodec.fit(table.label_values)
        labels = codec.encode(table.label_values)
        n_classes = codec.n_classes
        if n_classes > config.noise.max_classes:
            raise InputError(
                f"column '{config.input.label_col}' has {n_classes} distinct labels; credaudit audits at most "
                f"{config.noise.max_classes} classes (noise.max_classes) because the transition-matrix fit grows "
                "as K^4; merge rare classes or audit a subset"
            )

    device = resolve_device(config.encoder.device)
    _check_device(device)
    engine = engine or config_engine(config)
    with times.stage("embed"):
        vectors, encoder_summary, used_encoder = _features(
            table, labels, config, embeddings, encoder, device, progress, engine
        )
        # Every later stage reads the vectors as blocks where the engine keeps them: on Ray the
        # object store, which the embedding filled block by block (vectors passed in are put there
        # once), so this process holds only references to them.
        vectors = engine.place(vectors)
        if engine.name != "local" and table.embeddings is not None:
            # The file's vectors are in the object store now; this process keeps none of them.
            table = dataclasses.replace(table, embeddings=None)
        references = _references(config, vectors, used_encoder, progress) if config.hygiene.reference else []

    with times.stage("graph"):
        detect_cfg = config.detect
        graph_k = stored_neighbours(detect_cfg.k, detect_cfg.subsample_rate)
        graph = knn_graph(vectors, config, k=graph_k, device=device, engine=engine, progress=progress)

        # An approximate graph says how approximate: recall@k against an exact search of a sample.
        recall = (1.0, 0)
        if graph.method != "exact":
            recall = estimate_recall(
                graph, vectors, k=detect_cfg.k, n_sample=config.graph.recall_sample, seed=config.seed, engine=engine
            )

    with times.stage("hygiene"):
        hygiene = _hygiene(
            vectors, labels, graph, table.texts, references, n_classes=n_classes, config=config, engine=engine
        )

    with times.stage("noise"):
        noise_cfg = config.noise
        # Counted block by block on the engine and summed; the fit itself is K x K work.
        counts = consensus_counts(
            labels,
            graph,
            n_classes=n_classes,
            triple_share=noise_cfg.triple_share,
            embeddings=vectors,
            engine=engine,
        )
        estimate = estimate_noise(
            labels,
            counts=counts,
            n_classes=n_classes,
            triple_share=noise_cfg.triple_share,
            n_restarts=noise_cfg.n_restarts,
            max_iter=noise_cfg.max_iter,
            n_bootstrap=noise_cfg.n_bootstrap,
            bootstrap_max_iter=noise_cfg.bootstrap_max_iter,
            confidence_level=noise_cfg.confidence_level,
            n_workers=noise_cfg.n_workers or None,
            jump_cost=jump_cost(scale, config.ratings.jump_cost) if rating and config.ratings.jump_cost else None,
            seed=config.seed,
            progress=progress,
        )

        # Trust is judged before detection, which must not read an untrusted T.
        k_used = min(config.detect.k, graph.k)
        knn_agreement = knn_label_agreement(labels, graph, k_used, engine=engine)
        trust = assess_trust(estimate, knn_agreement, class_names=codec.names(), min_kappa=noise_cfg.min_kappa)
        if not trust.trusted:
            estimate = widen_untrusted(estimate)

    with times.stage("detect"):
        detection = detect_label_errors(
            labels,
            graph,
            vectors,
            n_classes=n_classes,
            transition_matrix=estimate.transition_matrix,
            observed_error_rate=np.array([r.estimate for r in estimate.observed_error_rate]),
            k=detect_cfg.k,
            method=detect_cfg.method,
            n_rounds=detect_cfg.n_rounds,
            subsample_rate=detect_cfg.subsample_rate,
            propagation_steps=detect_cfg.propagation_steps,
            self_weight=detect_cfg.self_weight,
            trusted_classes=trust.trusted_classes,
            vote_cap_factor=detect_cfg.vote_cap_factor,
            min_score=detect_cfg.min_score,
            # The share cap guards against a vote on weak features flagging whole minority classes;
            # with informative features a class whose row of T broke is judged by the plain vote.
            untrusted_max_class_share=detect_cfg.untrusted_max_class_share if trust.weak_features else None,
            # A rating's curated score is its posterior mean, made with the posteriors (per block of
            # rows: the (N, K) posteriors are never held whole).
            class_values=scale if rating else None,
            seed=config.seed,
            progress=progress,
            engine=engine,
        )

        # An outlier has no close neighbours to vote on it: no label verdict, and a suggestion
        # trusted only as far as the row belongs to the data.
        outlying = hygiene.outliers.is_outlier
        if outlying.any():
            detection = dataclasses.replace(
                detection,
                is_label_error=detection.is_label_error & ~outlying,
                suggestion_confidence=np.where(
                    outlying,
                    detection.suggestion_confidence * (1.0 - hygiene.outliers.score),
                    detection.suggestion_confidence,
                ),
            )

        curated = None
        if rating:
            # Where the estimate is untrusted the posterior is the plain vote, which ignores the row's
            # own rating: no curation there (the given rating stands) and the vote's flags stand.
            judged = trust.trusted_classes[labels]
            curated = np.where(judged, detection.expected_value, scale[labels])

    with times.stage("findings"):
        names = codec.names()
        counts = np.bincount(labels, minlength=n_classes)
        findings = [
            f
            for f in (
                find_conflicting_duplicates(table.texts, labels, table.row_ids, names),
                find_empty_texts(table.n_empty_texts, table.n_rows)
                if embeddings is None and table.texts is not None
                else None,
            )
            if f is not None
        ]
        findings += find_estimate_warnings(estimate, counts, names, trust, min_class_rows=noise_cfg.min_class_rows)
        if recall[1] and recall[0] < config.graph.min_recall:
            findings.append(
                Finding(
                    kind="low_recall",
                    severity="warning",
                    message=f"the approximate neighbour search found {recall[0]:.1%} of the true {detect_cfg.k} "
                    f"nearest neighbours (measured on {recall[1]:,} rows): raise graph.ivf_probe_share and "
                    'graph.ivf_max_probes, or set graph.index = "exact"',
                    details={
                        "recall_at_k": recall[0],
                        "rows_sampled": recall[1],
                        "min_recall": config.graph.min_recall,
                    },
                )
            )

    issues = _issues_frame(table, codec, detection, config, hygiene)
    if curated is not None:
        issues = issues.insert_column(4, pl.Series("curated_score", np.round(curated, 4)))
    times.seconds["total"] = round(time.perf_counter() - started, 4)
    report, checks = _build_report(
        table,
        codec,
        labels,
        encoder_summary,
        graph,
        estimate,
        detection,
        findings,
        config,
        times,
        trust,
        baseline,
        hygiene,
        recall,
        engine.describe(),
    )
    if curated is not None:
        report = dataclasses.replace(report, ratings=rating_distribution(labels, curated, scale, codec.names()))
    return AuditResult(
        report=report,
        issues=issues,
        table=table,
        codec=codec,
        labels=labels,
        vectors=vectors,
        graph=graph,
        noise=estimate,
        detection=detection,
        findings=findings,
        checks=checks,
        config=config,
        hygiene=hygiene,
        trust=trust,
        engine=engine,
    )


@dataclass(frozen=True)
class Hygiene:
    """The data-hygiene results: outliers, near-duplicate groups and (with references) leakage."""

    outliers: Outliers
    duplicate_groups: np.ndarray
    leakage: Leakage | None

    def counts(self) -> dict[str, int | None]:
        """Row counts for the hygiene gates (``duplicates``: the rows a dedupe would remove)."""
        return {
            "outliers": int(self.outliers.is_outlier.sum()),
            "duplicates": int(dedupe_mask(self.duplicate_groups).sum()),
            "leakage": None if self.leakage is None else int(self.leakage.is_leaked.sum()),
        }


def _hygiene(
    vectors: Rows,
    labels: np.ndarray,
    graph: NeighborGraph,
    texts: Sequence[str] | pl.Series | None,
    references: list[Reference],
    *,
    n_classes: int,
    config: ScanConfig,
    engine: Engine,
) -> Hygiene:
    cfg = config.hygiene
    link = dict(
        threshold=cfg.near_duplicate_threshold,
        min_overlap=cfg.near_duplicate_min_overlap,
        vector_threshold=cfg.near_duplicate_vector_threshold,
    )
    outliers = score_outliers(
        vectors,
        labels,
        graph,
        n_classes=n_classes,
        k=config.detect.k,
        threshold=cfg.outlier_threshold,
        rate=cfg.outlier_rate,
        engine=engine,
    )
    groups = near_duplicate_groups(graph, texts, **link, engine=engine)
    leakage = (
        find_leakage(vectors, texts, references, **{**link, "threshold": cfg.leakage_threshold}, engine=engine)
        if references
        else None
    )
    return Hygiene(outliers, groups, leakage)


def _references(config: ScanConfig, vectors: Rows, encoder: Encoder | None, progress: Progress) -> list[Reference]:
    """Read every ``--reference`` file; ``embeddings`` become unit vectors (embedded, if need be, with the
    input's encoder and cache)."""
    cfg, hyg = config.input, config.hygiene
    if encoder is None and hyg.reference_embedding_col is None:
        raise UsageError(
            "--reference with precomputed vectors needs --reference-embedding-col: the reference must be "
            "embedded the same way as the input"
        )
    if encoder is not None and getattr(encoder, "whole_corpus", False):
        chosen = " (chosen by --encoder auto)" if config.encoder.name == "auto" else ""
        raise UsageError(
            f"--reference cannot be used with the {encoder.name} encoder{chosen}: it is fitted on the input alone, "
            "so a reference file would not share its space; pass --encoder minilm or static"
        )
    references = []
    for name in hyg.reference:
        ref = read_reference(
            name,
            text_cols=cfg.text_cols,
            id_col=cfg.id_col,
            embedding_col=hyg.reference_embedding_col,
            encoding=cfg.encoding,
        )
        if ref.embeddings is not None:
            ref_vectors = normalize_rows(ref.embeddings)
        else:
            from credaudit.features import embed_texts

            ref_vectors = embed_texts(ref.texts, encoder, cache=_cache_for(config, encoder), progress=progress).vectors
        if ref_vectors.shape[1] != vectors.shape[1]:
            raise InputError(
                f"--reference {ref.path.name} has {ref_vectors.shape[1]}-d vectors; the input has {vectors.shape[1]}-d"
            )
        references.append(replace(ref, embeddings=ref_vectors))
    return references


def knn_graph(
    vectors: np.ndarray | Rows,
    config: ScanConfig,
    *,
    k: int,
    engine: Engine,
    device: str = "cpu",
    progress: Progress | None = None,
) -> NeighborGraph:
    """The k-NN graph of unit ``vectors`` with the search settings of ``config.graph`` (and its seed),
    on ``engine`` (the run's, which keeps ``vectors``)."""
    return build_knn_graph(
        vectors,
        k=k,
        index=config.graph.index,
        exact_max_rows=config.graph.exact_max_rows,
        ivf_probe_share=config.graph.ivf_probe_share,
        ivf_max_probes=config.graph.ivf_max_probes,
        device=device,
        seed=config.seed,
        progress=progress,
        engine=engine,
    )


def _read(data: str | Path | pl.DataFrame, cfg: InputConfig, *, precomputed: bool) -> Table:
    return read_table(
        data,
        text_cols=cfg.text_cols,
        label_col=cfg.label_col,
        id_col=cfg.id_col,
        embedding_col=cfg.embedding_col,
        drop_unlabelled=cfg.drop_unlabelled,
        encoding=cfg.encoding,
        # Text is optional with precomputed vectors, unless the user named text columns themselves.
        text_optional=(precomputed or cfg.embedding_col is not None) and cfg.text_cols == InputConfig().text_cols,
        # A parquet input's vector column is read block by block where the engine keeps it, and
        # re-read for the cleaned copy: never held whole here (1.5 GB per million 384-d rows).
        vectors_in_files=not precomputed,
    )


def row_vectors(
    table: Table, labels: np.ndarray, config: ScanConfig, progress: Progress, engine: Engine
) -> tuple[np.ndarray | Rows, dict]:
    """Unit vectors of ``table``'s rows and a summary of what made them: the feature stage, for other adapters.

    ``labels`` (N,) are only read by ``--encoder auto``, which picks the encoder that separates them best.
    The (N, d) vectors stay where ``engine`` (the run's) keeps them
    (on Ray, blocks in the object store): the crowd and pair adapters pass them on to stages run
    on that engine.
    """
    device = resolve_device(config.encoder.device)
    _check_device(device)
    vectors, summary, _ = _features(table, labels, config, None, None, device, progress, engine)
    return vectors, dataclasses.asdict(summary)


def config_engine(config: ScanConfig) -> Engine:
    """The engine ``config.engine`` names (Ray is started, or joined, once per process)."""
    cfg = config.engine
    if cfg.ray_address and cfg.name != "ray":
        # Otherwise the run would go on locally, as if the cluster had been used.
        raise UsageError(f"--ray-address {cfg.ray_address} applies to --engine ray; the engine is {cfg.name}")
    return engine_for(
        cfg.name,
        ray_address=cfg.ray_address,
        ray_actors=cfg.ray_actors,
        ray_arrange=cfg.ray_arrange,
        threads=cfg.threads,
    )


def _check_device(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise InputError(f"--device {device} was asked for, but torch sees no CUDA GPU (use --device cpu or auto)")
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise InputError(f"--device {device}: torch sees only {torch.cuda.device_count()} GPU(s)")


def _cache_for(config: ScanConfig, enc: Encoder):
    """The embedding cache for ``enc`` (None when caching is off or the encoder is fitted per corpus)."""
    from credaudit.encoders.cache import EmbeddingCache, default_cache_dir

    cfg = config.encoder
    if not cfg.cache or getattr(enc, "whole_corpus", False):
        return None
    root = Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir()
    max_bytes = None if cfg.cache_max_mb is None else cfg.cache_max_mb * 1024 * 1024
    return EmbeddingCache(root, enc.fingerprint, enc.dimension, max_bytes=max_bytes)


def _features(
    table: Table,
    labels: np.ndarray,
    config: ScanConfig,
    embeddings: np.ndarray | Rows | None,
    encoder: Encoder | None,
    device: str,
    progress: Progress,
    engine: Engine = LOCAL,
) -> tuple[np.ndarray | Rows, EncoderSummary, Encoder | None]:
    """The unit vectors, what made them, and the encoder (None for precomputed vectors).

    Embedded texts come as :class:`Rows` where ``engine`` keeps them when it is not the local one
    (features.embed_texts); a vector column left in its parquet files (``table.source``) as Rows
    placed block by block; other precomputed vectors as the array read.

    On an engine other than the local one, the chunks are encoded where the engine runs them, by
    encoders built there from the same settings (or copies of ``encoder``).
    """
    if isinstance(embeddings, Rows):
        # Unit vectors an adapter made where the engine keeps them (the pair audit's directions).
        if embeddings.n_rows != table.n_rows:
            raise InputError(f"embeddings have {embeddings.n_rows} rows; the data has {table.n_rows}")
        return (
            embeddings,
            EncoderSummary("precomputed", "rows made by an adapter", embeddings.dim, "n/a", None, 0, 0),
            None,
        )
    if embeddings is not None:
        embeddings = np.asarray(embeddings)
        if embeddings.ndim != 2 or embeddings.shape[0] != table.n_rows:
            raise InputError(
                f"embeddings must have shape ({table.n_rows}, d) to match the data; got {embeddings.shape}"
            )
        vectors = normalize_rows(embeddings)
        summary = EncoderSummary("precomputed", "embeddings passed to audit()", vectors.shape[1], "n/a", None, 0, 0)
        return vectors, summary, None
    if table.source is not None:
        # Each block is normalised as it is read and placed where the engine keeps the vectors
        # (on Ray, put in the object store): the column is never whole in this process on Ray, and
        # held once (not as the frame's copy plus the unit vectors) on the local engine.
        blocks = (normalize_rows(block, in_place=True) for block in table.source.vector_blocks())
        vectors = engine.place_blocks(blocks, table.n_rows)
        source = f"column '{config.input.embedding_col}'"
        return vectors, EncoderSummary("precomputed", source, vectors.dim, "n/a", None, 0, 0), None
    if table.embeddings is not None:
        # The table's own matrix, nobody else's array: normalised in place where it is a copy (a
        # column of another value type), so the vectors are not held twice (1.5 GB per million
        # 384-d rows). A float32 column is read as a read-only view of the frame's buffer, which
        # normalize_rows leaves alone: returned as it is when already unit length, else copied.
        vectors = normalize_rows(table.embeddings, in_place=True)
        return (
            vectors,
            EncoderSummary(
                "precomputed", f"column '{config.input.embedding_col}'", vectors.shape[1], "n/a", None, 0, 0
            ),
            None,
        )
    from credaudit.encoders.registry import get_encoder
    from credaudit.features import Embeddings, embed_texts

    cfg = config.encoder

    candidates = None
    # Whole-corpus encoders (tfidf) embed every row to be judged by auto; the winner's result is kept.
    whole_corpus: dict[str, Embeddings] = {}

    def embed_candidate(enc: Encoder, texts: Sequence[str]) -> np.ndarray:
        result = embed_texts(texts, enc, cache=_cache_for(config, enc))
        if getattr(enc, "whole_corpus", False):
            whole_corpus[enc.name] = result
        return result.vectors

    if encoder is not None:
        enc = encoder
    elif cfg.name == "auto":
        from credaudit.encoders.auto import choose_encoder

        enc, candidates = choose_encoder(
            table.texts,
            labels,
            lambda name: get_encoder(name, device=device, batch_size=cfg.batch_size, precision=cfg.precision),
            embed_candidate,
            sample_size=cfg.auto_sample,
            seed=config.seed,
        )
    else:
        enc = get_encoder(cfg.name, device=device, batch_size=cfg.batch_size, precision=cfg.precision)
    # A named encoder (auto's choice included) is built where the engine runs it; an instance
    # from the API travels as a copy (factory None).
    factory = None
    if encoder is None:
        name = enc.name if cfg.name == "auto" else cfg.name
        factory = functools.partial(build_encoder, name, cfg.device, cfg.batch_size, cfg.precision)
    result = whole_corpus.get(enc.name) or embed_texts(
        table.texts, enc, cache=_cache_for(config, enc), progress=progress, engine=engine, factory=factory
    )
    summary = EncoderSummary(
        enc.name,
        enc.source,
        enc.dimension,
        enc.device,
        enc.fingerprint,
        result.n_cached,
        result.n_embedded,
        [c.to_dict() for c in candidates] if candidates else None,
        getattr(enc, "precision", "n/a"),  # plug-ins need not say
    )
    return result.vectors, summary, enc


def build_encoder(name: str, device: str, batch_size: int | None, precision: str) -> Encoder:
    """An encoder from its settings, the device resolved where it is built (e.g. in a Ray actor)."""
    from credaudit.encoders.registry import get_encoder

    return get_encoder(name, device=resolve_device(device), batch_size=batch_size, precision=precision)


def _issues_frame(
    table: Table, codec: LabelCodec, detection: Detection, config: ScanConfig, hygiene: Hygiene
) -> pl.DataFrame:
    label_dtype = table.frame.schema[config.input.label_col]
    groups = hygiene.duplicate_groups
    leakage = hygiene.leakage
    leaked = {}
    if leakage is not None:
        leaked = {
            "leaked_from": pl.Series(
                [leakage.references[s] if s >= 0 else None for s in leakage.source.tolist()], dtype=pl.String
            ),
            "leaked_row_id": pl.Series([str(r) if r is not None else None for r in leakage.row_id], dtype=pl.String),
            "leak_similarity": pl.Series(np.round(leakage.similarity, 4)).fill_nan(None),  # NaN where no leak
        }
    return pl.DataFrame(
        {
            "row_id": table.row_ids,
            "given_label": pl.Series(table.label_values, dtype=label_dtype),
            "suggested_label": pl.Series(codec.decode(detection.suggested_label), dtype=label_dtype),
            "suggestion_confidence": detection.suggestion_confidence,
            "error_score": detection.error_score,
            "flag_rate": detection.flag_rate,
            "is_label_error": detection.is_label_error,
            "neighbour_agreement": detection.neighbour_agreement,
            "outlier_score": np.round(hygiene.outliers.score, 4),
            "is_outlier": hygiene.outliers.is_outlier,
            "duplicate_group": pl.Series(groups).set(pl.Series(groups < 0), None),
            **leaked,
        }
    )


def _peak_memory_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return round(peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024, 1)


def score_histogram(scores: np.ndarray, flagged: np.ndarray, n_bins: int = 20) -> dict:
    """Counts of error scores in equal bins over [0, 1], flagged and unflagged rows apart."""
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    finite = np.nan_to_num(scores, nan=0.0)
    return {
        "edges": edges.round(4).tolist(),
        "flagged": np.histogram(finite[flagged], bins=edges)[0].tolist(),
        "unflagged": np.histogram(finite[~flagged], bins=edges)[0].tolist(),
        "lowest_flagged_score": float(finite[flagged].min()) if flagged.any() else None,
    }


def _cleaning_plan(
    config: ScanConfig,
    labels: np.ndarray,
    detection: Detection,
    *,
    n_classes: int,
    trusted: bool,
    duplicate_groups: np.ndarray,
    mode: str | None = None,
    min_confidence: float | None = None,
) -> CleaningPlan:
    """The guarded cleaning plan (cleaning.py) with the config's settings; ``mode`` and
    ``min_confidence`` override the config's. ``dedupe`` drops all but the first row of each
    near-duplicate group and changes no label."""
    out = config.output
    if (mode or out.clean) == "dedupe":
        none = np.zeros(len(labels), dtype=bool)
        return CleaningPlan("dedupe", dedupe_mask(duplicate_groups, avoid=detection.is_label_error), none, none.copy())
    return plan_cleaning(
        labels,
        detection.is_label_error,
        detection.error_score,
        detection.suggestion_confidence,
        n_classes=n_classes,
        mode=mode or out.clean,
        min_confidence=out.min_confidence if min_confidence is None else min_confidence,
        trusted=trusted,
        max_class_share=out.max_clean_share,
        force=out.force_clean,
    )


def _effective_config(config: ScanConfig) -> dict[str, Any]:
    """The config as run: defaults that depend on the environment are resolved (the cache directory)."""
    from credaudit.encoders.cache import default_cache_dir

    effective = config.to_dict()
    if config.encoder.cache and config.encoder.cache_dir is None:
        effective["encoder"]["cache_dir"] = str(default_cache_dir())
    return effective


def _build_report(
    table: Table,
    codec: LabelCodec,
    labels: np.ndarray,
    encoder: EncoderSummary,
    graph: NeighborGraph,
    estimate: NoiseEstimate,
    detection: Detection,
    findings: list[Finding],
    config: ScanConfig,
    times: StageTimes,
    trust: TrustAssessment,
    baseline: dict | None,
    hygiene: Hygiene,
    recall: tuple[float, int] = (1.0, 0),
    engine: dict[str, Any] | None = None,
) -> tuple[AuditReport, list[CheckResult]]:
    """The report and its gate checks (the regression gate needs the finished noise section)."""
    n_classes = codec.n_classes
    names = codec.names()
    counts = np.bincount(labels, minlength=n_classes)
    flagged = detection.is_label_error
    cfg = config.input
    run = {
        "input": {
            "path": str(table.path),
            "sha256": table.sha256,
            "format": table.format.kind + (".gz" if table.format.gzip else ""),
            "rows": table.n_rows,
            "rows_dropped_unlabelled": table.n_dropped_unlabelled,
            "empty_texts": table.n_empty_texts,
            "columns_used": {
                "text": list(table.text_cols),
                "label": cfg.label_col,
                "id": cfg.id_col,
                "embedding": cfg.embedding_col,
            },
        },
        "encoder": {
            "name": encoder.name,
            "source": encoder.source,
            "dimension": encoder.dimension,
            "device": encoder.device,
            "precision": encoder.precision,
            "fingerprint": encoder.fingerprint,
            "cached_texts": encoder.n_cached,
            "embedded_texts": encoder.n_embedded,
            "auto_candidates": encoder.auto_candidates,
        },
        "graph": {
            "method": graph.method,
            "neighbours_stored": graph.k,
            "recall_at_k": recall[0],
            "recall_rows_sampled": recall[1],
        },
        "engine": engine or {"name": "local"},
        "seed": config.seed,
        "config": _effective_config(config),
        "stage_seconds": times.seconds,
        "peak_memory_mb": _peak_memory_mb(),
    }
    classes = [
        {"label": value, "name": name, "count": int(counts[j]), "observed_prior": float(estimate.observed_prior[j])}
        for j, (value, name) in enumerate(zip(codec.values, names, strict=True))
    ]
    noise = {
        "transition_matrix": {
            "orientation": T_ORIENTATION,
            "labels": names,
            "values": np.round(estimate.transition_matrix, 6).tolist(),
        },
        "clean_prior": np.round(estimate.clean_prior, 6).tolist(),
        "noise_rate": estimate.noise_rate.to_dict(),
        "credibility": estimate.credibility.to_dict(),
        "per_class": [
            {
                "label": names[j],
                "rows": int(counts[j]),
                "noise_rate": estimate.class_noise_rate[j].to_dict(),
                "observed_label_error_rate": estimate.observed_error_rate[j].to_dict(),
                "diagonally_dominant": bool(estimate.is_diagonally_dominant[j]),
            }
            for j in range(n_classes)
        ],
        "confidence_level": estimate.confidence_level,
        "knn_label_agreement": trust.knn_agreement,
        "trustworthy": trust.trusted,
        "trust": trust.to_dict(),
        "fit": {
            "loss": estimate.fit.loss,
            "restart_losses": list(estimate.fit.restart_losses),
            "n_restarts": len(estimate.fit.restart_losses),
            "n_bootstrap": estimate.n_bootstrap,
            "triple_share": estimate.triple_share,
            "triples_used": estimate.n_triples,
            "diagonally_dominant": estimate.is_diagonally_dominant.tolist(),
        },
    }
    order = np.lexsort((-detection.flag_rate, -detection.error_score))
    top = [int(i) for i in order if flagged[i]][: config.output.top_rows]
    texts = table.texts
    detection_section = {
        "method": detection.method,
        "fallback": detection.fallback,
        "k": detection.k,
        "rounds": detection.n_rounds,
        "propagation_steps": config.detect.propagation_steps,
        "flagged": int(flagged.sum()),
        "flagged_rate": float(flagged.mean()),
        "error_score_histogram": score_histogram(detection.error_score, flagged),
        "flagged_per_class": [
            {"label": names[j], "flagged": int((flagged & (labels == j)).sum())} for j in range(n_classes)
        ],
        "top_flagged": [
            {
                "row_id": table.row_ids[int(i)],
                "given_label": table.label_values[int(i)],
                "suggested_label": codec.values[detection.suggested_label[i]],
                "suggestion_confidence": round(float(detection.suggestion_confidence[i]), 4),
                "error_score": round(float(detection.error_score[i]), 4),
                "excerpt": excerpt(texts[int(i)] if texts is not None else None, config.output.excerpt_chars),
            }
            for i in top
        ],
    }
    plan = _cleaning_plan(
        config, labels, detection, n_classes=n_classes, trusted=trust.trusted, duplicate_groups=hygiene.duplicate_groups
    )
    detection_section["cleaning"] = plan.to_dict(labels, names)
    comparison = (
        compare_reports(baseline, {"noise": noise, "detection": detection_section}, before_path=config.gates.baseline)
        if baseline is not None
        else None
    )
    checks = evaluate_gates(
        config.gates,
        estimate,
        int(flagged.sum()),
        table.n_rows,
        comparison,
        trusted=trust.trusted,
        hygiene=hygiene.counts(),
    )
    shown = dict(top=config.output.top_rows, excerpt_chars=config.output.excerpt_chars)
    hygiene_section = {
        "outliers": outlier_summary(hygiene.outliers, labels, names, table.row_ids, texts, **shown),
        "near_duplicates": duplicate_summary(
            hygiene.duplicate_groups,
            labels,
            names,
            table.row_ids,
            texts,
            threshold=config.hygiene.near_duplicate_threshold,
            **shown,
        ),
        "leakage": None if hygiene.leakage is None else leakage_summary(hygiene.leakage, table.row_ids, texts, **shown),
    }
    report = AuditReport(
        tool_version=__version__,
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        run=run,
        classes=classes,
        noise=noise,
        detection=detection_section,
        findings=[f.to_dict() for f in findings],
        checks=[c.to_dict() for c in checks],
        verdict=verdict(checks, strict=config.gates.strict, warnings=any(f.severity == "warning" for f in findings)),
        baseline=comparison,
        hygiene=hygiene_section,
    )
    return report, checks


def output_dir(config: ScanConfig, data_path: Path) -> Path:
    """The output directory: ``--out`` or ``./credaudit-out/<data stem>/``."""
    return out_dir_for(config.output.out, data_path)


def output_names(fmt: DataFormat, *, html: bool = True) -> list[str]:
    """Names of the files written into the output directory (the cleaned copy in the input's
    format; a directory of parts for a directory input)."""
    return [fmt.parts_name("cleaned"), "issues.parquet", "report.json", "report.md"] + (["report.html"] if html else [])


def _ranked_flags(detection: Detection) -> np.ndarray:
    return rank_flagged(
        detection.is_label_error, detection.error_score, detection.neighbour_agreement, detection.flag_rate
    )


def suspicious_rows(result: AuditResult, limit: int) -> list[dict[str, Any]]:
    """The ``limit`` flagged rows a reviewer should see first, with text excerpts."""
    detection, table = result.detection, result.table
    order = _ranked_flags(detection)[:limit]
    return [
        {
            "row_id": table.row_ids[int(i)],
            "given_label": table.label_values[int(i)],
            "suggested_label": result.codec.values[detection.suggested_label[i]],
            "suggestion_confidence": float(detection.suggestion_confidence[i]),
            "error_score": float(detection.error_score[i]),
            "neighbour_agreement": float(detection.neighbour_agreement[i]),
            "excerpt": excerpt(table.texts[int(i)] if table.texts is not None else None, 300),
        }
        for i in order
    ]


def review_queue(result: AuditResult) -> pl.DataFrame:
    """Every flagged row, most suspicious first, with its neighbours' labels (review.py)."""
    detection, table = result.detection, result.table
    rows = _ranked_flags(detection)
    labels = result.labels
    # The flagged rows' neighbours only, fetched from where the engine keeps the graph.
    neighbours = take_rows(result.engine, result.graph.edges, rows, dtype=GRAPH_DTYPE)["index"][:, : detection.k]
    neighbour_codes = np.where(neighbours >= 0, labels[np.maximum(neighbours, 0)], -1)
    names = [str(v) for v in result.codec.values]
    return review_frame(
        rows,
        row_ids=table.row_ids,
        given=table.label_values,
        suggested=result.issues.get_column("suggested_label").to_list(),
        suggestion_confidence=detection.suggestion_confidence,
        error_score=detection.error_score,
        neighbour_agreement=detection.neighbour_agreement,
        neighbour_labels=neighbour_label_summary(neighbour_codes, names),
        texts=table.texts,
    )


def write_review_files(result: AuditResult, paths: Sequence[str]) -> list[Path]:
    """Write the review queue to each path, each file atomically: CSV, or Label Studio tasks + config."""
    queue = review_queue(result)
    written = []
    for name in paths:
        path = Path(name)
        if path.suffix.lower() == ".csv":
            atomic_write_file(path, lambda target: write_review_csv(queue, target))
        else:
            tasks = json.dumps(label_studio_tasks(queue), ensure_ascii=False, indent=1)
            atomic_write_file(path, write_text(tasks + "\n"))
            names = [str(v) for v in result.codec.values]
            atomic_write_file(review_config_path(path), write_text(label_studio_config(names)))
            written.append(review_config_path(path))
        written.append(path)
    return written


def prepare_outputs(config: ScanConfig, path: Path, names: list[str]) -> Path:
    """Check the output directory (for ``names``) and the ``--junit`` file before any work; the directory.

    Every kind of scan calls this first, so a bad ``--out`` fails in a second, not after the embedding.
    """
    out = output_dir(config, path)
    check_out_dir(out, path, names)
    if config.output.junit:
        check_out_file(Path(config.output.junit), path, flag="--junit")
    return out


def write_output_set(out_dir: Path, writers: dict[str, Any], report: Any, config: ScanConfig) -> list[Path]:
    """Write ``writers`` into ``out_dir`` as one atomic set (io.write_outputs), then the JUnit file if asked.

    ``report``: any report with ``checks`` and ``verdict`` (single-label, crowd, pairs). The JUnit
    file lives wherever ``--junit`` says and is written atomically on its own.
    """
    written = write_outputs(out_dir, writers, replace_previous=True)
    if config.output.junit:
        from credaudit.report.junit import render_junit

        gates = config.gates
        junit_text = render_junit(report, strict=gates.strict, allow_inconclusive=gates.allow_inconclusive)
        atomic_write_file(Path(config.output.junit), write_text(junit_text))
        written.append(Path(config.output.junit))
    return written


def write_scan_outputs(result: AuditResult, out_dir: Path) -> list[Path]:
    """Write cleaned.<ext>, issues.parquet, report.json, report.md (and report.html) into ``out_dir``.

    All files are staged and moved into place together (io.write_outputs); the JUnit file, which
    lives wherever ``--junit`` says, is written atomically on its own.
    """
    cleaned_name, write_cleaned = result.table.output("cleaned", *result._cleaned())
    output = result.config.output
    writers: dict[str, Any] = {
        cleaned_name: write_cleaned,
        "issues.parquet": lambda path: result.issues.write_parquet(path),
        "report.json": write_text(render_json(result.report)),
        "report.md": write_text(render_markdown(result.report)),
    }
    if output.html:
        from credaudit.report.html import render_html

        writers["report.html"] = write_text(render_html(result.report, suspicious_rows(result, output.html_rows)))
    written = write_output_set(out_dir, writers, result.report, result.config)
    return written + write_review_files(result, output.review)


def scan(data: str | Path, config: ScanConfig, *, progress: Progress | None = None) -> tuple[AuditResult, list[Path]]:
    """Audit a file and write every output: what ``credaudit scan`` does.

    The output locations are checked before any work (so a bad ``--out`` fails in a second, not
    after the embedding), and written only after the audit succeeded.
    """
    path = Path(data)
    out = prepare_outputs(config, path, output_names(detect_format(path), html=config.output.html))
    for name in config.hygiene.reference:
        if not Path(name).exists():
            raise DataReadError(f"--reference {name} does not exist")
    if config.hygiene.reference and config.encoder.name == "tfidf":
        raise UsageError(
            "--reference cannot be used with --encoder tfidf: it is fitted on the input alone, so a reference file "
            "would not share its space; choose minilm or static"
        )
    if (config.gates.max_leakage is not None or config.gates.warn_max_leakage is not None) and not (
        config.hygiene.reference
    ):
        raise UsageError("--max-leakage / --warn-max-leakage need --reference: leakage is measured against it")
    for review in config.output.review:
        if Path(review).suffix.lower() not in REVIEW_FORMATS:
            raise UsageError(f"--review {review}: name a .csv file (to fill in) or a .json file (Label Studio tasks)")
        check_out_file(Path(review), path, flag="--review")
    result = audit(path, config, progress=progress)
    return result, write_scan_outputs(result, out)


def apply_review(reviewed: str | Path, data: str | Path, config: ScanConfig, *, out: Path | None = None) -> str:
    """Write DATA with the decisions of a reviewed queue applied: what ``credaudit apply`` does.

    The whole file is rewritten, rows without a decision as they are (unlabelled rows too, which a
    scan with ``--drop-unlabelled`` skipped); rows are matched by the scan's row ids (the
    ``--id-col`` value, or the 0-based row number). The result goes to ``out`` (default:
    ``./credaudit-out/<data stem>/reviewed.<ext>``) in the data's own format, atomically. Returns
    the one-line summary.

    Raises
    ------
    CredauditError
        The review file or the data cannot be read, a decision does not fit the data (review.py),
        or ``out`` cannot be written.
    """
    data_path = Path(data)
    fmt = replace(detect_format(data_path), encoding=config.input.encoding)
    target = Path(out) if out else default_out_dir(data_path) / fmt.file_name("reviewed")
    check_out_file(target, data_path, flag="--out")
    decisions = read_review(Path(reviewed))
    cfg = config.input
    frame = read_frame(data_path, fmt)
    require_columns(frame, [(cfg.label_col, "--label-col"), (cfg.id_col, "--id-col")], data_path.name)
    row_ids = frame.get_column(cfg.id_col).to_list() if cfg.id_col else list(range(frame.height))
    updated, summary = apply_decisions(
        frame,
        row_ids=row_ids,
        label_values=frame.get_column(cfg.label_col).to_list(),
        label_col=cfg.label_col,
        review=decisions,
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_file(target, lambda path: write_frame(updated, path, fmt))
    return summary.describe(data_path, target)
