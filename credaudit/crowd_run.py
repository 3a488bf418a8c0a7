"""``credaudit scan`` on several labels per item: read (crowd.py), features, estimate (annotators.py), gate, write.

The wiring only: the adapter turns the input into answer arrays, the shared engine estimates, and
this module turns the results back into rows (``items.parquet``, ``annotators.parquet``, the
cleaned copy) and one report object every renderer reads.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from credaudit import __version__
from credaudit.annotators import (
    CrowdEstimate,
    copy_scores,
    estimate_crowd,
    profile_annotators,
    suspect_reasons,
)
from credaudit.config import CrowdConfig, ScanConfig
from credaudit.crowd import CrowdTable, read_crowd
from credaudit.errors import UsageError
from credaudit.gates import CheckResult, Status, count_check, interval_check, verdict
from credaudit.io import (
    DataFormat,
    detect_format,
    frame_output,
    write_text,
)
from credaudit.pipeline import StageTimes, config_engine, knn_graph, prepare_outputs, row_vectors, write_output_set
from credaudit.progress import NullProgress, Progress
from credaudit.report.model import T_ORIENTATION

CROWD_SCHEMA_VERSION = 1
SUSPECT_REASONS = {
    "biased": "gives one label whatever the item",
    "spammer": "answers carry next to no information about the item (accuracy near chance)",
    "copier": "follows the reference labeller where the other annotators disagree with it",
}


@dataclass(frozen=True)
class CrowdReport:
    """The multi-annotator report: ``to_dict()`` is report.json."""

    tool_version: str
    created_at: str
    run: dict[str, Any]
    noise: dict[str, Any]
    items: dict[str, Any]
    annotators: dict[str, Any]
    findings: list[dict[str, Any]]
    checks: list[dict[str, Any]]
    verdict: str
    schema_version: int = CROWD_SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "multi_annotator",
            "schema_version": self.schema_version,
            "tool_version": self.tool_version,
            "created_at": self.created_at,
            "run": self.run,
            "noise": self.noise,
            "items": self.items,
            "annotators": self.annotators,
            "findings": self.findings,
            "checks": self.checks,
            "verdict": self.verdict,
        }


@dataclass(frozen=True)
class CrowdResult:
    """Everything a multi-annotator audit produced."""

    table: CrowdTable
    config: ScanConfig
    estimate: CrowdEstimate
    items: pl.DataFrame
    annotators: pl.DataFrame
    report: CrowdReport
    checks: list[CheckResult] = field(default_factory=list)

    def cleaned(self) -> pl.DataFrame:
        """The input with each row's consensus label; ``--clean drop`` leaves out uncertain items."""
        return self._cleaned()[0]

    def _cleaned(self) -> tuple[pl.DataFrame, np.ndarray]:
        """(the cleaned frame, which input rows it keeps)."""
        table = self.table
        item_cols = self.items.select("consensus_label", "consensus_confidence", "is_uncertain")
        per_row = item_cols[table.row_items.tolist()]
        frame = table.frame.with_columns(
            per_row.get_column("consensus_label").alias(_free(table.frame, "consensus_label")),
            per_row.get_column("consensus_confidence").alias(_free(table.frame, "consensus_confidence")),
        )
        keep = np.ones(frame.height, dtype=bool)
        if self.config.crowd.drop_annotators == "suspect" and table.shape == "long":
            dropped = self.annotators.filter(pl.col("suspect").is_not_null()).get_column("annotator").to_list()
            if dropped:
                who = table.frame.get_column(self.config.crowd.annotator_col).cast(pl.String)
                keep &= ~who.is_in(dropped).to_numpy()
        if self.config.output.clean == "drop":
            keep &= ~per_row.get_column("is_uncertain").to_numpy()
        return frame.filter(pl.Series(keep)), keep


def _free(frame: pl.DataFrame, name: str) -> str:
    """``name``, or ``credaudit_<name>`` when the input already has such a column."""
    return name if name not in frame.columns else f"credaudit_{name}"


