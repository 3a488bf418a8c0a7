"""ScanConfig: every setting and its default, in one place.

Layering (pure, testable): defaults <- TOML file (``--config``) <- explicit flags. Every value is
validated here, once, with a message naming where it came from ("--k must be an int >= 1; got 0",
"gates.max_noise_rate in ci.toml must be a number in [0, 1]; got 1.5"). ``configs/default.toml``
mirrors these defaults (a test keeps the two equal). TOML has no null: a setting whose default is
"none" is absent from the file (documented there as a comment).
"""

from __future__ import annotations

import dataclasses
import math
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from credaudit.errors import ConfigError


def _opt(default: Any, help: str, **rules: Any) -> Any:
    """A config field: its default, a one-line help (used in default.toml) and validation rules.

    Rules: ``choices`` (allowed values), ``low``/``high`` (inclusive bounds), ``low_open``/``high_open``
    (exclusive bounds), ``pattern`` (a callable value -> bool with ``pattern_text`` for messages);
    for lists, ``items`` (what they hold, for messages) and ``empty_ok``.
    """
    factory = None
    if isinstance(default, (list, tuple)):
        frozen = tuple(default)
        factory = lambda: frozen  # noqa: E731 - a frozen default needs a factory for tuples
    metadata = {"help": help, **rules}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def _is_encoding(value: str) -> bool:
    import codecs

    try:
        return codecs.lookup(value) is not None
    except LookupError:
        return False


def _is_device(value: str) -> bool:
    if value in ("auto", "cpu", "cuda"):
        return True
    return value.startswith("cuda:") and value[5:].isdigit()


@dataclass(frozen=True)
class InputConfig:
    text_cols: tuple[str, ...] = _opt(("text",), "column(s) to embed; several are joined with a newline")
    label_col: str = _opt("label", "the label column (strings, ints or bools)")
    id_col: str | None = _opt(None, "stable row identifier carried into every output; default: 0-based row number")
    embedding_col: str | None = _opt(None, "precomputed vectors (list/array column); skips the encoder")
    drop_unlabelled: bool = _opt(False, "drop rows with a null label instead of failing")
    encoding: str = _opt(
        "utf-8",
        "text encoding of CSV and JSONL input (e.g. latin-1); the cleaned copy is written in it",
        pattern=_is_encoding,
        pattern_text="a Python codec name such as utf-8, latin-1 or cp1252",
    )


@dataclass(frozen=True)
class EncoderConfig:
    name: str = _opt(
        "minilm", "encoder name (`credaudit encoders`), `auto`, or a local sentence-transformers directory"
    )
    device: str = _opt(
        "auto",
        "auto (CUDA if available, else CPU), cpu, cuda or cuda:N",
        pattern=_is_device,
        pattern_text="auto, cpu, cuda or cuda:N",
    )
    precision: str = _opt(
        "auto",
        "arithmetic of transformer encoders: auto (fp16 on CUDA, bf16 on CPUs with native bf16, else fp32), "
        "fp32, bf16 or fp16 (CUDA only)",
        choices=("auto", "fp32", "bf16", "fp16"),
    )
    batch_size: int | None = _opt(None, "encoder batch size; default: chosen for the device", low=1)
    cache: bool = _opt(True, "reuse embeddings of texts seen before (keyed by encoder fingerprint + text hash)")
    cache_dir: str | None = _opt(None, "embedding cache location; default: the user cache dir (~/.cache/credaudit)")
    cache_max_mb: int | None = _opt(
        None, "size limit of each encoder's embedding cache in MB (least recently used shards go first)", low=1
    )
    auto_sample: int = _opt(1000, "rows embedded by each candidate when the encoder is `auto`", low=50)


@dataclass(frozen=True)
class GraphConfig:
    index: str = _opt(
        "auto",
        "neighbour search: exact, ivf (approximate, faster), or auto (exact up to exact_max_rows)",
        choices=("auto", "exact", "ivf"),
    )
    exact_max_rows: int = _opt(50_000, "rows above which `auto` uses the IVF index", low=1)
    ivf_probe_share: float = _opt(
        0.08,
        "share of the approximate search's lists (about 512 rows each) each list is compared with (recall vs time)",
        low_open=0.0,
        high=1.0,
    )
    ivf_max_probes: int = _opt(
        16, "at most this many lists per list, so large inputs stay linear in time (recall is measured)", low=1
    )
    recall_sample: int = _opt(
        1000, "rows whose neighbours an approximate search checks against an exact one (recall@k in the report)", low=1
    )
    min_recall: float = _opt(0.95, "warn when the approximate search's recall@k is below this", low=0.0, high=1.0)


