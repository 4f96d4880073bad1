"""Corpus BLEU-1..4 in the paper's convention (NLTK ``corpus_bleu``) and, secondarily, sacrebleu's.

Paper convention (method reference §6.1): NLTK corpus BLEU over Treebank words, case-sensitive, one
reference, no smoothing, cumulative weights (1), (½, ½), (⅓, ⅓, ⅓), (¼, ¼, ¼, ¼). The original
BLEU-3 weights were (0.33, 0.33, 0.33, 0); exact thirds are the default and ``paper_bleu3`` restores
the original. NLTK's own per-sentence counting (``modified_precision``, ``closest_ref_length``)
gives each item's sufficient statistics; the score is NLTK's corpus formula on their sums, including
its quirks (a denominator of at least 1 per sentence and order, a zero-match order counted as
precision ``sys.float_info.min``, 0 when no unigram matches), so it equals ``corpus_bleu`` and the
same sums resample for the bootstrap.

sacrebleu (13a tokenizer, exp smoothing, mixed case by default; scores on its 0-100 scale) counts
per sentence with ``sentence_score`` and scores sums with its public ``BLEU.compute_bleu``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from functools import partial

import numpy as np

from stickerconv.evaluate.bootstrap import Estimate

MAX_ORDER = 4
THIRDS = (1 / 3, 1 / 3, 1 / 3)
PAPER_BLEU3 = (0.33, 0.33, 0.33, 0.0)


def bleu_weights(paper_bleu3: bool = False) -> dict[int, tuple[float, ...]]:
    """Cumulative weights of BLEU-1..4."""
    return {1: (1.0,), 2: (0.5, 0.5), 3: PAPER_BLEU3 if paper_bleu3 else THIRDS, 4: (0.25,) * 4}


def nltk_bleu_stats(references: Sequence[list[str]], hypotheses: Sequence[list[str]]) -> np.ndarray:
    """``(n, 2 * MAX_ORDER + 2)``: per item, clipped matches and hypothesis n-grams for orders 1..4
    (as ``modified_precision`` counts them), hypothesis length, closest reference length."""
    from nltk.translate.bleu_score import closest_ref_length, modified_precision

    stats = np.zeros((len(hypotheses), 2 * MAX_ORDER + 2))
    for row, (reference, hypothesis) in enumerate(zip(references, hypotheses, strict=True)):
        for order in range(1, MAX_ORDER + 1):
            precision = modified_precision([reference], hypothesis, order)
            stats[row, order - 1] = precision.numerator
            stats[row, MAX_ORDER + order - 1] = precision.denominator
        stats[row, -2] = len(hypothesis)
        stats[row, -1] = closest_ref_length([reference], len(hypothesis))
    return stats


def nltk_bleu_from_sums(sums: np.ndarray, weights: tuple[float, ...]) -> np.ndarray:
    """NLTK ``corpus_bleu`` (no smoothing) from summed statistics, one row per resample."""
    matches, totals = sums[:, :MAX_ORDER], sums[:, MAX_ORDER : 2 * MAX_ORDER]
    hyp_len, ref_len = sums[:, -2], sums[:, -1]
    k = len(weights)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(matches[:, :k] > 0, matches[:, :k] / totals[:, :k], sys.float_info.min)
        log_mean = np.log(precision) @ np.asarray(weights)
        penalty = np.where(hyp_len > ref_len, 1.0, np.exp(1 - ref_len / hyp_len))
    penalty = np.where(hyp_len == 0, 0.0, penalty)
    return np.where(matches[:, 0] == 0, 0.0, penalty * np.exp(log_mean))


def _nltk_statistic(weights_of_items: np.ndarray, stats: np.ndarray, weights: tuple[float, ...]) -> np.ndarray:
    return nltk_bleu_from_sums(weights_of_items @ stats, weights)


def nltk_bleu(
    references: Sequence[list[str]], hypotheses: Sequence[list[str]], paper_bleu3: bool = False
) -> list[Estimate]:
    """BLEU-1..4, paper convention, on Treebank-tokenised texts."""
    stats = nltk_bleu_stats(references, hypotheses)
    estimates = []
    for order, weights in bleu_weights(paper_bleu3).items():
        shown = {PAPER_BLEU3: "0.33,0.33,0.33,0", THIRDS: "1/3"}.get(weights, ",".join(map(str, weights)))
        fields = {
            "convention": "nltk-corpus",
            "n": str(order),
            "weights": shown,
            "nrefs": "1",
            "case": "mixed",
            "tok": "nltk-treebank+regex-sent",
            "smooth": "none",
        }
        statistic = partial(_nltk_statistic, stats=stats, weights=weights)
        estimates.append(Estimate.resampled(f"bleu{order}", statistic, len(stats), fields, ("nltk",)))
    return estimates


def sacrebleu_bleu(
    references: Sequence[str], hypotheses: Sequence[str], tokenize: str = "13a", smooth: str = "exp"
) -> list[Estimate]:
    """BLEU-1..4 as sacrebleu computes them (``max_ngram_order`` 1..4), with sacrebleu's signature fields."""
    from sacrebleu.metrics import BLEU

    counter = BLEU(tokenize=tokenize, smooth_method=smooth, effective_order=True)  # the flag only silences a warning
    stats = np.zeros((len(hypotheses), 2 * MAX_ORDER + 2))
    for row, (reference, hypothesis) in enumerate(zip(references, hypotheses, strict=True)):
        item = counter.sentence_score(hypothesis, [reference])
        stats[row] = [*item.counts, *item.totals, item.sys_len, item.ref_len]
    # sacrebleu's own fields (it knows nrefs only after counting); the scores below use eff:no
    info = counter.get_signature().info | {"eff": "no"}
    sacre_fields = {k: str(v) for k, v in info.items() if v is not None and k not in ("version", "bs", "seed")}
    estimates = []
    for order in range(1, MAX_ORDER + 1):
        fields = {"convention": "sacrebleu", "n": str(order), "scale": "0-100", **sacre_fields}

        statistic = partial(_sacrebleu_statistic, stats=stats, order=order, smooth=smooth)
        estimates.append(Estimate.resampled(f"sacrebleu{order}", statistic, len(stats), fields, ("sacrebleu",)))
    return estimates


def _sacrebleu_statistic(weights: np.ndarray, stats: np.ndarray, order: int, smooth: str) -> np.ndarray:
    """sacrebleu's own ``compute_bleu`` on each resample's summed counts."""
    from sacrebleu.metrics import BLEU

    scores = []
    for sums in (weights @ stats).round().astype(np.int64).tolist():
        correct, total = sums[:order], sums[MAX_ORDER : MAX_ORDER + order]
        result = BLEU.compute_bleu(correct, total, sums[-2], sums[-1], smooth_method=smooth, max_ngram_order=order)
        scores.append(result.score)
    return np.array(scores)
