"""The command line: parse options, build the config, call the pipeline, render, exit.

Exit codes: 0 pass, 1 gate failed or inconclusive, 2 usage/config error, 3 input/runtime error (errors.py).
"""

from __future__ import annotations

import difflib
import os
import re
import sys
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
import typer.core

from credaudit import __version__
from credaudit.errors import CredauditError, ExitCode


class _Command(typer.core.TyperCommand):
    """A command that names an unknown option plainly.

    click's matcher offers any loosely similar option ("--bogus" got "Possible options: --out");
    a suggestion that is not close misleads more than none.
    """

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        known = sorted({opt for param in self.get_params(ctx) for opt in (*param.opts, *param.secondary_opts)})
        for arg in args:
            if arg == "--":
                break
            name = arg.split("=", 1)[0]
            if name.startswith("--") and name not in known:
                close = difflib.get_close_matches(name, known, n=1, cutoff=0.8)
                hint = f"did you mean {close[0]}?" if close else f"'credaudit {ctx.info_name} --help' lists them"
                ctx.fail(f"No such option: {name} ({hint})")
        return super().parse_args(ctx, args)


app = typer.Typer(
    name="credaudit",
    help="Audit a labelled dataset: estimate label noise, find wrong labels, write a cleaned copy and a report.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    # Plain help: rich markup would eat the "[default: ...]" of every option and print "<bool>" after flags.
    rich_markup_mode=None,
)

# Shared option types (defaults are None: only flags the user gave override the config).
DataArg = Annotated[
    Path,
    typer.Argument(
        help="A .parquet, .jsonl/.ndjson (optionally .gz) or .csv file, or a directory of parquet files.",
        show_default=False,
    ),
]
ConfigOpt = Annotated[
    Optional[Path], typer.Option("--config", help="TOML config file; flags win over it.", show_default=False)
]
TextColOpt = Annotated[
    Optional[list[str]],
    typer.Option(
        "--text-col",
        help="Column to embed (repeat for several; joined with a newline). [default: text]",
        show_default=False,
        metavar="<column>",
    ),
]
LabelColOpt = Annotated[
    Optional[str], typer.Option("--label-col", help="The label column. [default: label]", show_default=False)
]
IdColOpt = Annotated[
    Optional[str],
    typer.Option(
        "--id-col", help="Stable row identifier carried into every output. [default: row number]", show_default=False
    ),
]
EmbeddingColOpt = Annotated[
    Optional[str],
    typer.Option("--embedding-col", help="Column of precomputed vectors; skips the encoder.", show_default=False),
]
EncoderOpt = Annotated[
    Optional[str],
    typer.Option(
        "--encoder",
        help="Encoder name (see `credaudit encoders`) or a local sentence-transformers directory. [default: minilm]",
        show_default=False,
    ),
]
DeviceOpt = Annotated[
    Optional[str], typer.Option("--device", help="auto, cpu, cuda or cuda:N. [default: auto]", show_default=False)
]
PrecisionOpt = Annotated[
    Optional[str],
    typer.Option(
        "--precision",
        help="Encoder arithmetic: auto (fp16 on CUDA, bf16 on CPUs with native bf16, else fp32), fp32, bf16 "
        "or fp16 (CUDA only). [default: auto]",
        show_default=False,
    ),
]
BatchOpt = Annotated[
    Optional[int], typer.Option("--batch-size", help="Encoder batch size. [default: auto]", show_default=False)
]
CacheDirOpt = Annotated[
    Optional[Path],
    typer.Option("--cache-dir", help="Embedding cache location. [default: ~/.cache/credaudit]", show_default=False),
]
CacheOpt = Annotated[
    Optional[bool],
    typer.Option("--cache/--no-cache", help="Reuse cached embeddings. [default: cache]", show_default=False),
]
EncodingOpt = Annotated[
    Optional[str],
    typer.Option(
        "--encoding",
        help="Text encoding of CSV/JSONL input, e.g. latin-1; written files keep it. [default: utf-8]",
        show_default=False,
    ),
]
SeedOpt = Annotated[
    Optional[int], typer.Option("--seed", help="One seed for every random choice. [default: 0]", show_default=False)
]
StrictOpt = Annotated[
    Optional[bool], typer.Option("--strict", help="Warnings fail the run too (exit 1).", show_default=False)
]
HtmlOpt = Annotated[
    Optional[bool], typer.Option("--html/--no-html", help="Write report.html. [default: html]", show_default=False)
]
FormatOpt = Annotated[
    Optional[str],
    typer.Option(
        "--format",
        help="rich (tables), json (report on stdout) or quiet (one line). [default: rich]",
        show_default=False,
    ),
]
GateOnOpt = Annotated[
    Optional[str],
    typer.Option(
        "--gate-on",
        help="Compare gates to the point `estimate` or the 95% interval's pessimistic `bound`. [default: estimate]",
        show_default=False,
    ),
]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show full tracebacks.")]
EngineOpt = Annotated[
    Optional[str],
    typer.Option(
        "--engine",
        help='local (this process) or ray (a Ray cluster; pip install "credaudit[ray]"). [default: local]',
        show_default=False,
    ),
]
RayAddressOpt = Annotated[
    Optional[str],
    typer.Option(
        "--ray-address",
        help="With --engine ray: the cluster to join, e.g. ray://head:10001. [default: start Ray on this machine]",
        show_default=False,
    ),
]
ChosenColOpt = Annotated[
    Optional[str],
    typer.Option(
        "--chosen-col",
        help="Preference pairs: the preferred response's column (with --rejected-col).",
        show_default=False,
    ),
]
RejectedColOpt = Annotated[
    Optional[str],
    typer.Option("--rejected-col", help="Preference pairs: the other response's column.", show_default=False),
]
PromptColOpt = Annotated[
    Optional[str],
    typer.Option(
        "--prompt-col",
        help="Preference pairs: the prompt column (default: the transcripts' shared prefix, if any).",
        show_default=False,
    ),
]
OrdinalOpt = Annotated[
    Optional[bool],
    typer.Option(
        "--ordinal",
        help="The label is a rating on an ordered scale (numbers): adds curated_score to issues.parquet.",
        show_default=False,
    ),
]
LabelOrderOpt = Annotated[
    Optional[str],
    typer.Option(
        "--label-order",
        help='A text rating scale from lowest to highest, e.g. "bad,ok,good" (implies --ordinal).',
        show_default=False,
    ),
]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"credaudit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    """credaudit: data credibility auditor."""


def _guard(debug: bool, body: Callable[[], int]) -> None:
    """Run a command body; map errors to one stderr line and an exit code (no traceback unless --debug)."""
    try:
        code = body()
    except typer.Exit:
        raise
    except CredauditError as exc:
        if debug:
            raise
        typer.echo(f"credaudit: error: {exc}", err=True)
        if exc.hint:
            typer.echo(f"  hint: {exc.hint}", err=True)
        raise typer.Exit(int(exc.exit_code)) from None
    except MemoryError:
        if debug:
            raise
        typer.echo(
            "credaudit: error: out of memory; try a smaller --batch-size or a machine with more memory", err=True
        )
        raise typer.Exit(int(ExitCode.INPUT_OR_RUNTIME)) from None
    except KeyboardInterrupt:
        typer.echo("credaudit: interrupted", err=True)
        raise typer.Exit(130) from None
    except Exception as exc:  # the last line of defence: one line, exit 3
        if debug:
            raise
        typer.echo(f"credaudit: internal error: {type(exc).__name__}: {exc} (rerun with --debug)", err=True)
        raise typer.Exit(int(ExitCode.INPUT_OR_RUNTIME)) from None
    raise typer.Exit(code)


def _path_value(value: str) -> Path:
    """A path flag's value. An empty one (``--out "$DIR"`` with the variable unset) is refused, not
    read as the current directory, where the outputs would land among the user's files."""
    if not str(value).strip():
        raise typer.BadParameter("is empty; name a path")
    return Path(value)