def _check_options(config: ScanConfig) -> None:
    if config.output.clean not in ("drop", "flag"):
        raise UsageError(
            f"--clean {config.output.clean} is for single labels; with several labels per item the cleaned file "
            "carries the consensus label, and --clean is drop (leave out uncertain items) or flag (keep every row)"
        )
    for option, value in (("--review", config.output.review), ("--reference", config.hygiene.reference)):
        if value:
            raise UsageError(f"{option} is not available with several labels per item yet")
    if config.gates.baseline or config.gates.max_regression is not None:
        raise UsageError("--baseline is not available with several labels per item yet")


def audit_crowd(data: str | Path, config: ScanConfig, *, progress: Progress | None = None) -> CrowdResult:
    """Audit a multi-annotator file (nothing written)."""
    progress = progress or NullProgress()
    _check_options(config)
    cfg = config.crowd
    times = StageTimes()
    started = time.perf_counter()
    path = Path(data)
    with times.stage("read"):
        table = read_crowd(path, config)
    answers = table.answers

    graph, encoder = None, None
    has_features = table.texts is not None or table.embeddings is not None
    if cfg.use_texts and has_features:
        engine = config_engine(config)
        with times.stage("embed"):
            majority = _majority(answers.item, answers.label, answers.n_items, answers.n_classes, None)
            vectors, encoder = row_vectors(table.item_table(), majority, config, progress, engine)
        with times.stage("graph"):
            graph = knn_graph(vectors, config, k=config.detect.k, engine=engine, progress=progress)
    # The annotator model's EM runs here, with the items' whole graph as its neighbour prior.
    neighbors = (None, None) if graph is None else graph.gathered(engine)

    def estimate(of):
        return estimate_crowd(
            of,
            neighbor_indices=neighbors[0],
            neighbor_similarities=neighbors[1],
            shrinkage=cfg.shrinkage,
            n_bootstrap=cfg.n_bootstrap,
            confidence_level=config.noise.confidence_level,
            seed=config.seed,
            progress=progress,
        )

    with times.stage("estimate"):
        est = estimate(answers)
        copy, copy_z, n_ref, profile, reasons = judge_annotators(est, answers, table.reference, cfg)
        suspect = np.array([r is not None for r in reasons])
        dropped = cfg.drop_annotators == "suspect" and bool(suspect.any())
        final, kept_answers = est, answers
        if dropped:
            kept_answers = answers.subset(~suspect[answers.annotator])
            if kept_answers.n_answers == 0:
                raise UsageError("--drop-annotators suspect would remove every answer; every annotator is suspect")
            final = estimate(kept_answers)

    items = _items_frame(table, final, kept_answers, cfg.min_posterior)
    annotators = _annotators_frame(table, est, profile, copy, copy_z, n_ref, reasons)
    findings = _findings(table, est, reasons, graph is not None, has_features and not cfg.use_texts)
    checks = _checks(final, annotators, config)
    settings = config.to_dict()
    report = CrowdReport(
        tool_version=__version__,
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        run={
            "input": {
                "path": str(path),
                "sha256": table.sha256,
                "format": table.format.kind + (".gz" if table.format.gzip else ""),
                "shape": table.shape,
                "rows": table.frame.height,
                "items": answers.n_items,
                "answers": answers.n_answers,
                "annotators": answers.n_annotators,
                "classes": table.codec.n_classes,
                "items_with_reference": int((table.reference >= 0).sum()),
                "empty_texts": table.n_empty_texts,
            },
            "features": None
            if graph is None
            else {
                "encoder": encoder,
                "k": graph.k,
                "graph": graph.method,
                "neighbor_weight": final.fit.neighbor_weight,
            },
            "seed": config.seed,
            "config": {name: settings[name] for name in ("crowd", "gates", "output")},
            "stage_seconds": {**times.seconds, "total": round(time.perf_counter() - started, 3)},
            "seconds": round(time.perf_counter() - started, 3),
        },
        noise=_noise_section(table, final),
        items=_items_section(items, table, config),
        annotators={
            "rows": annotators.to_dicts(),
            "n_suspect": int(suspect.sum()),
            "suspect_reasons": {r: SUSPECT_REASONS[r] for r in sorted({x for x in reasons if x})},
            "dropped": dropped,
            "min_answers_to_judge": cfg.min_answers,
        },
        findings=findings,
        checks=[c.to_dict() for c in checks],
        verdict=verdict(checks, strict=config.gates.strict, warnings=any(f["severity"] == "warning" for f in findings)),
    )
    return CrowdResult(table, config, final, items, annotators, report, checks)


