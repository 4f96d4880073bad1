"""Distinct-n, in both of its forms (method reference §6.3; lower-cased whitespace tokens).

* ``dist{n}_intra`` (the paper's scripts): per response, distinct n-grams over all its n-grams,
  averaged over the responses that have at least one n-gram (empty ones are skipped).
* ``dist{n}_corpus`` (Li et al. 2016): distinct n-grams of the whole set over all its n-grams.

They answer different questions: a system that repeats the same fluent sentence to every user has
a high intra score and a low corpus score. The intra form gets a bootstrap interval like every
mean; the corpus form gets a jackknife interval instead (see ``corpus_score``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from stickerconv.evaluate.bootstrap import Statistic, ratio_statistic

ORDERS = (1, 2, 3)
Z95 = 1.959963984540054  # the 97.5% quantile of the standard normal


def _ngram_sets(tokens: Sequence[Sequence[str]], n: int) -> tuple[list[set[tuple[str, ...]]], np.ndarray]:
    sets, totals = [], np.zeros(len(tokens))
    for i, words in enumerate(tokens):
        grams = [tuple(words[j : j + n]) for j in range(len(words) - n + 1)]
        sets.append(set(grams))
        totals[i] = len(grams)
    return sets, totals


def intra_statistic(tokens: Sequence[Sequence[str]], n: int) -> tuple[Statistic, np.ndarray]:
    """Statistic of the mean per-response ratio, and the per-response ratios (NaN where skipped)."""
    sets, totals = _ngram_sets(tokens, n)
    distinct = np.array([len(s) for s in sets], dtype=np.float64)
    has_grams = totals > 0
    ratios = np.divide(distinct, totals, out=np.zeros_like(distinct), where=has_grams)
    per_item = np.where(has_grams, ratios, np.nan)
    return ratio_statistic(ratios, has_grams.astype(np.float64)), per_item


def corpus_score(tokens: Sequence[Sequence[str]], n: int) -> tuple[float, tuple[float, float]]:
    """The corpus ratio and its 95% delete-one jackknife normal interval, clipped to [0, 1].

    Not the bootstrap: a resample drawn with replacement repeats items, and a repeated response adds
    n-grams but no new distinct ones, so every resample looks less diverse than any real test set
    of the same size. On 2,000 persona sentences the bootstrap distribution of Dist-1..3 sat 13-23%
    below the point estimate with about two thirds of the spread that 30 independent samples
    showed, while the jackknife standard error was within 6% of that spread
    (tests/test_eval_distinct.py repeats the check on a smaller scale).
    """
    sets, totals = _ngram_sets(tokens, n)
    occurrences = Counter(gram for grams in sets for gram in grams)
    distinct_total, grams_total = len(occurrences), float(totals.sum())
    score = distinct_total / grams_total if grams_total else 0.0
    own = np.array([sum(1 for gram in grams if occurrences[gram] == 1) for grams in sets], dtype=np.float64)
    rest = grams_total - totals
    leave_one_out = np.divide(distinct_total - own, rest, out=np.zeros_like(rest), where=rest > 0)
    k = len(sets)
    se = float(np.sqrt((k - 1) / k * np.sum((leave_one_out - leave_one_out.mean()) ** 2)))
    return score, (max(0.0, score - Z95 * se), min(1.0, score + Z95 * se))  # a ratio: clipped to [0, 1]