def _config(config_file: Optional[Path], overrides: dict[str, tuple[Any, str]]):
    from credaudit.config import load_toml, merge

    file_values = load_toml(config_file) if config_file is not None else None
    return merge(file_values, file_name=str(config_file) if config_file else "", overrides=overrides)


def _parse_max_flagged(value: Optional[str], flag: str) -> int | float | None:
    """A count limit: a row count (int) or a fraction below 1 (float); a UsageError (exit 2) names the flag."""
    from credaudit.errors import UsageError

    if value is None:
        return None
    if re.fullmatch(r"\d+", value.strip()):
        return int(value)
    try:
        return float(value)
    except ValueError:
        raise UsageError(f"{flag} must be a row count (int) or a fraction below 1 (float); got {value!r}") from None


def _progress(interactive: bool, *, quiet: bool = False):
    """Rich bars on a terminal; plain periodic lines in logs; nothing with ``--format quiet``."""
    from credaudit.console import PlainProgress, RichProgress

    if quiet:
        return nullcontext(None)
    return RichProgress() if interactive else PlainProgress()


@app.command(cls=_Command)
def scan(
    data: DataArg,
    config_file: ConfigOpt = None,
    text_col: TextColOpt = None,
    label_col: Annotated[
        Optional[list[str]],
        typer.Option(
            "--label-col",
            help="The label column; repeat for one column per annotator (several labels per item). [default: label]",
            show_default=False,
            metavar="<column>",
        ),
    ] = None,
    item_col: Annotated[
        Optional[str],
        typer.Option(
            "--item-col",
            help="Several labels per item, one row per answer: the item column (with --annotator-col).",
            show_default=False,
        ),
    ] = None,
    annotator_col: Annotated[
        Optional[str],
        typer.Option("--annotator-col", help="One row per answer: the annotator column.", show_default=False),
    ] = None,
    annotations_col: Annotated[
        Optional[str],
        typer.Option("--annotations-col", help="One row per item: a list column of its answers.", show_default=False),
    ] = None,
    annotators_col: Annotated[
        Optional[str],
        typer.Option(
            "--annotators-col",
            help="With --annotations-col: a list column naming who gave each answer.",
            show_default=False,
        ),
    ] = None,
    reference_col: Annotated[
        Optional[str],
        typer.Option(
            "--reference-col",
            help="Several labels per item: a reference labeller's answer (e.g. an LLM's; null where unknown), "
            "to score annotators who copy it.",
            show_default=False,
        ),
    ] = None,
    items: Annotated[
        Optional[Path],
        typer.Option(
            "--items",
            help="With --item-col: a file of the items' texts, joined on the item column.",
            show_default=False,
        ),
    ] = None,
    chosen_col: ChosenColOpt = None,
    rejected_col: RejectedColOpt = None,
    prompt_col: PromptColOpt = None,
    ordinal: OrdinalOpt = None,
    label_order: LabelOrderOpt = None,
    drop_annotators: Annotated[
        Optional[str],
        typer.Option(
            "--drop-annotators",
            help="Several labels per item: `suspect` removes suspect annotators' answers before the consensus. "
            "[default: none]",
            show_default=False,
        ),
    ] = None,
    min_annotator_accuracy: Annotated[
        Optional[float],
        typer.Option(
            "--min-annotator-accuracy",
            help="Gate: fail if an annotator's estimated accuracy is below (annotators with enough answers).",
            show_default=False,
        ),
    ] = None,
    warn_min_annotator_accuracy: Annotated[
        Optional[float],
        typer.Option(
            "--warn-min-annotator-accuracy", help="Warn if an annotator's accuracy is below.", show_default=False
        ),
    ] = None,
    max_suspect_annotators: Annotated[
        Optional[str],
        typer.Option(
            "--max-suspect-annotators",
            help="Gate: fail if suspect annotators exceed N (int) or a fraction.",
            show_default=False,
        ),
    ] = None,
    warn_max_suspect_annotators: Annotated[
        Optional[str],
        typer.Option(
            "--warn-max-suspect-annotators",
            help="Warn if suspect annotators exceed N or a fraction.",
            show_default=False,
        ),
    ] = None,
    id_col: IdColOpt = None,
    embedding_col: EmbeddingColOpt = None,
    drop_unlabelled: Annotated[
        Optional[bool],
        typer.Option("--drop-unlabelled", help="Skip rows with a null label instead of failing.", show_default=False),
    ] = None,
    encoding: EncodingOpt = None,
    encoder: EncoderOpt = None,
    device: DeviceOpt = None,
    engine: EngineOpt = None,
    ray_address: RayAddressOpt = None,
    precision: PrecisionOpt = None,
    batch_size: BatchOpt = None,
    k: Annotated[
        Optional[int], typer.Option("--k", help="Neighbours used by detection. [default: 10]", show_default=False)
    ] = None,
    method: Annotated[
        Optional[str],
        typer.Option(
            "--method",
            help="rank (transition-matrix budget), vote (neighbour majority) or threshold (--min-score). "
            "[default: rank]",
            show_default=False,
        ),
    ] = None,
    min_score: Annotated[
        Optional[float],
        typer.Option(
            "--min-score",
            help="Never flag a row whose error score is below this; with --method threshold, flag every row at or "
            "above it. [default: 0.2]",
            show_default=False,
        ),
    ] = None,
    out: Annotated[
        Optional[Path],
        typer.Option(
            "--out",
            parser=_path_value,
            help="Output directory. [default: ./credaudit-out/<data stem>/]",
            show_default=False,
        ),
    ] = None,
    clean: Annotated[
        Optional[str],
        typer.Option(
            "--clean",
            help="drop flagged rows, relabel confident ones, dedupe (keep one row per near-duplicate group), "
            "or flag (add columns). [default: drop]",
            show_default=False,
        ),
    ] = None,
    min_confidence: Annotated[
        Optional[float],
        typer.Option(
            "--min-confidence", help="Suggestion confidence needed to relabel. [default: 0.9]", show_default=False
        ),
    ] = None,
    max_clean_share: Annotated[
        Optional[float],
        typer.Option(
            "--max-clean-share",
            help="Never drop or relabel more than this share of any class. [default: 0.25]",
            show_default=False,
        ),
    ] = None,
    force_clean: Annotated[
        Optional[bool],
        typer.Option(
            "--force-clean",
            help="Drop or relabel flagged rows even when the noise estimate is untrustworthy.",
            show_default=False,
        ),
    ] = None,
    outlier_threshold: Annotated[
        Optional[float],
        typer.Option(
            "--outlier-threshold",
            help="Flag rows whose outlier score is at least this (0.5: beyond Q3 + 3 IQR of the k-NN or "
            "class-centroid distance). [default: 0.5]",
            show_default=False,
        ),
    ] = None,
    outlier_rate: Annotated[
        Optional[float],
        typer.Option(
            "--outlier-rate",
            help="Instead: flag this share of rows with the highest outlier scores.",
            show_default=False,
        ),
    ] = None,
    near_duplicate_threshold: Annotated[
        Optional[float],
        typer.Option(
            "--near-duplicate-threshold",
            help="Cosine similarity above which rows sharing most of their words are near-duplicates. [default: 0.93]",
            show_default=False,
        ),
    ] = None,
    leakage_threshold: Annotated[
        Optional[float],
        typer.Option(
            "--leakage-threshold",
            help="Like --near-duplicate-threshold, for matches in a --reference file. [default: 0.85]",
            show_default=False,
        ),
    ] = None,
    reference: Annotated[
        Optional[list[str]],
        typer.Option(
            "--reference",
            help="A file (e.g. the test split) to check for leakage: rows of DATA with an exact or near-duplicate "
            "in it are reported; repeat for several.",
            show_default=False,
            metavar="FILE",
        ),
    ] = None,
    reference_embedding_col: Annotated[
        Optional[str],
        typer.Option(
            "--reference-embedding-col",
            help="Column of precomputed vectors in the --reference files (needed with --embedding-col).",
            show_default=False,
        ),
    ] = None,
    max_noise_rate: Annotated[
        Optional[float],
        typer.Option("--max-noise-rate", help="Gate: fail if the estimated noise rate is above.", show_default=False),
    ] = None,
    min_credibility: Annotated[
        Optional[float],
        typer.Option("--min-credibility", help="Gate: fail if credibility is below.", show_default=False),
    ] = None,
    max_flagged: Annotated[
        Optional[str],
        typer.Option(
            "--max-flagged",
            help="Gate: fail if flagged rows exceed N (int) or a fraction (float < 1).",
            show_default=False,
        ),
    ] = None,
    max_outliers: Annotated[
        Optional[str],
        typer.Option("--max-outliers", help="Gate: fail if outliers exceed N (int) or a fraction.", show_default=False),
    ] = None,
    max_duplicates: Annotated[
        Optional[str],
        typer.Option(
            "--max-duplicates",
            help="Gate: fail if redundant near-duplicate rows (all but one per group) exceed N or a fraction.",
            show_default=False,
        ),
    ] = None,
    max_leakage: Annotated[
        Optional[str],
        typer.Option(
            "--max-leakage",
            help="Gate: fail if rows with a duplicate in a --reference file exceed N or a fraction.",
            show_default=False,
        ),
    ] = None,
    warn_max_outliers: Annotated[
        Optional[str],
        typer.Option("--warn-max-outliers", help="Warn if outliers exceed N or a fraction.", show_default=False),
    ] = None,
    warn_max_duplicates: Annotated[
        Optional[str],
        typer.Option(
            "--warn-max-duplicates",
            help="Warn if redundant near-duplicates exceed N or a fraction.",
            show_default=False,
        ),
    ] = None,
    warn_max_leakage: Annotated[
        Optional[str],
        typer.Option("--warn-max-leakage", help="Warn if leaked rows exceed N or a fraction.", show_default=False),
    ] = None,
    gate_on: GateOnOpt = None,
    seed: SeedOpt = None,
    cache_dir: CacheDirOpt = None,
    cache: CacheOpt = None,
    output_format: FormatOpt = None,
    warn_max_noise_rate: Annotated[
        Optional[float],
        typer.Option("--warn-max-noise-rate", help="Warn if the noise rate is above.", show_default=False),
    ] = None,
    warn_min_credibility: Annotated[
        Optional[float],
        typer.Option("--warn-min-credibility", help="Warn if credibility is below.", show_default=False),
    ] = None,
    warn_max_flagged: Annotated[
        Optional[str],
        typer.Option(
            "--warn-max-flagged", help="Warn if flagged rows exceed N (int) or a fraction.", show_default=False
        ),
    ] = None,
    baseline: Annotated[
        Optional[Path],
        typer.Option(
            "--baseline", help="A previous report.json to compare with (in every report).", show_default=False
        ),
    ] = None,
    max_regression: Annotated[
        Optional[float],
        typer.Option(
            "--max-regression",
            help="With --baseline: fail if the noise rate rose by more than this and the 95% intervals do not overlap.",
            show_default=False,
        ),
    ] = None,
    warn_max_regression: Annotated[
        Optional[float],
        typer.Option("--warn-max-regression", help="With --baseline: warn on a smaller rise.", show_default=False),
    ] = None,
    strict: StrictOpt = None,
    allow_inconclusive: Annotated[
        Optional[bool],
        typer.Option(
            "--allow-inconclusive",
            help="Exit 0 when a gate is inconclusive because the noise estimate is untrustworthy (default: exit 1).",
            show_default=False,
        ),
    ] = None,
    junit: Annotated[
        Optional[Path],
        typer.Option(
            "--junit", parser=_path_value, help="Also write the gate checks as JUnit XML.", show_default=False
        ),
    ] = None,
    review: Annotated[
        Optional[list[str]],
        typer.Option(
            "--review",
            help="Also write every flagged row, most suspicious first, for review: FILE.csv (fill in decision / "
            "corrected_label) or FILE.json (Label Studio tasks, with FILE.label_config.xml); repeat for both. "
            "`credaudit apply` reads the reviewed file back.",
            show_default=False,
            metavar="FILE",
        ),
    ] = None,
    top_rows: Annotated[
        Optional[int],
        typer.Option("--top-rows", help="Most suspicious rows in the reports. [default: 20]", show_default=False),
    ] = None,
    excerpt_chars: Annotated[
        Optional[int],
        typer.Option("--excerpt-chars", help="Text excerpt length in the reports. [default: 160]", show_default=False),
    ] = None,
    html: HtmlOpt = None,
    github: Annotated[
        Optional[bool],
        typer.Option(
            "--github/--no-github",
            help="GitHub Actions output: step summary and annotations. [default: when GITHUB_ACTIONS=true]",
            show_default=False,
        ),
    ] = None,
    debug: DebugOpt = False,
) -> None:
    """Audit DATA: estimate label noise, flag probable errors, write cleaned data and reports."""

    def body() -> int:
        from credaudit import pipeline
        from credaudit.console import console_width, is_interactive, write
        from credaudit.crowd import crowd_shape
        from credaudit.errors import exit_code_for
        from credaudit.pairs_run import pairs_shape
        from credaudit.report.json import render_json
        from credaudit.report.terminal import render_quiet, render_terminal

        config = _config(
            config_file,
            {
                "input.text_cols": (tuple(text_col) if text_col else None, "--text-col"),
                "input.label_col": (label_col[0] if label_col and len(label_col) == 1 else None, "--label-col"),
                "crowd.label_cols": (tuple(label_col) if label_col and len(label_col) > 1 else None, "--label-col"),
                "crowd.item_col": (item_col, "--item-col"),
                "crowd.annotator_col": (annotator_col, "--annotator-col"),
                "crowd.annotations_col": (annotations_col, "--annotations-col"),
                "crowd.annotators_col": (annotators_col, "--annotators-col"),
                "crowd.reference_col": (reference_col, "--reference-col"),
                "crowd.items": (str(items) if items else None, "--items"),
                "crowd.drop_annotators": (drop_annotators, "--drop-annotators"),
                **_kind_overrides(chosen_col, rejected_col, prompt_col, ordinal, label_order),
                "gates.min_annotator_accuracy": (min_annotator_accuracy, "--min-annotator-accuracy"),
                "gates.warn_min_annotator_accuracy": (warn_min_annotator_accuracy, "--warn-min-annotator-accuracy"),
                "gates.max_suspect_annotators": (
                    _parse_max_flagged(max_suspect_annotators, "--max-suspect-annotators"),
                    "--max-suspect-annotators",
                ),
                "gates.warn_max_suspect_annotators": (
                    _parse_max_flagged(warn_max_suspect_annotators, "--warn-max-suspect-annotators"),
                    "--warn-max-suspect-annotators",
                ),
                "input.id_col": (id_col, "--id-col"),
                "input.embedding_col": (embedding_col, "--embedding-col"),
                "input.drop_unlabelled": (drop_unlabelled, "--drop-unlabelled"),
                "input.encoding": (encoding, "--encoding"),
                **_encoder_overrides(encoder, device, precision, batch_size, cache_dir),
                "encoder.cache": (cache, "--cache/--no-cache"),
                **_engine_overrides(engine, ray_address),
                "detect.k": (k, "--k"),
                "detect.method": (method, "--method"),
                "detect.min_score": (min_score, "--min-score"),
                "output.out": (str(out) if out else None, "--out"),
                "output.clean": (clean, "--clean"),
                "output.min_confidence": (min_confidence, "--min-confidence"),
                "output.max_clean_share": (max_clean_share, "--max-clean-share"),
                "output.force_clean": (force_clean, "--force-clean"),
                "output.format": (output_format, "--format"),
                "gates.max_noise_rate": (max_noise_rate, "--max-noise-rate"),
                "gates.min_credibility": (min_credibility, "--min-credibility"),
                "gates.max_flagged": (_parse_max_flagged(max_flagged, "--max-flagged"), "--max-flagged"),
                "gates.gate_on": (gate_on, "--gate-on"),
                "hygiene.outlier_threshold": (outlier_threshold, "--outlier-threshold"),
                "hygiene.outlier_rate": (outlier_rate, "--outlier-rate"),
                "hygiene.near_duplicate_threshold": (near_duplicate_threshold, "--near-duplicate-threshold"),
                "hygiene.reference": (tuple(reference) if reference else None, "--reference"),
                "hygiene.leakage_threshold": (leakage_threshold, "--leakage-threshold"),
                "hygiene.reference_embedding_col": (reference_embedding_col, "--reference-embedding-col"),
                "gates.max_outliers": (_parse_max_flagged(max_outliers, "--max-outliers"), "--max-outliers"),
                "gates.max_duplicates": (_parse_max_flagged(max_duplicates, "--max-duplicates"), "--max-duplicates"),
                "gates.max_leakage": (_parse_max_flagged(max_leakage, "--max-leakage"), "--max-leakage"),
                "gates.warn_max_outliers": (
                    _parse_max_flagged(warn_max_outliers, "--warn-max-outliers"),
                    "--warn-max-outliers",
                ),
                "gates.warn_max_duplicates": (
                    _parse_max_flagged(warn_max_duplicates, "--warn-max-duplicates"),
                    "--warn-max-duplicates",
                ),
                "gates.warn_max_leakage": (
                    _parse_max_flagged(warn_max_leakage, "--warn-max-leakage"),
                    "--warn-max-leakage",
                ),
                "seed": (seed, "--seed"),
                "gates.warn_max_noise_rate": (warn_max_noise_rate, "--warn-max-noise-rate"),
                "gates.warn_min_credibility": (warn_min_credibility, "--warn-min-credibility"),
                "gates.warn_max_flagged": (
                    _parse_max_flagged(warn_max_flagged, "--warn-max-flagged"),
                    "--warn-max-flagged",
                ),
                "gates.baseline": (str(baseline) if baseline else None, "--baseline"),
                "gates.max_regression": (max_regression, "--max-regression"),
                "gates.warn_max_regression": (warn_max_regression, "--warn-max-regression"),
                "gates.strict": (strict, "--strict"),
                "gates.allow_inconclusive": (allow_inconclusive, "--allow-inconclusive"),
                "output.junit": (str(junit) if junit else None, "--junit"),
                "output.review": (tuple(review) if review else None, "--review"),
                "output.top_rows": (top_rows, "--top-rows"),
                "output.excerpt_chars": (excerpt_chars, "--excerpt-chars"),
                "output.html": (html, "--html/--no-html"),
                "output.github": (github, "--github/--no-github"),
            },
        )
        fmt = config.output.format
        # Preference pairs run through the single-label engine and report in its shape.
        run = pipeline.scan
        if pairs_shape(config) is not None:
            from credaudit.pairs_run import scan_pairs as run
        elif crowd_shape(config.crowd) is not None:
            return _scan_crowd(data, config)
        with _progress(fmt == "rich" and is_interactive(sys.stderr), quiet=fmt == "quiet") as progress:
            result, written = run(data, config, progress=progress)
        if fmt == "json":
            write(render_json(result.report))
        elif fmt == "quiet":
            write(render_quiet(result.report))
        else:
            write(
                render_terminal(
                    result.report,
                    color=is_interactive(sys.stdout),
                    width=console_width(sys.stdout),
                    outputs=[str(p) for p in written],
                )
            )
        if config.output.github or os.environ.get("GITHUB_ACTIONS") == "true":
            _github(result.report, config.gates, stream=sys.stderr if fmt == "json" else sys.stdout)
        return int(exit_code_for(result))

    _guard(debug, body)


