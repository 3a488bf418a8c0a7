"""``credaudit fairness``: read and validate, audit (fairness.py), gate, report, write.

The command's wiring, as thin as ``scan``'s: validation at the boundary with messages naming the
column and row, one report object (``FairnessReport``) that every renderer reads, the gates of
gates.py, and the atomic output writer of io.py.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from credaudit import __version__
from credaudit.config import ScanConfig
from credaudit.errors import InputError, UsageError
from credaudit.fairness import METRIC_NAMES, METRICS, FairnessData, FairnessResult, audit_fairness, proxy_diagnostics
from credaudit.gates import CheckResult, Status, interval_check, verdict
from credaudit.io import (
    detect_format,
    file_sha256,
    out_dir_for,
    read_frame,
    require_columns,
    write_outputs,
    write_text,
)
from credaudit.progress import NullProgress, Progress

FAIRNESS_SCHEMA_VERSION = 1


def _binary(frame: pl.DataFrame, column: str, flag: str, name: str) -> np.ndarray:
    """A 0/1 column (bools, 0/1 numbers); an InputError naming the column and the values otherwise."""
    series = frame.get_column(column)
    nulls = series.is_null()
    if bool(nulls.any()):
        raise InputError(f"column '{column}' ({flag}) in {name} is empty at row {int(nulls.arg_true()[0])}")
    if series.dtype == pl.String and set(series.str.to_lowercase().unique().to_list()) <= {"true", "false"}:
        # A CSV's "TRUE"/"False" stays text (io: it would not write back as spelled); it is boolean here.
        series = series.str.to_lowercase() == "true"
    values = series.unique().to_list()
    if series.dtype.is_float() and bool(series.is_nan().any()):
        raise InputError(
            f"column '{column}' ({flag}) in {name} is empty (NaN) at row {int(series.is_nan().arg_true()[0])}"
        )
    if not (series.dtype == pl.Boolean or (series.dtype.is_numeric() and set(values) <= {0, 1})):
        shown = ", ".join(map(repr, sorted(values, key=str)[:5]))
        raise InputError(
            f"column '{column}' ({flag}) in {name} must be binary (0/1 or true/false) for the fairness gaps; "
            f"found {len(values)} values: {shown}"
        )
    if len(values) < 2:
        raise InputError(
            f"column '{column}' ({flag}) in {name} has one value ({values[0]!r}): the gaps compare rates of both values"
        )
    return series.cast(pl.Int64).to_numpy()


def _group_values(frame: pl.DataFrame, column: str) -> list[str | None]:
    """A group column as strings: NaN is null, whole-number floats read as ints (1.0 -> "1")."""
    series = frame.get_column(column)
    if series.dtype.is_float():
        series = series.fill_nan(None)
        finite = series.drop_nulls()
        if len(finite) and bool((finite == finite.round(0)).all()):
            series = series.cast(pl.Int64)
    return series.cast(pl.String).to_list()


def read_fairness_data(path: Path, config: ScanConfig) -> tuple[FairnessData, dict[str, Any]]:
    """Read and validate the columns ``credaudit fairness`` needs.

    Raises
    ------
    UsageError
        Fewer than three proxy columns, or no prediction column (exit 2).
    MissingColumnError, InputError, DataReadError
        A named column is missing, empty at a row, not binary, or a proxy has one value (exit 3).
    """
    cfg = config.fairness
    if cfg.pred_col is None:
        raise UsageError("credaudit fairness needs --pred-col (the binary prediction column)")
    if len(cfg.proxy_cols) < 3:
        raise UsageError(
            f"credaudit fairness needs at least three --proxy-col columns (got {len(cfg.proxy_cols)}): the proxies' "
            "errors are identified only from three or more of them"
        )
    if len(set(cfg.proxy_cols)) < len(cfg.proxy_cols):
        raise UsageError("each --proxy-col must name a different column")
    for column, flag in ((cfg.pred_col, "--pred-col"), (cfg.label_col, "--label-col"), (cfg.group_col, "--group-col")):
        if column is not None and column in cfg.proxy_cols:
            # A proxy that is the prediction (or the outcome, or the group itself) measures nothing.
            raise UsageError(f"--proxy-col {column} is also the {flag} column; a proxy must be another column")
    if cfg.label_col is None and (config.gates.max_eo_gap is not None or config.gates.warn_max_eo_gap is not None):
        raise UsageError("--max-eo-gap / --warn-max-eo-gap need --label-col: equalized odds compares error rates")
    fmt = replace(detect_format(path), encoding=config.input.encoding)
    frame = read_frame(path, fmt)
    name = path.name
    require_columns(
        frame,
        [
            (cfg.pred_col, "--pred-col"),
            (cfg.label_col, "--label-col"),
            (cfg.group_col, "--group-col"),
            *((c, "--proxy-col") for c in cfg.proxy_cols),
        ],
        name,
    )
    if frame.height == 0:
        raise InputError(f"{name} has no rows")
    pred = _binary(frame, cfg.pred_col, "--pred-col", name)
    label = _binary(frame, cfg.label_col, "--label-col", name) if cfg.label_col else None
    proxy_values = []
    for column in cfg.proxy_cols:
        values = _group_values(frame, column)
        if None in values:
            raise InputError(f"column '{column}' (--proxy-col) in {name} is empty at row {values.index(None)}")
        if len(set(values)) < 2:
            raise InputError(
                f"column '{column}' (--proxy-col) in {name} has one value ({values[0]!r}): a proxy must name groups"
            )
        proxy_values.append(values)
    # The proxies are noisy readings of one attribute, so they name the same groups: a group only
    # one proxy names (another coding, "female" against "F", or a stray value) would be a group of
    # its own, and its gap to the others a false one.
    for column, values in zip(cfg.proxy_cols, proxy_values, strict=True):
        others = {
            v for other, named in zip(cfg.proxy_cols, proxy_values, strict=True) if other != column for v in named
        }
        alone = sorted(set(values) - others) if others else []
        if alone:
            raise InputError(
                f"column '{column}' (--proxy-col) in {name} names {', '.join(map(repr, alone[:5]))}, which no other "
                f"proxy names (they name {', '.join(map(repr, sorted(others)[:10]))}): code the groups the same way "
                "in every proxy"
            )
    group_values = None
    groups = sorted({v for values in proxy_values for v in values})
    if cfg.group_col:
        group_values = _group_values(frame, cfg.group_col)
        stray = sorted({v for v in group_values if v is not None} - set(groups))
        if stray:
            raise InputError(
                f"column '{cfg.group_col}' (--group-col) in {name} holds {', '.join(map(repr, stray[:5]))}, which no "
                f"proxy names (the proxies name {', '.join(map(repr, groups[:10]))}): code the groups the same way"
            )
    code = {g: i for i, g in enumerate(groups)}
    proxies = np.array([[code[v] for v in values] for values in proxy_values], dtype=np.int64).T
    group = None if group_values is None else np.array([code[v] if v is not None else -1 for v in group_values])
    meta = {
        "path": str(path),
        "sha256": file_sha256(path),
        "format": fmt.kind + (".gz" if fmt.gzip else ""),
        "rows": frame.height,
        "columns_used": {
            "pred": cfg.pred_col,
            "label": cfg.label_col,
            "proxies": list(cfg.proxy_cols),
            "group": cfg.group_col,
        },
        "rows_with_group": None if group is None else int((group >= 0).sum()),
    }
    return FairnessData(pred, label, proxies, group, groups), meta


@dataclass(frozen=True)
class FairnessReport:
    """The ``credaudit fairness`` report: ``to_dict()`` is report.json."""

    tool_version: str
    created_at: str
    run: dict[str, Any]
    fairness: dict[str, Any]
    findings: list[dict[str, Any]]
    checks: list[dict[str, Any]]
    verdict: str
    schema_version: int = FAIRNESS_SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "fairness",
            "schema_version": self.schema_version,
            "tool_version": self.tool_version,
            "created_at": self.created_at,
            "run": self.run,
            "fairness": self.fairness,
            "findings": self.findings,
            "checks": self.checks,
            "verdict": self.verdict,
        }


def _metric_entries(result: FairnessResult, data: FairnessData) -> list[dict[str, Any]]:
    """One entry per metric and group pair, then per metric the overall (largest) gap."""
    entries = []
    for metric in METRICS:
        if metric not in result.calibrated:
            continue
        naive, cal = result.naive[metric], result.calibrated[metric]
        low, high = result.low[metric], result.high[metric]
        ref = result.reference[metric] if result.reference is not None else None

        def number(x: float) -> float | None:
            return None if not np.isfinite(x) else round(float(x), 6)

        for p, (a, b) in enumerate(result.pairs):
            entries.append(
                {
                    "metric": metric,
                    "groups": [data.groups[a], data.groups[b]],
                    "naive": number(naive[p]),
                    "calibrated": {"estimate": number(cal[p]), "low": number(low[p]), "high": number(high[p])},
                    "reference": None if ref is None else number(ref[p]),
                }
            )
        worst = int(np.nanargmax(cal)) if np.isfinite(cal).any() else 0

        def largest(values: np.ndarray | None) -> float | None:
            return None if values is None or not np.isfinite(values).any() else number(np.nanmax(values))

        overall_low, overall_high = result.overall_interval[metric]
        entries.append(
            {
                "metric": metric,
                "groups": "all",
                "pair": [data.groups[result.pairs[worst][0]], data.groups[result.pairs[worst][1]]],
                "naive": largest(naive),
                # The interval of the largest gap: quantiles of each resample's largest gap.
                "calibrated": {"estimate": largest(cal), "low": number(overall_low), "high": number(overall_high)},
                "reference": largest(ref),
            }
        )
    return entries


def _findings(diagnostics: dict[str, Any], data: FairnessData, proxy_names: list[str]) -> list[dict[str, Any]]:
    findings = []
    m, g = data.proxies.shape[1], len(data.groups)
    weak = [proxy_names[k] for k, p in enumerate(diagnostics["proxies"]) if not p["diagonally_dominant"]]
    if weak:
        findings.append(
            {
                "kind": "weak_proxy",
                "severity": "warning",
                "message": f"proxy {', '.join(weak)} confuses some group with another more often than it names it "
                "right: the groups it confuses cannot be told apart, and the calibrated gaps are unreliable",
                "details": {"proxies": weak},
            }
        )
    # A weak proxy fitted as perfect for some group is not a weak proxy: the model does not describe
    # the data (typically proxies that share their errors), and the calibration cannot be trusted.
    edge = [
        proxy_names[k]
        for k, p in enumerate(diagnostics["proxies"])
        if p["accuracy"] < 0.95 and max(max(row) for row in p["transition_matrix"]) >= 0.995
    ]
    if edge:
        findings.append(
            {
                "kind": "implausible_fit",
                "severity": "warning",
                "message": f"the fit calls proxy {', '.join(edge)} perfect for some group although it is wrong on "
                "other rows: the proxies probably share their errors (e.g. models of the same features), which the "
                "calibration assumes they do not; the calibrated gaps are unreliable",
                "details": {"proxies": edge},
            }
        )
    dependent = [p for p in diagnostics["pairs"] if p["dependent"]]
    if dependent:
        names = "; ".join(
            f"{proxy_names[p['proxies'][0]]} and {proxy_names[p['proxies'][1]]} agree on {p['observed_agreement']:.1%} "
            f"of rows, the model implies {p['model_agreement']:.1%}"
            for p in dependent
        )
        findings.append(
            {
                "kind": "dependent_proxies",
                "severity": "warning",
                "message": f"the proxies look dependent ({names}); the calibration assumes their errors are "
                "independent given the group, so the calibrated gaps may be biased",
                "details": {"pairs": dependent},
            }
        )
    if m == 3 and g == 2:
        hint = (
            "compare each proxy's estimated accuracy with its accuracy on the rows with the true group (Proxies)"
            if data.group is not None
            else "a fourth proxy, or some rows with the true group (--group-col), would tell"
        )
        findings.append(
            {
                "kind": "dependence_untestable",
                "severity": "info",
                "message": "with two groups and three proxies the model fits any data exactly, so whether the proxies' "
                f"errors are independent cannot be tested from the proxies alone; {hint}",
                "details": {},
            }
        )
    return findings


def _checks(entries: list[dict[str, Any]], config: ScanConfig) -> list[CheckResult]:
    gates = config.gates
    pessimistic = gates.gate_on == "bound"
    checks = []
    for check_id, metric, fail, warn in (
        ("max_dp_gap", "dp_gap", gates.max_dp_gap, gates.warn_max_dp_gap),
        ("max_eo_gap", "eo_gap", gates.max_eo_gap, gates.warn_max_eo_gap),
    ):
        overall = next((e for e in entries if e["metric"] == metric and e["groups"] == "all"), None)
        if fail is None and warn is None:
            checks.append(
                CheckResult(check_id, metric, None, "estimate", None, None, Status.SKIPPED, message="no threshold set")
            )
            continue
        if overall is None:
            raise UsageError(f"--{check_id.replace('_', '-')} needs --label-col: equalized odds compares error rates")
        cal = overall["calibrated"]
        value = cal["high"] if pessimistic else cal["estimate"]
        bound = "upper95" if pessimistic else "estimate"
        if value is None:
            checks.append(
                CheckResult(
                    check_id,
                    metric,
                    None,
                    bound,
                    fail,
                    warn,
                    Status.SKIPPED,
                    message=f"the {METRIC_NAMES[metric]} gap is undefined: some group has no rows in a slice it needs",
                )
            )
            continue
        pair = f"between {overall['pair'][0]} and {overall['pair'][1]}"
        checks.append(
            interval_check(
                check_id,
                metric,
                f"calibrated {METRIC_NAMES[metric]} gap {pair}",
                (cal["estimate"], cal["low"], cal["high"]),
                fail,
                warn,
                upper=True,
                pessimistic=pessimistic,
                shown=lambda x: f"{x:.3f}",
            )
        )
    return checks


def audit_fairness_file(
    data: str | Path, config: ScanConfig, *, progress: Progress | None = None
) -> tuple[FairnessReport, list[CheckResult]]:
    """Read, audit, gate: the report of ``credaudit fairness`` (nothing written)."""
    progress = progress or NullProgress()
    started = time.perf_counter()
    path = Path(data)
    fairness_data, meta = read_fairness_data(path, config)
    cfg = config.fairness
    result = audit_fairness(
        fairness_data,
        n_bootstrap=cfg.n_bootstrap,
        confidence_level=config.noise.confidence_level,
        per_slice=cfg.per_slice,
        seed=config.seed,
        progress=progress,
    )
    diagnostics = proxy_diagnostics(fairness_data, result.slices, max_dependence=cfg.max_dependence)
    for name, proxy in zip(cfg.proxy_cols, diagnostics["proxies"], strict=True):
        proxy["column"] = name
    entries = _metric_entries(result, fairness_data)
    findings = _findings(diagnostics, fairness_data, list(cfg.proxy_cols))
    checks = _checks(entries, config)
    report = FairnessReport(
        tool_version=__version__,
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        run={
            "input": meta,
            "seed": config.seed,
            "config": {"fairness": config.to_dict()["fairness"], "gates": config.to_dict()["gates"]},
            "seconds": round(time.perf_counter() - started, 3),
        },
        fairness={
            "groups": fairness_data.groups,
            "naive_rule": "the proxies' majority vote (ties: the first proxy)",
            "per_slice": cfg.per_slice,
            "n_bootstrap": result.n_bootstrap,
            "confidence_level": result.confidence_level,
            "metrics": entries,
            "diagnostics": diagnostics,
        },
        findings=findings,
        checks=[c.to_dict() for c in checks],
        verdict=verdict(checks, strict=config.gates.strict, warnings=any(f["severity"] == "warning" for f in findings)),
    )
    return report, checks


def fairness_out_dir(config: ScanConfig, data: Path) -> Path:
    """``--out`` or ``./credaudit-out/<data stem>-fairness/``."""
    return out_dir_for(config.output.out, data, "-fairness")


def write_fairness_outputs(report: FairnessReport, out_dir: Path, *, html: bool = True) -> list[Path]:
    """report.json, report.md (and report.html), atomically as a set."""

    from credaudit.report.fairness import render_fairness_html, render_fairness_markdown
    from credaudit.report.json import render_json_data

    writers = {
        "report.json": write_text(render_json_data(report.to_dict())),
        "report.md": write_text(render_fairness_markdown(report)),
    }
    if html:
        writers["report.html"] = write_text(render_fairness_html(report))
    return write_outputs(out_dir, writers, replace_previous=True)