@dataclass(frozen=True)
class NoiseConfig:
    n_restarts: int = _opt(4, "initialisations of the transition-matrix fit", low=1)
    max_iter: int = _opt(300, "L-BFGS iterations per initialisation", low=1)
    triple_share: float = _opt(
        0.75, "share of rows, tightest neighbourhoods first, whose label triples fit T", low_open=0.0, high=1.0
    )
    n_bootstrap: int = _opt(40, "bootstrap resamples for the 95% intervals (0: no intervals)", low=0)
    bootstrap_max_iter: int = _opt(20, "L-BFGS iterations per bootstrap refit (warm-started)", low=1)
    confidence_level: float = _opt(0.95, "coverage of the reported intervals", low_open=0.0, high_open=1.0)
    n_workers: int = _opt(
        0,
        "bootstrap refits run side by side, each holding its own copy of the fit's arrays "
        "(0: the usable cores, at most 4); the results do not depend on it",
        low=0,
    )
    max_classes: int = _opt(
        256, "refuse datasets with more classes: the transition-matrix fit costs O(K^4) per step", low=2
    )
    min_class_rows: int = _opt(30, "classes with fewer rows are reported as too small to estimate", low=0)
    min_kappa: float = _opt(
        0.15,
        "below this chance-corrected k-NN label agreement (0 = chance from class frequencies, 1 = perfect) "
        "the features are weak and the noise estimate untrustworthy",
        low=0.0,
        high=1.0,
    )


@dataclass(frozen=True)
class DetectConfig:
    k: int = _opt(10, "neighbours used by detection", low=1)
    method: str = _opt(
        "rank",
        "rank (transition-matrix-driven budget), vote (neighbour majority) or threshold (error score >= min_score)",
        choices=("rank", "vote", "threshold"),
    )
    n_rounds: int = _opt(5, "random subsample rounds; a row is an error when flagged in more than half", low=1)
    subsample_rate: float = _opt(0.9, "share of rows in each round", low_open=0.0, high=1.0)
    propagation_steps: int = _opt(3, "vote refinements over the graph (0: plain neighbour vote)", low=0)
    self_weight: float = _opt(
        0.0,
        "weight of a row's own label in the plain vote (the vote method, and the score when propagation_steps = 0)",
        low=0.0,
    )
    vote_cap_factor: float = _opt(
        2.0,
        "rank: flag at most this multiple of a class's rows whose neighbour vote prefers another label (0: no cap)",
        low=0.0,
    )
    min_score: float = _opt(
        0.2,
        "rank: never flag a row whose error score is below this; threshold: flag every row at or above it",
        low=0.0,
        high=1.0,
    )
    untrusted_max_class_share: float = _opt(
        0.2,
        "with weak features (an untrustworthy estimate), flags fall back to the neighbour vote, at most this share "
        "of any class",
        low=0.0,
        high=1.0,
    )


@dataclass(frozen=True)
class HygieneConfig:
    outlier_threshold: float = _opt(
        0.5,
        "flag rows whose outlier score is at least this (0.5: beyond Q3 + 3 IQR of the k-NN or class-centroid "
        "distance)",
        low=0.0,
        high=1.0,
    )
    outlier_rate: float | None = _opt(
        None, "instead of the threshold, flag this share of rows with the highest outlier scores", low=0.0, high=1.0
    )
    near_duplicate_threshold: float = _opt(
        0.93, "cosine similarity above which rows whose words overlap are near-duplicates", low=0.0, high=1.0
    )
    near_duplicate_min_overlap: float = _opt(
        0.8,
        "share of words two near-duplicate texts must have in common (Jaccard; or one text is the other plus a word)",
        low=0.0,
        high=1.0,
    )
    near_duplicate_vector_threshold: float = _opt(
        0.99,
        "without texts (precomputed vectors only): cosine similarity above which rows are near-duplicates",
        low=0.0,
        high=1.0,
    )
    leakage_threshold: float = _opt(
        0.85,
        "like near_duplicate_threshold, for matches in a --reference file (lower: a leaked test item costs more "
        "than a missed duplicate)",
        low=0.0,
        high=1.0,
    )
    reference: tuple[str, ...] = _opt(
        (),
        "files to check for leakage: rows of the input with an exact or near-duplicate in one of them are reported",
        items="file paths",
        empty_ok=True,
    )
    reference_embedding_col: str | None = _opt(
        None, "column of precomputed vectors in the reference files (needed with --embedding-col)"
    )


