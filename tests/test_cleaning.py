"""Guarded cleaning: an untrusted audit never deletes data; no class loses more than a set share."""

import numpy as np
import polars as pl
import pytest

from credaudit.cleaning import plan_cleaning
from tests.conftest import make_imbalanced_weak, write_table
from tests.helpers import invoke


def plan(labels, flagged, **kwargs):
    """plan_cleaning with error scores falling along the rows (row 0 the most suspicious)."""
    n = len(labels)
    args = dict(n_classes=int(labels.max()) + 1, mode="drop", min_confidence=0.9, trusted=True, max_class_share=0.25)
    return plan_cleaning(labels, flagged, np.linspace(1.0, 0.0, n), np.full(n, 0.95), **{**args, **kwargs})


def test_an_untrusted_audit_holds_every_flag_back_unless_forced():
    labels = np.array([0] * 8 + [1] * 8)
    flagged = np.zeros(16, dtype=bool)
    flagged[[0, 8]] = True
    held = plan(labels, flagged, trusted=False)
    assert not held.drop.any() and not held.relabel.any()
    assert held.held_back.tolist() == flagged.tolist()
    assert "untrustworthy" in held.reasons[0]
    forced = plan(labels, flagged, trusted=False, force=True)
    assert forced.drop.tolist() == flagged.tolist() and not forced.reasons


def test_no_class_loses_more_than_its_share_most_suspicious_first():
    labels = np.array([0] * 8 + [1] * 8)
    flagged = np.zeros(16, dtype=bool)
    flagged[:8] = True  # every row of class 0
    flagged[8] = True
    result = plan(labels, flagged)
    assert result.drop[:8].sum() == 2, "25 % of 8 rows"
    assert result.drop[:2].all(), "the two highest error scores"
    assert result.drop[8], "class 1 is under its share"
    assert result.held_back.sum() == 6 and "--max-clean-share" in result.reasons[0]
    relabel = plan(labels, flagged, mode="relabel")
    assert (relabel.drop | relabel.relabel).sum() == 3 and relabel.relabel.sum() == 3
    assert not plan(labels, flagged, mode="flag").drop.any()


def test_a_class_never_vanishes_even_at_share_one():
    labels = np.array([0] * 4 + [1] * 4)
    flagged = np.ones(8, dtype=bool)
    result = plan(labels, flagged, max_class_share=1.0)
    assert result.drop.sum() == 6 and not result.drop[[3, 7]].any(), "the least suspicious row of each class stays"
    assert "never its last row" in result.reasons[0]


@pytest.mark.parametrize("mode", ["drop", "relabel"])
def test_weak_features_leave_the_cleaned_file_whole(tmp_path, mode):
    x, _, observed = make_imbalanced_weak(1500, 3)
    frame = pl.DataFrame({"label": observed.tolist(), "emb": x.tolist(), "text": [f"r{i}" for i in range(1500)]})
    path = write_table(frame, tmp_path / "weak.parquet")
    base = ["scan", path, "--embedding-col", "emb", "--no-html", "--format", "json", "--clean", mode]
    result = invoke([*base, "--out", tmp_path / "o1"])
    cleaned = pl.read_parquet(tmp_path / "o1" / "cleaned.parquet")
    assert cleaned.height == 1500 and cleaned["label"].to_list() == observed.tolist()
    assert '"held_back"' in result.stdout
    invoke([*base, "--out", tmp_path / "o2", "--force-clean"])
    forced = pl.read_parquet(tmp_path / "o2" / "cleaned.parquet")
    assert forced.height < 1500 or forced["label"].to_list() != observed.tolist()
    for c in (0, 1):
        kept = (forced["label"].to_numpy() == c).sum() if mode == "drop" else None
        if kept is not None:
            assert kept >= 0.75 * (observed == c).sum() - 1, "no class loses more than 25 %"