def _split_order(text: str | None) -> tuple[str, ...] | None:
    """``--label-order "bad,ok,good"`` -> ("bad", "ok", "good")."""
    from credaudit.errors import UsageError

    if text is None:
        return None
    order = tuple(part.strip() for part in text.split(",") if part.strip())
    # The flag's value is wrong (exit 2), whatever the data: said here, not when the ratings are read.
    if len(order) < 2 or len(set(order)) < len(order):
        raise UsageError(f"--label-order must list at least two distinct values, lowest first; got {text!r}")
    return order


def _scan_crowd(data: Path, config) -> int:
    """``scan`` with several labels per item: the multi-annotator adapter's run and renderers."""
    from credaudit import crowd_run
    from credaudit.console import console_width, is_interactive, write
    from credaudit.errors import exit_code_for
    from credaudit.report.crowd import render_crowd_markdown, render_crowd_quiet, render_crowd_terminal
    from credaudit.report.json import render_json

    fmt = config.output.format
    with _progress(fmt == "rich" and is_interactive(sys.stderr), quiet=fmt == "quiet") as progress:
        result, written = crowd_run.scan_crowd(data, config, progress=progress)
    if fmt == "json":
        write(render_json(result.report))
    elif fmt == "quiet":
        write(render_crowd_quiet(result.report))
    else:
        write(render_crowd_terminal(result.report, width=console_width(sys.stdout), outputs=[str(p) for p in written]))
    if config.output.github or os.environ.get("GITHUB_ACTIONS") == "true":
        _github(
            result.report,
            config.gates,
            stream=sys.stderr if fmt == "json" else sys.stdout,
            markdown=render_crowd_markdown,
        )
    return int(exit_code_for(result))


