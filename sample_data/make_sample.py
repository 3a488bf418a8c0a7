"""Rebuild the shipped sample (sample_data/banking77_sample.csv and its truth file).

Source: BANKING77 (Casanueva et al., 2020, CC BY 4.0), as stored in ../shared/data/banking77/.
Eight intents in four confusable pairs, every row of both splits; 8 % of the labels (a seeded random
choice of rows) are then replaced by a wrong one (seeded): 60 % by the intent's confusable sibling, 40 % by a uniformly
chosen other intent. The truth is kept beside the sample so anyone can score an audit of it.

    python sample_data/make_sample.py ../shared/data/banking77/banking77.parquet
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import polars as pl

PAIRS = [
    ("card_arrival", "card_delivery_estimate"),
    ("lost_or_stolen_card", "compromised_card"),
    ("exchange_rate", "card_payment_wrong_exchange_rate"),
    ("top_up_failed", "pending_top_up"),
]
ERROR_RATE = 0.08
SEED = 2020


def main(source: str) -> None:
    here = Path(__file__).resolve().parent
    sibling = {a: b for a, b in PAIRS} | {b: a for a, b in PAIRS}
    intents = sorted(sibling)
    frame = (
        pl.read_parquet(source)
        .filter(pl.col("label_name").is_in(intents))
        .sort("split", "label", descending=[True, False], maintain_order=True)
    )
    rng = np.random.default_rng(SEED)
    order = rng.permutation(frame.height)
    frame = frame[order]
    true = frame["label_name"].to_list()
    observed = list(true)
    for i in rng.choice(frame.height, size=round(ERROR_RATE * frame.height), replace=False):
        if rng.random() < 0.6:
            observed[i] = sibling[true[i]]
        else:
            observed[i] = rng.choice([c for c in intents if c != true[i]])
    ids = [f"b77-{i:05d}" for i in range(frame.height)]
    pl.DataFrame({"id": ids, "text": frame["text"], "label": observed}).write_csv(here / "banking77_sample.csv")
    pl.DataFrame(
        {"id": ids, "true_label": true, "is_injected_error": [o != t for o, t in zip(observed, true, strict=True)]}
    ).write_csv(here / "banking77_sample_truth.csv")
    n_wrong = sum(o != t for o, t in zip(observed, true, strict=True))
    print(f"{frame.height} rows, {len(intents)} intents, {n_wrong} injected errors ({n_wrong / frame.height:.1%})")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/banking77/banking77.parquet")
