"""Whether a noise estimate can be trusted, and what an untrusted one is allowed to claim.

The consensus fit (noise.py) assumes clusterability: a row and its nearest neighbours share one
true class. When the features barely separate the classes, neighbours of a true-minority row are
mostly majority rows, the fit reads that feature confusion as label noise, and it can return a
degenerate T ("true minority: 25 % kept, 75 % to the majority") with a tight-looking bootstrap
interval. The bootstrap only measures sampling noise, never this bias, so trust is judged by
checks that do not come from the fit itself:

- **feature signal**: the chance-corrected k-NN label agreement
  κ = (a - a₀) / (1 - a₀), with a the share of neighbours carrying a row's label and
  a₀ = Σ_j p̃_j² the agreement of labels drawn at random with the observed frequencies (0.5 for a
  balanced binary set, 0.79 for an 88 / 12 one: a fixed cut-off on a means nothing across class
  balances). κ below ``min_kappa`` means neighbours hardly know more about a row's label than its
  class frequency, so neither T nor a neighbour vote can be right often. Heavy noise on good
  features also lowers κ (binary labels with 40 % symmetric noise have κ near 0), and that case
  cannot be told apart this way: correcting κ for the estimated noise (C* = T⁻ᵀ C T⁻¹ on the
  table of (row, neighbour) label pairs) was tried and rejected, because it is circular: a
  collapsed fit explains weak features as noise and the corrected agreement comes out near 1
  (measured on the weak synthetic sets of the tests). The default 0.15 keeps binary sets at
  20 % symmetric noise trusted (κ ≈ 0.17) and catches weak features (κ ≤ 0.13 on those sets,
  0.09 on md_agreement, 0.00 on rte); binary labels with 40 % noise are then called untrustworthy;
- **diagonal dominance**: every row of T must put its largest mass on its own class. A fit that
  breaks it contradicts the assumption that labels are right more often than not, and is the
  signature of a fit that absorbed feature confusion.

An untrusted estimate keeps its point values in the report (labelled untrustworthy), its
intervals widen to what the data can actually support (the noise rate cannot be ruled down to
zero), gates that read it become ``inconclusive`` (gates.py), and detection stops using it
(detect.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from credaudit.engine import LOCAL, Engine, read_rows
from credaudit.neighbors import NeighborGraph
from credaudit.noise import Interval, NoiseEstimate


@dataclass(frozen=True)
class TrustAssessment:
    """The verdict on a noise estimate.

    Attributes
    ----------
    trusted : bool
        True when every check passed.
    reasons : list of str
        One sentence per failed check (empty when trusted).
    knn_agreement : float
        a: mean share of a row's k neighbours carrying its label.
    chance_agreement : float
        a₀ = Σ_j p̃_j²: the agreement expected from the label frequencies alone.
    kappa : float
        (a - a₀) / (1 - a₀); 1 = neighbours always agree, 0 = no better than chance.
    min_kappa : float
        The threshold applied.
    weak_features : bool
        κ is below ``min_kappa``.
    untrusted_classes : list of int
        Class codes whose row of T is not diagonally dominant.
    trusted_classes : ndarray of shape (K,), dtype bool
        Observed classes detection may judge with the estimate: none with weak features; else all
        but the non-dominant rows' classes and the labels their mass went to.
    """

    trusted: bool
    reasons: list[str]
    knn_agreement: float
    chance_agreement: float
    kappa: float
    min_kappa: float
    weak_features: bool = False
    untrusted_classes: list[int] = field(default_factory=list)
    trusted_classes: np.ndarray = field(default_factory=lambda: np.ones(0, dtype=bool))

    def to_dict(self) -> dict[str, Any]:
        return {
            "trusted": self.trusted,
            "reasons": list(self.reasons),
            "knn_label_agreement": self.knn_agreement,
            "chance_agreement": self.chance_agreement,
            "kappa": self.kappa,
            "min_kappa": self.min_kappa,
            "classes_judged_by_vote": int((~self.trusted_classes).sum()),
        }


def knn_label_agreement(labels: np.ndarray, graph: NeighborGraph, k: int, *, engine: Engine = LOCAL) -> float:
    """The share of (row, neighbour) pairs, over each row's ``k`` nearest neighbours, in which the
    neighbour carries the row's label.

    ``labels`` (N,) label codes; ``graph`` (N, >= k) neighbours, nearest first. Counted per block
    of the graph where ``engine`` keeps it, and summed: the labels of every row's neighbours at
    once would be an (N, k) array (0.8 GB of int64 at 10M rows and k = 10).
    """
    shared = engine.share(labels)
    agreeing = sum(count for _, count in graph.map_blocks(engine, _agreeing, shared, k))
    return agreeing / (len(labels) * k)


def _agreeing(item: tuple[int, int], labels: np.ndarray, k: int, layout, *parts: np.ndarray) -> int:
    """Stored graph rows [start, stop): how many of their first ``k`` neighbours carry the row's
    label (an engine block of :func:`knn_label_agreement`)."""
    reader = read_rows(layout, *parts)
    near = reader.stored(*item)["index"][:, :k]
    return int(np.count_nonzero(labels[near] == labels[reader.numbers(*item)][:, None]))


def chance_corrected_agreement(knn_agreement: float, observed_prior: np.ndarray) -> tuple[float, float]:
    """(a₀, κ): chance agreement Σ_j p̃_j² and κ = (a - a₀) / (1 - a₀).

    Parameters
    ----------
    knn_agreement : float
        a, the mean share of neighbours carrying a row's label.
    observed_prior : ndarray of shape (K,)
        p̃, the label frequencies (sums to 1).
    """
    chance = float(np.sum(np.asarray(observed_prior, dtype=np.float64) ** 2))
    if chance >= 1.0:
        return chance, 0.0
    return chance, float((knn_agreement - chance) / (1.0 - chance))


def assess_trust(
    estimate: NoiseEstimate, knn_agreement: float, *, class_names: list[str], min_kappa: float
) -> TrustAssessment:
    """Run the trust checks on a fitted estimate.

    Parameters
    ----------
    estimate : NoiseEstimate
        ``transition_matrix`` T[i, j] = P(observed j | true i), rows sum to 1.
    knn_agreement : float
        Mean share of each row's k neighbours that carry its label (detection's neighbourhood).
    class_names : list of str
        Display names, for the reasons.
    min_kappa : float
        Lowest chance-corrected agreement at which the features count as informative.
    """
    chance, kappa = chance_corrected_agreement(knn_agreement, estimate.observed_prior)
    reasons = []
    if kappa < min_kappa:
        reasons.append(
            f"the features barely separate the classes: {knn_agreement:.0%} of neighbours share a row's label, "
            f"against {chance:.0%} by chance from the class frequencies alone (chance-corrected agreement "
            f"{kappa:.2f} < {min_kappa:.2f})"
        )
    bad = [int(i) for i in np.flatnonzero(~estimate.is_diagonally_dominant)]
    t = estimate.transition_matrix
    trusted_classes = np.full(len(t), kappa >= min_kappa)
    for i in bad:
        off = t[i].copy()
        off[i] = -1.0
        trusted_classes[[i, int(off.argmax())]] = False
    if bad:
        shown = []
        for i in bad[:3]:
            off = t[i].copy()
            off[i] = -1.0
            j = int(off.argmax())
            shown.append(f"true {class_names[i]}: {t[i, i]:.0%} kept, {t[i, j]:.0%} to {class_names[j]}")
        reasons.append(
            f"{len(bad)} row(s) of the fitted transition matrix are not diagonally dominant ({'; '.join(shown)}), "
            "which means the fit read feature confusion as label noise"
        )
    return TrustAssessment(
        trusted=not reasons,
        reasons=reasons,
        knn_agreement=float(knn_agreement),
        chance_agreement=chance,
        kappa=kappa,
        min_kappa=min_kappa,
        weak_features=bool(kappa < min_kappa),
        untrusted_classes=bad,
        trusted_classes=trusted_classes,
    )


def widen_untrusted(estimate: NoiseEstimate) -> NoiseEstimate:
    """The estimate with intervals an untrusted fit can honestly claim.

    A fit that absorbed feature confusion overstates the noise, by an amount the bootstrap cannot
    see, so nothing rules out a much lower rate: every noise-rate interval is widened down to 0
    (and credibility up to 1). The upper ends stay the bootstrap's. Point estimates are kept, and
    shown as untrustworthy.
    """

    def down(x: Interval) -> Interval:
        return Interval(x.estimate, 0.0, x.high)

    return replace(
        estimate,
        noise_rate=down(estimate.noise_rate),
        class_noise_rate=[down(x) for x in estimate.class_noise_rate],
        observed_error_rate=[down(x) for x in estimate.observed_error_rate],
        credibility=Interval(estimate.credibility.estimate, estimate.credibility.low, 1.0),
    )