@app.command("select", cls=_Command)
def select_command(
    data: DataArg,
    budget: Annotated[
        Optional[str],
        typer.Option(
            "--budget",
            help="Items to choose: a count (1000) or a share of the data (0.1).",
            show_default=False,
        ),
    ] = None,
    diversity: Annotated[
        Optional[float],
        typer.Option(
            "--diversity",
            help="Quality vs diversity, 0-1: a near-copy of a chosen item keeps (1 - diversity) of its quality; "
            "0 is plain top-by-quality. [default: 0.5]",
            show_default=False,
        ),
    ] = None,
    config_file: ConfigOpt = None,
    text_col: TextColOpt = None,
    label_col: LabelColOpt = None,
    chosen_col: ChosenColOpt = None,
    rejected_col: RejectedColOpt = None,
    prompt_col: PromptColOpt = None,
    ordinal: OrdinalOpt = None,
    label_order: LabelOrderOpt = None,
    id_col: IdColOpt = None,
    embedding_col: EmbeddingColOpt = None,
    encoding: EncodingOpt = None,
    encoder: EncoderOpt = None,
    device: DeviceOpt = None,
    engine: EngineOpt = None,
    ray_address: RayAddressOpt = None,
    precision: PrecisionOpt = None,
    batch_size: BatchOpt = None,
    cache_dir: CacheDirOpt = None,
    cache: CacheOpt = None,
    out: Annotated[
        Optional[Path],
        typer.Option(
            "--out",
            parser=_path_value,
            help="Output directory. [default: ./credaudit-out/<data stem>-select/]",
            show_default=False,
        ),
    ] = None,
    seed: SeedOpt = None,
    output_format: FormatOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Choose a budget of curated, diverse items: single labels, ratings (--ordinal) or pairs (--chosen-col)."""

    def body() -> int:

        from credaudit import select_run
        from credaudit.console import console_width, is_interactive, write
        from credaudit.errors import ExitCode, UsageError
        from credaudit.report.json import render_json_data
        from credaudit.report.selection import render_selection_terminal, summary_lines

        if budget is None:
            raise UsageError("credaudit select needs --budget: a count of items (e.g. 1000) or a share (e.g. 0.1)")
        config = _config(
            config_file,
            {
                "select.budget": (_parse_max_flagged(budget, "--budget"), "--budget"),
                "select.diversity": (diversity, "--diversity"),
                "input.text_cols": (tuple(text_col) if text_col else None, "--text-col"),
                "input.label_col": (label_col, "--label-col"),
                **_kind_overrides(chosen_col, rejected_col, prompt_col, ordinal, label_order),
                "input.id_col": (id_col, "--id-col"),
                "input.embedding_col": (embedding_col, "--embedding-col"),
                "input.encoding": (encoding, "--encoding"),
                **_encoder_overrides(encoder, device, precision, batch_size, cache_dir),
                "encoder.cache": (cache, "--cache/--no-cache"),
                **_engine_overrides(engine, ray_address),
                "output.out": (str(out) if out else None, "--out"),
                "output.format": (output_format, "--format"),
                "seed": (seed, "--seed"),
            },
        )
        fmt = config.output.format
        with _progress(fmt == "rich" and is_interactive(sys.stderr), quiet=fmt == "quiet") as progress:
            result, written = select_run.select_file(data, config, progress=progress)
        if fmt == "json":
            write(render_json_data(result.report))
        elif fmt == "quiet":
            write(summary_lines(result.report)[0] + "\n")
        else:
            write(render_selection_terminal(result.report, width=console_width(sys.stdout)))
            write("Wrote " + ", ".join(str(p) for p in written) + "\n")
        return int(ExitCode.OK)

    _guard(debug, body)


@app.command(cls=_Command)
def fairness(
    data: DataArg,
    pred_col: Annotated[
        Optional[str], typer.Option("--pred-col", help="The binary prediction (0/1 or true/false).", show_default=False)
    ] = None,
    proxy_col: Annotated[
        Optional[list[str]],
        typer.Option(
            "--proxy-col",
            help="A column of group predictions (a proxy of the missing attribute); give three or more.",
            show_default=False,
            metavar="<column>",
        ),
    ] = None,
    label_col: Annotated[
        Optional[str],
        typer.Option(
            "--label-col",
            help="The binary outcome: adds the equal-opportunity and equalized-odds gaps.",
            show_default=False,
        ),
    ] = None,
    group_col: Annotated[
        Optional[str],
        typer.Option(
            "--group-col",
            help="The true group where known (null elsewhere): reference gaps on those rows.",
            show_default=False,
        ),
    ] = None,
    config_file: ConfigOpt = None,
    encoding: EncodingOpt = None,
    out: Annotated[
        Optional[Path],
        typer.Option(
            "--out",
            parser=_path_value,
            help="Output directory. [default: ./credaudit-out/<data stem>-fairness/]",
            show_default=False,
        ),
    ] = None,
    max_dp_gap: Annotated[
        Optional[float],
        typer.Option(
            "--max-dp-gap", help="Gate: fail if the calibrated demographic-parity gap is above.", show_default=False
        ),
    ] = None,
    max_eo_gap: Annotated[
        Optional[float],
        typer.Option(
            "--max-eo-gap", help="Gate: fail if the calibrated equalized-odds gap is above.", show_default=False
        ),
    ] = None,
    warn_max_dp_gap: Annotated[
        Optional[float], typer.Option("--warn-max-dp-gap", help="Warn if the DP gap is above.", show_default=False)
    ] = None,
    warn_max_eo_gap: Annotated[
        Optional[float], typer.Option("--warn-max-eo-gap", help="Warn if the EO gap is above.", show_default=False)
    ] = None,
    gate_on: GateOnOpt = None,
    strict: StrictOpt = None,
    n_bootstrap: Annotated[
        Optional[int],
        typer.Option("--n-bootstrap", help="Resamples for the intervals. [default: 200]", show_default=False),
    ] = None,
    per_slice: Annotated[
        Optional[bool],
        typer.Option(
            "--per-slice",
            help="Fit the proxies' errors separately per prediction/outcome slice (noisier; for proxies whose errors "
            "depend on them).",
            show_default=False,
        ),
    ] = None,
    seed: SeedOpt = None,
    output_format: FormatOpt = None,
    html: HtmlOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Fairness gaps with the sensitive attribute missing: naive vs calibrated from three or more weak proxies."""

    def body() -> int:

        from credaudit import fairness_run
        from credaudit.console import console_width, is_interactive, write
        from credaudit.errors import ExitCode
        from credaudit.io import check_out_dir
        from credaudit.report.fairness import render_fairness_quiet, render_fairness_terminal
        from credaudit.report.json import render_json_data

        config = _config(
            config_file,
            {
                "fairness.pred_col": (pred_col, "--pred-col"),
                "fairness.proxy_cols": (tuple(proxy_col) if proxy_col else None, "--proxy-col"),
                "fairness.label_col": (label_col, "--label-col"),
                "fairness.group_col": (group_col, "--group-col"),
                "fairness.n_bootstrap": (n_bootstrap, "--n-bootstrap"),
                "fairness.per_slice": (per_slice, "--per-slice"),
                "input.encoding": (encoding, "--encoding"),
                "output.out": (str(out) if out else None, "--out"),
                "output.format": (output_format, "--format"),
                "output.html": (html, "--html/--no-html"),
                "gates.max_dp_gap": (max_dp_gap, "--max-dp-gap"),
                "gates.max_eo_gap": (max_eo_gap, "--max-eo-gap"),
                "gates.warn_max_dp_gap": (warn_max_dp_gap, "--warn-max-dp-gap"),
                "gates.warn_max_eo_gap": (warn_max_eo_gap, "--warn-max-eo-gap"),
                "gates.gate_on": (gate_on, "--gate-on"),
                "gates.strict": (strict, "--strict"),
                "seed": (seed, "--seed"),
            },
        )
        out_dir = fairness_run.fairness_out_dir(config, data)
        check_out_dir(out_dir, data, ["report.json", "report.md", "report.html"])
        fmt = config.output.format
        with _progress(fmt == "rich" and is_interactive(sys.stderr), quiet=fmt == "quiet") as progress:
            report, _ = fairness_run.audit_fairness_file(data, config, progress=progress)
        written = fairness_run.write_fairness_outputs(report, out_dir, html=config.output.html)
        if fmt == "json":
            write(render_json_data(report.to_dict()))
        elif fmt == "quiet":
            write(render_fairness_quiet(report))
        else:
            write(render_fairness_terminal(report, width=console_width(sys.stdout)))
            write("Wrote " + ", ".join(str(p) for p in written) + "\n")
        return int(ExitCode.GATE_FAILED if report.verdict == "fail" else ExitCode.OK)

    _guard(debug, body)


@app.command(cls=_Command)
def apply(
    reviewed: Annotated[
        Path,
        typer.Argument(
            help="A reviewed queue: the .csv from `scan --review` with decision / corrected_label filled in, or a "
            "Label Studio export (.json, JSON or JSON-MIN) of the tasks it wrote.",
            show_default=False,
        ),
    ],
    data: Annotated[
        Path,
        typer.Option("--data", help="The dataset the queue came from (read as the scan read it).", show_default=False),
    ],
    out: Annotated[
        Optional[Path],
        typer.Option(
            "--out",
            parser=_path_value,
            help="Where to write the data with the decisions applied, in its own format. "
            "[default: ./credaudit-out/<data stem>/reviewed.<ext>]",
            show_default=False,
        ),
    ] = None,
    config_file: ConfigOpt = None,
    label_col: LabelColOpt = None,
    id_col: IdColOpt = None,
    drop_unlabelled: Annotated[
        Optional[bool],
        typer.Option("--drop-unlabelled", help="As given to the scan.", show_default=False),
    ] = None,
    encoding: EncodingOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Write DATA with reviewers' decisions applied: relabel, drop or keep each reviewed row; the rest unchanged."""

    def body() -> int:
        from credaudit import pipeline
        from credaudit.console import write

        config = _config(
            config_file,
            {
                "input.label_col": (label_col, "--label-col"),
                "input.id_col": (id_col, "--id-col"),
                "input.drop_unlabelled": (drop_unlabelled, "--drop-unlabelled"),
                "input.encoding": (encoding, "--encoding"),
            },
        )
        write(pipeline.apply_review(reviewed, data, config, out=out) + "\n")
        return 0

    _guard(debug, body)


def _kind_overrides(chosen_col, rejected_col, prompt_col, ordinal, label_order) -> dict:
    """The flags that choose the kind of labels (pairs, ratings), shared by ``scan`` and ``select``."""
    return {
        "pairs.chosen_col": (chosen_col, "--chosen-col"),
        "pairs.rejected_col": (rejected_col, "--rejected-col"),
        "pairs.prompt_col": (prompt_col, "--prompt-col"),
        "ratings.ordinal": (ordinal, "--ordinal"),
        "ratings.label_order": (_split_order(label_order), "--label-order"),
    }


def _engine_overrides(engine, ray_address) -> dict:
    return {"engine.name": (engine, "--engine"), "engine.ray_address": (ray_address, "--ray-address")}


def _encoder_overrides(encoder, device, precision, batch_size, cache_dir) -> dict:
    """The encoder flags ``scan`` and ``embed`` share, as config overrides (value, flag name)."""
    return {
        "encoder.name": (encoder, "--encoder"),
        "encoder.device": (device, "--device"),
        "encoder.precision": (precision, "--precision"),
        "encoder.batch_size": (batch_size, "--batch-size"),
        "encoder.cache_dir": (str(cache_dir) if cache_dir else None, "--cache-dir"),
    }


@app.command(cls=_Command)
def embed(
    data: DataArg,
    config_file: ConfigOpt = None,
    text_col: TextColOpt = None,
    encoder: EncoderOpt = None,
    device: DeviceOpt = None,
    precision: PrecisionOpt = None,
    batch_size: BatchOpt = None,
    cache_dir: CacheDirOpt = None,
    output: Annotated[
        Optional[Path],
        typer.Option(
            "--output",
            parser=_path_value,
            help="Also write the vectors: .npy (N × d float32) or .parquet "
            "(row_id + embedding column, usable with --embedding-col).",
            show_default=False,
        ),
    ] = None,
    id_col: IdColOpt = None,
    encoding: EncodingOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Compute and cache the embeddings of DATA (a batch pre-step: a later scan reads them from the cache)."""

    def body() -> int:
        from credaudit import embedding
        from credaudit.console import is_interactive, write

        config = _config(
            config_file,
            {
                "input.text_cols": (tuple(text_col) if text_col else None, "--text-col"),
                "input.id_col": (id_col, "--id-col"),
                "input.encoding": (encoding, "--encoding"),
                **_encoder_overrides(encoder, device, precision, batch_size, cache_dir),
            },
        )
        with _progress(is_interactive(sys.stderr)) as progress:
            summary = embedding.embed_file(data, config, output=output, progress=progress)
        write(summary.describe() + "\n")
        return 0

    _guard(debug, body)


def _github(report, gates, *, stream, markdown: Callable[[Any], str] | None = None) -> None:
    """Step summary (if GitHub gave a file) and annotations; JSON mode keeps stdout pure."""
    from credaudit.io import append_text
    from credaudit.report.github import annotations
    from credaudit.report.markdown import render_markdown

    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        append_text(Path(summary), (markdown or render_markdown)(report))
    for line in annotations(report, strict=gates.strict, allow_inconclusive=gates.allow_inconclusive):
        stream.write(line + "\n")


@app.command(cls=_Command)
def diff(
    baseline: Annotated[Path, typer.Argument(help="The earlier report.json.", show_default=False)],
    current: Annotated[Path, typer.Argument(help="The later report.json.", show_default=False)],
    output_format: Annotated[str, typer.Option("--format", help="rich, json or markdown.", show_default=True)] = "rich",
    max_regression: Annotated[
        float,
        typer.Option(
            "--max-regression",
            help="Exit 1 if the noise rate rose by more than this and the 95% intervals do not overlap.",
        ),
    ] = 0.0,
    warn_max_regression: Annotated[
        Optional[float], typer.Option("--warn-max-regression", help="Report a smaller rise as a warning.")
    ] = None,
    debug: DebugOpt = False,
) -> None:
    """Compare two credibility reports: noise rate, credibility and per-class error shares."""

    def body() -> int:
        import json

        from credaudit.baseline import compare_reports, load_report
        from credaudit.config import merge
        from credaudit.console import console_width, is_interactive, write
        from credaudit.errors import UsageError
        from credaudit.gates import Status, regression_check

        if output_format not in ("rich", "json", "markdown"):
            raise UsageError(f"--format must be rich, json or markdown; got {output_format!r}")
        merge(
            None,
            overrides={
                "gates.max_regression": (max_regression, "--max-regression"),
                "gates.warn_max_regression": (warn_max_regression, "--warn-max-regression"),
            },
        )
        before = load_report(baseline, flag="BASELINE")
        after = load_report(current, flag="CURRENT")
        comparison = compare_reports(before, after, before_path=str(baseline))
        check = regression_check(comparison, max_regression, warn_max_regression)
        if output_format == "json":
            payload = {
                "comparison": comparison,
                "checks": [check.to_dict()],
                "verdict": "fail" if check.status is Status.FAIL else "pass",
            }
            write(json.dumps(payload, indent=2) + "\n")
        elif output_format == "markdown":
            from credaudit.report.format import check_line
            from credaudit.report.markdown import render_comparison_markdown

            write(render_comparison_markdown(comparison) + "\n" + check_line(check.to_dict()) + "\n")
        else:
            from credaudit.report.terminal import render_comparison

            write(
                render_comparison(
                    comparison, [check.to_dict()], color=is_interactive(sys.stdout), width=console_width(sys.stdout)
                )
            )
        return 1 if check.status is Status.FAIL else 0

    _guard(debug, body)


@app.command("encoders", cls=_Command)
def list_encoders() -> None:
    """List the available encoders and where their weights come from."""

    def body() -> int:
        from credaudit.console import write
        from credaudit.encoders.registry import list_encoders as registry_list

        for info in registry_list():
            status = "available" if info.available else "NOT AVAILABLE"
            write(f"{info.name:<16} {info.description}\n{'':<16} weights: {info.source} ({status})\n")
        write("Any local sentence-transformers model directory can also be given to --encoder as a path.\n")
        return 0

    _guard(False, body)


def main() -> None:
    """Console-script entry point."""
    app()
