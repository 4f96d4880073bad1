"""CIDEr-D as coco-caption's ``pycocoevalcap.cider`` computes it, written here so it is no runtime dependency.

pycocoevalcap is a large package whose other scorers need Java; its CIDEr is 200 lines of pure
Python, and this module reproduces it (tested equal to 1e-9 on real texts) in fewer, faster lines:

* n-grams of orders 1..4 of whitespace tokens; document frequencies over the references of the
  evaluated set; weight ``tf * (log N - log max(1, df))``; per order, the clipped cosine
  ``sum min(g_c, g_r) * g_r / (|g_c| |g_r|)`` (the plain dot product where a norm is 0);
* times ``exp(-delta^2 / (2 sigma^2))`` with sigma = 6, where, as in coco-caption, each text's
  "length" is its number of bigrams (``len - 1``; 0 for one word), so delta is the length
  difference except when a text has one word;
* the mean over orders, times 10, averaged over references (here one) and then over samples.

The IDF depends on the evaluated set, so scores compare only on the same test set. Bootstrap
intervals keep the IDF of the whole set and resample the per-sample scores.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

MAX_ORDER = 4
SIGMA = 6.0

NGrams = list[Counter[tuple[str, ...]]]  # one Counter per order


def _ngrams(words: Sequence[str], max_order: int) -> NGrams:
    return [Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1)) for n in range(1, max_order + 1)]


def _vectors(grams: NGrams, idf: dict[tuple[str, ...], float], default_idf: float):
    vectors = [{g: tf * idf.get(g, default_idf) for g, tf in counts.items()} for counts in grams]
    norms = [math.sqrt(sum(v * v for v in vector.values())) for vector in vectors]
    length = sum(grams[1].values()) if len(grams) > 1 else 0  # coco-caption counts bigrams
    return vectors, norms, length


def cider_d(
    references: Sequence[Sequence[str]],
    hypotheses: Sequence[Sequence[str]],
    max_order: int = MAX_ORDER,
    sigma: float = SIGMA,
) -> list[float]:
    """Per-sample CIDEr-D of tokenised hypotheses against one tokenised reference each."""
    if len(references) != len(hypotheses):
        raise ValueError(f"CIDEr: {len(hypotheses)} hypotheses but {len(references)} references")
    ref_grams = [_ngrams(ref, max_order) for ref in references]
    document_frequency: Counter[tuple[str, ...]] = Counter()
    for grams in ref_grams:
        for counts in grams:
            document_frequency.update(counts.keys())
    log_n = math.log(float(len(references))) if references else 0.0
    idf = {g: log_n - math.log(max(1.0, df)) for g, df in document_frequency.items()}
    scores = []
    for hyp, ref in zip(hypotheses, ref_grams, strict=True):
        vec_h, norm_h, len_h = _vectors(_ngrams(hyp, max_order), idf, log_n)
        vec_r, norm_r, len_r = _vectors(ref, idf, log_n)
        penalty = math.exp(-((len_h - len_r) ** 2) / (2 * sigma**2))
        total = 0.0
        for n in range(max_order):
            ref_vector = vec_r[n]
            value = sum(min(v, ref_vector.get(g, 0.0)) * ref_vector.get(g, 0.0) for g, v in vec_h[n].items())
            if norm_h[n] != 0 and norm_r[n] != 0:
                value /= norm_h[n] * norm_r[n]
            total += value * penalty
        scores.append(total / max_order * 10.0)
    return scores