@dataclass(frozen=True)
class FairnessConfig:
    pred_col: str | None = _opt(None, "`credaudit fairness`: the binary prediction column (0/1 or true/false)")
    label_col: str | None = _opt(None, "`credaudit fairness`: the binary outcome column (for the EO and EOp gaps)")
    proxy_cols: tuple[str, ...] = _opt(
        (),
        "`credaudit fairness`: three or more columns of group predictions (proxies)",
        items="column names",
        empty_ok=True,
    )
    group_col: str | None = _opt(
        None, "`credaudit fairness`: the true group where known (null elsewhere), for reference gaps"
    )
    n_bootstrap: int = _opt(200, "bootstrap resamples for the calibrated gaps' intervals", low=0)
    per_slice: bool = _opt(
        False,
        "fit the proxies' transition matrices separately in each prediction/outcome slice (noisier; right when "
        "a proxy's errors depend on the prediction or the outcome)",
    )
    max_dependence: float = _opt(
        0.03,
        "warn when two proxies agree more (or less) often than the fitted model implies by more than this",
        low=0.0,
        high=1.0,
    )


@dataclass(frozen=True)
class PairsConfig:
    chosen_col: str | None = _opt(None, "preference pairs: the preferred response's column (with rejected_col)")
    rejected_col: str | None = _opt(None, "preference pairs: the other response's column")
    prompt_col: str | None = _opt(
        None, "preference pairs: the prompt column; default: a shared transcript prefix, if there is one"
    )
    chosen_embedding_col: str | None = _opt(None, "precomputed vectors of the chosen responses (skips the encoder)")
    rejected_embedding_col: str | None = _opt(None, "precomputed vectors of the rejected responses")
    k: int = _opt(50, "neighbouring preference directions in each pair's vote", low=2)
    same_threshold: float = _opt(
        0.98, "responses at least this similar (cosine) are no clear preference: action drop", low=0.0, high=1.0
    )
    unclear_score: float = _opt(
        0.4, "an unflagged pair whose flip score reaches this has no clear preference: action drop", low=0.0, high=1.0
    )


@dataclass(frozen=True)
class RatingsConfig:
    ordinal: bool = _opt(False, "the label is a rating on an ordered scale (numbers, or the order in label_order)")
    label_order: tuple[str, ...] = _opt(
        (),
        "the rating scale from lowest to highest, for text ratings (implies ordinal)",
        items="label values",
        empty_ok=True,
    )
    jump_cost: float = _opt(
        0.05,
        "prior cost per unit of T-mass per scale step beyond the second: far jumps need more evidence (0: none)",
        low=0.0,
    )


@dataclass(frozen=True)
class EngineConfig:
    name: str = _opt(
        "local",
        'where the work runs: local (this process) or ray (a Ray cluster; pip install "credaudit[ray]")',
        choices=("local", "ray"),
    )
    ray_address: str | None = _opt(None, "the Ray cluster to join (e.g. ray://head:10001); default: start one here")
    ray_actors: int = _opt(0, "encoder actors on Ray; 0: one per GPU, or one per 4 CPUs without GPUs", low=0)
    threads: int = _opt(
        0,
        "local engine: blocks of a stage run side by side on this many threads, one BLAS thread each "
        "(0: one per core this process may use, at most 8; 1: one block at a time, BLAS on every core)",
        low=0,
    )
    ray_arrange: str = _opt(
        "auto",
        "on Ray, move vectors between blocks (by k-means list for the neighbour search, into row order for the "
        "embedding) so that a node fetches only the blocks its tasks read: auto (on a cluster of more than one "
        "node that can run tasks), always, never",
        choices=("auto", "always", "never"),
    )


@dataclass(frozen=True)
class SelectConfig:
    budget: int | float | None = _opt(
        None, "credaudit select: items to choose, a count (int) or a share of the data (float < 1)", low_open=0.0
    )
    diversity: float = _opt(
        0.5,
        "trade-off of quality against diversity: an item as close to a chosen one as a near-copy keeps "
        "(1 - diversity) of its quality, one no closer than a typical neighbour all of it; 0 is top-by-quality",
        low=0.0,
        high=1.0,
    )
    long_tail: float = _opt(
        0.05,
        "weight of the long tail: quality counts (1 - long_tail * mean similarity to the item's neighbours)",
        low=0.0,
        high=1.0,
    )
    k: int = _opt(10, "neighbours a chosen item can discount", low=1)
    clusters: int = _opt(100, "k-means clusters behind the coverage figure of the selection report", low=2)


