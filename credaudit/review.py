"""The review queue: flagged rows for people to check, and the cleaned data from their decisions.

``scan --review FILE`` writes the flagged rows, most suspicious first (the order of
:func:`rank_flagged`), in the format the file name says:

- ``*.csv``: one line per flagged row: ``rank, row_id, given_label, suggested_label,
  suggestion_confidence, error_score, neighbour_agreement, neighbour_labels, text``, then two empty
  columns for the reviewer, ``decision`` (keep / relabel / drop) and ``corrected_label``;
- ``*.json``: Label Studio tasks (its JSON import format): ``data`` holds the text and the audit's
  fields, ``predictions`` pre-annotates the suggested label. The labelling config to paste into the
  project is written beside it (``<stem>.label_config.xml``): one choice per class plus
  :data:`DROP_CHOICE`.

``credaudit apply REVIEWED --data DATA`` reads a reviewed CSV or a Label Studio export (JSON, or
JSON-MIN), checks every decision against the data (the row id exists, its label is still the one
reviewed, the corrected label is a known class) and writes the data with the decisions applied.
Rows without a decision stay as they are.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

import numpy as np
import polars as pl

from credaudit.errors import DataReadError, UsageError

# The Label Studio choice that means "this row does not belong in the data".
DROP_CHOICE = "(drop this row)"
DECISIONS = ("keep", "relabel", "drop")
REVIEW_FORMATS = (".csv", ".json")
CSV_COLUMNS = (
    "rank",
    "row_id",
    "given_label",
    "suggested_label",
    "suggestion_confidence",
    "error_score",
    "neighbour_agreement",
    "neighbour_labels",
    "text",
    "decision",
    "corrected_label",
)


def rank_flagged(
    is_label_error: np.ndarray, error_score: np.ndarray, neighbour_agreement: np.ndarray, flag_rate: np.ndarray
) -> np.ndarray:
    """Row numbers of the flagged rows, the one a reviewer should see first first.

    Parameters
    ----------
    is_label_error, error_score, neighbour_agreement, flag_rate : ndarray of shape (N,)
        Detection's per-row results.

    Returns
    -------
    ndarray of shape (n_flagged,), dtype int64
        By error score (high first); many top rows score 1.000, so then by the share of neighbours
        that agree with the label (low first), then by how often the subsample rounds flagged the row.
    """
    flagged = np.flatnonzero(is_label_error)
    order = np.lexsort((flagged, -flag_rate[flagged], neighbour_agreement[flagged], -error_score[flagged]))
    return flagged[order]


def neighbour_label_summary(neighbour_labels: np.ndarray, class_names: list[str]) -> list[str]:
    """Per row, its neighbours' labels as "a ×6, b ×3, c ×1" (most frequent first).

    Parameters
    ----------
    neighbour_labels : ndarray of shape (n, k), dtype int64
        Label codes of each row's k nearest neighbours; -1 where a row has fewer.
    class_names : list of str
        Display name of each code.
    """
    summaries = []
    # Per row only its k codes are touched (never K per row), so this stays cheap at many classes.
    for codes in neighbour_labels.tolist():
        counted = Counter(c for c in codes if c >= 0).most_common()  # ties: the nearer neighbour first
        summaries.append(", ".join(f"{class_names[c]} ×{n}" for c, n in counted))
    return summaries


def review_frame(
    rows: np.ndarray,
    *,
    row_ids: Sequence[Any] | pl.Series,
    given: Sequence[Any] | pl.Series,
    suggested: list[Any],
    suggestion_confidence: np.ndarray,
    error_score: np.ndarray,
    neighbour_agreement: np.ndarray,
    neighbour_labels: list[str],
    texts: Sequence[str] | pl.Series | None,
) -> pl.DataFrame:
    """The review queue as a table, one line per row of ``rows`` (in that order).

    ``neighbour_labels`` is already per queued row; the other per-row inputs cover every row.
    """
    return pl.DataFrame(
        {
            "rank": np.arange(1, len(rows) + 1),
            "row_id": [str(row_ids[int(i)]) for i in rows],
            "given_label": [str(given[int(i)]) for i in rows],
            "suggested_label": [str(suggested[i]) for i in rows],
            "suggestion_confidence": np.round(suggestion_confidence[rows], 4),
            "error_score": np.round(error_score[rows], 4),
            "neighbour_agreement": np.round(neighbour_agreement[rows], 4),
            "neighbour_labels": neighbour_labels,
            "text": [texts[int(i)] if texts is not None else "" for i in rows],
            "decision": [""] * len(rows),
            "corrected_label": [""] * len(rows),
        },
        schema_overrides={"rank": pl.Int64},
    )


def write_review_csv(queue: pl.DataFrame, path: Path) -> None:
    """The queue as UTF-8 CSV with a header (opens in a spreadsheet; ``decision`` to fill in)."""
    queue.select(CSV_COLUMNS).write_csv(path)


def label_studio_tasks(queue: pl.DataFrame) -> list[dict[str, Any]]:
    """The queue as Label Studio tasks: the audit's fields in ``data``, the suggestion as a prediction."""
    tasks = []
    for row in queue.iter_rows(named=True):
        data = {key: row[key] for key in CSV_COLUMNS if key not in ("decision", "corrected_label")}
        tasks.append(
            {
                "data": data,
                "predictions": [
                    {
                        "model_version": "credaudit",
                        "score": row["suggestion_confidence"],
                        "result": [
                            {
                                "from_name": "label",
                                "to_name": "text",
                                "type": "choices",
                                "value": {"choices": [row["suggested_label"]]},
                            }
                        ],
                    }
                ],
            }
        )
    return tasks


