"""Distinct-n: hand-checked cases for both forms, and the reason the corpus form uses a jackknife interval."""

from __future__ import annotations

import random

import numpy as np
import pytest

from stickerconv.agent4sc.personas import load_personas
from stickerconv.evaluate import score_texts
from stickerconv.evaluate.bootstrap import Bootstrap, point
from stickerconv.evaluate.text.distinct import corpus_score, intra_statistic

from helpers.paths import fixture_file


def _dist(hyps: list[str]) -> dict[str, float]:
    refs = ["unused"] * len(hyps)
    return {name: r.score for name, r in score_texts(hyps, refs, ["dist"], bootstrap=0).items()}


def test_intra_and_corpus_differ_as_computed_by_hand() -> None:
    # "a a a a": unigrams {a} of 4, bigrams {aa} of 3, trigrams {aaa} of 2; "b c": {b,c} of 2, {bc} of 1, none
    got = _dist(["a a a a", "B c"])  # lower-cased: B == b
    assert got["dist1_intra"] == pytest.approx((1 / 4 + 2 / 2) / 2)  # 0.625
    assert got["dist1_corpus"] == pytest.approx(3 / 6)  # {a, b, c} over 6 unigrams
    assert got["dist2_intra"] == pytest.approx((1 / 3 + 1 / 1) / 2)
    assert got["dist2_corpus"] == pytest.approx(2 / 4)
    assert got["dist3_intra"] == pytest.approx(1 / 2)  # "b c" has no trigram: skipped, not counted as 0
    assert got["dist3_corpus"] == pytest.approx(1 / 2)


def test_a_repeated_reply_is_diverse_inside_and_not_across() -> None:
    got = _dist(["i am here for you"] * 5)
    assert got["dist1_intra"] == 1.0
    assert got["dist1_corpus"] == pytest.approx(5 / 25)


def test_empty_responses_are_skipped_by_the_intra_form() -> None:
    statistic, per_item = intra_statistic([[], ["x", "y"], ["x", "x"]], 1)
    assert np.isnan(per_item[0]) and list(per_item[1:]) == [1.0, 0.5]
    assert point(statistic, 3) == pytest.approx(0.75)
    result = score_texts(["", "x y", "x x"], ["-"] * 3, ["dist1_intra", "dist1_corpus"], bootstrap=0)
    assert result["dist1_intra"].per_item == [None, 1.0, 0.5]  # JSON-safe: no NaN
    assert result["dist1_corpus"].score == pytest.approx(2 / 4)


def _persona_corpus(pool: list[str], size: int, rng: random.Random) -> list[list[str]]:
    return [rng.choice(pool).lower().split() for _ in range(size)]


def test_jackknife_interval_matches_the_spread_of_independent_corpora_and_the_bootstrap_does_not() -> None:
    """Why corpus Distinct-n gets a jackknife interval: drawn with replacement, a bootstrap resample
    repeats responses, which adds n-grams but no distinct ones, so it is biased low and too narrow."""
    personas = load_personas(fixture_file("stickerconv", "profiles", "train_profile_excerpt.jsonl"))
    # Sentences of personas and situations: a pool large against the corpus size, as the
    # independent corpora would be drawn from a population, not from a few hundred sentences.
    pool = [s for p in personas for s in (*p.persona.split(". "), *p.situation.split(". "))]
    rng = random.Random(0)
    size = 200
    independent = [corpus_score(_persona_corpus(pool, size, rng), 2)[0] for _ in range(30)]
    sample = _persona_corpus(pool, size, rng)
    score, (low, high) = corpus_score(sample, 2)
    jackknife_se = (high - low) / (2 * 1.959963984540054)
    assert low < score < high
    assert 0.7 < jackknife_se / np.std(independent) < 1.4

    # the naive bootstrap of the same statistic: the union of the drawn responses' bigrams
    sets = [{tuple(w[i : i + 2]) for i in range(len(w) - 1)} for w in sample]
    totals = np.array([max(0, len(w) - 1) for w in sample], dtype=float)
    resampled = []
    for weights in Bootstrap(200, 0).weights(size):
        for row in weights:
            union = set().union(*(s for s, k in zip(sets, row, strict=True) if k > 0))
            resampled.append(len(union) / float(row @ totals))
    assert np.percentile(resampled, 97.5) < score  # the bootstrap interval would miss the point estimate


def test_corpus_interval_stays_within_the_ratio_bounds():
    """Three short replies: the jackknife normal interval would pass 1; a ratio's interval cannot."""
    tokens = [["so", "sorry", "to", "hear"], ["that", "is", "great", "news"], ["so", "sorry"]]
    score, (low, high) = corpus_score(tokens, 2)
    assert 0.0 <= low <= score <= high <= 1.0