@dataclass(frozen=True)
class CrowdConfig:
    item_col: str | None = _opt(
        None, "several labels per item, one row per answer: the item column (with annotator_col)"
    )
    annotator_col: str | None = _opt(None, "one row per answer: the annotator column")
    annotations_col: str | None = _opt(None, "one row per item: a list column of the item's answers")
    annotators_col: str | None = _opt(
        None, "with annotations_col: a list column naming who gave each answer (default: one anonymous pool)"
    )
    label_cols: tuple[str, ...] = _opt(
        (),
        "one row per item: two or more label columns, one per annotator or labelling slot",
        items="column names",
        empty_ok=True,
    )
    reference_col: str | None = _opt(
        None, "a reference labeller's answer per item (e.g. an LLM's; null where unknown): enables the copy score"
    )
    items: str | None = _opt(None, "with item_col: a file of the items' texts (or vectors), joined on the item column")
    min_posterior: float = _opt(
        0.9, "an item's consensus is uncertain when no label reaches this posterior probability", low=0.0, high=1.0
    )
    shrinkage: float | None = _opt(
        None,
        "pseudo-answers per true class pulling each annotator's confusion matrix toward their one-coin version; "
        "default: 2 + K/4",
        low=0.0,
    )
    use_texts: bool = _opt(True, "let the items' neighbours (from their texts or vectors) inform the consensus")
    n_bootstrap: int = _opt(50, "item resamples for the intervals of the noise rate and annotator accuracies", low=0)
    min_answers: int = _opt(10, "answers an annotator needs before being called a spammer, biased or a copier", low=1)
    spammer_kappa: float = _opt(0.15, "spammer: accuracy beyond chance (kappa) below this", low=-1.0, high=1.0)
    biased_share: float = _opt(
        0.8, "biased: one label on at least this share of answers, far above that class's share", low=0.0, high=1.0
    )
    copier_z: float = _opt(
        3.0,
        "copier: agreement with the reference this many standard errors above what honest answers explain",
        low=0.0,
    )
    copier_share: float = _opt(
        0.5,
        "copier: and follows the reference on at least this share of the items where the others disagree with it",
        low=0.0,
        high=1.0,
    )
    drop_annotators: str = _opt(
        "none",
        "remove answers before the consensus: none, or suspect (every flagged annotator)",
        choices=("none", "suspect"),
    )