def label_studio_config(class_names: list[str]) -> str:
    """The Label Studio labelling config for :func:`label_studio_tasks`: one choice per class, and drop."""
    choices = "\n".join(f"    <Choice value={quoteattr(name)}/>" for name in [*class_names, DROP_CHOICE])
    return (
        "<View>\n"
        '  <Header value="Given label: $given_label. credaudit suggests $suggested_label '
        '(confidence $suggestion_confidence)."/>\n'
        '  <Text name="text" value="$text"/>\n'
        '  <Header value="Nearest neighbours\' labels: $neighbour_labels" size="6"/>\n'
        '  <Choices name="label" toName="text" choice="single" showInline="false">\n'
        f"{choices}\n"
        "  </Choices>\n"
        "</View>\n"
    )


def review_config_path(path: Path) -> Path:
    """Where the Label Studio labelling config for the tasks file ``path`` goes."""
    return path.with_name(path.stem + ".label_config.xml")


@dataclass(frozen=True)
class Decision:
    """One reviewed row: ``action`` keep / relabel / drop; ``label`` the corrected label (relabel)."""

    row_id: str
    given_label: str | None
    action: str
    label: str | None
    where: str


@dataclass
class ReviewDecisions:
    """What a review file says, one :class:`Decision` per decided row; ``undecided`` counts the rest."""

    source: Path
    decisions: list[Decision] = field(default_factory=list)
    undecided: int = 0


def read_review(path: Path) -> ReviewDecisions:
    """Read the reviewers' decisions from a reviewed CSV or a Label Studio export.

    Raises
    ------
    DataReadError
        The file cannot be read, or a line's decision is not keep / relabel / drop, a relabel has
        no label, or a row id is missing; the message names the file and the line or task.
    UsageError
        The file is neither .csv nor .json.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in REVIEW_FORMATS:
        raise UsageError(f"{path}: a review file is .csv (from --review x.csv) or .json (a Label Studio export)")
    try:
        raw = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataReadError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    return _read_csv(path, raw) if suffix == ".csv" else _read_label_studio(path, raw)


def _read_csv(path: Path, raw: str) -> ReviewDecisions:
    reader = csv.DictReader(io.StringIO(raw))
    missing = [c for c in ("row_id", "decision") if c not in (reader.fieldnames or [])]
    if missing:
        raise DataReadError(f"{path} has no column {', '.join(missing)}; was it written by credaudit scan --review?")
    result = ReviewDecisions(path)
    for line_number, line in enumerate(reader, start=2):
        where = f"{path.name} line {line_number}"
        decision = (line.get("decision") or "").strip().lower()
        corrected = (line.get("corrected_label") or "").strip()
        if not decision and corrected:
            decision = "relabel"  # a corrected label alone says what to do
        if not decision:
            result.undecided += 1
            continue
        if decision not in DECISIONS:
            raise DataReadError(f"{where}: decision must be keep, relabel or drop (or empty); got {decision!r}")
        label = None
        if decision == "relabel":
            label = corrected or (line.get("suggested_label") or "").strip()
            if not label:
                raise DataReadError(f"{where}: decision relabel needs a corrected_label (or a suggested_label)")
        result.decisions.append(
            Decision(_row_id(line.get("row_id"), where), line.get("given_label"), decision, label, where)
        )
    return result


def _read_label_studio(path: Path, raw: str) -> ReviewDecisions:
    try:
        tasks = json.loads(raw)
    except ValueError as exc:
        raise DataReadError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(tasks, list):
        raise DataReadError(f"{path}: a Label Studio export is a JSON list of tasks; got {type(tasks).__name__}")
    result = ReviewDecisions(path)
    for number, task in enumerate(tasks, start=1):
        where = f"{path.name} task {number}"
        if not isinstance(task, dict):
            raise DataReadError(f"{where} is not a JSON object")
        data = task.get("data", task)  # JSON-MIN puts the data fields at the top level
        if not isinstance(data, dict):
            raise DataReadError(f"{where}: 'data' is not a JSON object")
        choice = _chosen_label(task, where)
        if choice is None:
            result.undecided += 1
            continue
        given = data.get("given_label")
        if choice == DROP_CHOICE:
            action, label = "drop", None
        elif given is not None and choice == str(given):
            action, label = "keep", None
        else:
            action, label = "relabel", choice
        result.decisions.append(Decision(_row_id(data.get("row_id"), where), given, action, label, where))
    return result


def _chosen_label(task: dict[str, Any], where: str) -> str | None:
    """The choice of the task's latest annotation that was not cancelled (None: not annotated)."""
    if "annotations" not in task:
        value = task.get("label")  # JSON-MIN: the control's name maps to the choice
        if isinstance(value, dict):
            value = value.get("choices")
        if isinstance(value, list):
            value = value[0] if value else None
        if value is not None and not isinstance(value, (str, int, float, bool)):
            raise DataReadError(f"{where}: 'label' is neither a choice nor a list of choices")
        return None if value in (None, "") else str(value)
    annotations = task["annotations"] or []
    if not isinstance(annotations, list):
        raise DataReadError(f"{where}: 'annotations' is not a list")
    annotations = [a for a in annotations if isinstance(a, dict) and not a.get("was_cancelled")]
    for annotation in reversed(annotations):
        result = annotation.get("result") or []
        for item in result if isinstance(result, list) else []:
            if not isinstance(item, dict):
                continue
            if item.get("from_name") == "label" and item.get("type") == "choices":
                value = item.get("value")
                choices = (value.get("choices") if isinstance(value, dict) else None) or []
                if len(choices) != 1:
                    raise DataReadError(f"{where}: expected one choice in the annotation; got {choices}")
                return str(choices[0])
    return None