def judge_annotators(est: CrowdEstimate, answers, reference: np.ndarray, cfg: CrowdConfig):
    """Copy scores, profiles and suspect reasons of a fit, with the thresholds of ``cfg``.

    Returns (copy_score, copy_z, n_reference, profile, reasons), as annotators.copy_scores,
    annotators.profile_annotators and annotators.suspect_reasons give them.
    """
    copy, copy_z, n_ref = copy_scores(est.fit, answers, reference)
    profile = profile_annotators(est.fit, answers, est.accuracy)
    reasons = suspect_reasons(
        profile,
        est.fit.prior,
        copy,
        copy_z,
        min_answers=cfg.min_answers,
        spammer_kappa=cfg.spammer_kappa,
        biased_share=cfg.biased_share,
        copier_z=cfg.copier_z,
        copier_share=cfg.copier_share,
    )
    return copy, copy_z, n_ref, profile, reasons


def _majority(item: np.ndarray, label: np.ndarray, n_items: int, n_classes: int, posterior) -> np.ndarray:
    """Each item's most frequent answer; ties go to the higher posterior (or the lower code without one)."""
    votes = np.zeros((n_items, n_classes))
    np.add.at(votes, (item, label), 1.0)
    if posterior is not None:
        votes = votes + 1e-6 * posterior  # a tie-break only: posteriors are at most 1
    return votes.argmax(axis=1)


def _items_frame(table: CrowdTable, est: CrowdEstimate, answers, min_posterior: float) -> pl.DataFrame:
    post = est.fit.posterior
    consensus = post.argmax(axis=1)
    confidence = post.max(axis=1)
    n = np.bincount(answers.item, minlength=answers.n_items)
    agree = np.bincount(answers.item, weights=answers.label == consensus[answers.item], minlength=answers.n_items)
    majority = _majority(answers.item, answers.label, answers.n_items, answers.n_classes, post)
    values = table.codec.values
    return pl.DataFrame(
        {
            "item_id": pl.Series(table.item_ids, strict=False),
            "consensus_label": pl.Series([values[c] for c in consensus], strict=False),
            "consensus_confidence": confidence,
            "n_annotations": n.astype(np.int64),
            "agreement": np.where(n > 0, agree / np.maximum(n, 1), np.nan),
            "majority_label": pl.Series(
                [values[c] if k else None for c, k in zip(majority, n, strict=True)], strict=False
            ),
            "majority_disagrees": (majority != consensus) & (n > 0),
            "is_uncertain": confidence < min_posterior,
        }
    )


def _annotators_frame(table, est, profile, copy, copy_z, n_ref, reasons) -> pl.DataFrame:
    names = table.codec.names()

    def pair(w: int) -> str | None:
        t, a = profile.worst_true[w], profile.worst_answer[w]
        return None if t < 0 else f"{names[t]} → {names[a]}"

    has_ref = bool((table.reference >= 0).any())
    return pl.DataFrame(
        {
            "annotator": table.annotator_names,
            "n_answers": profile.n_answers.astype(np.int64),
            "accuracy": est.accuracy,
            "accuracy_low": est.accuracy_low,
            "accuracy_high": est.accuracy_high,
            "agreement_with_consensus": profile.agreement,
            "kappa": profile.kappa,
            "worst_confusion": pl.Series(
                [pair(w) for w in range(len(names and table.annotator_names))], dtype=pl.String
            ),
            "n_reference_items": n_ref.astype(np.int64),
            "copy_score": copy if has_ref else np.full(len(table.annotator_names), np.nan),
            "copy_z": copy_z if has_ref else np.full(len(table.annotator_names), np.nan),
            "suspect": pl.Series(reasons, dtype=pl.String),
        }
    ).with_columns(pl.col("copy_score", "copy_z").fill_nan(None))