@dataclass(frozen=True)
class GatesConfig:
    max_noise_rate: float | None = _opt(None, "fail if the estimated noise rate is above", low=0.0, high=1.0)
    min_credibility: float | None = _opt(None, "fail if credibility is below", low=0.0, high=1.0)
    max_flagged: int | float | None = _opt(
        None, "fail if flagged rows exceed N (int) or a fraction (float < 1)", low=0.0
    )
    max_regression: float | None = _opt(
        None,
        "with a baseline: fail if the noise rate rose by more than this and the two 95% intervals do not overlap",
        low=0.0,
        high=1.0,
    )
    warn_max_noise_rate: float | None = _opt(None, "warn if the estimated noise rate is above", low=0.0, high=1.0)
    warn_min_credibility: float | None = _opt(None, "warn if credibility is below", low=0.0, high=1.0)
    warn_max_flagged: int | float | None = _opt(
        None, "warn if flagged rows exceed N (int) or a fraction (float < 1)", low=0.0
    )
    max_outliers: int | float | None = _opt(
        None, "fail if outlier rows exceed N (int) or a fraction (float < 1)", low=0.0
    )
    max_duplicates: int | float | None = _opt(
        None, "fail if redundant near-duplicate rows (all but one per group) exceed N or a fraction", low=0.0
    )
    max_leakage: int | float | None = _opt(
        None, "fail if rows with a duplicate in a reference file exceed N (int) or a fraction (float < 1)", low=0.0
    )
    warn_max_outliers: int | float | None = _opt(None, "warn if outlier rows exceed N or a fraction", low=0.0)
    warn_max_duplicates: int | float | None = _opt(
        None, "warn if redundant near-duplicate rows exceed N or a fraction", low=0.0
    )
    warn_max_leakage: int | float | None = _opt(None, "warn if leaked rows exceed N or a fraction", low=0.0)
    max_dp_gap: float | None = _opt(
        None, "`credaudit fairness`: fail if the calibrated demographic-parity gap is above", low=0.0, high=1.0
    )
    max_eo_gap: float | None = _opt(
        None, "`credaudit fairness`: fail if the calibrated equalized-odds gap is above", low=0.0, high=1.0
    )
    warn_max_dp_gap: float | None = _opt(
        None, "warn if the calibrated demographic-parity gap is above", low=0.0, high=1.0
    )
    warn_max_eo_gap: float | None = _opt(None, "warn if the calibrated equalized-odds gap is above", low=0.0, high=1.0)
    warn_max_regression: float | None = _opt(
        None, "with a baseline: warn if the noise rate rose by more than this (intervals apart)", low=0.0, high=1.0
    )
    gate_on: str = _opt(
        "estimate",
        "compare gates to the point estimate or to the 95% interval's pessimistic bound",
        choices=("estimate", "bound"),
    )
    strict: bool = _opt(False, "warnings fail the run too (exit 1)")
    allow_inconclusive: bool = _opt(
        False, "exit 0 when a gate is inconclusive (it reads an untrustworthy noise estimate); default: exit 1"
    )
    min_annotator_accuracy: float | None = _opt(
        None, "several labels per item: fail if an annotator's estimated accuracy is below", low=0.0, high=1.0
    )
    warn_min_annotator_accuracy: float | None = _opt(
        None, "warn if an annotator's estimated accuracy is below", low=0.0, high=1.0
    )
    max_suspect_annotators: int | float | None = _opt(
        None, "several labels per item: fail if suspect annotators exceed N (int) or a fraction (float < 1)", low=0.0
    )
    warn_max_suspect_annotators: int | float | None = _opt(
        None, "warn if suspect annotators exceed N or a fraction", low=0.0
    )
    baseline: str | None = _opt(
        None, "a previous report.json to compare with (noise rate, credibility, per-class error shares)"
    )


@dataclass(frozen=True)
class OutputConfig:
    out: str | None = _opt(None, "output directory; default: ./credaudit-out/<data stem>/")
    clean: str = _opt(
        "drop",
        "cleaned data: drop flagged rows, relabel confident ones (drop the rest), dedupe (keep one row per "
        "near-duplicate group), or flag (add columns)",
        choices=("drop", "relabel", "dedupe", "flag"),
    )
    min_confidence: float = _opt(0.9, "suggestion confidence needed to relabel", low=0.0, high=1.0)
    max_clean_share: float = _opt(
        0.25, "never drop or relabel more than this share of any class in the cleaned file", low=0.0, high=1.0
    )
    force_clean: bool = _opt(False, "drop or relabel flagged rows even when the noise estimate is untrustworthy")
    format: str = _opt(
        "rich", "terminal output: rich, json (report on stdout) or quiet (one line)", choices=("rich", "json", "quiet")
    )
    top_rows: int = _opt(20, "most suspicious rows listed in the reports", low=0)
    excerpt_chars: int = _opt(160, "text excerpt length in the reports", low=10)
    html: bool = _opt(True, "also write report.html (self-contained, opens offline)")
    html_rows: int = _opt(500, "most suspicious rows in report.html's table", low=0)
    junit: str | None = _opt(None, "also write the gate checks as a JUnit XML file at this path")
    review: tuple[str, ...] = _opt(
        (),
        "also write the flagged rows as a review queue: a .csv to fill in, and/or a .json of Label Studio tasks "
        "(with <stem>.label_config.xml beside it); `credaudit apply` reads the reviewed file back",
        items="file paths",
        empty_ok=True,
    )
    github: bool = _opt(
        False,
        "GitHub Actions output (step summary, ::error/::warning annotations); on by itself when GITHUB_ACTIONS=true",
    )


