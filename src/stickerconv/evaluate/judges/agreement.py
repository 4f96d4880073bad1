"""Agreement between repeated judgements of the same items, for judges sampled n times.

An LLM judge at temperature 0.7 answers the same question differently from sample to sample; how
much the samples agree says how far a mean score can be trusted. Three well-defined statistics:

* **Pairwise exact agreement** (scores): over every item, every pair of its valid samples; the
  share of pairs that gave the same score, pooled over all pairs (a percent agreement, no chance
  correction).
* **Krippendorff's alpha** (scores): ``1 - D_o / D_e`` from the coincidence matrix of values within
  items (Krippendorff 2011, "Computing Krippendorff's Alpha-Reliability"). Items are units,
  samples are coders; missing samples (parse failures) are allowed and items with fewer than two
  values are not pairable. The ordinal distance suits a 1..5 scale; interval and nominal are there
  too. Undefined (None) when there is no variation at all (``D_e = 0``) or nothing is pairable.
* **Kendall's W** (rankings): per item, the coefficient of concordance of its ``m`` complete
  rankings of ``k`` candidates, ``W = 12 S / (m^2 (k^3 - k))`` with ``S`` the sum of squared
  deviations of the candidates' rank sums from their mean; 1 = all samples gave the same ranking,
  0 = no agreement. Rankings are permutations here, so no tie correction is needed.

numpy only; the ``krippendorff`` package is not needed for these few lines and is cross-checked
in the tests against the worked example of Krippendorff's paper.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations
from typing import Literal

import numpy as np

Level = Literal["nominal", "ordinal", "interval"]
Ratings = Sequence[Sequence[int | None]]  # per item, its samples' values; None: a missing sample


def pairwise_agreement(ratings: Ratings) -> float | None:
    """Share of equal pairs among all pairs of valid samples of the same item (None: no pairs)."""
    equal = total = 0
    for item in ratings:
        values = [v for v in item if v is not None]
        for a, b in combinations(values, 2):
            equal += a == b
            total += 1
    return equal / total if total else None


def krippendorff_alpha(ratings: Ratings, level: Level = "ordinal") -> float | None:
    """Krippendorff's alpha of per-item values (items = units, samples = coders); None if undefined."""
    units = [[v for v in item if v is not None] for item in ratings]
    units = [u for u in units if len(u) >= 2]
    if not units:
        return None
    values = sorted({v for u in units for v in u})
    index = {v: i for i, v in enumerate(values)}
    coincidences = np.zeros((len(values), len(values)))
    for unit in units:
        counts = np.bincount([index[v] for v in unit], minlength=len(values)).astype(np.float64)
        # ordered pairs of distinct coders within the unit, each weighted 1 / (m_u - 1)
        coincidences += (np.outer(counts, counts) - np.diag(counts)) / (len(unit) - 1)
    marginals = coincidences.sum(axis=1)
    n = marginals.sum()
    delta = _distances(np.asarray(values, dtype=np.float64), marginals, level)
    expected = (np.outer(marginals, marginals) * delta).sum() / (n - 1)
    if expected == 0:
        return None
    return float(1.0 - (coincidences * delta).sum() / expected)


def _distances(values: np.ndarray, marginals: np.ndarray, level: Level) -> np.ndarray:
    """The squared distance metric delta^2 between every pair of observed values."""
    if level == "nominal":
        return 1.0 - np.eye(len(values))
    if level == "interval":
        return np.subtract.outer(values, values) ** 2
    if level == "ordinal":
        cumulative = np.concatenate([[0.0], np.cumsum(marginals)])
        # sum of marginals from value c through value k, minus half of the two ends' own marginals
        idx = np.arange(len(values))
        low, high = np.minimum.outer(idx, idx), np.maximum.outer(idx, idx)
        between = cumulative[high + 1] - cumulative[low]
        return (between - (marginals[low] + marginals[high]) / 2.0) ** 2
    raise ValueError(f"unknown level of measurement {level!r}; choose nominal, ordinal or interval")


def kendalls_w(rankings: Sequence[Sequence[int]]) -> float | None:
    """Kendall's W of ``m`` rankings (rows) of the same ``k`` candidates (columns, ranks 1..k).

    None with fewer than two rankings or two candidates, where concordance is undefined.
    """
    ranks = np.asarray(rankings, dtype=np.float64)
    if ranks.ndim != 2 or ranks.shape[0] < 2 or ranks.shape[1] < 2:
        return None
    m, k = ranks.shape
    sums = ranks.sum(axis=0)
    spread = ((sums - sums.mean()) ** 2).sum()
    return float(12.0 * spread / (m**2 * (k**3 - k)))


def mean_kendalls_w(rankings_per_item: Sequence[Sequence[Sequence[int]]]) -> float | None:
    """Kendall's W averaged over the items where it is defined (None: defined nowhere)."""
    values = [w for item in rankings_per_item if (w := kendalls_w(item)) is not None]
    return float(np.mean(values)) if values else None