def _noise_section(table: CrowdTable, est: CrowdEstimate) -> dict[str, Any]:
    fit = est.fit
    estimate, low, high = est.noise_rate
    return {
        "orientation": T_ORIENTATION,
        "class_names": table.codec.names(),
        "noise_rate": {"estimate": estimate, "low": low, "high": high},
        "noise_rate_meaning": "share of single answers that are wrong",
        "transition_matrix": {"labels": table.codec.names(), "values": fit.pooled.tolist()},
        "consensus_transition_matrix": None
        if est.consensus_transition is None
        else {"labels": table.codec.names(), "values": est.consensus_transition.tolist()},
        "credibility": est.credibility,
        "clean_prior": fit.prior.tolist(),
        "items_with_three_answers": est.n_triple_items,
        "n_bootstrap": est.n_bootstrap,
        "annotator_model": est.model,
        "annotator_model_aic": est.aic,
        "method": (
            "Dawid–Skene EM started from the within-item consensus T; "
            + (
                "a confusion matrix per annotator, shrunk toward their one-coin version"
                if est.model == "full"
                else "one accuracy per annotator (one-coin), errors spread evenly"
            )
            + " (chosen by Akaike's criterion)"
            + (", with the items' neighbours as a prior" if fit.neighbor_prior is not None else "")
        ),
    }


def _items_section(items: pl.DataFrame, table: CrowdTable, config: ScanConfig) -> dict[str, Any]:
    n = items.height
    counts = items.get_column("consensus_label").value_counts(sort=False)
    distribution = dict(
        zip(map(str, counts.get_column("consensus_label").to_list()), counts.get_column("count").to_list(), strict=True)
    )
    worst = items.sort("consensus_confidence").head(config.output.top_rows)
    return {
        "n_items": n,
        "n_uncertain": int(items.get_column("is_uncertain").sum()),
        "n_majority_disagrees": int(items.get_column("majority_disagrees").sum()),
        "min_posterior": config.crowd.min_posterior,
        "mean_answers": float(items.get_column("n_annotations").mean()),
        "mean_confidence": float(items.get_column("consensus_confidence").mean()),
        "consensus_distribution": {name: distribution.get(name, 0) for name in table.codec.names()},
        "least_certain": [
            {
                **row,
                "item_id": row["item_id"],
                "consensus_label": str(row["consensus_label"]),
                "majority_label": None if row["majority_label"] is None else str(row["majority_label"]),
            }
            for row in worst.to_dicts()
        ],
    }


def _findings(table: CrowdTable, est: CrowdEstimate, reasons, used_graph: bool, features_off: bool) -> list[dict]:
    findings = []
    counts = {r: reasons.count(r) for r in SUSPECT_REASONS if r in reasons}
    if counts:
        plural = {"biased": "biased", "spammer": "spammers", "copier": "copiers"}
        listed = ", ".join(f"{n} {r if n == 1 else plural[r]}" for r, n in counts.items())
        findings.append(
            {
                "severity": "warning",
                "code": "suspect_annotators",
                "message": f"suspect annotators: {listed} (see the annotator table)",
            }
        )
    if est.consensus_transition is None:
        findings.append(
            {
                "severity": "info",
                "code": "few_triples",
                "message": f"only {est.n_triple_items} item(s) have three or more answers: T was not fitted from "
                "within-item consensus; the fit started from 'annotators are right 70% of the time'",
            }
        )
    if table.annotator_names == ["(anonymous)"]:
        findings.append(
            {
                "severity": "info",
                "code": "anonymous",
                "message": "no annotator ids (--annotators-col): "
                "every answer is treated as coming from one pool, so no per-annotator quality",
            }
        )
    if used_graph and est.fit.neighbor_weight < 0.05:
        findings.append(
            {
                "severity": "info",
                "code": "weak_features",
                "message": "the items' neighbours say little "
                f"about their class (weight {est.fit.neighbor_weight:.2f}): the consensus rests on the answers",
            }
        )
    if features_off:
        findings.append(
            {
                "severity": "info",
                "code": "texts_unused",
                "message": "texts given but crowd.use_texts is false: the consensus rests on the answers alone",
            }
        )
    return findings