@dataclass(frozen=True)
class ScanConfig:
    """Every setting of a scan. Sections mirror ``configs/default.toml``."""

    seed: int = _opt(0, "one seed for every random choice", low=0)
    input: InputConfig = field(default_factory=InputConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    graph: GraphConfig = field(default_factory=GraphConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    detect: DetectConfig = field(default_factory=DetectConfig)
    hygiene: HygieneConfig = field(default_factory=HygieneConfig)
    fairness: FairnessConfig = field(default_factory=FairnessConfig)
    crowd: CrowdConfig = field(default_factory=CrowdConfig)
    ratings: RatingsConfig = field(default_factory=RatingsConfig)
    pairs: PairsConfig = field(default_factory=PairsConfig)
    select: SelectConfig = field(default_factory=SelectConfig)
    gates: GatesConfig = field(default_factory=GatesConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (tuples become lists)."""
        return _plain(dataclasses.asdict(self))


SECTIONS: dict[str, type] = {
    f.name: f.default_factory for f in dataclasses.fields(ScanConfig) if f.default_factory is not dataclasses.MISSING
}
TOP_LEVEL = ("seed",)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML config file.

    Raises
    ------
    ConfigError
        The file is missing, unreadable or not valid TOML.
    """
    path = Path(path)
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:  # TOML is UTF-8
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {exc.start}), so not TOML") from None


# Keys earlier releases read, with why they are gone: a config file that still sets one keeps
# working, with a note on stderr, instead of failing as an unknown key.
RETIRED_KEYS: dict[str, str] = {
    "noise.min_knn_agreement": "replaced by noise.min_kappa, which compares the k-NN label agreement with "
    "its chance level (a fixed agreement threshold missed chance-level features on balanced classes)",
}


def merge(
    file_values: dict[str, Any] | None = None,
    *,
    file_name: str = "the config file",
    overrides: dict[str, tuple[Any, str]] | None = None,
) -> ScanConfig:
    """Build a validated ScanConfig from defaults, a TOML document and flag overrides.

    Parameters
    ----------
    file_values : dict, optional
        A parsed TOML document: top-level keys (``seed``) and one table per section.
    file_name : str
        How messages name the file ("ci.toml").
    overrides : dict, optional
        ``"section.key"`` (or ``"seed"``) -> ``(value, flag name)``; these win over the file.

    Returns
    -------
    ScanConfig

    Raises
    ------
    ConfigError
        Unknown section or key (the message lists the valid ones), or a value of the wrong type or
        out of range (the message names the flag or the file key).
    """
    values: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    top: dict[str, Any] = {}
    sources: dict[str, str] = {}
    unknown: list[str] = []
    hints: list[str] = []
    for key, value in (file_values or {}).items():
        subs = value if isinstance(value, dict) else {}
        retired = {sub: RETIRED_KEYS[f"{key}.{sub}"] for sub in subs if f"{key}.{sub}" in RETIRED_KEYS}
        if retired:
            for sub, why in retired.items():
                print(f"credaudit: {key}.{sub} in {file_name} is ignored: {why}", file=sys.stderr)
            value = {sub: v for sub, v in value.items() if sub not in retired}
        if key in TOP_LEVEL:
            top[key] = value
            sources[key] = f"{key} in {file_name}"
        elif key in SECTIONS:
            if not isinstance(value, dict):
                raise ConfigError(f"[{key}] in {file_name} must be a table; got {_show(value)}")
            valid = [f.name for f in dataclasses.fields(SECTIONS[key])]
            for sub, sub_value in value.items():
                if sub not in valid:
                    unknown.append(f"{key}.{sub}")
                    hints.append(f"valid keys in [{key}] are: {', '.join(valid)}")
                    continue
                values[key][sub] = sub_value
                sources[f"{key}.{sub}"] = f"{key}.{sub} in {file_name}"
        else:
            unknown.append(key)
            hints.append(f"valid top-level keys are: {', '.join(list(TOP_LEVEL) + [f'[{s}]' for s in SECTIONS])}")
    if unknown:
        # Every unknown key at once: fixing a file one error per run is slow.
        noun = "key" if len(unknown) == 1 else "keys"
        raise ConfigError(f"unknown {noun} {', '.join(unknown)} in {file_name}; " + "; ".join(dict.fromkeys(hints)))
    for dotted, (value, flag) in (overrides or {}).items():
        if value is None:
            continue
        if "." in dotted:
            section, sub = dotted.split(".", 1)
            values[section][sub] = value
        else:
            top[dotted] = value
        sources[dotted] = flag

    sections = {}
    for name, cls in SECTIONS.items():
        checked = {
            key: _check(cls, key, value, sources.get(f"{name}.{key}", f"{name}.{key}"))
            for key, value in values[name].items()
        }
        sections[name] = cls(**checked)
    checked_top = {key: _check(ScanConfig, key, value, sources.get(key, key)) for key, value in top.items()}
    return ScanConfig(**checked_top, **sections)


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value).lower() if isinstance(value, bool) else str(value)


def _check(cls: type, key: str, value: Any, source: str) -> Any:
    """Coerce and validate one value against its field's type and rules."""
    spec = {f.name: f for f in dataclasses.fields(cls)}[key]
    hint = typing.get_type_hints(cls)[key]
    rules = spec.metadata
    allowed = _allowed_types(hint)
    if value is None:
        if type(None) in allowed:
            return None
        raise ConfigError(f"{source} must be set; got nothing")

    def fail(expected: str) -> typing.NoReturn:
        raise ConfigError(f"{source} must be {expected}; got {_show(value)}")

    if tuple in allowed:
        if isinstance(value, str):
            value = (value,)
        items = rules.get("items", "column names")
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
            fail(f"a list of {items}")
        if not value and not rules.get("empty_ok", False):
            fail(f"a non-empty list of {items}")
        return tuple(value)
    if bool in allowed:
        if not isinstance(value, bool):
            fail("true or false")
        return value
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if is_number and not math.isfinite(value):
        # NaN compares false with every bound, so a NaN gate would pass whatever the data.
        fail(f"a finite number{_range_text(rules)}")
    if int in allowed and float in allowed:
        if not is_number:
            fail("a number")
        if isinstance(value, float) and value >= 1:
            if not value.is_integer():
                fail("a row count (int) or a fraction below 1 (float)")
            value = int(value)
    elif int in allowed:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            fail(f"an int{_range_text(rules)}")
    elif float in allowed:
        if not is_number:
            fail(f"a number{_range_text(rules)}")
        value = float(value)
    elif str in allowed:
        if not isinstance(value, str) or not value:
            fail("a non-empty string")
    if "choices" in rules and value not in rules["choices"]:
        fail("one of " + ", ".join(rules["choices"]))
    if "pattern" in rules and not rules["pattern"](value):
        fail(rules["pattern_text"])
    if is_number or isinstance(value, (int, float)):
        low, high = rules.get("low"), rules.get("high")
        low_open, high_open = rules.get("low_open"), rules.get("high_open")
        kind = "an int" if isinstance(value, int) and float not in allowed else "a number"
        if (
            (low is not None and value < low)
            or (high is not None and value > high)
            or (low_open is not None and value <= low_open)
            or (high_open is not None and value >= high_open)
        ):
            fail(f"{kind}{_range_text(rules)}")
    return value


def _allowed_types(hint: Any) -> set[type]:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        result: set[type] = set()
        for arg in typing.get_args(hint):
            result |= _allowed_types(arg)
        return result
    if origin is tuple:
        return {tuple}
    return {hint}


def _range_text(rules: typing.Mapping[str, Any]) -> str:
    low = rules.get("low", rules.get("low_open"))
    high = rules.get("high", rules.get("high_open"))
    left = "(" if "low_open" in rules else "["
    right = ")" if "high_open" in rules else "]"
    if low is not None and high is not None:
        return f" in {left}{_num(low)}, {_num(high)}{right}"
    if low is not None:
        return f" {'>' if 'low_open' in rules else '>='} {_num(low)}"
    if high is not None:
        return f" {'<' if 'high_open' in rules else '<='} {_num(high)}"
    return ""


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def render_default_toml() -> str:
    """The text of ``configs/default.toml``: every key, its default and its help line."""
    lines = [
        "# credaudit configuration: every key with its default.",
        "# Use with `credaudit scan DATA --config FILE`; command-line flags win over this file.",
        '# Keys whose default is "none" are commented out (TOML has no null).',
        "",
    ]

    def emit(spec: dataclasses.Field, value: Any) -> None:
        lines.append(f"# {spec.metadata['help']}")
        if value is None:
            lines.append(f"# {spec.name} = ...  (default: none)")
        else:
            lines.append(f"{spec.name} = {_toml_value(value)}")

    defaults = ScanConfig()
    for spec in dataclasses.fields(ScanConfig):
        if spec.name in TOP_LEVEL:
            emit(spec, getattr(defaults, spec.name))
    for name in SECTIONS:
        lines += ["", f"[{name}]"]
        section = getattr(defaults, name)
        for spec in dataclasses.fields(section):
            emit(spec, getattr(section, spec.name))
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return repr(value)