def _row_id(value: Any, where: str) -> str:
    if value is None or str(value).strip() == "":
        raise DataReadError(f"{where}: row_id is empty; the review file must keep the row_id column")
    return str(value).strip()


@dataclass(frozen=True)
class AppliedReview:
    """The counts ``credaudit apply`` reports."""

    kept: int
    relabelled: int
    dropped: int
    undecided: int

    def describe(self, data: Path, out: Path) -> str:
        return (
            f"applied {self.kept + self.relabelled + self.dropped} decision(s) to {data.name}: "
            f"{self.relabelled} relabelled, {self.dropped} dropped, {self.kept} kept as labelled; "
            f"{self.undecided} flagged row(s) without a decision left as they are -> {out}"
        )


def apply_decisions(
    frame: pl.DataFrame,
    *,
    row_ids: Sequence[Any],
    label_values: list[Any],
    label_col: str,
    review: ReviewDecisions,
) -> tuple[pl.DataFrame, AppliedReview]:
    """The data with the reviewers' decisions applied.

    Parameters
    ----------
    frame : polars.DataFrame
        The data as read for the scan (same row order as ``row_ids``).
    row_ids : sequence
        Per row of ``frame``, its row id (the ``--id-col`` value or the row number).
    label_values : list
        Per row, its label as written.
    label_col : str
        The label column to rewrite.
    review : ReviewDecisions

    Raises
    ------
    DataReadError
        A decision names a row the data does not have, a row whose label differs from the one
        reviewed (the data changed since the scan), a row decided twice, or an unknown class.
    """
    position = {str(row_id): i for i, row_id in enumerate(row_ids)}
    by_name: dict[str, Any] = {}
    for value in label_values:
        if value is not None:
            by_name.setdefault(str(value), value)
    drop = np.zeros(frame.height, dtype=bool)
    new_labels: dict[int, Any] = {}
    seen: dict[int, str] = {}
    counts = {"keep": 0, "relabel": 0, "drop": 0}
    for decision in review.decisions:
        i = position.get(decision.row_id)
        if i is None:
            raise DataReadError(f"{decision.where}: row_id {decision.row_id!r} is not in the data")
        if i in seen:
            raise DataReadError(f"{decision.where}: row_id {decision.row_id!r} was already decided at {seen[i]}")
        seen[i] = decision.where
        if decision.given_label is not None and str(decision.given_label) != str(label_values[i]):
            raise DataReadError(
                f"{decision.where}: row {decision.row_id!r} was reviewed with label {decision.given_label!r} but the "
                f"data has {label_values[i]!r}; was the data changed since the scan?"
            )
        counts[decision.action] += 1
        if decision.action == "drop":
            drop[i] = True
        elif decision.action == "relabel":
            if decision.label not in by_name:
                known = ", ".join(sorted(by_name)[:20])
                raise DataReadError(
                    f"{decision.where}: corrected label {decision.label!r} is not a class of the data ({known}"
                    f"{', …' if len(by_name) > 20 else ''})"
                )
            new_labels[i] = by_name[decision.label]
    labels = list(label_values)
    for i, value in new_labels.items():
        labels[i] = value
    dtype = frame.schema[label_col]
    updated = frame.with_columns(pl.Series(label_col, labels, dtype=dtype)) if new_labels else frame
    summary = AppliedReview(counts["keep"], counts["relabel"], counts["drop"], review.undecided)
    return updated.filter(~pl.Series(drop)), summary