def _checks(est: CrowdEstimate, annotators: pl.DataFrame, config: ScanConfig) -> list[CheckResult]:
    gates, min_answers = config.gates, config.crowd.min_answers
    pessimistic = gates.gate_on == "bound"
    checks = [
        interval_check(
            "max_noise_rate",
            "noise_rate",
            "share of wrong answers",
            est.noise_rate,
            gates.max_noise_rate,
            gates.warn_max_noise_rate,
            upper=True,
            pessimistic=pessimistic,
        )
    ]
    fail, warn = gates.min_annotator_accuracy, gates.warn_min_annotator_accuracy
    judged = annotators.filter(pl.col("n_answers") >= min_answers)
    if judged.height == 0 and (fail is not None or warn is not None):
        checks.append(
            CheckResult(
                "min_annotator_accuracy",
                "annotator_accuracy",
                None,
                "estimate",
                fail,
                warn,
                Status.SKIPPED,
                message=f"no annotator has {min_answers} answers",
            )
        )
    else:
        # The annotator that decides the gate: lowest at the compared end of its interval.
        worst = judged.sort("accuracy_low" if pessimistic else "accuracy").row(0, named=True) if judged.height else {}
        checks.append(
            interval_check(
                "min_annotator_accuracy",
                "annotator_accuracy",
                f"lowest annotator accuracy ({worst.get('annotator')}, {worst.get('n_answers')} answers; "
                f"annotators with at least {min_answers} answers)",
                (worst.get("accuracy"), worst.get("accuracy_low"), worst.get("accuracy_high")),
                fail,
                warn,
                upper=False,
                pessimistic=pessimistic,
            )
        )
    n_suspect = int(annotators.get_column("suspect").is_not_null().sum())
    checks.append(
        count_check(
            "max_suspect_annotators",
            "suspect annotators",
            n_suspect,
            annotators.height,
            gates.max_suspect_annotators,
            gates.warn_max_suspect_annotators,
        )
    )
    return checks


def output_names(fmt: DataFormat, *, html: bool = True) -> list[str]:
    names = [fmt.parts_name("cleaned"), "items.parquet", "annotators.parquet", "report.json", "report.md"]
    return names + (["report.html"] if html else [])


def scan_crowd(
    data: str | Path, config: ScanConfig, *, progress: Progress | None = None
) -> tuple[CrowdResult, list[Path]]:
    """Audit a multi-annotator file and write every output (checked before any work, written after)."""
    path = Path(data)
    out = prepare_outputs(config, path, output_names(detect_format(path), html=config.output.html))
    result = audit_crowd(path, config, progress=progress)
    return result, write_crowd_outputs(result, out)


def write_crowd_outputs(result: CrowdResult, out_dir: Path) -> list[Path]:
    """cleaned.<ext>, items.parquet, annotators.parquet, report.json, report.md (and report.html), as one set."""
    from credaudit.report.crowd import render_crowd_html, render_crowd_markdown
    from credaudit.report.json import render_json

    fmt = result.table.format
    cleaned_name, write_cleaned = frame_output("cleaned", *result._cleaned(), fmt, result.table.parts)
    writers = {
        cleaned_name: write_cleaned,
        "items.parquet": lambda p: result.items.write_parquet(p),
        "annotators.parquet": lambda p: result.annotators.write_parquet(p),
        "report.json": write_text(render_json(result.report)),
        "report.md": write_text(render_crowd_markdown(result.report)),
    }
    if result.config.output.html:
        writers["report.html"] = write_text(render_crowd_html(result.report))
    return write_output_set(out_dir, writers, result.report, result.config)
